//! Operator benchmark (not a test) on the EC2 simulator and the test Kubernetes API, in process.
//!
//! `cargo run -p enipool-e2e --example operator_bench --release -- calls|join500|memory [N]`
//!
//! - `calls`: EC2 mutating calls per node join (primary ENI has room) and for a new ENI.
//! - `join500`: N (default 500) nodes join at once under a 5/s mutate budget with burst 50 (the
//!   simulator's token bucket, and the operator's limiter set to the same account budget); time
//!   until all pools are Ready, against the floor the budget allows.
//! - `memory [N [LIMIT_SECS]]`: the operator BINARY (`ENIPOOL_OPERATOR_BIN`, default
//!   `target/release/enipool-operator`; build it first) against N (default 5000) nodes. Prints a
//!   progress line every 30 s (Ready count, RSS, CPU, EC2 calls), then the time until all pools
//!   are Ready, the RSS then, its maximum over the following 1.2 resync periods + 60 s (the whole
//!   first resync round and a GC run included), and its peak (VmHWM). Gives up after LIMIT_SECS (default 3600) when
//!   not all pools are Ready by then, with the figures so far.

use anyhow::Context;
use cluster::Platform;
use ec2sim::{Config, Ec2Sim, FaultConfig, RunReq, Timing, TokenBucketSpec};
use enipool_crds::{AgentStatus, ENIPool, AGENT_FIELD_MANAGER};
use enipool_operator::ec2::aws::{AwsEc2, AwsEc2Config, StaticCredentials};
use enipool_operator::ec2::limiter::RateConfig;
use enipool_operator::ec2::Ec2Api;
use enipool_operator::{Operator, OperatorConfig};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use kubeapi::{KubeApi, KubeApiConfig};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct World {
    sim: Ec2Sim,
    kube: KubeApi,
    client: kube::Client,
    subnet: String,
    sg: String,
}

async fn world() -> anyhow::Result<World> {
    enipool_operator::ec2::aws::install_crypto_provider();
    let timing =
        Timing { attach: Duration::ZERO, detach: Duration::ZERO, terminate: Duration::ZERO };
    let p = Platform::builder("10.0.0.0/16")
        .ec2(Config { timing, ..Default::default() })
        .subnet("10.0.0.0/16", "us-west-2a", &[])
        .kube(KubeApiConfig::default())
        .crds()
        .start()
        .await?;
    let client = p.kube().client()?;
    let Platform { sim, kube, mut subnet_ids, sg_id: sg, .. } = p;
    let (kube, subnet) = (kube.context("kubeapi")?, subnet_ids.remove(0));
    Ok(World { sim, kube, client, subnet, sg })
}

impl World {
    async fn ec2(
        &self,
        mutate: RateConfig,
        describe: RateConfig,
    ) -> anyhow::Result<Arc<dyn Ec2Api>> {
        let cfg = AwsEc2Config {
            region: Some("us-west-2".into()),
            endpoint_url: Some(self.sim.endpoint_url()),
            static_credentials: Some(StaticCredentials::test()),
            budget_share: 1.0,
            mutate,
            describe,
            ..Default::default()
        };
        Ok(Arc::new(AwsEc2::new(cfg).await?))
    }

    async fn join(&self, name: &str) -> anyhow::Result<()> {
        let id = self.launch()?;
        self.register(name, &id).await
    }

    /// A new instance; its id.
    fn launch(&self) -> anyhow::Result<String> {
        Ok(self.sim.run_instances(&RunReq {
            image_id: "ami-12345678".into(),
            instance_type: "m5.large".into(),
            count: 1,
            subnet_id: self.subnet.clone(),
            groups: vec![self.sg.clone()],
            delete_on_termination: true,
            ..Default::default()
        })?[0]
            .clone())
    }

