//! Server-side apply (`PATCH` with `application/apply-patch+yaml`).
//!
//! Each manager's applied fields are tracked as a field set in `metadata.managedFields`
//! (operation `Apply`, per subresource). Applying: a field another manager owns and whose value
//! would change is a conflict (409, one cause per field) unless `force=true`, which takes it over;
//! fields the manager owned before and no longer sends are removed unless another manager owns
//! them; everything sent is merged into the live object (objects recursively, map lists by key).
//!
//! Simplifications: no type conversion between versions; ownership of intermediate objects is not
//! tracked (see `fields.rs`); a list without `x-kubernetes-list-type` is atomic.

use serde_json::{json, Value};

use super::admission::Caller;
use super::error::{ApiError, ApiResult, Cause};
use super::fields::{self, ManagedEntry, Schema};
use super::ops::{self, Own};
use super::target::Target;
use super::{now, State};

/// Parse an apply body (YAML or JSON).
pub fn parse_body(body: &[u8]) -> ApiResult<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("apply body is not UTF-8"))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// Keep only what this endpoint may change: `.status` for `/status`, everything but `.status` on
/// the main endpoint when status is a subresource.
fn scope(t: &Target, sub: &str, applied: &Value) -> Value {
    let mut a = applied.clone();
    if let Some(m) = a.as_object_mut() {
        if sub == "status" {
            m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                md.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "resourceVersion"));
            }
        } else if t.has_status() {
            m.remove("status");
        }
    }
    a
}

/// Server-side apply of `applied` by `manager` to the object at `t` (created when missing).
// The arguments are the request's parameters one for one; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    st: &mut State,
    t: &Target,
    name: &str,
    applied: Value,
    manager: &str,
    force: bool,
    sub: &str,
    strict: bool,
    caller: Option<&Caller>,
) -> ApiResult<Value> {
    if manager.is_empty() {
        return Err(ApiError::bad_request(
            "PATCH, application/apply-patch+yaml requests require fieldManager to be set",
        ));
    }
    if !applied.is_object() {
        return Err(ApiError::bad_request("apply body must be an object"));
    }
    if applied["apiVersion"] != t.api_version().as_str() || applied["kind"] != t.def.kind.as_str() {
        return Err(ApiError::bad_request(format!(
            "apply body apiVersion/kind ({}, {}) do not match the request ({}, {})",
            applied["apiVersion"],
            applied["kind"],
            t.api_version(),
            t.def.kind
        )));
    }
    if applied["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let schema = t.fields_schema();
    let a = scope(t, sub, &applied);
    let mut owned = fields::leaves(&a, schema);
    owned.retain(|p| (sub == "status") == (p.first().map(String::as_str) == Some("f:status")));
    let key = t.key(name);
    let ts = now();
    let entry = |fields| ManagedEntry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: t.api_version(),
        time: ts.clone(),
        subresource: sub.into(),
        fields,
    };
    let Some(live) = st.store.get(&key).cloned() else {
        if sub == "status" {
            return Err(ApiError::not_found(&t.def.group_resource(), name));
        }
        let mut obj = a;
        obj["metadata"]["name"] = json!(name);
        fields::write_managed(&mut obj, &[entry(owned)]);
        return ops::create(st, t, obj, Own::Done, strict, caller);
    };
    if let Some(rv) = a["metadata"]["resourceVersion"].as_str() {
        if live["metadata"]["resourceVersion"] != rv {
            return Err(ApiError::conflict(&t.def.group_resource(), name, "the object has been modified; please apply your changes to the latest version and try again"));
        }
    }
    let mut entries = fields::read_managed(&live);
    let mine_idx = entries
        .iter()
        .position(|e| e.manager == manager && e.operation == "Apply" && e.subresource == sub);
    let previously = mine_idx.map(|i| entries[i].fields.clone()).unwrap_or_default();
    // Conflicts: fields other managers own that this apply would change.
    let mut conflicts = Vec::new();
    for p in &owned {
        if fields::get_at(&a, p) == fields::get_at(&live, p) {
            continue;
        }
        for (i, e) in entries.iter_mut().enumerate() {
            if Some(i) == mine_idx || !e.fields.contains(p) {
                continue;
            }
            if force {
                e.fields.remove(p);
            } else {
                conflicts.push((e.manager.clone(), e.api_version.clone(), fields::display(p)));
            }
        }
    }
    if !conflicts.is_empty() {
        let causes: Vec<Cause> = conflicts
            .iter()
            .map(|(m, v, f)| Cause {
                reason: "FieldManagerConflict".into(),
                message: format!("conflict with \"{m}\" using {v}"),
                field: f.clone(),
            })
            .collect();
        let detail: Vec<String> = conflicts
            .iter()
            .map(|(m, v, f)| format!("- conflict with \"{m}\" using {v}: {f}"))
            .collect();
        let mut e = ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                detail.join("\n")
            ),
        );
        e.details = Some(Box::new((name.to_string(), t.def.group.clone(), t.def.plural.clone())));
        e.causes = causes;
        return Err(e);
    }
    let mut new = live.clone();
    let mut body = a.clone();
    if let Some(md) = body["metadata"].as_object_mut() {
        md.retain(|k, _| {
            matches!(k.as_str(), "labels" | "annotations" | "finalizers" | "ownerReferences")
        });
    }
    merge(&mut new, &body, schema);
    // Fields this manager dropped from its configuration, and nobody else owns, go away.
    let mut removed: Vec<_> = previously.difference(&owned).cloned().collect();
    // Shortest first: a dropped map-list item goes as a whole before its own fields would be
    // removed one by one (which would first strip the key fields it is found by).
    removed.sort_by_key(|p| p.len());
    for p in removed {
        let shared = entries
            .iter()
            .enumerate()
            .any(|(i, e)| Some(i) != mine_idx && e.fields.iter().any(|q| q.starts_with(&p)));
        if !shared {
            fields::remove_at(&mut new, &p);
            // An object field left empty by the removal goes too when nobody else owns anything
            // under it (the real server tracks the parent's ownership; without this an emptied
            // object with required fields stays as `{}` and fails validation).
            for n in (1..p.len()).rev() {
                let parent = &p[..n];
                let empty = parent.last().is_some_and(|e| e.starts_with("f:"))
                    && fields::get_at(&new, parent)
                        .is_some_and(|v| v.as_object().is_some_and(|m| m.is_empty()));
                let owned_elsewhere = entries.iter().enumerate().any(|(i, e)| {
                    Some(i) != mine_idx && e.fields.iter().any(|q| q.starts_with(parent))
                }) || owned.iter().any(|q| q.starts_with(parent));
                if !empty || owned_elsewhere {
                    break;
                }
                fields::remove_at(&mut new, parent);
            }
        }
    }
    match mine_idx {
        Some(i) => entries[i] = entry(owned),
        None => entries.push(entry(owned)),
    }
    for e in &mut entries {
        e.fields.retain(|p| fields::get_at(&new, p).is_some());
    }
    fields::write_managed(&mut new, &entries);
    ops::update(st, t, &live, new, sub, Own::Done, strict, caller)
}

fn merge(live: &mut Value, applied: &Value, schema: Schema) {
    fields::merge_applied(live, applied, schema, "");
}
