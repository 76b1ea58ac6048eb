//! The write pipeline shared by create, update, patch, apply and delete: metadata rules,
//! status-subresource semantics, validation, `metadata.generation`, managedFields, admission
//! (the implied `create` authorization of an apply that creates, then ValidatingAdmissionPolicies,
//! on the object as it would be stored), no-op detection, finalizers and the CRD side effects.
//! Everything runs under the server's one lock.

use serde_json::{json, Value};

use super::admission::{admit_request, AdmissionRequest, Caller, Gvk, Gvr, Operation};
use super::error::{ApiError, ApiResult};
use super::fields;
use super::schema::{self, UnknownFields};
use super::store::ObjKey;
use super::target::Target;
use super::{gc, now, State};

/// Who owns the fields a write changes.
pub enum Own<'a> {
    /// A non-apply write by this field manager (ownership of changed fields moves to it).
    Update(&'a str),
    /// Server-side apply already computed `metadata.managedFields`.
    Done,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn random_suffix() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    u.chars().filter(|c| !"aeiou".contains(*c)).take(5).collect()
}

/// Validate a custom resource (prune, default, schema, CEL) or a CRD.
fn admit(
    st: &State,
    t: &Target,
    obj: &mut Value,
    old: Option<&Value>,
    strict: bool,
) -> ApiResult<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    if let Some(s) = t.schema() {
        let unknown = if strict { UnknownFields::Reject } else { UnknownFields::Prune };
        schema::check_custom_resource(s, &t.api_version(), &t.def.kind, obj, old, unknown)
            .map_err(|e| ApiError::invalid(&t.def.kind, &name, &e))?;
    }
    if t.def.group == "apiextensions.k8s.io" {
        let def = super::resources::def_from_crd(obj)
            .map_err(|e| ApiError::invalid("CustomResourceDefinition", &name, &[e]))?;
        if let Some(other) = st.registry.all().iter().find(|d| {
            d.group == def.group && d.plural == def.plural && d.crd.as_deref() != Some(&name)
        }) {
            return Err(ApiError::invalid(
                "CustomResourceDefinition",
                &name,
                &[format!("spec.names.plural: Invalid value: {} is already served", other.plural)],
            ));
        }
    }
    Ok(())
}

/// After a CRD is stored: (re)serve its resource and report it Established.
fn crd_side_effects(st: &mut State, crd: &mut Value) {
    if st.registry.register_crd(crd).is_ok() {
        let ts = now();
        crd["status"] = json!({
            "acceptedNames": crd["spec"]["names"].clone(),
            "storedVersions": crd["spec"]["versions"].as_array().map(|vs| vs.iter()
                .filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>()),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": ts},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": ts},
            ],
        });
    }
}

