//! Garbage collection through ownerReferences, namespace deletion and CRD deletion: what goes when
//! an object goes. The deletes themselves are the write pipeline's (`ops.rs`), which asks here.
//!
//! Departures from a real cluster: collection runs synchronously inside the deleting request
//! (a real garbage collector runs shortly after, asynchronously); `Foreground` propagation is
//! treated as `Background` (the owner goes first, dependents follow at once); a deleted namespace
//! disappears at once while its contents are deleted (objects with finalizers stay, terminating,
//! in a namespace that no longer exists).

use std::collections::HashSet;

use serde_json::{json, Value};

use super::resources::ResourceDef;
use super::store::ObjKey;
use super::target::Target;
use super::State;

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are deleted (Background and, simplified, Foreground).
    Background,
    /// Dependents lose the ownerReference and stay.
    Orphan,
}

/// The owner with `uid` is gone: drop the dangling reference from dependents with another live
/// owner (or from all, for `Orphan`) and return the others, for the caller to delete.
pub fn collect(st: &mut State, uid: &str, propagation: Propagation) -> Vec<(ObjKey, Target)> {
    let mut doomed = Vec::new();
    if uid.is_empty() {
        return doomed;
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
        let Some(t) = Target::for_object(st, &key, &obj) else { continue };
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
            doomed.push((key, t));
        }
    }
    doomed
}

/// Every object in namespace `ns`, for the caller to delete.
pub fn namespace_contents(st: &State, ns: &str) -> Vec<(ObjKey, Target)> {
    st.store
        .all()
        .filter(|(k, _)| k.namespace == ns)
        .filter_map(|(k, o)| Some((k.clone(), Target::for_object(st, k, o)?)))
        .collect()
}

/// Remove every object of a resource whose CRD was deleted (finalizers are not honoured: the
/// resource is no longer served, so nobody could remove them); returns their dependents to delete.
pub fn remove_all_of(st: &mut State, def: &ResourceDef) -> Vec<(ObjKey, Target)> {
    let mut doomed = Vec::new();
    let keys: Vec<ObjKey> =
        st.store.list(&def.group, &def.plural, None).map(|(k, _)| k.clone()).collect();
    for key in keys {
        if let Some(mut last) = st.store.get(&key).cloned() {
            let rv = st.store.next_rv();
            last["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.store.remove(&key, last.clone(), rv);
            let uid = last["metadata"]["uid"].as_str().unwrap_or_default().to_string();
            doomed.extend(collect(st, &uid, Propagation::Background));
        }
    }
    doomed
}
