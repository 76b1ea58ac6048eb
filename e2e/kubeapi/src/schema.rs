//! openAPIV3Schema handling for custom resources, in the order the apiserver applies it:
//! prune unknown fields (and non-nullable nulls), apply `default`s, validate the structural
//! schema (types, enum, bounds, lengths, pattern, required, list-type uniqueness), then run the
//! `x-kubernetes-validations` CEL rules (transition rules with `oldSelf` only on update, via the
//! `kube-cel` crate).
//!
//! Departures from the real server: `format` is checked for int32/int64 ranges only; `anyOf`/
//! `oneOf`/`allOf`/`not` are checked but never prune; the CEL cost budget is not enforced; metadata
//! of a custom resource is validated only for name format. Error strings are
//! `"<field path>: <reason>"`, like the apiserver's field errors.

use serde_json::{Map, Value};

/// What to do with fields the schema does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFields {
    /// Drop them silently (the server default for clients that send no `fieldValidation`).
    Prune,
    /// Report them as errors (`fieldValidation=Strict`, what kubectl sends).
    Reject,
}

/// Validate `obj` (a whole custom resource) against version `version` of `crd` (a whole
/// CustomResourceDefinition as JSON), as the apiserver would on create (`old` = None) or update
/// (`old` = the stored object): schema + CEL rules. Unknown fields are errors here (strict field
/// validation), so test fixtures with typos fail. Each error names the field path.
pub fn validate_object(
    crd: &Value,
    version: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), Vec<String>> {
    let schema = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == version))
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .ok_or_else(|| vec![format!("CRD has no version {version:?} with a schema")])?;
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
    let api_version = format!("{}/{}", crd["spec"]["group"].as_str().unwrap_or_default(), version);
    let mut obj = obj.clone();
    check_custom_resource(&schema, &api_version, kind, &mut obj, old, UnknownFields::Reject)
}