    /// The instance's kubelet registers its Node.
    async fn register(&self, name: &str, id: &str) -> anyhow::Result<()> {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "us-west-2a"}},
            "spec": {"providerID": format!("aws:///us-west-2a/{id}")},
        }))?;
        Api::<Node>::all(self.client.clone()).create(&PostParams::default(), &node).await?;
        Ok(())
    }

    /// Describe calls so far, by action.
    fn describes(&self) -> BTreeMap<String, u64> {
        let c = self.sim.counters();
        c.into_iter()
            .filter(|(a, _)| a.starts_with("Describe"))
            .map(|(a, c)| (a, c.calls))
            .collect()
    }

    /// Describe calls one more node's join costs, the rounds it sets off after Ready included.
    async fn join_describes(&self, name: &str, ready: usize) -> anyhow::Result<String> {
        let id = self.launch()?;
        // A kubelet registers its Node long after EC2's describes show the instance; registering
        // sooner would count the describes of an instance EC2 does not show yet.
        tokio::time::sleep(LAG + Duration::from_millis(500)).await;
        let before = self.describes();
        self.register(name, &id).await?;
        self.wait_ready(ready, Duration::from_secs(30)).await?;
        // Rounds the join set off (its own status writes coming back, describes catching up).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let spent: Vec<(String, u64)> = self
            .describes()
            .into_iter()
            .map(|(a, n)| (a.clone(), n - before.get(&a).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let total: u64 = spent.iter().map(|(_, n)| n).sum();
        let each: Vec<String> = spent.iter().map(|(a, n)| format!("{a} {n}")).collect();
        Ok(format!("{total} ({})", each.join(", ")))
    }

    fn mutating(&self) -> u64 {
        self.sim
            .counters()
            .iter()
            .filter(|(a, _)| !a.starts_with("Describe"))
            .map(|(_, c)| c.calls)
            .sum()
    }

    /// Pools that are Ready with allocated == target.
    async fn ready(&self) -> anyhow::Result<usize> {
        let pools = Api::<ENIPool>::all(self.client.clone()).list(&ListParams::default()).await?;
        Ok(pools.items.iter().filter(|p| is_ready(p)).count())
    }

    async fn wait_ready(&self, n: usize, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if self.ready().await? >= n {
                return Ok(start.elapsed());
            }
            anyhow::ensure!(
                start.elapsed() < timeout,
                "timeout: {} of {n} ready",
                self.ready().await?
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Ready with allocated == target: the pool has what it wants.
fn is_ready(p: &ENIPool) -> bool {
    let Some(s) = p.status.as_ref() else { return false };
    let alloc: i32 = s.enis.iter().map(|e| e.ips.len() as i32).sum();
    s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
        && s.target.as_ref().is_some_and(|t| t.ips == alloc)
}

fn config(workers: u16) -> OperatorConfig {
    let mut c = OperatorConfig::new("bench");
    c.lease_duration = Duration::from_secs(5);
    c.workers = workers;
    c
}

/// EC2's describe lag in the `calls` phase's last join: the simulator's AWS-like timing.
const LAG: Duration = cluster::DESCRIBE_LAG;

async fn calls() -> anyhow::Result<()> {
    let w = world().await?;
    let fast = RateConfig { qps: 1000.0, burst: 1000 };
    let op =
        Operator::start(config(8), w.client.clone(), w.ec2(fast, fast).await?, Default::default());
    w.join("node-0").await?;
    w.wait_ready(1, Duration::from_secs(30)).await?;
    let join = w.mutating();
    // Per join once the process-wide caches (instance types, subnets, VPC) know the node's.
    let warm = w.join_describes("node-1", 2).await?;
    w.sim.set_faults(FaultConfig { describe_lag_ms: LAG.as_millis() as u64, ..Default::default() });
    let lagging = w.join_describes("node-2", 3).await?;
    w.sim.set_faults(FaultConfig::default());
    let agent = |in_use: i32| {
        json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool", "metadata": {"name": "node-0"},
               "status": {"agent": AgentStatus { epoch: 1, in_use, ..Default::default() }}})
    };
    let pools: Api<ENIPool> = Api::all(w.client.clone());
    let pp = PatchParams::apply(AGENT_FIELD_MANAGER).force();
    pools.patch_status("node-0", &pp, &Patch::Apply(agent(1))).await?; // fills the primary
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.wait_ready(3, Duration::from_secs(30)).await?;
    let before = w.mutating();
    pools.patch_status("node-0", &pp, &Patch::Apply(agent(10))).await?; // needs a new ENI
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.wait_ready(3, Duration::from_secs(30)).await?;
    println!("mutating calls per join (primary has room): {join}");
    println!("describe calls per join (caches warm): {warm}");
    println!("describe calls per join, describes lagging {} ms: {lagging}", LAG.as_millis());
    println!("mutating calls for growth needing a new ENI: {}", w.mutating() - before);
    println!("counters: {}", serde_json::to_string(&w.sim.counters())?);
    op.abort();
    Ok(())
}

async fn join_many(n: usize) -> anyhow::Result<()> {
    let w = world().await?;
    let (qps, burst) = (5.0, 50.0);
    w.sim.set_faults(FaultConfig {
        throttle: [(
            "Mutate*".to_string(),
            TokenBucketSpec { capacity: burst, refill_per_sec: qps },
        )]
        .into(),
        ..Default::default()
    });
    let mutate = RateConfig { qps, burst: burst as u32 };
    let describe = RateConfig::EC2_DESCRIBE;
    let op = Operator::start(
        config(16),
        w.client.clone(),
        w.ec2(mutate, describe).await?,
        Default::default(),
    );
    while !op.is_leader() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    for i in 0..n {
        w.join(&format!("node-{i}")).await?;
    }
    let created = start.elapsed();
    w.wait_ready(n, Duration::from_secs(1800)).await?;
    let took = start.elapsed();
    let c = w.sim.counters();
    let mutating = w.mutating();
    // Every join needs one mutating call: the budget allows `burst` at once, then `qps` per second.
    let floor = ((n as f64 - burst) / qps).max(0.0);
    println!("nodes: {n}; created in {:.1}s", created.as_secs_f64());
    println!(
        "all Ready after {:.1}s; floor {floor:.1}s; ratio {:.2}",
        took.as_secs_f64(),
        took.as_secs_f64() / floor
    );
    println!(
        "mutating calls: {mutating} ({:.2}/node); throttled: {}",
        mutating as f64 / n as f64,
        c.values().map(|c| c.throttled).sum::<u64>()
    );
    let describes: Vec<(&String, u64)> =
        c.iter().filter(|(a, _)| a.starts_with("Describe")).map(|(a, c)| (a, c.calls)).collect();
    let total: u64 = describes.iter().map(|(_, n)| n).sum();
    println!("describe calls: {total} ({:.2}/node)", total as f64 / n as f64);
    for (action, calls) in describes {
        println!("  {action}: {calls}");
    }
    op.abort();
    Ok(())
}

#[path = "operator_bench/memory.rs"]
mod memory;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n = |d: usize| args.get(2).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.get(1).map(String::as_str) {
        Some("calls") => calls().await,
        Some("join500") => join_many(n(500)).await,
        Some("memory") => {
            let limit = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3600);
            memory::memory(n(5000), Duration::from_secs(limit)).await
        }
        _ => anyhow::bail!("usage: operator_bench calls|join500 [N]|memory [N [LIMIT_SECS]]"),
    }
}
