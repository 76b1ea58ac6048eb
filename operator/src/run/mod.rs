//! Process wiring: leader election, the three controllers (Node, ENIPool, ENIPoolPolicy) whose
//! watch stores double as the caches, GC, and the HTTP endpoints.
//!
//! [`Operator::start`] is the library entry point: it takes a kube client and an [`Ec2Api`], so the
//! e2e tests and the benchmark run replicas in process (and kill one with
//! [`OperatorHandle::abort`]). Everything runs inside one task: aborting it drops the Lease
//! renewal, the controllers and the HTTP server together, as a crashed process would, and the
//! Lease expires. A graceful stop ([`OperatorHandle::shutdown`], SIGTERM) lets the controllers
//! finish their in-flight reconciles, keeps renewing meanwhile, then releases the Lease so that a
//! standby takes over at once.
//!
//! The controllers' Kubernetes client and EC2 are gated by [`Leadership`]: writes and EC2
//! mutations only while this replica leads, cut off when its term ends ([`crate::k8s::client`],
//! [`crate::leader::leader_only`]). The election has a client of its own, without the gate.

mod binary;
mod config;
mod http;

pub use config::OperatorConfig;

use crate::ec2::capacity::CapacityCache;
use crate::ec2::vpc::VpcCidrs;
use crate::ec2::Ec2Api;
use crate::k8s::watches::{trim_meta, trim_node};
use crate::k8s::{self, scope, synced, Context};
use crate::leader::{self, Leadership, LeaseConfig};
use crate::metrics::Metrics;
use crate::round::observe::SubnetCache;
use crate::round::resync::ResyncPeriod;
use crate::round::{Memory, Shared};
use enipool_crds::{ENIPool, ENIPoolPolicy};
use futures::StreamExt;
use http::Health;
use k8s_openapi::api::core::v1::Node;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, reflector, ObjectRef};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The running operator.
pub struct Operator;

/// Handle of an operator started with [`Operator::start`].
pub struct OperatorHandle {
    task: tokio::task::JoinHandle<crate::Result<()>>,
    leadership: Leadership,
    health: Arc<Health>,
    shutdown: watch::Sender<bool>,
}

impl OperatorHandle {
    /// Whether this replica leads now (holds the Lease, and renewed it within the renew
    /// deadline).
    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    /// Whether the watch caches have synced (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.health.ready.load(Ordering::Relaxed)
    }

    /// Kill the replica at once, as a crash would: in-flight EC2 calls and writes are dropped and
    /// the Lease is no longer renewed.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Graceful stop: controllers finish in-flight reconciles, the Lease is released (when held),
    /// then the task ends.
    pub async fn shutdown(self) -> crate::Result<()> {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(crate::Error::Stopped(format!("operator task: {e}"))),
        }
    }

    /// Whether the task has ended (aborted, failed or shut down).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The replica's `/metrics` text (Prometheus text format).
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.health.registry)
            .expect("encoding metrics");
        out
    }
}

