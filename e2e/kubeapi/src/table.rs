//! `meta.k8s.io/v1` Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), what
//! `kubectl get` asks for. Custom resources use their `additionalPrinterColumns` (all of them,
//! with priorities; kubectl hides priority > 0 unless `-o wide`); built-ins get a short fixed table.

use serde_json::{json, Value};

use super::target::Target;

/// Evaluate a printer-column JSONPath (subset: `.a.b`, `['a']`, `[N]`, `[*]`,
/// `[?(@.field=="value")]`) and return every match.
pub fn jsonpath<'v>(obj: &'v Value, path: &str) -> Vec<&'v Value> {
    let mut cur = vec![obj];
    let p = path.trim().trim_start_matches('{').trim_end_matches('}');
    let p = p.strip_prefix('$').unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && chars[j] != '.' && chars[j] != '[' {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                if !name.is_empty() {
                    cur = cur.into_iter().filter_map(|v| v.get(&name)).collect();
                }
                i = j;
            }
            '[' => {
                let mut depth = 0;
                let mut j = i;
                while j < chars.len() {
                    match chars[j] {
                        '[' => depth += 1,
                        ']' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                let inner: String = chars[i + 1..j.min(chars.len())].iter().collect();
                cur = step_bracket(cur, inner.trim());
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    cur
}

fn step_bracket<'v>(cur: Vec<&'v Value>, inner: &str) -> Vec<&'v Value> {
    if inner == "*" {
        return cur
            .into_iter()
            .flat_map(|v| match v {
                Value::Array(a) => a.iter().collect::<Vec<_>>(),
                Value::Object(m) => m.values().collect(),
                _ => Vec::new(),
            })
            .collect();
    }
    if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        let filter = filter.trim().strip_prefix("@.").unwrap_or(filter);
        let (field, want) = match filter.split_once("==") {
            Some((f, w)) => (f.trim(), Some(w.trim().trim_matches(|c| c == '"' || c == '\''))),
            None => (filter.trim(), None),
        };
        return cur
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .filter(|it| {
                let mut x = *it;
                for seg in field.split('.') {
                    x = &x[seg];
                }
                match want {
                    Some(w) => match x {
                        Value::String(s) => s == w,
                        Value::Null => false,
                        other => serde_json::to_string(other).is_ok_and(|s| s == w),
                    },
                    None => !x.is_null(),
                }
            })
            .collect();
    }
    let key = inner.trim_matches(|c| c == '\'' || c == '"');
    if let Ok(n) = key.parse::<i64>() {
        return cur
            .into_iter()
            .filter_map(|v| {
                let a = v.as_array()?;
                let idx = if n < 0 { a.len() as i64 + n } else { n };
                a.get(usize::try_from(idx).ok()?)
            })
            .collect();
    }
    cur.into_iter().filter_map(|v| v.get(key)).collect()
}

/// Kubernetes' `duration.HumanDuration`, what the Age column shows.
pub fn human_duration(secs: i64) -> String {
    if secs < 0 {
        return "0s".into();
    }
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

fn age(ts: &Value) -> Value {
    let Some(s) = ts.as_str() else { return Value::Null };
    match s.parse::<jiff::Timestamp>() {
        Ok(t) => json!(human_duration(jiff::Timestamp::now().as_second() - t.as_second())),
        Err(_) => json!("<invalid>"),
    }
}

fn col(name: &str, ty: &str, format: &str, priority: i64, desc: &str) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": desc, "priority": priority})
}

