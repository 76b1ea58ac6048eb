//! Field ownership for server-side apply and `metadata.managedFields`.
//!
//! A field set is a set of paths; a path is a list of fieldsV1 elements: `f:<name>` for an object
//! field, `k:<json>` for an item of a list of type `map` (keyed by `x-kubernetes-list-map-keys`),
//! `v:<json>` for an item of a list of type `set`. Other lists are atomic: one leaf.
//!
//! Simplification: only leaves and map-list items are tracked (the real fieldsV1 also records
//! ownership of intermediate objects with `.`), so an object emptied by an apply stays as `{}`.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

/// One path element (`f:name`, `k:{"type":"Ready"}`, `v:"a"`).
pub type Path = Vec<String>;
/// A set of owned paths.
pub type FieldSet = BTreeSet<Path>;

/// Where the schema for a value comes from while walking an object.
#[derive(Clone, Copy)]
pub enum Schema<'a> {
    /// A CRD's structural schema node.
    Crd(&'a Value),
    /// A built-in kind: list semantics from a small table keyed by field name.
    Builtin,
    /// Below `x-kubernetes-preserve-unknown-fields` or an unknown field.
    None,
}

impl<'a> Schema<'a> {
    fn field(self, name: &str) -> Schema<'a> {
        match self {
            // ObjectMeta has fixed semantics (finalizers is a set, ownerReferences a map by uid)
            // whatever a CRD schema says about metadata.
            Schema::Crd(_) if name == "metadata" => Schema::Builtin,
            Schema::Crd(s) => s["properties"]
                .get(name)
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
                .map(Schema::Crd)
                .unwrap_or(Schema::None),
            other => other,
        }
    }
    fn items(self) -> Schema<'a> {
        match self {
            Schema::Crd(s) => s.get("items").map(Schema::Crd).unwrap_or(Schema::None),
            other => other,
        }
    }
    /// List semantics for an array in field `name`: Some(keys) for map lists, Some([]) for sets,
    /// None for atomic.
    fn list_keys(self, name: &str) -> Option<Vec<String>> {
        match self {
            Schema::Crd(s) => match s["x-kubernetes-list-type"].as_str() {
                Some("map") => Some(crate::schema::map_keys(s)),
                Some("set") => Some(Vec::new()),
                _ => None,
            },
            // The built-in lists enipool and the e2e platform write with server-side apply.
            Schema::Builtin => match name {
                "containers" | "initContainers" | "volumes" | "env" | "ownerReferences" => {
                    Some(vec![if name == "ownerReferences" { "uid" } else { "name" }.into()])
                }
                "conditions" => Some(vec!["type".into()]),
                "finalizers" => Some(Vec::new()),
                _ => None,
            },
            Schema::None => None,
        }
    }
}

fn item_key(item: &Value, keys: &[String]) -> String {
    if keys.is_empty() {
        return format!("v:{item}");
    }
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

/// Metadata fields never tracked (identity and server-managed).
fn untracked(path: &[String]) -> bool {
    match path {
        [a] => a == "f:apiVersion" || a == "f:kind",
        [m, f] if m == "f:metadata" => matches!(
            f.as_str(),
            "f:name"
                | "f:namespace"
                | "f:uid"
                | "f:resourceVersion"
                | "f:generation"
                | "f:creationTimestamp"
                | "f:managedFields"
                | "f:deletionTimestamp"
                | "f:deletionGracePeriodSeconds"
                | "f:selfLink"
                | "f:generateName"
        ),
        _ => false,
    }
}

/// The paths `obj` sets: leaves, atomic lists, and map/set list items (plus their fields).
pub fn leaves(obj: &Value, schema: Schema) -> FieldSet {
    let mut out = FieldSet::new();
    walk(obj, schema, &mut Vec::new(), "", &mut out);
    out.retain(|p| !untracked(p));
    out
}

fn walk(v: &Value, schema: Schema, path: &mut Path, name: &str, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(format!("f:{k}"));
                walk(c, schema.field(k), path, k, out);
                path.pop();
            }
        }
        Value::Array(items) => match schema.list_keys(name) {
            Some(keys) => {
                for it in items {
                    path.push(item_key(it, &keys));
                    out.insert(path.clone());
                    if !keys.is_empty() {
                        if let Value::Object(m) = it {
                            let isch = schema.items();
                            for (k, c) in m {
                                path.push(format!("f:{k}"));
                                walk(c, isch.field(k), path, k, out);
                                path.pop();
                            }
                        }
                    }
                    path.pop();
                }
                if items.is_empty() {
                    out.insert(path.clone());
                }
            }
            None => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

fn find_item(items: &[Value], elem: &str) -> Option<usize> {
    if let Some(k) = elem.strip_prefix("k:") {
        let key: Value = serde_json::from_str(k).ok()?;
        let km = key.as_object()?;
        items.iter().position(|it| km.iter().all(|(f, v)| it.get(f) == Some(v)))
    } else if let Some(v) = elem.strip_prefix("v:") {
        let val: Value = serde_json::from_str(v).ok()?;
        items.iter().position(|it| *it == val)
    } else {
        None
    }
}

/// The value at `path`, if present.
pub fn get_at<'v>(obj: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = obj;
    for e in path {
        cur = if let Some(f) = e.strip_prefix("f:") {
            cur.as_object()?.get(f)?
        } else {
            let items = cur.as_array()?;
            &items[find_item(items, e)?]
        };
    }
    Some(cur)
}

