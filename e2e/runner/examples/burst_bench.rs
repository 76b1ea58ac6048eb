//! Pod burst on one node (not a test; root): N pods created at once on a fresh m5.xlarge node
//! whose policy keeps 3 warm addresses, on the test platform with EC2 timed like AWS. Every
//! sandbox is started at once; a failed ADD is retried after the kubelet's pod-sync back-off
//! (10 s), as the kubelet does. Printed per N, with the agent's ADD wait off (`--add-wait-ms=0`:
//! an empty pool fails the ADD at once) and at its default: failed ADDs, the time until every
//! sandbox was wired, and the first and last sandbox's.
//!
//! `cargo build --workspace --bins && cargo build -p enipool-e2e --example burst_bench &&`
//! `sudo ENIPOOL_E2E_BIN_DIR=target/debug target/debug/examples/burst_bench [--preload P] [N...]`
//! (default N: 10 30).
//!
//! `--preload P`: the node scale. The node is an m5.24xlarge (737 pods) already running P pods
//! when the burst comes, and the pods of a churn just before it (P/2 created and deleted) have
//! left their addresses cooling in the agent's store (cooldown 300 s); the node's subnet is a /20.
//! Only the default ADD wait
//! is run, and the agent's RSS and peak RSS after the burst are printed.

mod common;

use anyhow::{Context, Result};
use cluster::{Cluster, Spec, Target};
use std::time::{Duration, Instant};

/// The kubelet retries a pod whose sandbox failed after its pod-sync back-off.
const KUBELET_RETRY: Duration = Duration::from_secs(10);
/// Give up on a pod after this long.
const LIMIT: Duration = Duration::from_secs(120);

struct Figures {
    failed_adds: usize,
    first: Duration,
    last: Duration,
}

/// What the node holds when the burst comes, and the agent's memory after it.
struct Scale {
    /// Addresses of deleted pods still cooling in the agent's store when the burst came.
    cooling: usize,
    rss_kib: u64,
    hwm_kib: u64,
}

async fn burst(n: usize, add_wait: Option<u64>, preload: usize) -> Result<(Figures, Scale)> {
    let mut spec = Spec::new(&format!("burst-{n}"), 1).policy(serde_json::json!({
        "mode": "SecondaryIP",
        "sizing": {"warmIPs": 3, "batch": 1},
        "release": {"enabled": false},
        // At node scale the churned pods' addresses stay cooling through the burst.
        "cooldownSeconds": if preload > 0 { 300 } else { 1 },
    }));
    spec.instance_type = if preload > 0 { "m5.24xlarge" } else { "m5.xlarge" }.into();
    if preload > 0 {
        // Room for the residents, the cooling and the burst: the default node subnet is a /24.
        spec.subnets[0].cidr = "10.0.0.0/20";
    }
    spec.report_on_drop = false;
    if let Some(ms) = add_wait {
        spec.agent_args.push(format!("--add-wait-ms={ms}"));
    }
    let c = Cluster::up(&Target::default(), spec).await?;
    let r = async {
        let node = c.nodes()[0].name.clone();
        common::pool_warm(&c, &node, 3, Duration::from_secs(60)).await?;
        let churned = preload_node(&c, &node, preload).await?;
        let f = run(&c, n).await?;
        Ok((f, scale(&c, &node, churned).await?))
    }
    .await;
    c.finish(r.as_ref().map(|_| ()).map_err(|e| anyhow::anyhow!("{e:#}"))).await?;
    r
}

/// `preload` pods running on `node`, started 30 at a time (each group wired before the next),
/// then `preload / 2` more created and deleted. Returns how many were deleted.
async fn preload_node(c: &Cluster, node: &str, preload: usize) -> Result<usize> {
    let churn = preload / 2;
    let names: Vec<String> = (0..preload + churn).map(|i| format!("resident-{i}")).collect();
    for group in names.chunks(30) {
        for name in group {
            c.create_pod(name, node).await?;
        }
        let start = group.iter().map(|name| async move {
            let what = format!("pod {name} to start");
            cluster::wait::poll(&what, LIMIT, || c.start_sandbox(name)).await
        });
        futures::future::try_join_all(start).await?;
    }
    for name in &names[preload..] {
        c.delete_pod(name).await?;
    }
    Ok(churn)
}

/// The agent's memory (`/proc/<pid>/status`).
async fn scale(c: &Cluster, node: &str, churned: usize) -> Result<Scale> {
    let n = c.node(node)?;
    let pid = c.core.procs.pid(&n.agent).context("the agent is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| -> Result<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix(field)).context("no field")?;
        Ok(line.trim().trim_end_matches("kB").trim().parse()?)
    };
    Ok(Scale { cooling: churned, rss_kib: kib("VmRSS:")?, hwm_kib: kib("VmHWM:")? })
}

async fn run(c: &Cluster, n: usize) -> Result<Figures> {
    let names: Vec<String> = (0..n).map(|i| format!("burst-{i}")).collect();
    let node = c.nodes()[0].name.clone();
    for name in &names {
        c.create_pod(name, &node).await?;
    }
    let t0 = Instant::now();
    let one = |name: String| async move {
        let mut failed = 0;
        loop {
            match c.start_sandbox(&name).await {
                Ok(_) => return Ok::<_, anyhow::Error>((failed, t0.elapsed())),
                Err(e) if t0.elapsed() < LIMIT => {
                    failed += 1;
                    tracing::debug!(pod = %name, error = %format!("{e:#}"), "ADD failed");
                    tokio::time::sleep(KUBELET_RETRY).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    let done = futures::future::try_join_all(names.into_iter().map(one)).await?;
    Ok(Figures {
        failed_adds: done.iter().map(|d| d.0).sum(),
        first: done.iter().map(|d| d.1).min().unwrap_or_default(),
        last: done.iter().map(|d| d.1).max().unwrap_or_default(),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut preload = 0;
    if let Some(i) = args.iter().position(|a| a == "--preload") {
        preload = args.get(i + 1).context("--preload needs a count")?.parse()?;
        args.drain(i..i + 2);
    }
    let ns: Vec<usize> = args.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    let ns = if ns.is_empty() { vec![10, 30] } else { ns };
    let waits: &[(&str, Option<u64>)] = match preload {
        0 => &[("off (fail fast)", Some(0)), ("default", None)],
        _ => &[("default", None)],
    };
    println!("pods  ADD wait         failed ADDs  first wired  last wired  resident  cooling  RSS MiB  peak MiB");
    for n in ns {
        for (label, wait) in waits {
            let (f, s) = burst(n, *wait, preload).await?;
            println!(
                "{n:>4}  {label:<16} {:>11}  {:>10.2}s {:>10.2}s  {preload:>8}  {:>7}  {:>7.1}  {:>8.1}",
                f.failed_adds,
                f.first.as_secs_f64(),
                f.last.as_secs_f64(),
                s.cooling,
                s.rss_kib as f64 / 1024.0,
                s.hwm_kib as f64 / 1024.0,
            );
        }
    }
    Ok(())
}
