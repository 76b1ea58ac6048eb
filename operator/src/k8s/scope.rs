//! What an operator with `--node-selector` handles. Its Node controller watches only the selected
//! Nodes (so only they get pools); the pool and policy controllers watch everything and ask here,
//! because a cluster may hold pools and policies that are not this operator's: another operator's
//! (a second installation, an e2e run sharing a dev cluster), or those of Nodes that stopped
//! matching. Those are left alone: no EC2 call, no status write, no deletion.
//!
//! A pool is handled when its Node is selected, when its Node is gone (the pool must be deleted
//! and its finalizer run; the finalizer only cleans ENIs carrying this operator's cluster tag), and
//! when it is being deleted (the finalizer of a pool whose Node lives only releases it). A policy
//! gets its status from this operator when a pool of a selected Node resolved to it.

use super::context::{valid, Context};
use super::synced::Synced;
use crate::error::Result;
use enipool_crds::{ENIPool, ENIPoolPolicy, POLICY_LABEL};
use futures::future::{BoxFuture, FutureExt};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, reflector, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use std::sync::Arc;

/// Whether a pool is this operator's to reconcile (no I/O).
pub fn pool_in_scope(deleting: bool, node_selected: bool, node_exists: bool) -> bool {
    deleting || node_selected || !node_exists
}

/// The Node stores a scoped operator decides with.
#[derive(Clone)]
pub struct Scope {
    /// `false` without a selector: everything is in scope.
    active: bool,
    /// The Node controller's store: the selected Nodes.
    selected: Store<DeserializeGuard<Node>>,
    all: Store<DeserializeGuard<Node>>,
    /// `selected` has its initial list.
    selected_synced: Synced,
    /// `all` has its initial list.
    all_synced: Synced,
}

impl Scope {
    /// The scope over `selected` (the Node controller's store). Everything else asks "does this
    /// pool's Node still exist?" and must see every Node: a Node that merely stops matching is not
    /// gone. With a selector that takes a second, unfiltered watch, returned as a future to drive
    /// (it ends only if the watch does); without one `selected` holds every Node.
    pub fn start(
        client: &Client,
        active: bool,
        selected: Store<DeserializeGuard<Node>>,
        selected_synced: Synced,
    ) -> (Scope, BoxFuture<'static, ()>) {
        if !active {
            let (all, all_synced) = (selected.clone(), selected_synced.clone());
            let scope = Scope { active, selected, all, selected_synced, all_synced };
            return (scope, futures::future::pending().boxed());
        }
        let (all, writer) = reflector::store();
        let api = Api::<DeserializeGuard<Node>>::all(client.clone());
        let (events, all_synced) = super::synced::mark(reflector(
            writer,
            watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(super::watches::trim_node),
        ));
        let watch = events.for_each(|_| futures::future::ready(())).boxed();
        (Scope { active, selected, all, selected_synced, all_synced }, watch)
    }

    /// The selected Nodes' cache has its initial list.
    pub fn selected_synced(&self) -> Synced {
        self.selected_synced.clone()
    }

    /// The cache of every Node has its initial list.
    pub fn all_synced(&self) -> Synced {
        self.all_synced.clone()
    }

    /// The store of every Node.
    pub fn all_nodes(&self) -> Store<DeserializeGuard<Node>> {
        self.all.clone()
    }

    fn selected(&self, node: &str) -> bool {
        self.selected.get(&ObjectRef::new(node)).is_some()
    }

    /// Whether to reconcile `pool` (a malformed pool is left to the controller, which skips it).
    pub async fn pool(&self, pool: &DeserializeGuard<ENIPool>) -> bool {
        if !self.active {
            return true;
        }
        let Some(p) = valid(pool) else { return true };
        // "Node gone" must not be a cache that has not synced yet.
        // Not `Store::wait_until_ready`: see `k8s::synced`.
        tokio::join!(self.all_synced.wait(), self.selected_synced.wait());
        let node = p.spec.node_name.as_str();
        pool_in_scope(
            p.meta().deletion_timestamp.is_some(),
            self.selected(node),
            self.all.get(&ObjectRef::new(node)).is_some(),
        )
    }

    /// Whether to write the status of policy `name`: some pool of a selected Node resolved to it.
    pub fn policy(&self, name: &str, pools: &Store<DeserializeGuard<ENIPool>>) -> bool {
        !self.active
            || pools.state().iter().filter_map(|g| valid(g)).any(|p| {
                p.labels().get(POLICY_LABEL).map(String::as_str) == Some(name)
                    && self.selected(&p.spec.node_name)
            })
    }
}

/// The pool controller's reconcile for the pools in scope; pools out of scope are looked at again
/// every resync (their Node may start matching), nothing else.
pub async fn reconcile_pool_in_scope(
    scope: Scope,
    pool: Arc<DeserializeGuard<ENIPool>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    if !scope.pool(&pool).await {
        return Ok(Action::requeue(ctx.shared.resync));
    }
    super::pool::reconcile_pool(pool, ctx).await
}

/// The policy controller's reconcile, for the policies in scope.
pub async fn reconcile_policy_in_scope(
    scope: Scope,
    policy: Arc<DeserializeGuard<ENIPoolPolicy>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    if !scope.policy(&policy.name_any(), &ctx.pools) {
        return Ok(Action::requeue(ctx.shared.resync));
    }
    super::policy::reconcile_policy(policy, ctx).await
}

/// A `--node-selector` as given, `None` when absent or blank (an empty env var from a chart
/// value means "no selector", not "select nothing").
pub fn node_selector(flag: Option<&str>) -> Option<String> {
    flag.map(str::trim).filter(|s| !s.is_empty()).map(String::from)
}

/// Fails at start on a selector the API server refuses (a watch with it would only retry the same
/// error forever, and no pool would ever be made). Other errors are left to the watches' retries.
pub async fn check_selector(client: &Client, selector: Option<&str>) -> crate::Result<()> {
    let Some(sel) = selector else { return Ok(()) };
    let lp = ListParams::default().labels(sel).limit(1);
    match Api::<Node>::all(client.clone()).list_metadata(&lp).await {
        Err(kube::Error::Api(e)) if e.code == 400 => Err(crate::Error::Config(format!(
            "--node-selector {sel:?} is not a valid label selector: {}",
            e.message
        ))),
        Err(error) => {
            tracing::warn!(%error, "could not check --node-selector yet; the Node watch retries");
            Ok(())
        }
        Ok(_) => {
            tracing::info!(node_selector = sel, "managing only the Nodes this selector matches");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{node_selector, pool_in_scope};

    #[test]
    fn pools_of_other_nodes_are_left_alone_unless_gone_or_deleting() {
        // (deleting, node selected, node exists) → handled
        let table = [
            ((false, true, true), true),   // a selected Node's pool
            ((false, false, true), false), // unselected Node (another operator's, or stopped matching)
            ((false, false, false), true), // Node gone: delete the pool, run the finalizer
            ((true, false, true), true),   // being deleted: the finalizer only releases it
            ((true, true, true), true),
        ];
        for ((deleting, selected, exists), want) in table {
            assert_eq!(
                pool_in_scope(deleting, selected, exists),
                want,
                "{deleting} {selected} {exists}"
            );
        }
    }

    #[test]
    fn a_blank_node_selector_is_no_selector() {
        assert_eq!(node_selector(None), None);
        assert_eq!(node_selector(Some("  ")), None);
        assert_eq!(node_selector(Some(" a=b ")).as_deref(), Some("a=b"));
    }
}
