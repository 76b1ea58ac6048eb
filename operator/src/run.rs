//! Process wiring: telemetry, EC2 client, leader election, watch caches, the two controllers, GC,
//! and the HTTP endpoints.

use crate::args::{Args, LogFormat};
use crate::capacity::CapacityCache;
use crate::controller::{self, Context};
use crate::ec2::aws::{AwsEc2, AwsEc2Config, StaticCredentials};
use crate::ec2::metrics::Ec2Metrics;
use crate::ec2::Ec2Api;
use crate::http::{self, Health};
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::reconcile::{Memory, Shared};
use crate::sync::SubnetCache;
use enipool_crds::{ENIPool, ENIPoolPolicy};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

impl Args {
    /// Run the operator until a watch or the lease task ends.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            cluster_name,
            ec2_endpoint,
            region,
            metrics_addr,
            lease_namespace,
            lease_name,
            identity,
            lease_duration_seconds,
            mutate_qps,
            mutate_burst,
            describe_qps,
            describe_burst,
            budget_share,
            gc_interval_seconds,
            leak_grace_seconds,
            resync_seconds,
            agent_stale_seconds,
            workers,
            vpc_cidrs,
            log_format,
        } = self;
        init_tracing(log_format);
        tracing::info!(version = env!("CARGO_PKG_VERSION"), cluster = %cluster_name, "starting enipool-operator");

        let mut registry = Registry::default();
        let ec2_metrics = Ec2Metrics::default();
        ec2_metrics.register(registry.sub_registry_with_prefix("enipool"));
        let metrics = Metrics::new(&mut registry);
        let mut cfg =
            AwsEc2Config { region, budget_share, metrics: ec2_metrics, ..Default::default() };
        if let Some(q) = describe_qps {
            cfg.describe.qps = q;
        }
        if let Some(b) = describe_burst {
            cfg.describe.burst = b;
        }
        if let Some(q) = mutate_qps {
            cfg.mutate.qps = q;
        }
        if let Some(b) = mutate_burst {
            cfg.mutate.burst = b;
        }
        // A simulator endpoint without credentials in the environment gets the dummy pair.
        if ec2_endpoint.is_some() && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            cfg.static_credentials = Some(StaticCredentials::test());
        }
        cfg.endpoint_url = ec2_endpoint;
        let ec2: Arc<dyn Ec2Api> = Arc::new(AwsEc2::new(cfg).await?);

        let client = Client::try_default().await?;
        let identity = identity
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("enipool-operator-{}", uuid::Uuid::new_v4()));
        let (leader_rx, lease_task) = leader::spawn(
            client.clone(),
            LeaseConfig {
                namespace: lease_namespace,
                name: lease_name,
                identity: identity.clone(),
                duration: Duration::from_secs(lease_duration_seconds.max(3)),
            },
        );

        // Watch caches (kept warm on standbys too).
        let (nodes, nodes_w) = reflector::store::<Node>();
        let node_watch = reflector::reflector(
            nodes_w,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(|_| futures::future::ready(()));
        let (policies, pol_w) = reflector::store::<ENIPoolPolicy>();
        let pol_watch = reflector::reflector(
            pol_w,
            watcher(Api::<ENIPoolPolicy>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(|_| futures::future::ready(()));
        let (pools, pool_w) = reflector::store::<ENIPool>();
        let pool_watch = reflector::reflector(
            pool_w,
            watcher(Api::<ENIPool>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(|_| futures::future::ready(()));

        let shared = Shared {
            ec2: ec2.clone(),
            cluster: cluster_name.clone(),
            vpc_cidrs,
            agent_stale_secs: agent_stale_seconds,
            resync: Duration::from_secs(resync_seconds.max(5)),
            capacity: CapacityCache::new(ec2.clone()),
            subnets: SubnetCache::default(),
            memory: Memory::default(),
        };
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: "enipool-operator".into(), instance: Some(identity) },
        );
        let ctx = Arc::new(Context {
            shared,
            client: client.clone(),
            leader: leader_rx.clone(),
            nodes: nodes.clone(),
            policies: policies.clone(),
            pools: pools.clone(),
            recorder,
            metrics,
        });
        let health = Arc::new(Health { registry, ready: false.into() });
        tokio::spawn(http::serve(metrics_addr, health.clone()));
        {
            let (n, p, q, h) = (nodes.clone(), policies.clone(), pools.clone(), health.clone());
            tokio::spawn(async move {
                let _ =
                    tokio::join!(n.wait_until_ready(), p.wait_until_ready(), q.wait_until_ready());
                h.ready.store(true, Ordering::Relaxed);
                tracing::info!("caches synced");
            });
        }

        // Becoming leader re-reconciles everything (journal replay happens in each reconcile).
        let became_leader = || leadership_gained(leader_rx.clone());
        let cc = ControllerConfig::default().concurrency(workers.max(1));
        let node_ctrl =
            Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default())
                .owns(
                    Api::<DeserializeGuard<ENIPool>>::all(client.clone()),
                    watcher::Config::default(),
                )
                .with_config(cc.clone())
                .reconcile_all_on(became_leader())
                .run(controller::reconcile_node, controller::error_policy, ctx.clone())
                .for_each(|_| futures::future::ready(()));
        let pool_store = pools.clone();
        let pool_ctrl = Controller::new(
            Api::<DeserializeGuard<ENIPool>>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .watches(Api::<Node>::all(client.clone()), watcher::Config::default(), |n: Node| {
            Some(ObjectRef::new(&n.name_any()))
        })
        .watches(
            Api::<ENIPoolPolicy>::all(client.clone()),
            watcher::Config::default(),
            move |_p: ENIPoolPolicy| {
                pool_store.state().iter().map(|p| ObjectRef::new(&p.name_any())).collect::<Vec<_>>()
            },
        )
        .with_config(cc)
        .reconcile_all_on(became_leader())
        .shutdown_on_signal()
        .run(controller::reconcile_pool, controller::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

        let gc = {
            let ctx = ctx.clone();
            async move {
                let mut tick =
                    tokio::time::interval(Duration::from_secs(gc_interval_seconds.max(10)));
                loop {
                    tick.tick().await;
                    if *ctx.leader.borrow() {
                        let all = ctx.pools.state();
                        crate::gc::run_once(
                            ctx.shared.ec2.as_ref(),
                            &ctx.shared.cluster,
                            &all,
                            leak_grace_seconds,
                        )
                        .await;
                    }
                }
            }
        };
        tokio::select! {
            _ = pool_ctrl => tracing::info!("pool controller stopped"),
            _ = node_ctrl => tracing::warn!("node controller stopped"),
            _ = node_watch => anyhow::bail!("node watch ended"),
            _ = pol_watch => anyhow::bail!("policy watch ended"),
            _ = pool_watch => anyhow::bail!("pool watch ended"),
            _ = gc => {},
            r = lease_task => anyhow::bail!("lease task ended: {r:?}"),
        }
        Ok(())
    }
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