impl Operator {
    /// Start a replica on the current runtime. `registry` receives the operator's metrics (the
    /// caller registers the EC2 client's metrics in it beforehand, as [`crate::args::Args::run`] does).
    pub fn start(
        cfg: OperatorConfig,
        client: Client,
        ec2: Arc<dyn Ec2Api>,
        registry: Registry,
    ) -> OperatorHandle {
        let leadership = Leadership::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut registry = registry;
        let metrics = Metrics::new(&mut registry);
        let health = Arc::new(Health { registry, ready: false.into() });
        let task = tokio::spawn(run(
            cfg,
            client,
            ec2,
            metrics,
            leadership.clone(),
            health.clone(),
            shutdown_rx,
        ));
        OperatorHandle { task, leadership, health, shutdown }
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn run(
    cfg: OperatorConfig,
    client: Client,
    ec2: Arc<dyn Ec2Api>,
    metrics: Metrics,
    leadership: Leadership,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) -> crate::Result<()> {
    let leader_rx = leadership.subscribe();
    let lease_client = k8s::client::bounded(client.clone());
    let client = k8s::client::leader_only(client, leadership.clone());
    let ec2: Arc<dyn Ec2Api> = Arc::new(leader::leader_only(ec2, leadership.clone()));
    let lease_cfg = LeaseConfig {
        namespace: cfg.lease_namespace.clone(),
        name: cfg.lease_name.clone(),
        identity: cfg.identity.clone(),
        duration: cfg.lease_duration,
    };

    // Controllers; their watch stores are the caches (one watch per kind and purpose).
    // DeserializeGuard: a malformed object is skipped and reported, it never stops a cache syncing.
    // The stores keep trimmed objects (see `trim_node`, `trim_meta`): `managedFields` and Node
    // status are most of an object's size and nothing here reads them.
    let cc = ControllerConfig::default().concurrency(cfg.workers.max(1));
    scope::check_selector(&client, cfg.node_selector.as_deref()).await?;
    // The Node controller sees only the selected Nodes (the API server filters the watch), so it
    // creates pools for those only, also when it reconciles everything on becoming leader.
    let node_watch = match &cfg.node_selector {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    };
    let (selected_nodes, node_writer) = reflector::store();
    // Readiness comes from each stream's InitDone (`synced`), never `Store::wait_until_ready`.
    let (node_events, selected_synced) = synced::mark(reflector(
        node_writer,
        watcher(Api::<DeserializeGuard<Node>>::all(client.clone()), node_watch).modify(trim_node),
    ));
    let node_ctrl = Controller::for_stream(node_events.applied_objects(), selected_nodes.clone())
        .owns(Api::<DeserializeGuard<ENIPool>>::all(client.clone()), watcher::Config::default())
        .with_config(cc.clone());
    // Pools and policies are scoped to the selected Nodes (`scope`), with a cache of every Node.
    let (scope, all_nodes_watch) = scope::Scope::start(
        &client,
        cfg.node_selector.is_some(),
        selected_nodes.clone(),
        selected_synced,
    );
    let nodes = scope.all_nodes();
    let (pools, pool_writer) = reflector::store();
    let (pool_events, pools_synced) = synced::mark(reflector(
        pool_writer,
        watcher(
            Api::<DeserializeGuard<ENIPool>>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .modify(trim_meta::<DeserializeGuard<ENIPool>>),
    ));
    let pool_ctrl = Controller::for_stream(pool_events.applied_objects(), pools.clone())
        .with_config(cc.clone());
    let (policies, policy_writer) = reflector::store();
    let (policy_events, policies_synced) = synced::mark(reflector(
        policy_writer,
        watcher(
            Api::<DeserializeGuard<ENIPoolPolicy>>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(trim_meta::<DeserializeGuard<ENIPoolPolicy>>),
    ));
    let policy_ctrl = Controller::for_stream(policy_events.applied_objects(), policies.clone())
        .with_config(ControllerConfig::default().concurrency(2));

    let shared = Shared {
        ec2: ec2.clone(),
        cluster: cfg.cluster.clone(),
        vpc: VpcCidrs::new(cfg.vpc_cidrs.clone()),
        agent_stale_secs: cfg.agent_stale_secs,
        resync: cfg.resync,
        resync_period: ResyncPeriod::new(cfg.resync, ec2.describe_qps()),
        capacity: CapacityCache::new(ec2.clone()),
        subnets: SubnetCache::default(),
        memory: Memory::default(),
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "enipool-operator".into(), instance: Some(cfg.identity.clone()) },
    );
    let ctx = Arc::new(Context {
        shared,
        client: client.clone(),
        leader: leadership.clone(),
        nodes: nodes.clone(),
        policies: policies.clone(),
        pools: pools.clone(),
        recorder,
        metrics,
        termination_wait: cfg.termination_wait,
    });
    ctx.refresh_resync_period(); // the gauge from the start: the minimum while no pool is cached
                                 // enipool_operator_leader follows leadership; losing it clears the leader-only pool gauges.
    let leader_gauge = {
        let (ctx, mut rx) = (ctx.clone(), leader_rx.clone());
        async move {
            loop {
                let leader = *rx.borrow_and_update();
                ctx.metrics.leadership(leader);
                if rx.changed().await.is_err() {
                    return futures::future::pending::<()>().await;
                }
            }
        }
    };

    let http = {
        let health = health.clone();
        let addr = cfg.metrics_addr;
        async move {
            match addr {
                Some(a) => http::serve(a, health).await,
                None => futures::future::pending().await,
            }
        }
    };
    let caches_synced = {
        let (n, s) = (scope.all_synced(), scope.selected_synced());
        let (p, q) = (policies_synced, pools_synced);
        move || {
            let (n, s, p, q) = (n.clone(), s.clone(), p.clone(), q.clone());
            async move {
                tokio::join!(n.wait(), s.wait(), p.wait(), q.wait());
            }
        }
    };
    let ready = {
        let (synced, h) = (caches_synced(), health.clone());
        async move {
            synced.await;
            h.ready.store(true, Ordering::Relaxed);
            tracing::info!("caches synced");
            futures::future::pending::<()>().await
        }
    };
    // Campaign for the Lease only with complete caches. A leader decides from them ("this pool's
    // Node is gone: delete the pool", "this Node has no pool: create one"); with the pool list in
    // and the Node list not yet, it would delete the pools of live Nodes. Standbys sync long before
    // they lead; a replica started while the Lease is free (a handover, the first start) would
    // otherwise lead at once.
    let lease = {
        let (synced, client, lease_cfg) =
            (caches_synced(), lease_client.clone(), lease_cfg.clone());
        let leadership = &leadership;
        async move {
            synced.await;
            leader::run(client, lease_cfg, leadership).await
        }
    };

    // Becoming leader re-reconciles everything (journal replay happens in each reconcile).
    let became_leader = || leadership_gained(leader_rx.clone());
    let stop = || wait_true(shutdown.clone());
    let node_ctrl = node_ctrl
        .reconcile_all_on(became_leader())
        .graceful_shutdown_on(stop())
        .run(k8s::node::reconcile_node, k8s::context::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let pool_store = pools.clone();
    let pool_ctrl = pool_ctrl
        .watches(
            Api::<DeserializeGuard<ENIPoolPolicy>>::all(client.clone()),
            watcher::Config::default(),
            move |_p: DeserializeGuard<ENIPoolPolicy>| {
                pool_store.state().iter().map(|p| ObjectRef::new(&p.name_any())).collect::<Vec<_>>()
            },
        )
        .reconcile_all_on(became_leader())
        .graceful_shutdown_on(stop())
        .run(
            {
                let scope = scope.clone();
                move |pool, ctx| scope::reconcile_pool_in_scope(scope.clone(), pool, ctx)
            },
            k8s::context::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let policy_ctrl = policy_ctrl
        .reconcile_all_on(became_leader())
        .graceful_shutdown_on(stop())
        .run(
            move |policy, ctx| scope::reconcile_policy_in_scope(scope.clone(), policy, ctx),
            k8s::context::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    // On shutdown every controller drains its in-flight reconciles before the Lease goes.
    let controllers = futures::future::try_join3(
        controller_done("pool", pool_ctrl, shutdown.clone()),
        controller_done("node", node_ctrl, shutdown.clone()),
        controller_done("policy", policy_ctrl, shutdown.clone()),
    );

    let gc = {
        let ctx = ctx.clone();
        let (interval, grace) = (cfg.gc_interval, cfg.leak_grace_secs);
        async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if ctx.is_leader() {
                    k8s::gc::gc_once(&ctx, grace).await;
                }
            }
        }
    };
    tokio::select! {
        r = controllers => r.map(|_| ())?,
        r = http => return Err(crate::Error::Stopped(format!("HTTP endpoints stopped: {r:?}"))),
        _ = ready => {},
        _ = gc => {},
        _ = leader_gauge => {},
        _ = all_nodes_watch => return Err(crate::Error::Stopped("the Node watch ended".into())),
        _ = lease => return Err(crate::Error::Stopped("lease task ended".into())),
    }
    // Graceful stop: the controllers are done and the renewal (the `lease` future) is dropped.
    // Hand the Lease over instead of letting the standbys wait for it to expire.
    leadership.set(None);
    ctx.metrics.leadership(false);
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(lease_client, &lease_cfg.namespace);
    match tokio::time::timeout(RELEASE_TIMEOUT, leader::release(&api, &lease_cfg)).await {
        Ok(Ok(true)) => tracing::info!(identity = %lease_cfg.identity, "lease released"),
        Ok(Ok(false)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "releasing the lease failed; it will expire"),
        Err(_) => tracing::warn!("releasing the lease timed out; it will expire"),
    }
    Ok(())
}

/// Bound on the Lease release at shutdown (an unreachable API server must not hold the exit).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// A controller's run: it ends on shutdown; ending otherwise is an error (the process restarts).
async fn controller_done(
    name: &'static str,
    run: impl std::future::Future<Output = ()>,
    shutdown: watch::Receiver<bool>,
) -> crate::Result<()> {
    run.await;
    if !*shutdown.borrow() {
        return Err(crate::Error::Stopped(format!("{name} controller stopped")));
    }
    tracing::info!("{name} controller stopped");
    Ok(())
}

/// A stream yielding `()` each time this replica gains leadership.
fn leadership_gained(
    rx: tokio::sync::watch::Receiver<bool>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
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
