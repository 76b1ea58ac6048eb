//! PATCH bodies other than server-side apply: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
//! and strategic merge patch.
//!
//! Departure: strategic merge patch is applied as a JSON merge patch (lists are replaced instead
//! of merged by their patchMergeKey, `$patch`/`$retainKeys` directives are not understood). That
//! covers `kubectl label/annotate/patch --type strategic` on maps; list merges need `--type json`.

use serde_json::Value;

use super::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (and `+cbor`, unsupported)
    Apply,
}

impl PatchKind {
    /// From a Content-Type header.
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        Ok(match base {
            "application/merge-patch+json" => PatchKind::Merge,
            "application/json-patch+json" => PatchKind::Json,
            "application/strategic-merge-patch+json" => PatchKind::Strategic,
            "application/apply-patch+yaml" => PatchKind::Apply,
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
                ))
            }
        })
    }
}

/// Apply a merge/JSON/strategic patch to a copy of `old`.
pub fn apply_patch(old: &Value, kind: PatchKind, body: &[u8]) -> ApiResult<Value> {
    let mut doc = old.clone();
    match kind {
        PatchKind::Merge | PatchKind::Strategic => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if !p.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, &strip_directives(p));
        }
        PatchKind::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(&mut doc, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchKind::Apply => unreachable!("apply is handled by apply.rs"),
    }
    Ok(doc)
}

/// Drop strategic-merge directives (`$patch`, `$setElementOrder/...`, `$retainKeys`,
/// `$deleteFromPrimitiveList/...`) so they do not end up in the object.
fn strip_directives(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_directives(v)))
                .collect(),
        ),
        other => other,
    }
}
