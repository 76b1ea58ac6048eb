//! One replica's run, in named parts: gate the clients on leadership, build the controllers and
//! their context, then drive them alongside the HTTP endpoints, readiness, the Lease campaign, GC
//! and the leader gauge until shutdown, and hand the Lease over.

use super::controllers::{self, Controllers};
use super::http::{self, Health};
use super::OperatorConfig;
use crate::ec2::capacity::CapacityCache;
use crate::ec2::vpc::VpcCidrs;
use crate::ec2::Ec2Api;
use crate::k8s::client;
use crate::k8s::synced::Synced;
use crate::k8s::{scope, Context};
use crate::leader::{self, Leadership, LeaseConfig};
use crate::metrics::Metrics;
use crate::round::observe::SubnetCache;
use crate::round::resync::ResyncPeriod;
use crate::round::{Memory, Shared};
use futures::Future;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Bound on the Lease release at shutdown (an unreachable API server must not hold the exit).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The clients of one replica: the controllers' Kubernetes client and EC2 pass only while this
/// replica leads; the election's client is bounded but never gated (it must be able to win).
struct Clients {
    lease: Client,
    gated: Client,
    ec2: Arc<dyn Ec2Api>,
}

fn gate_clients(client: Client, ec2: Arc<dyn Ec2Api>, leadership: &Leadership) -> Clients {
    Clients {
        lease: client::bounded(client.clone()),
        gated: client::leader_only(client, leadership.clone()),
        ec2: Arc::new(leader::leader_only(ec2, leadership.clone())),
    }
}

fn lease_config(cfg: &OperatorConfig) -> LeaseConfig {
    LeaseConfig {
        namespace: cfg.lease_namespace.clone(),
        name: cfg.lease_name.clone(),
        identity: cfg.identity.clone(),
        duration: cfg.lease_duration,
    }
}

/// What the controllers share: the round's process-wide state, the caches, Events and metrics.
fn context(
    cfg: &OperatorConfig,
    clients: &Clients,
    ctrls: &Controllers,
    leadership: &Leadership,
    metrics: Metrics,
) -> Arc<Context> {
    let ec2 = clients.ec2.clone();
    let shared = Shared {
        ec2: ec2.clone(),
        cluster: cfg.cluster.clone(),
        family: cfg.family,
        vpc: VpcCidrs::new(cfg.vpc_cidrs.clone()),
        agent_stale_secs: cfg.agent_stale_secs,
        resync: cfg.resync,
        resync_period: ResyncPeriod::new(cfg.resync, ec2.describe_qps()),
        capacity: CapacityCache::new(ec2),
        subnets: SubnetCache::default(),
        memory: Memory::default(),
    };
    let recorder = Recorder::new(
        clients.gated.clone(),
        Reporter { controller: "enipool-operator".into(), instance: Some(cfg.identity.clone()) },
    );
    let ctx = Arc::new(Context {
        shared,
        client: clients.gated.clone(),
        leader: leadership.clone(),
        nodes: ctrls.scope.all_nodes(),
        policies: ctrls.policies.clone(),
        pools: ctrls.pools.clone(),
        recorder,
        metrics,
        termination_wait: cfg.termination_wait,
    });
    ctx.refresh_resync_period(); // the gauge from the start: the minimum while no pool is cached
    ctx
}

/// Every cache has its initial list.
fn all_synced(synced: &[Synced]) -> impl Future<Output = ()> + 'static {
    let synced = synced.to_vec();
    async move {
        for s in &synced {
            s.wait().await;
        }
    }
}

/// `enipool_operator_leader` follows leadership; losing it clears the leader-only pool gauges.
async fn follow_leadership(ctx: Arc<Context>, mut rx: watch::Receiver<bool>) {
    loop {
        let leader = *rx.borrow_and_update();
        ctx.metrics.leadership(leader);
        if rx.changed().await.is_err() {
            return futures::future::pending::<()>().await;
        }
    }
}

