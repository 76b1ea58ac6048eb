//! EC2 query-protocol parameters: `Key=value` pairs with 1-based list indices
//! (`NetworkInterfaceId.1`, `Filter.1.Name`, `Filter.1.Value.1`, `TagSpecification.1.Tag.1.Key`).

use super::state::Tags;
use super::Error;
use std::collections::BTreeMap;
use std::str::FromStr;

/// The parameters of one request (or of one structured list member).
#[derive(Debug, Clone, Default)]
pub struct Params(pub BTreeMap<String, String>);

/// One `Filter.N`.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Filter name, e.g. `attachment.instance-id` or `tag:Name`.
    pub name: String,
    /// Accepted values (any matches).
    pub values: Vec<String>,
}

impl Params {
    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &[u8]) -> Params {
        Params(form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A required scalar (`MissingParameter` otherwise).
    pub fn req(&self, key: &str) -> Result<&str, Error> {
        self.get(key).filter(|v| !v.is_empty()).ok_or_else(|| {
            Error::api("MissingParameter", format!("The request must contain the parameter {key}"))
        })
    }

    /// A typed scalar (`InvalidParameterValue` when it does not parse).
    pub fn parsed<T: FromStr>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                Error::api("InvalidParameterValue", format!("Invalid value '{v}' for {key}"))
            }),
        }
    }

    /// A boolean (`true`/`false`).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, Error> {
        self.parsed(key)
    }

    /// Members `prefix.N.*` as their own parameter sets, in index order.
    pub fn structs(&self, prefix: &str) -> Vec<Params> {
        let mut by_index: BTreeMap<u32, Params> = BTreeMap::new();
        let p = format!("{prefix}.");
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix(&p) else { continue };
            let Some((idx, sub)) = rest.split_once('.') else { continue };
            let Ok(i) = idx.parse::<u32>() else { continue };
            by_index.entry(i).or_default().0.insert(sub.to_string(), v.clone());
        }
        by_index.into_values().collect()
    }

    /// The sub-parameters `prefix.*` (a nested structure, e.g. `Attachment.AttachmentId`).
    pub fn nested(&self, prefix: &str) -> Params {
        let p = format!("{prefix}.");
        Params(
            self.0
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(&p).map(|s| (s.to_string(), v.clone())))
                .collect(),
        )
    }

    /// Scalars `prefix.N` in index order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let p = format!("{prefix}.");
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&p).and_then(|i| i.parse().ok()).map(|i| (i, v.clone()))
            })
            .collect();
        items.sort();
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// Typed scalars `prefix.N`.
    pub fn list_parsed<T: FromStr>(&self, prefix: &str) -> Result<Vec<T>, Error> {
        self.list(prefix)
            .into_iter()
            .map(|v| {
                v.parse().map_err(|_| {
                    Error::api("InvalidParameterValue", format!("Invalid value '{v}' for {prefix}"))
                })
            })
            .collect()
    }

    /// `Filter.N.Name` / `Filter.N.Value.M`.
    pub fn filters(&self) -> Vec<Filter> {
        self.structs("Filter")
            .into_iter()
            .map(|f| Filter {
                name: f.get("Name").unwrap_or_default().to_string(),
                values: f.list("Value"),
            })
            .collect()
    }

    /// Tags of `TagSpecification.N` whose ResourceType is `resource_type` (or unspecified).
    pub fn tag_specs(&self, resource_type: &str) -> Tags {
        let mut tags = Tags::new();
        for spec in self.structs("TagSpecification") {
            if spec.get("ResourceType").is_none_or(|t| t == resource_type) {
                tags.extend(Self::tags_of(&spec, "Tag"));
            }
        }
        tags
    }

    /// `prefix.N.Key` / `prefix.N.Value` pairs.
    pub fn tags_of(p: &Params, prefix: &str) -> Tags {
        p.structs(prefix)
            .into_iter()
            .filter_map(|t| {
                Some((t.get("Key")?.to_string(), t.get("Value").unwrap_or_default().to_string()))
            })
            .collect()
    }

    /// A stable digest of the request without its ClientToken, for idempotency checks.
    pub fn fingerprint(&self) -> String {
        self.0
            .iter()
            .filter(|(k, _)| k.as_str() != "ClientToken")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_structs_and_filters() {
        let p = Params::parse(
            b"Action=X&NetworkInterfaceId.2=b&NetworkInterfaceId.1=a&Filter.1.Name=tag%3Aowner&Filter.1.Value.1=x&Filter.1.Value.2=y&TagSpecification.1.ResourceType=network-interface&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v&NetworkInterfaceId.10=c",
        );
        assert_eq!(p.list("NetworkInterfaceId"), ["a", "b", "c"]);
        let f = p.filters();
        assert_eq!(f[0].name, "tag:owner");
        assert_eq!(f[0].values, ["x", "y"]);
        assert_eq!(p.tag_specs("network-interface").get("k").map(String::as_str), Some("v"));
        assert!(p.tag_specs("instance").is_empty());
    }
}
