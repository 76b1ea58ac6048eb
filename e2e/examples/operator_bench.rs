//! Operator benchmark (not a test) on the EC2 simulator and the test Kubernetes API, in process.
//!
//! `cargo run -p enipool-e2e --example operator_bench --release -- calls|join500|memory [N]`
//!
//! - `calls`: EC2 mutating calls per node join (primary ENI has room) and for a new ENI.
//! - `join500`: N (default 500) nodes join at once under a 5/s mutate budget with burst 50 (the
//!   simulator's token bucket, and the operator's limiter set to the same account budget); time
//!   until all pools are Ready, against the floor the budget allows.
//! - `memory`: the operator BINARY (`target/<profile>/enipool-operator`, build it first) against
//!   N (default 5000) nodes; its RSS once every pool is Ready.

use enipool_crds::{AgentStatus, ENIPool, AGENT_FIELD_MANAGER};
use enipool_e2e::ec2sim::{Config, Ec2Sim, FaultConfig, RunReq, Timing, TokenBucketSpec};
use enipool_e2e::kubeapi::{KubeApi, KubeApiConfig};
use enipool_operator::ec2::aws::{AwsEc2, AwsEc2Config, StaticCredentials};
use enipool_operator::ec2::limiter::RateConfig;
use enipool_operator::ec2::Ec2Api;
use enipool_operator::{Operator, OperatorConfig};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
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
    let sim = Ec2Sim::start(Config { timing, ..Default::default() }).await?;
    let vpc = sim.create_vpc("10.0.0.0/16", &[])?;
    let subnet = sim.create_subnet(&vpc, "10.0.0.0/16", "us-west-2a", &[])?;
    let sg = sim.create_security_group(&vpc, "nodes", &[])?;
    let kube = KubeApi::start(KubeApiConfig::default()).await?;
    let client = kube.client()?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in enipool_crds::generate::crds() {
        crds.create(&PostParams::default(), &crd).await?;
    }
    let pools: Api<ENIPool> = Api::all(client.clone());
    while pools.list(&ListParams::default()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        let id = self.sim.run_instances(&RunReq {
            image_id: "ami-12345678".into(),
            instance_type: "m5.large".into(),
            count: 1,
            subnet_id: self.subnet.clone(),
            groups: vec![self.sg.clone()],
            delete_on_termination: true,
            ..Default::default()
        })?[0]
            .clone();
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "us-west-2a"}},
            "spec": {"providerID": format!("aws:///us-west-2a/{id}")},
        }))?;
        Api::<Node>::all(self.client.clone()).create(&PostParams::default(), &node).await?;
        Ok(())
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
        Ok(pools
            .items
            .iter()
            .filter(|p| {
                let Some(s) = p.status.as_ref() else { return false };
                let alloc: i32 = s.enis.iter().map(|e| e.ips.len() as i32).sum();
                s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    && s.target.as_ref().is_some_and(|t| t.ips == alloc)
            })
            .count())
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

fn config(workers: u16) -> OperatorConfig {
    let mut c = OperatorConfig::new("bench");
    c.lease_duration = Duration::from_secs(5);
    c.workers = workers;
    c
}

async fn calls() -> anyhow::Result<()> {
    let w = world().await?;
    let fast = RateConfig { qps: 1000.0, burst: 1000 };
    let op =
        Operator::start(config(8), w.client.clone(), w.ec2(fast, fast).await?, Default::default());
    w.join("node-0").await?;
    w.wait_ready(1, Duration::from_secs(30)).await?;
    let join = w.mutating();
    let agent = |in_use: i32| {
        json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool", "metadata": {"name": "node-0"},
               "status": {"agent": AgentStatus { epoch: 1, in_use, ..Default::default() }}})
    };
    let pools: Api<ENIPool> = Api::all(w.client.clone());
    let pp = PatchParams::apply(AGENT_FIELD_MANAGER).force();
    pools.patch_status("node-0", &pp, &Patch::Apply(agent(1))).await?; // fills the primary
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.wait_ready(1, Duration::from_secs(30)).await?;
    let before = w.mutating();
    pools.patch_status("node-0", &pp, &Patch::Apply(agent(10))).await?; // needs a new ENI
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.wait_ready(1, Duration::from_secs(30)).await?;
    println!("mutating calls per join (primary has room): {join}");
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
    println!(
        "describe calls: {}",
        c.iter().filter(|(a, _)| a.starts_with("Describe")).map(|(_, c)| c.calls).sum::<u64>()
    );
    op.abort();
    Ok(())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

async fn memory(n: usize) -> anyhow::Result<()> {
    let w = world().await?;
    let dir = std::env::temp_dir().join(format!("enipool-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    w.kube.write_kubeconfig(&kubeconfig)?;
    for i in 0..n {
        w.join(&format!("node-{i}")).await?;
    }
    let exe = std::env::var("ENIPOOL_OPERATOR_BIN")
        .unwrap_or_else(|_| "target/release/enipool-operator".into());
    let mut child = tokio::process::Command::new(&exe)
        .args([
            "--cluster-name",
            "bench",
            "--ec2-endpoint",
            &w.sim.endpoint_url(),
            "--region",
            "us-west-2",
        ])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--lease-namespace",
            "kube-system",
            "--identity",
            "bench",
        ])
        .args([
            "--mutate-qps",
            "1000",
            "--mutate-burst",
            "1000",
            "--describe-qps",
            "2000",
            "--describe-burst",
            "2000",
        ])
        .args(["--budget-share", "1", "--workers", "32", "--resync-seconds", "300"])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let took = w.wait_ready(n, Duration::from_secs(3600)).await?;
    let mut peak = 0;
    for _ in 0..10 {
        peak = peak.max(rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("pools: {n}; all Ready after {:.1}s", took.as_secs_f64());
    println!(
        "operator RSS (max of 10 samples over 10 s after all Ready): {:.1} MiB",
        peak as f64 / 1024.0
    );
    child.kill().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n = |d: usize| args.get(2).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.get(1).map(String::as_str) {
        Some("calls") => calls().await,
        Some("join500") => join_many(n(500)).await,
        Some("memory") => memory(n(5000)).await,
        _ => anyhow::bail!("usage: operator_bench calls|join500 [N]|memory [N]"),
    }
}