/// The server's admission path for one custom resource: prune/default `obj` in place, then
/// validate it. `old` enables CEL transition rules.
pub fn check_custom_resource(
    schema: &Value,
    api_version: &str,
    kind: &str,
    obj: &mut Value,
    old: Option<&Value>,
    unknown: UnknownFields,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if obj["apiVersion"] != api_version {
        errors.push(format!(
            "apiVersion: Invalid value: {}: must be {api_version}",
            obj["apiVersion"]
        ));
    }
    if obj["kind"] != kind {
        errors.push(format!("kind: Invalid value: {}: must be {kind}", obj["kind"]));
    }
    let mut unknown_paths = Vec::new();
    prune_and_default(schema, obj, "", true, &mut unknown_paths);
    if unknown == UnknownFields::Reject {
        errors.extend(unknown_paths.into_iter().map(|p| format!("{p}: unknown field \"{p}\"")));
    }
    validate(schema, obj, "", true, &mut errors);
    if errors.is_empty() {
        let root = kube_cel::RootContext {
            api_version: api_version.to_string(),
            api_group: api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("").to_string(),
            kind: kind.to_string(),
        };
        let old = old.cloned().map(|mut o| {
            prune_and_default(schema, &mut o, "", true, &mut Vec::new());
            o
        });
        let res =
            VALIDATOR.with(|v| v.validate_with_context(schema, obj, old.as_ref(), Some(&root)));
        if let Err(errs) = res {
            for e in errs.iter() {
                let path = if e.field_path.is_empty() { "<root>" } else { &e.field_path };
                errors.push(format!("{path}: Invalid value: \"object\": {}", e.message));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

thread_local! {
    // Building a Validator registers every Kubernetes CEL function; do it once per thread.
    static VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn preserves(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == true
}

/// Remove fields the schema does not know (recording their paths) and nulls of non-nullable
/// fields, then fill in `default`s. `root` objects keep apiVersion/kind/metadata implicitly.
pub fn prune_and_default(
    schema: &Value,
    v: &mut Value,
    path: &str,
    root: bool,
    unknown: &mut Vec<String>,
) {
    match v {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&k)).or(if additional.is_object() {
                    Some(additional)
                } else {
                    None
                });
                match sub {
                    Some(s) => {
                        if map[&k].is_null() && s["nullable"] != true {
                            map.remove(&k);
                            continue;
                        }
                        prune_and_default(
                            s,
                            map.get_mut(&k).unwrap(),
                            &child(path, &k),
                            false,
                            unknown,
                        );
                    }
                    None if preserves(schema) || additional == &Value::Bool(true) => {}
                    None => {
                        map.remove(&k);
                        unknown.push(child(path, &k));
                    }
                }
            }
            if let Some(props) = props {
                for (k, s) in props {
                    if !map.contains_key(k) {
                        if let Some(d) = s.get("default") {
                            let mut d = d.clone();
                            prune_and_default(s, &mut d, &child(path, k), false, &mut Vec::new());
                            map.insert(k.clone(), d);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    prune_and_default(s, it, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

/// Structural validation of `v` at `path`.
pub fn validate(schema: &Value, v: &Value, path: &str, root: bool, errs: &mut Vec<String>) {
    let p = if path.is_empty() { "<root>" } else { path };
    if v.is_null() {
        if schema["nullable"] != true {
            errs.push(format!(
                "{p}: Invalid value: \"null\": {p} in body must be of type {}",
                schema["type"].as_str().unwrap_or("object")
            ));
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    if let Some(t) = schema["type"].as_str() {
        let actual = type_name(v);
        let ok = actual == t
            || (t == "number" && actual == "integer")
            || (int_or_string && (actual == "integer" || actual == "string"));
        if !ok {
            errs.push(format!(
                "{p}: Invalid value: {}: {p} in body must be of type {t}: \"{actual}\"",
                show(v)
            ));
            return;
        }
    }
    if let Some(en) = schema["enum"].as_array() {
        if !en.contains(v) {
            let list: Vec<String> = en.iter().map(|e| e.to_string()).collect();
            errs.push(format!(
                "{p}: Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ));
        }
    }
    match v {
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(0.0), v, p, errs),
        Value::String(s) => check_string(schema, s, p, errs),
        Value::Array(items) => check_array(schema, items, path, p, errs),
        Value::Object(map) => check_object(schema, map, path, p, root, errs),
        _ => {}
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(subs) = schema[key].as_array() {
            let results: Vec<Vec<String>> = subs
                .iter()
                .map(|s| {
                    let mut e = Vec::new();
                    validate(s, v, path, root, &mut e);
                    e
                })
                .collect();
            let passing = results.iter().filter(|e| e.is_empty()).count();
            match key {
                "allOf" => errs.extend(results.into_iter().flatten()),
                "anyOf" if passing == 0 => errs.push(format!(
                    "{p}: Invalid value: {}: must validate at least one schema (anyOf)",
                    show(v)
                )),
                "oneOf" if passing != 1 => errs.push(format!(
                    "{p}: Invalid value: {}: must validate one and only one schema (oneOf)",
                    show(v)
                )),
                _ => {}
            }
        }
    }
    if let Some(not) = schema.get("not") {
        let mut e = Vec::new();
        validate(not, v, path, root, &mut e);
        if e.is_empty() {
            errs.push(format!(
                "{p}: Invalid value: {}: must not validate the schema (not)",
                show(v)
            ));
        }
    }
}

fn check_number(schema: &Value, x: f64, v: &Value, p: &str, errs: &mut Vec<String>) {
    if let Some(m) = schema["minimum"].as_f64() {
        let excl = schema["exclusiveMinimum"] == true;
        if x < m || (excl && x == m) {
            let op = if excl { "greater than" } else { "greater than or equal to" };
            errs.push(format!(
                "{p}: Invalid value: {v}: {p} in body should be {op} {}",
                schema["minimum"]
            ));
        }
    }
    if let Some(m) = schema["maximum"].as_f64() {
        let excl = schema["exclusiveMaximum"] == true;
        if x > m || (excl && x == m) {
            let op = if excl { "less than" } else { "less than or equal to" };
            errs.push(format!(
                "{p}: Invalid value: {v}: {p} in body should be {op} {}",
                schema["maximum"]
            ));
        }
    }
    if let Some(m) = schema["multipleOf"].as_f64() {
        if m != 0.0 && (x / m).fract() != 0.0 {
            errs.push(format!("{p}: Invalid value: {v}: {p} in body should be a multiple of {m}"));
        }
    }
    let (lo, hi) = match schema["format"].as_str() {
        Some("int32") => (i32::MIN as f64, i32::MAX as f64),
        Some("int64") => (i64::MIN as f64, i64::MAX as f64),
        _ => (f64::MIN, f64::MAX),
    };
    if x < lo || x > hi {
        errs.push(format!(
            "{p}: Invalid value: {v}: {p} in body must be of format {}",
            schema["format"].as_str().unwrap_or_default()
        ));
    }
}

fn check_string(schema: &Value, s: &str, p: &str, errs: &mut Vec<String>) {
    let len = s.chars().count() as u64;
    if let Some(m) = schema["minLength"].as_u64() {
        if len < m {
            errs.push(format!(
                "{p}: Invalid value: \"{s}\": {p} in body should be at least {m} chars long"
            ));
        }
    }
    if let Some(m) = schema["maxLength"].as_u64() {
        if len > m {
            errs.push(format!("{p}: Too long: may not be more than {m} bytes"));
        }
    }
    if let Some(pat) = schema["pattern"].as_str() {
        match regex::Regex::new(pat) {
            Ok(re) if !re.is_match(s) => {
                errs.push(format!("{p}: Invalid value: \"{s}\": {p} in body should match '{pat}'"))
            }
            Ok(_) => {}
            Err(e) => errs.push(format!("{p}: Invalid value: bad pattern {pat:?}: {e}")),
        }
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, p: &str, errs: &mut Vec<String>) {
    let n = items.len() as u64;
    if let Some(m) = schema["minItems"].as_u64() {
        if n < m {
            errs.push(format!(
                "{p}: Invalid value: {n}: {p} in body should have at least {m} items"
            ));
        }
    }
    if let Some(m) = schema["maxItems"].as_u64() {
        if n > m {
            errs.push(format!("{p}: Too many: {n}: must have at most {m} items"));
        }
    }
    if let Some(s) = schema.get("items") {
        for (i, it) in items.iter().enumerate() {
            validate(s, it, &format!("{path}[{i}]"), false, errs);
        }
    }
    let list_type = schema["x-kubernetes-list-type"].as_str().unwrap_or("atomic");
    let unique = schema["uniqueItems"] == true || list_type == "set";
    for (i, it) in items.iter().enumerate() {
        let dup = if list_type == "map" {
            let keys = map_keys(schema);
            let key_of = |x: &Value| keys.iter().map(|k| x[k.as_str()].clone()).collect::<Vec<_>>();
            items[..i].iter().any(|o| key_of(o) == key_of(it))
        } else {
            unique && items[..i].contains(it)
        };
        if dup {
            errs.push(format!("{p}[{i}]: Duplicate value: {}", show(it)));
        }
    }
}

/// `x-kubernetes-list-map-keys` of a list schema.
pub fn map_keys(schema: &Value) -> Vec<String> {
    schema["x-kubernetes-list-map-keys"]
        .as_array()
        .map(|a| a.iter().filter_map(|k| k.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn check_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    p: &str,
    root: bool,
    errs: &mut Vec<String>,
) {
    if let Some(req) = schema["required"].as_array() {
        for r in req.iter().filter_map(|r| r.as_str()) {
            if !map.contains_key(r) {
                errs.push(format!("{}: Required value", child(path, r)));
            }
        }
    }
    let n = map.len() as u64;
    if let Some(m) = schema["minProperties"].as_u64() {
        if n < m {
            errs.push(format!(
                "{p}: Invalid value: {n}: {p} in body should have at least {m} properties"
            ));
        }
    }
    if let Some(m) = schema["maxProperties"].as_u64() {
        if n > m {
            errs.push(format!("{p}: Too many: {n}: must have at most {m} items"));
        }
    }
    let props = schema["properties"].as_object();
    for (k, v) in map {
        if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(s) = props.and_then(|pr| pr.get(k)) {
            validate(s, v, &child(path, k), false, errs);
        } else if schema["additionalProperties"].is_object() {
            validate(&schema["additionalProperties"], v, &child(path, k), false, errs);
        }
    }
}