/// Remove the value at `path` (object field or list item); no-op when absent.
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else { return };
    let mut cur = obj;
    for e in parent {
        cur = if let Some(f) = e.strip_prefix("f:") {
            match cur.as_object_mut().and_then(|m| m.get_mut(f)) {
                Some(c) => c,
                None => return,
            }
        } else {
            let Some(items) = cur.as_array_mut() else { return };
            let Some(i) = find_item(items, e) else { return };
            &mut items[i]
        };
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(items) = cur.as_array_mut() {
        if let Some(i) = find_item(items, last) {
            items.remove(i);
        }
    }
}

/// Merge an applied configuration into the live object: objects recursively, map lists by key,
/// set lists by value, everything else replaced.
pub fn merge_applied(live: &mut Value, applied: &Value, schema: Schema, name: &str) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                let sub = schema.field(k);
                match l.get_mut(k) {
                    Some(lv) => merge_applied(lv, av, sub, k),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) if schema.list_keys(name).is_some() => {
            let keys = schema.list_keys(name).unwrap_or_default();
            for ai in a {
                match find_item(l, &item_key(ai, &keys)) {
                    Some(i) if !keys.is_empty() => merge_applied(&mut l[i], ai, schema.items(), ""),
                    Some(_) => {}
                    None => l.push(ai.clone()),
                }
            }
        }
        (l, a) => *l = a.clone(),
    }
}

/// Human form of a path for conflict messages: `.spec.nodeName`, `.status.conditions[type="Ready"]`.
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            let kv: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            let parts: Vec<String> = kv
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// Encode a field set as a fieldsV1 tree.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = json!({});
    for p in set {
        let mut cur = &mut root;
        for e in p {
            cur =
                cur.as_object_mut().expect("object").entry(e.clone()).or_insert_with(|| json!({}));
        }
    }
    fix_dots(&mut root, set, &mut Vec::new());
    root
}

fn fix_dots(v: &mut Value, set: &FieldSet, path: &mut Path) {
    if let Value::Object(m) = v {
        let own = !path.is_empty() && set.contains(path);
        let keys: Vec<String> = m.keys().filter(|k| *k != ".").cloned().collect();
        if own && !keys.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for k in keys {
            path.push(k.clone());
            fix_dots(m.get_mut(&k).expect("key"), set, path);
            path.pop();
        }
    }
}

/// Decode a fieldsV1 tree.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn rec(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, c) in m {
            if k != "." {
                path.push(k.clone());
                rec(c, path, out);
                path.pop();
            }
        }
    }
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone)]
pub struct ManagedEntry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the manager used.
    pub api_version: String,
    /// When it last changed (RFC 3339).
    pub time: String,
    /// "" or "status".
    pub subresource: String,
    pub fields: FieldSet,
}

/// Read `metadata.managedFields`.
pub fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| ManagedEntry {
                    manager: e["manager"].as_str().unwrap_or_default().into(),
                    operation: e["operation"].as_str().unwrap_or("Update").into(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                    time: e["time"].as_str().unwrap_or_default().into(),
                    subresource: e["subresource"].as_str().unwrap_or_default().into(),
                    fields: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Write `metadata.managedFields` (entries with no fields are dropped, as the server does).
pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let arr: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(m) = obj["metadata"].as_object_mut() {
        if arr.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

/// Ownership bookkeeping for a non-apply write by `manager`: it takes the fields it changed
/// (removing them from everyone else, no conflicts, like the real server), and every entry drops
/// paths that no longer exist.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    schema: Schema,
    manager: &str,
    subresource: &str,
    api_version: &str,
    now: &str,
) {
    let mut entries = read_managed(old.unwrap_or(&Value::Null));
    let changed: FieldSet = leaves(new, schema)
        .into_iter()
        .filter(|p| old.and_then(|o| get_at(o, p)) != get_at(new, p))
        .filter(|p| match subresource {
            "status" => p.first().map(String::as_str) == Some("f:status"),
            _ => true,
        })
        .collect();
    if !changed.is_empty() {
        for e in &mut entries {
            e.fields.retain(|p| !changed.contains(p));
        }
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now.into();
                e.api_version = api_version.into();
            }
            None => entries.push(ManagedEntry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                time: now.into(),
                subresource: subresource.into(),
                fields: changed,
            }),
        }
    }
    for e in &mut entries {
        e.fields.retain(|p| get_at(new, p).is_some());
    }
    write_managed(new, &entries);
}
