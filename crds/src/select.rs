//! Which ENIPoolPolicy applies to a node: label selector matching and priority resolution.

use crate::error::Error;
use crate::policy::ENIPoolPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Whether `labels` satisfy `selector`. An absent or empty selector matches everything (as for
/// Kubernetes objects that select nodes). Unknown operators are an error, not a silent non-match, so
/// a broken policy is reported instead of quietly selecting nothing.
pub fn matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, Error> {
    let Some(sel) = selector else { return Ok(true) };
    if let Some(ml) = &sel.match_labels {
        if ml.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return Ok(false);
        }
    }
    for req in sel.match_expressions.iter().flatten() {
        let value = labels.get(&req.key);
        let values = req.values.as_deref().unwrap_or_default();
        let ok = match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(Error::InvalidSelector(format!(
                    "operator {} on key {:?} needs at least one value",
                    req.operator, req.key
                )))
            }
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(Error::InvalidSelector(format!(
                    "operator {} on key {:?} takes no values",
                    req.operator, req.key
                )))
            }
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err(Error::InvalidSelector(format!(
                    "unknown operator {other:?} on key {:?} (want In, NotIn, Exists, DoesNotExist)",
                    req.key
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The outcome of choosing a policy for one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Name of the winning policy, if any matched.
    pub chosen: Option<String>,
    /// Other policies that matched with the same priority as the winner (reported as Overlapping).
    pub tied_with: Vec<String>,
    /// Policies whose selector could not be evaluated, with the reason (reported as not Valid).
    pub invalid: Vec<(String, String)>,
}

/// Choose the policy for a node with `labels`: highest priority wins; ties are broken by name so
/// every replica and every run chooses the same one, and reported. A pinned `policy_ref` wins when
/// that policy exists.
pub fn select_policy(
    policies: &[ENIPoolPolicy],
    labels: &BTreeMap<String, String>,
    pinned: Option<&str>,
) -> Selection {
    let mut sel = Selection::default();
    if let Some(name) = pinned {
        if policies.iter().any(|p| p.name_any() == name) {
            sel.chosen = Some(name.to_string());
            return sel;
        }
    }
    let mut matched: Vec<(i32, String)> = Vec::new();
    for p in policies {
        match matches(p.spec.node_selector.as_ref(), labels) {
            Ok(true) => matched.push((p.spec.priority, p.name_any())),
            Ok(false) => {}
            Err(e) => sel.invalid.push((p.name_any(), e.to_string())),
        }
    }
    // Highest priority first, then name ascending.
    matched.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    if let Some((prio, name)) = matched.first().cloned() {
        sel.tied_with =
            matched.iter().skip(1).filter(|(p, _)| *p == prio).map(|(_, n)| n.clone()).collect();
        sel.chosen = Some(name);
    }
    sel
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ENIPoolPolicySpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: if values.is_empty() {
                    None
                } else {
                    Some(values.iter().map(|s| s.to_string()).collect())
                },
            }]),
            match_labels: None,
        }
    }

    fn policy(name: &str, priority: i32, selector: Option<LabelSelector>) -> ENIPoolPolicy {
        let mut p = ENIPoolPolicy::new(
            name,
            ENIPoolPolicySpec { priority, node_selector: selector, ..Default::default() },
        );
        p.metadata.name = Some(name.into());
        p
    }

    #[test]
    fn selector_table() {
        let node = labels(&[("pool", "gpu"), ("zone", "a")]);
        let ml = |k: &str, v: &str| LabelSelector {
            match_labels: Some(labels(&[(k, v)])),
            match_expressions: None,
        };
        let cases: Vec<(Option<LabelSelector>, Result<bool, ()>)> = vec![
            (None, Ok(true)),
            (Some(LabelSelector::default()), Ok(true)),
            (Some(ml("pool", "gpu")), Ok(true)),
            (Some(ml("pool", "cpu")), Ok(false)),
            (Some(expr("pool", "In", &["gpu", "cpu"])), Ok(true)),
            (Some(expr("pool", "NotIn", &["gpu"])), Ok(false)),
            (Some(expr("missing", "NotIn", &["x"])), Ok(true)),
            (Some(expr("zone", "Exists", &[])), Ok(true)),
            (Some(expr("zone", "DoesNotExist", &[])), Ok(false)),
            (Some(expr("zone", "Gt", &["1"])), Err(())),
            (Some(expr("zone", "In", &[])), Err(())),
            (Some(expr("zone", "Exists", &["a"])), Err(())),
        ];
        for (sel, want) in cases {
            let got = matches(sel.as_ref(), &node).map_err(|_| ());
            assert_eq!(got, want, "{sel:?}");
        }
    }

    #[test]
    fn highest_priority_wins_and_ties_are_reported() {
        let node = labels(&[("pool", "gpu")]);
        let gpu = Some(LabelSelector {
            match_labels: Some(labels(&[("pool", "gpu")])),
            match_expressions: None,
        });
        let ps = vec![
            policy("default", 0, None),
            policy("gpu-b", 10, gpu.clone()),
            policy("gpu-a", 10, gpu.clone()),
            policy("broken", 50, Some(expr("x", "Bogus", &[]))),
        ];
        let s = select_policy(&ps, &node, None);
        assert_eq!(s.chosen.as_deref(), Some("gpu-a"));
        assert_eq!(s.tied_with, vec!["gpu-b".to_string()]);
        assert_eq!(s.invalid.len(), 1);
        assert_eq!(s.invalid[0].0, "broken");

        let other = select_policy(&ps, &labels(&[("pool", "cpu")]), None);
        assert_eq!(other.chosen.as_deref(), Some("default"));
        assert!(other.tied_with.is_empty());

        assert_eq!(select_policy(&ps, &node, Some("default")).chosen.as_deref(), Some("default"));
        assert_eq!(select_policy(&ps, &node, Some("gone")).chosen.as_deref(), Some("gpu-a"));
        assert_eq!(select_policy(&[], &node, None), Selection::default());
    }
}
