//! Garbage collection through ownerReferences, namespace deletion and CRD deletion.
//!
//! Departures from a real cluster: collection runs synchronously inside the deleting request
//! (a real garbage collector runs shortly after, asynchronously); `Foreground` propagation is
//! treated as `Background` (the owner goes first, dependents follow at once); a deleted namespace
//! disappears at once while its contents are deleted (objects with finalizers stay, terminating,
//! in a namespace that no longer exists).

use std::collections::HashSet;

use serde_json::{json, Value};

use super::ops::{self, Target};
use super::resources::ResourceDef;
use super::store::ObjKey;
use super::State;

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are deleted (Background and, simplified, Foreground).
    Background,
    /// Dependents lose the ownerReference and stay.
    Orphan,
}

fn target_for(st: &State, key: &ObjKey, obj: &Value) -> Option<Target> {
    let def = st
        .registry
        .all()
        .iter()
        .find(|d| d.group == key.group && d.plural == key.resource)?
        .clone();
    let version = obj["apiVersion"]
        .as_str()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .filter(|v| def.version(v).is_some())
        .unwrap_or_else(|| def.versions[0].name.clone());
    Some(Target {
        namespace: def.namespaced.then(|| key.namespace.clone()),
        def,
        version,
        name: Some(key.name.clone()),
        sub: None,
    })
}

/// The owner with `uid` is gone: delete dependents none of whose other owners exist, and drop the
/// dangling reference from the others (or from all, for `Orphan`).
pub fn collect(st: &mut State, uid: &str, propagation: Propagation) {
    if uid.is_empty() {
        return;
    }
    let live: HashSet<String> = st
        .store
        .all()
        .filter_map(|(_, o)| o["metadata"]["uid"].as_str().map(String::from))
        .collect();
    let dependents: Vec<(ObjKey, Value)> = st
        .store
        .all()
        .filter(|(_, o)| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
        })
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect();
    for (key, obj) in dependents {
        let refs = obj["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
        let others_alive = refs
            .iter()
            .any(|r| r["uid"] != uid && r["uid"].as_str().is_some_and(|u| live.contains(u)));
        let Some(t) = target_for(st, &key, &obj) else { continue };
        if propagation == Propagation::Orphan || others_alive {
            let mut new = obj.clone();
            let kept: Vec<Value> = refs.into_iter().filter(|r| r["uid"] != uid).collect();
            if kept.is_empty() {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove("ownerReferences");
                }
            } else {
                new["metadata"]["ownerReferences"] = json!(kept);
            }
            let rv = st.store.next_rv();
            new["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.store.put(key, new, rv);
        } else {
            let _ = ops::delete(st, &t, &key, Propagation::Background, None, None, None);
        }
    }
}

/// Delete every object in namespace `ns`.
pub fn delete_namespace_contents(st: &mut State, ns: &str) {
    let keys: Vec<(ObjKey, Value)> = st
        .store
        .all()
        .filter(|(k, _)| k.namespace == ns)
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect();
    for (key, obj) in keys {
        if let Some(t) = target_for(st, &key, &obj) {
            let _ = ops::delete(st, &t, &key, Propagation::Background, None, None, None);
        }
    }
}

/// Delete every object of a resource whose CRD was deleted (finalizers are not honoured: the
/// resource is no longer served, so nobody could remove them).
pub fn delete_all_of(st: &mut State, def: &ResourceDef) {
    let keys: Vec<ObjKey> =
        st.store.list(&def.group, &def.plural, None).map(|(k, _)| k.clone()).collect();
    for key in keys {
        if let Some(mut last) = st.store.get(&key).cloned() {
            let rv = st.store.next_rv();
            last["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.store.remove(&key, last.clone(), rv);
            let uid = last["metadata"]["uid"].as_str().unwrap_or_default().to_string();
            collect(st, &uid, Propagation::Background);
        }
    }
}
