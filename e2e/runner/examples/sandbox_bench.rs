//! Pod sandbox start through containerd (not a test; root): what a pod's network costs as the
//! kubelet sees it. On the test platform with containerd as the nodes' runtime, one node runs
//! enipool and a second node runs Debian's bridge + host-local; on each, the kubelet's CRI calls
//! (`RunPodSandbox` until the sandbox is ready with its IP, then `StopPodSandbox` +
//! `RemovePodSandbox`) run for N sandboxes one at a time and then 4 at a time. Printed per
//! plugin and concurrency: start p50/p99, stop+remove p50/p99, sandboxes per second, failures.
//! The pause container's start (runc) is in both plugins' figures alike.
//!
//! `cargo build --workspace --bins && cargo build -p enipool-e2e --example sandbox_bench &&`
//! `sudo ENIPOOL_E2E_BIN_DIR=target/debug target/debug/examples/sandbox_bench [N]`
//! (default N: 200).

mod common;

use anyhow::{Context, Result};
use cluster::cri::{Cri, SandboxMeta};
use cluster::node::{Join, NodeInfo};
use cluster::{bridge, wait, Cluster, Runtime, Spec, Target};
use std::time::{Duration, Instant};

/// Sandboxes started (and ended) before the measured ones, so first-use costs stay out.
const WARMUP: usize = 5;

#[derive(Default)]
struct Figures {
    start: Vec<Duration>,
    end: Vec<Duration>,
    failed: usize,
    wall: Duration,
}

async fn one(cri: &Cri, node: &NodeInfo, ns: &str, name: &str, f: &mut Figures) -> Result<()> {
    let meta = SandboxMeta { name, namespace: ns, uid: name, attempt: 0 };
    let logs = node.dir.join("pod-logs").join(name);
    std::fs::create_dir_all(&logs)?;
    let t = Instant::now();
    let started = cri.run_sandbox(&meta, &logs).await;
    let id = match started {
        Ok(id) => id,
        Err(e) => {
            f.failed += 1;
            tracing::warn!(pod = name, error = %format!("{e:#}"), "RunPodSandbox failed");
            return Ok(());
        }
    };
    let st = cri.sandbox_status(&id).await?;
    let took = t.elapsed();
    match st.ready && st.ip.is_some() {
        true => f.start.push(took),
        false => f.failed += 1,
    }
    let t = Instant::now();
    cri.stop_sandbox(&id).await?;
    cri.remove_sandbox(&id).await?;
    f.end.push(t.elapsed());
    Ok(())
}

/// `total` sandboxes on `node`, `conc` at a time.
async fn measure(
    c: &Cluster,
    node: &NodeInfo,
    tag: &str,
    conc: usize,
    total: usize,
) -> Result<Figures> {
    let cri = node.containerd.as_ref().context("the node runs no containerd")?.cri()?;
    let what = format!("containerd of {} to report NetworkReady", node.name);
    wait::poll(&what, Duration::from_secs(90), || async {
        cri.network_ready().await?.map_err(|why| anyhow::anyhow!("{why}"))
    })
    .await?;
    let ns = c.pod_namespace();
    let mut warm = Figures::default();
    for i in 0..WARMUP {
        one(&cri, node, ns, &format!("{tag}-warm-{i}"), &mut warm).await?;
    }
    let t0 = Instant::now();
    let worker = |w: usize| {
        let cri = cri.clone();
        async move {
            let mut f = Figures::default();
            for i in (w..total).step_by(conc) {
                one(&cri, node, ns, &format!("{tag}-c{conc}-{i}"), &mut f).await?;
            }
            Ok::<_, anyhow::Error>(f)
        }
    };
    let parts = futures::future::try_join_all((0..conc).map(worker)).await?;
    let mut all = Figures { wall: t0.elapsed(), ..Default::default() };
    for p in parts {
        all.start.extend(p.start);
        all.end.extend(p.end);
        all.failed += p.failed;
    }
    Ok(all)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

async fn run(c: &Cluster, total: usize) -> Result<()> {
    let enipool = c.nodes()[0].clone();
    let how = Join { start_agent: false, startup_taint: false, runtime_choice: true };
    let other = c.join_node_with(how).await?;
    bridge::install(&other)?;
    println!("sandboxes: {total} per row; times in ms");
    println!(
        "plugin               conc  start p50  start p99  end p50  end p99  sandboxes/s  failed"
    );
    common::pool_warm(c, &enipool.name, 16, Duration::from_secs(90)).await?;
    let rows = [("enipool", "eni", &enipool), ("bridge + host-local", "br", &other)];
    for (label, tag, node) in rows {
        for conc in [1, 4] {
            let mut f = measure(c, node, tag, conc, total).await?;
            println!(
                "{label:<20} {conc:>4}  {:>9.2}  {:>9.2}  {:>7.2}  {:>7.2}  {:>11.1}  {:>6}",
                pct(&mut f.start, 0.5),
                pct(&mut f.start, 0.99),
                pct(&mut f.end, 0.5),
                pct(&mut f.end, 0.99),
                f.start.len() as f64 / f.wall.as_secs_f64(),
                f.failed,
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let total: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200);
    // Enough warm addresses for 4 sandboxes at a time while freed ones cool for a second.
    let mut spec = Spec::new("sandbox-bench", 1).policy(serde_json::json!({
        "mode": "SecondaryIP",
        "sizing": {"warmIPs": 16, "batch": 8},
        "release": {"enabled": false},
        "cooldownSeconds": 1,
    }));
    spec.runtime = Runtime::Containerd;
    spec.instance_type = "m5.xlarge".into();
    spec.report_on_drop = false;
    let c = Cluster::up(&Target::default(), spec).await?;
    let r = run(&c, total).await;
    c.finish(r.as_ref().map(|_| ()).map_err(|e| anyhow::anyhow!("{e:#}"))).await?;
    r
}