/// Create `obj` at `t` (namespace/name rules, server-set metadata, validation, ownership).
pub fn create(
    st: &mut State,
    t: &Target,
    mut obj: Value,
    own: Own,
    strict: bool,
    caller: Option<&Caller>,
) -> ApiResult<Value> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body of the request was not a JSON object"));
    }
    if obj["kind"] != t.def.kind.as_str() || obj["apiVersion"] != t.api_version().as_str() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({}) or kind {} is not {}",
            obj["apiVersion"], t.api_version(), obj["kind"], t.def.kind
        )));
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let md = &mut obj["metadata"];
    if md["name"].as_str().is_none_or(str::is_empty) {
        match md["generateName"].as_str() {
            Some(g) => md["name"] = json!(format!("{g}{}", random_suffix())),
            None => {
                return Err(ApiError::invalid(
                    &t.def.kind,
                    "",
                    &["metadata.name: Required value: name or generateName is required".into()],
                ))
            }
        }
    }
    let name = md["name"].as_str().unwrap_or_default().to_string();
    if !valid_name(&name) {
        return Err(ApiError::invalid(&t.def.kind, &name, &[format!("metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'")]));
    }
    if md.get("resourceVersion").is_some_and(|v| !v.is_null() && v != "") {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if t.def.namespaced {
        let ns = t.namespace.clone().unwrap_or_default();
        if let Some(bns) = md["namespace"].as_str() {
            if !bns.is_empty() && bns != ns {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
        }
        md["namespace"] = json!(ns);
        let nskey = ObjKey {
            group: "".into(),
            resource: "namespaces".into(),
            namespace: "".into(),
            name: ns.clone(),
        };
        if st.store.get(&nskey).is_none() {
            return Err(ApiError::not_found("namespaces", &ns));
        }
    } else if let Some(m) = md.as_object_mut() {
        m.remove("namespace");
    }
    let key = t.key(&name);
    if st.store.get(&key).is_some() {
        return Err(ApiError::already_exists(&t.def.group_resource(), &name));
    }
    let ts = now();
    let m = md.as_object_mut().expect("metadata object");
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(ts));
    m.insert("generation".into(), json!(1));
    for k in ["deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        m.remove(k);
    }
    // Status on create: dropped for kinds with a status subresource, except the built-ins whose
    // real strategies keep or initialise it (Nodes keep theirs; Pods start Pending).
    match (t.def.group.as_str(), t.def.plural.as_str()) {
        ("", "pods") => obj["status"] = json!({"phase": "Pending"}),
        ("", "namespaces") => obj["status"] = json!({"phase": "Active"}),
        ("", "nodes") => {}
        _ if t.has_status() => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        _ => {}
    }
    admit(st, t, &mut obj, None, strict)?;
    if let Own::Update(manager) = own {
        fields::record_update(
            None,
            &mut obj,
            t.fields_schema(),
            manager,
            "",
            &t.api_version(),
            &ts,
        );
    }
    if let Some(c) = caller.filter(|c| c.attrs.verb == "patch") {
        // An apply that creates: authorized again as `create` (after the object is built, before
        // admission, as patch.go's withAuthorization does).
        let implied = c.attrs.implied_create();
        c.audit.record(implied.clone());
        if c.rbac {
            super::rbac::check_implied_create(&st.store, c.user, &implied)?;
        }
    }
    admit_policies(st, caller, t, Operation::Create, Some(&obj), None)?;
    if t.def.group == "apiextensions.k8s.io" {
        crd_side_effects(st, &mut obj);
    }
    let rv = st.store.next_rv();
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.store.put(key, obj.clone(), rv);
    Ok(t.present(obj))
}

fn spec_part(obj: &Value, status_sub: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        if status_sub {
            m.remove("status");
        }
    }
    o
}

/// Normalised form for no-op detection: resourceVersion and managedFields times ignored.
fn normalised(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    o
}

