//! Pod burst on one node (not a test; root): N pods created at once on a fresh m5.xlarge node
//! whose policy keeps 3 warm addresses, on the test platform with EC2 timed like AWS. Every
//! sandbox is started at once; a failed ADD is retried after the kubelet's pod-sync back-off
//! (10 s), as the kubelet does. Printed per N, with the agent's ADD wait off (`--add-wait-ms=0`:
//! an empty pool fails the ADD at once) and at its default: failed ADDs, the time until every
//! sandbox was wired, and the first and last sandbox's.
//!
//! `cargo build --workspace --bins && cargo build -p enipool-e2e --example burst_bench &&`
//! `sudo ENIPOOL_E2E_BIN_DIR=target/debug target/debug/examples/burst_bench [N...]`
//! (default N: 10 30).

mod common;

use anyhow::Result;
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

async fn burst(n: usize, add_wait: Option<u64>) -> Result<Figures> {
    let mut spec = Spec::new(&format!("burst-{n}"), 1).policy(serde_json::json!({
        "mode": "SecondaryIP",
        "sizing": {"warmIPs": 3, "batch": 1},
        "release": {"enabled": false},
        "cooldownSeconds": 1,
    }));
    spec.instance_type = "m5.xlarge".into();
    spec.report_on_drop = false;
    if let Some(ms) = add_wait {
        spec.agent_args.push(format!("--add-wait-ms={ms}"));
    }
    let c = Cluster::up(&Target::default(), spec).await?;
    let r = run(&c, n).await;
    c.finish(r.as_ref().map(|_| ()).map_err(|e| anyhow::anyhow!("{e:#}"))).await?;
    r
}

async fn run(c: &Cluster, n: usize) -> Result<Figures> {
    let node = c.nodes()[0].name.clone();
    common::pool_warm(c, &node, 3, Duration::from_secs(60)).await?;
    let names: Vec<String> = (0..n).map(|i| format!("burst-{i}")).collect();
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
    let ns: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let ns = if ns.is_empty() { vec![10, 30] } else { ns };
    println!("pods  ADD wait         failed ADDs  first wired  last wired");
    for n in ns {
        for (label, wait) in [("off (fail fast)", Some(0)), ("default", None)] {
            let f = burst(n, wait).await?;
            println!(
                "{n:>4}  {label:<16} {:>11}  {:>10.2}s {:>10.2}s",
                f.failed_adds,
                f.first.as_secs_f64(),
                f.last.as_secs_f64()
            );
        }
    }
    Ok(())
}