/// `/metrics`, `/healthz` and `/readyz`, when an address is configured.
async fn serve_http(
    addr: Option<std::net::SocketAddr>,
    health: Arc<Health>,
) -> std::io::Result<()> {
    match addr {
        Some(a) => http::serve(a, health).await,
        None => futures::future::pending().await,
    }
}

/// `/readyz` turns ready once the caches synced.
async fn mark_ready(synced: impl Future<Output = ()>, health: Arc<Health>) {
    synced.await;
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!("caches synced");
    futures::future::pending::<()>().await
}

/// Campaign for the Lease, only with complete caches. A leader decides from them ("this pool's
/// Node is gone: delete the pool", "this Node has no pool: create one"); with the pool list in and
/// the Node list not yet, it would delete the pools of live Nodes. Standbys sync long before they
/// lead; a replica started while the Lease is free (a handover, the first start) would otherwise
/// lead at once.
async fn campaign(
    synced: impl Future<Output = ()>,
    client: Client,
    lease: LeaseConfig,
    leadership: &Leadership,
) {
    synced.await;
    leader::run(client, lease, leadership).await
}

/// Leaked-ENI GC every interval, on the leader only.
async fn collect_garbage(ctx: Arc<Context>, interval: Duration, grace_secs: i64) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if ctx.is_leader() {
            crate::k8s::gc::gc_once(&ctx, grace_secs).await;
        }
    }
}

/// After a graceful stop: hand the Lease over instead of letting the standbys wait for it to
/// expire.
async fn hand_over_lease(client: Client, lease: &LeaseConfig) {
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client, &lease.namespace);
    match tokio::time::timeout(RELEASE_TIMEOUT, leader::release(&api, lease)).await {
        Ok(Ok(true)) => tracing::info!(identity = %lease.identity, "lease released"),
        Ok(Ok(false)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "releasing the lease failed; it will expire"),
        Err(_) => tracing::warn!("releasing the lease timed out; it will expire"),
    }
}

/// The replica, until shutdown or until a part that must run forever ends.
pub(super) async fn run(
    cfg: OperatorConfig,
    client: Client,
    ec2: Arc<dyn Ec2Api>,
    metrics: Metrics,
    leadership: Leadership,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) -> crate::Result<()> {
    let leader_rx = leadership.subscribe();
    let clients = gate_clients(client, ec2, &leadership);
    let lease = lease_config(&cfg);
    scope::check_selector(&clients.gated, cfg.node_selector.as_deref()).await?;
    let mut ctrls = controllers::build(&clients.gated, cfg.node_selector.as_deref(), cfg.workers);
    let ctx = context(&cfg, &clients, &ctrls, &leadership, metrics);
    let all_nodes_watch =
        std::mem::replace(&mut ctrls.all_nodes_watch, Box::pin(futures::future::pending()));
    let synced = ctrls.synced.clone();
    let running = ctrls.run(&clients.gated, ctx.clone(), leader_rx.clone(), shutdown.clone());
    tokio::select! {
        r = running => r?,
        r = serve_http(cfg.metrics_addr, health.clone()) => {
            return Err(crate::Error::Stopped(format!("HTTP endpoints stopped: {r:?}")))
        }
        _ = mark_ready(all_synced(&synced), health) => {},
        _ = collect_garbage(ctx.clone(), cfg.gc_interval, cfg.leak_grace_secs) => {},
        _ = follow_leadership(ctx.clone(), leader_rx) => {},
        _ = all_nodes_watch => return Err(crate::Error::Stopped("the Node watch ended".into())),
        _ = campaign(all_synced(&synced), clients.lease.clone(), lease.clone(), &leadership) => {
            return Err(crate::Error::Stopped("lease task ended".into()))
        }
    }
    // Graceful stop: the controllers are done and the renewal (the campaign) is dropped.
    leadership.set(None);
    ctx.metrics.leadership(false);
    hand_over_lease(clients.lease, &lease).await;
    Ok(())
}