/// Replace the stored `old` with `new` (update, patch, apply). `sub` is "" or "status".
// The pipeline's inputs one for one; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn update(
    st: &mut State,
    t: &Target,
    old: &Value,
    mut new: Value,
    sub: &str,
    own: Own,
    strict: bool,
    caller: Option<&Caller>,
) -> ApiResult<Value> {
    let name = old["metadata"]["name"].as_str().unwrap_or_default().to_string();
    if !new.is_object() {
        return Err(ApiError::bad_request("the body of the request was not a JSON object"));
    }
    if new["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            new["metadata"]["name"]
        )));
    }
    let status_sub = t.has_status();
    if sub == "status" {
        // Only .status changes through /status.
        let status = new.get("status").cloned();
        let mf = new["metadata"].get("managedFields").cloned();
        new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        if let (Own::Done, Some(mf)) = (&own, mf) {
            new["metadata"]["managedFields"] = mf;
        }
    } else if status_sub {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    // Server-owned metadata always comes from the stored object.
    new["kind"] = old["kind"].clone();
    new["apiVersion"] = old["apiVersion"].clone();
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if new["metadata"]["deletionTimestamp"].is_string() {
        let old_f = old["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
        let new_f = new["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
        if new_f.iter().any(|f| !old_f.contains(f)) {
            return Err(ApiError::invalid(&t.def.kind, &name, &["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted".into()]));
        }
    }
    admit(st, t, &mut new, Some(old), strict)?;
    // generation: bumps on any change outside metadata (and outside status when status is a
    // subresource).
    if spec_part(old, status_sub) != spec_part(&new, status_sub) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        new["metadata"]["generation"] = json!(g);
    }
    let ts = now();
    if let Own::Update(manager) = own {
        fields::record_update(
            Some(old),
            &mut new,
            t.fields_schema(),
            manager,
            sub,
            &t.api_version(),
            &ts,
        );
    }
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    admit_policies(st, caller, t, Operation::Update, Some(&new), Some(old))?;
    if normalised(&new) == normalised(old) {
        return Ok(t.present(old.clone()));
    }
    let key = t.key(&name);
    if new["metadata"]["deletionTimestamp"].is_string()
        && new["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty())
    {
        // The last finalizer is gone: the object goes away now.
        let rv = st.store.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.store.put(key.clone(), new.clone(), rv);
        finish_delete(st, t, &key, gc::Propagation::Background);
        return Ok(t.present(new));
    }
    if t.def.group == "apiextensions.k8s.io" {
        crd_side_effects(st, &mut new);
    }
    let rv = st.store.next_rv();
    new["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.store.put(key, new.clone(), rv);
    Ok(t.present(new))
}

/// Delete one object: with finalizers it only gets a deletionTimestamp; otherwise it is removed
/// and its dependents are garbage collected.
pub fn delete(
    st: &mut State,
    t: &Target,
    key: &ObjKey,
    propagation: gc::Propagation,
    precond_uid: Option<&str>,
    precond_rv: Option<&str>,
    caller: Option<&Caller>,
) -> ApiResult<Value> {
    let Some(obj) = st.store.get(key).cloned() else {
        return Err(ApiError::not_found(&t.def.group_resource(), &key.name));
    };
    if precond_uid.is_some_and(|u| obj["metadata"]["uid"] != u) {
        return Err(ApiError::conflict(&t.def.group_resource(), &key.name, "Precondition failed: UID in precondition does not match the UID in record. The object might have been deleted and then recreated"));
    }
    if precond_rv.is_some_and(|r| obj["metadata"]["resourceVersion"] != r) {
        return Err(ApiError::conflict(&t.def.group_resource(), &key.name, "Precondition failed: ResourceVersion in precondition does not match ResourceVersion in record. The object might have been modified"));
    }
    admit_policies(st, caller, t, Operation::Delete, None, Some(&obj))?;
    let has_finalizers = obj["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if obj["metadata"]["deletionTimestamp"].is_string() {
            return Ok(t.present(obj));
        }
        let mut new = obj;
        new["metadata"]["deletionTimestamp"] = json!(now());
        new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        let g = new["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        new["metadata"]["generation"] = json!(g);
        let rv = st.store.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.store.put(key.clone(), new.clone(), rv);
        return Ok(t.present(new));
    }
    let last = finish_delete(st, t, key, propagation);
    Ok(t.present(last.unwrap_or(obj)))
}

/// Remove an object now and run the consequences (GC of dependents, namespace contents, a CRD's
/// custom resources). Returns the final state.
pub fn finish_delete(
    st: &mut State,
    t: &Target,
    key: &ObjKey,
    propagation: gc::Propagation,
) -> Option<Value> {
    let mut last = st.store.get(key)?.clone();
    let rv = st.store.next_rv();
    last["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.store.remove(key, last.clone(), rv);
    let uid = last["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let mut doomed = gc::collect(st, &uid, propagation);
    if t.def.group.is_empty() && t.def.plural == "namespaces" {
        doomed.extend(gc::namespace_contents(st, &key.name));
    }
    if t.def.group == "apiextensions.k8s.io" {
        if let Some(def) = st.registry.unregister_crd(&key.name) {
            doomed.extend(gc::remove_all_of(st, &def));
        }
    }
    for (key, t) in doomed {
        let _ = delete(st, &t, &key, gc::Propagation::Background, None, None, None);
    }
    Some(last)
}

/// ValidatingAdmissionPolicies on a write to `t` (nothing for the server's own writes, `caller`
/// None).
fn admit_policies(
    st: &State,
    caller: Option<&Caller>,
    t: &Target,
    operation: Operation,
    object: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<()> {
    let Some(caller) = caller else { return Ok(()) };
    let namespace = t.namespace.clone().unwrap_or_default();
    let namespace_object = (!namespace.is_empty())
        .then(|| {
            let key = ObjKey {
                group: String::new(),
                resource: "namespaces".into(),
                namespace: String::new(),
                name: namespace.clone(),
            };
            st.store.get(&key).cloned()
        })
        .flatten();
    let name =
        object.or(old).and_then(|o| o["metadata"]["name"].as_str()).unwrap_or_default().to_string();
    let req = AdmissionRequest {
        operation,
        kind: Gvk {
            group: t.def.group.clone(),
            version: t.version.clone(),
            kind: t.def.kind.clone(),
        },
        resource: Gvr {
            group: t.def.group.clone(),
            version: t.version.clone(),
            resource: t.def.plural.clone(),
        },
        sub_resource: t.sub.clone().unwrap_or_default(),
        name,
        namespace,
        user: caller.user.clone(),
        object: object.map(|o| t.present(o.clone())),
        old_object: old.map(|o| t.present(o.clone())),
        namespace_object,
    };
    admit_request(st, caller, &req)
}
