//! The cleanup's decisions, no I/O: which pools it releases, and the patch that releases one.

use enipool_crds::{ENIPool, POOL_FINALIZER};
use kube::core::PartialObjectMeta;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Which Nodes are in scope: every Node (no selector), or the selected ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeScope {
    /// No `--node-selector`: every pool is in scope.
    All,
    /// With `--node-selector`: the Nodes it matches, and every existing Node.
    Selected {
        /// The Nodes the selector matches.
        selected: BTreeSet<String>,
        /// Every Node that exists.
        existing: BTreeSet<String>,
    },
}

/// Whether the cleanup releases the pool of a Node: the operator's `--node-selector` rule
/// ([`pool_in_scope`](crate::k8s::scope::pool_in_scope)) for a pool not being deleted: pools of selected
/// Nodes, and pools whose Node is gone. A pool of a living, unselected Node is another
/// installation's (or its Node stopped matching): left alone. Pools are named after their Node.
pub fn in_scope(scope: &NodeScope, node: &str) -> bool {
    match scope {
        NodeScope::All => true,
        NodeScope::Selected { selected, existing } => crate::k8s::scope::pool_in_scope(
            false,
            selected.contains(node),
            existing.contains(node),
        ),
    }
}

/// One listed pool, as far as the cleanup cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolView {
    /// Name (= its Node's name).
    pub name: String,
    /// UID (a delete precondition: never delete a pool recreated meanwhile).
    pub uid: Option<String>,
    /// resourceVersion the finalizer patch is guarded by.
    pub resource_version: Option<String>,
    /// `metadata.finalizers`.
    pub finalizers: Vec<String>,
}

impl PoolView {
    pub(super) fn of(p: &PartialObjectMeta<ENIPool>) -> PoolView {
        PoolView {
            name: p.name_any(),
            uid: p.metadata.uid.clone(),
            resource_version: p.metadata.resource_version.clone(),
            finalizers: p.finalizers().to_vec(),
        }
    }
}

/// The listed pools split into those to release and delete (in name order) and those left alone.
pub fn plan(pools: &[PoolView], scope: &NodeScope) -> (Vec<PoolView>, Vec<String>) {
    let (mut work, mut skip): (Vec<_>, Vec<_>) =
        pools.iter().cloned().partition(|p| in_scope(scope, &p.name));
    work.sort_by(|a, b| a.name.cmp(&b.name));
    skip.sort_by(|a, b| a.name.cmp(&b.name));
    (work, skip.into_iter().map(|p| p.name).collect())
}

/// The merge patch that removes `enipool.io/release` and keeps every other finalizer, guarded by
/// `resource_version` (a merge patch replaces the whole list: a finalizer added meanwhile makes
/// the server answer 409 instead of being dropped). `None` when the pool does not carry it.
pub fn finalizer_patch(finalizers: &[String], resource_version: &str) -> Option<Value> {
    if !finalizers.iter().any(|f| f == POOL_FINALIZER) {
        return None;
    }
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != POOL_FINALIZER).collect();
    let rest = if rest.is_empty() { Value::Null } else { json!(rest) };
    Some(json!({"metadata": {"finalizers": rest, "resourceVersion": resource_version}}))
}
