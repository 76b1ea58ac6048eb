//! The three controllers and their watches: the watch stores are the caches (one watch per kind
//! and purpose). A malformed object is skipped and reported (`DeserializeGuard`), it never stops a
//! cache syncing; the stores keep trimmed objects ([`crate::k8s::watches`]).

use crate::error::Result;
use crate::k8s::scope::{self, Scope};
use crate::k8s::synced::{self, Synced};
use crate::k8s::watches::{trim_meta, trim_node};
use crate::k8s::{self, Context};
use enipool_crds::{ENIPool, ENIPoolPolicy};
use futures::future::BoxFuture;
use futures::{Future, Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{self, reflector, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use std::sync::Arc;
use tokio::sync::watch;

/// The controllers, not running yet, and the caches they fill.
pub(super) struct Controllers {
    node: Controller<DeserializeGuard<Node>>,
    pool: Controller<DeserializeGuard<ENIPool>>,
    policy: Controller<DeserializeGuard<ENIPoolPolicy>>,
    /// Which pools and policies are this operator's (`--node-selector`).
    pub scope: Scope,
    /// Drives the watch of every Node when a selector narrows the Node controller's.
    pub all_nodes_watch: BoxFuture<'static, ()>,
    pub pools: Store<DeserializeGuard<ENIPool>>,
    pub policies: Store<DeserializeGuard<ENIPoolPolicy>>,
    /// The caches' initial lists are in (readiness, and the condition to campaign for the Lease).
    pub synced: Vec<Synced>,
}

/// Build the watches and controllers. The Node controller sees only the selected Nodes (the API
/// server filters the watch), so it creates pools for those only, also when it reconciles
/// everything on becoming leader; pools and policies are scoped to the selected Nodes, with a
/// cache of every Node.
pub(super) fn build(client: &Client, node_selector: Option<&str>, workers: u16) -> Controllers {
    let cc = ControllerConfig::default().concurrency(workers.max(1));
    let node_watch = match node_selector {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    };
    let (selected_nodes, node_writer) = reflector::store();
    // Readiness comes from each stream's InitDone (`k8s::synced`), never `Store::wait_until_ready`.
    let (node_events, selected_synced) = synced::mark(reflector(
        node_writer,
        watcher(Api::<DeserializeGuard<Node>>::all(client.clone()), node_watch).modify(trim_node),
    ));
    let node = Controller::for_stream(node_events.applied_objects(), selected_nodes.clone())
        .owns(Api::<DeserializeGuard<ENIPool>>::all(client.clone()), watcher::Config::default())
        .with_config(cc.clone());
    let (scope, all_nodes_watch) =
        Scope::start(client, node_selector.is_some(), selected_nodes, selected_synced);
    let (pools, pool_writer) = reflector::store();
    let (pool_events, pools_synced) = synced::mark(reflector(
        pool_writer,
        watcher(
            Api::<DeserializeGuard<ENIPool>>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .modify(trim_meta::<DeserializeGuard<ENIPool>>),
    ));
    let pool = Controller::for_stream(pool_events.applied_objects(), pools.clone()).with_config(cc);
    let (policies, policy_writer) = reflector::store();
    let (policy_events, policies_synced) = synced::mark(reflector(
        policy_writer,
        watcher(
            Api::<DeserializeGuard<ENIPoolPolicy>>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(trim_meta::<DeserializeGuard<ENIPoolPolicy>>),
    ));
    let policy = Controller::for_stream(policy_events.applied_objects(), policies.clone())
        .with_config(ControllerConfig::default().concurrency(2));
    let synced = vec![scope.all_synced(), scope.selected_synced(), policies_synced, pools_synced];
    Controllers { node, pool, policy, scope, all_nodes_watch, pools, policies, synced }
}

impl Controllers {
    /// Run the three controllers until shutdown; each re-reconciles everything when this replica
    /// becomes leader (journal replay happens in each pool reconcile). On shutdown every
    /// controller drains its in-flight reconciles before the Lease goes.
    pub(super) fn run(
        self,
        client: &Client,
        ctx: Arc<Context>,
        leader: watch::Receiver<bool>,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<()>> {
        let became_leader = || leadership_gained(leader.clone());
        let stop = || {
            let mut rx = shutdown.clone();
            async move {
                let _ = rx.wait_for(|v| *v).await;
            }
        };
        let node = self
            .node
            .reconcile_all_on(became_leader())
            .graceful_shutdown_on(stop())
            .run(k8s::node::reconcile_node, k8s::context::error_policy, ctx.clone())
            .for_each(|_| futures::future::ready(()));
        let pool_store = self.pools.clone();
        let pool_scope = self.scope.clone();
        let pool = self
            .pool
            .watches(
                Api::<DeserializeGuard<ENIPoolPolicy>>::all(client.clone()),
                watcher::Config::default(),
                move |_p: DeserializeGuard<ENIPoolPolicy>| {
                    pool_store
                        .state()
                        .iter()
                        .map(|p| ObjectRef::new(&p.name_any()))
                        .collect::<Vec<_>>()
                },
            )
            .reconcile_all_on(became_leader())
            .graceful_shutdown_on(stop())
            .run(
                move |pool, ctx| scope::reconcile_pool_in_scope(pool_scope.clone(), pool, ctx),
                k8s::context::error_policy,
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(()));
        let policy_scope = self.scope.clone();
        let policy = self
            .policy
            .reconcile_all_on(became_leader())
            .graceful_shutdown_on(stop())
            .run(
                move |policy, ctx| {
                    scope::reconcile_policy_in_scope(policy_scope.clone(), policy, ctx)
                },
                k8s::context::error_policy,
                ctx,
            )
            .for_each(|_| futures::future::ready(()));
        async move {
            futures::future::try_join3(
                controller_done("pool", pool, shutdown.clone()),
                controller_done("node", node, shutdown.clone()),
                controller_done("policy", policy, shutdown.clone()),
            )
            .await
            .map(|_| ())
        }
    }
}

/// A controller's run: it ends on shutdown; ending otherwise is an error (the process restarts).
async fn controller_done(
    name: &'static str,
    run: impl Future<Output = ()>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    run.await;
    if !*shutdown.borrow() {
        return Err(crate::Error::Stopped(format!("{name} controller stopped")));
    }
    tracing::info!("{name} controller stopped");
    Ok(())
}

/// A stream yielding `()` each time this replica gains leadership.
fn leadership_gained(rx: watch::Receiver<bool>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold((rx, false), |(mut rx, mut was)| async move {
        loop {
            if rx.changed().await.is_err() {
                return None;
            }
            let now = *rx.borrow_and_update();
            let gained = now && !was;
            was = now;
            if gained {
                return Some(((), (rx, was)));
            }
        }
    })
}