/// Column definitions for a resource.
pub fn columns(t: &Target) -> Vec<Value> {
    let name_col = col("Name", "string", "name", 0, "Name must be unique within a namespace.");
    let age_col = col("Age", "string", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.");
    let custom = t.def.version(&t.version).map(|v| v.columns.clone()).unwrap_or_default();
    if t.def.crd.is_some() {
        if custom.is_empty() {
            return vec![name_col, age_col];
        }
        let mut out = vec![name_col];
        out.extend(
            custom.iter().map(|c| col(&c.name, &c.type_, &c.format, c.priority, &c.description)),
        );
        return out;
    }
    match (t.def.group.as_str(), t.def.plural.as_str()) {
        ("", "pods") => vec![
            name_col,
            col("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
            age_col,
            col("IP", "string", "", 1, "The IP address assigned to the pod."),
            col("Node", "string", "", 1, "The name of the node the pod is assigned to."),
        ],
        ("", "nodes") => vec![
            name_col,
            col("Status", "string", "", 0, "The status of the node."),
            age_col,
            col("Internal-IP", "string", "", 1, "The internal IP of the node."),
        ],
        ("", "namespaces") => {
            vec![name_col, col("Status", "string", "", 0, "The status of the namespace."), age_col]
        }
        ("coordination.k8s.io", "leases") => {
            vec![name_col, col("Holder", "string", "", 0, "The holder of the lease."), age_col]
        }
        _ => vec![name_col, age_col],
    }
}

fn cells(t: &Target, obj: &Value) -> Vec<Value> {
    let name = obj["metadata"]["name"].clone();
    let created = age(&obj["metadata"]["creationTimestamp"]);
    let custom = t.def.version(&t.version).map(|v| v.columns.clone()).unwrap_or_default();
    if t.def.crd.is_some() {
        if custom.is_empty() {
            return vec![name, created];
        }
        let mut out = vec![name];
        for c in &custom {
            let found = jsonpath(obj, &c.json_path);
            let cell = match found.first() {
                None => Value::Null,
                Some(_) if found.len() > 1 => {
                    json!(found.iter().map(|v| plain(v)).collect::<Vec<_>>().join(","))
                }
                Some(v) if c.type_ == "date" => age(v),
                Some(v @ (Value::Object(_) | Value::Array(_))) => json!(v.to_string()),
                Some(v) => (*v).clone(),
            };
            out.push(cell);
        }
        return out;
    }
    match (t.def.group.as_str(), t.def.plural.as_str()) {
        ("", "pods") => {
            let status = if obj["metadata"]["deletionTimestamp"].is_string() {
                json!("Terminating")
            } else {
                obj["status"]["phase"].clone()
            };
            vec![
                name,
                status,
                created,
                obj["status"]["podIP"].clone(),
                obj["spec"]["nodeName"].clone(),
            ]
        }
        ("", "nodes") => {
            let ready = jsonpath(obj, ".status.conditions[?(@.type==\"Ready\")].status");
            let mut s = if ready.first().and_then(|v| v.as_str()) == Some("True") {
                "Ready".to_string()
            } else {
                "NotReady".to_string()
            };
            if obj["spec"]["unschedulable"] == true {
                s.push_str(",SchedulingDisabled");
            }
            let ip = jsonpath(obj, ".status.addresses[?(@.type==\"InternalIP\")].address");
            vec![name, json!(s), created, ip.first().map(|v| (*v).clone()).unwrap_or(Value::Null)]
        }
        ("", "namespaces") => vec![name, obj["status"]["phase"].clone(), created],
        ("coordination.k8s.io", "leases") => {
            vec![name, obj["spec"]["holderIdentity"].clone(), created]
        }
        _ => vec![name, created],
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A Table of `objs`. `include_object`: `None`, `Metadata` (default) or `Object`.
pub fn table(
    t: &Target,
    objs: &[Value],
    include_object: &str,
    list_meta: Value,
    with_columns: bool,
) -> Value {
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"].clone(),
                }),
            };
            json!({"cells": cells(t, o), "object": object})
        })
        .collect();
    let mut tbl = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": rows,
    });
    if with_columns {
        tbl["columnDefinitions"] = json!(columns(t));
    } else {
        tbl["columnDefinitions"] = json!([]);
    }
    tbl
}
