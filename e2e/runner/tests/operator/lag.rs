//! EC2 as AWS times it: Describe* answers from a state up to seconds old, attaches take a while
//! and mutations are not instant. The operator must not take a change it made for one still to
//! make: no second ENI, no repeated assign.

use crate::harness::*;
use ec2sim::{FaultConfig, Timing};
use std::time::Duration;

const T: Duration = Duration::from_secs(40);
/// Longer than the 1 s resync and cooldown, so rounds run while EC2 still shows the old state.
const LAG_MS: u64 = 2000;

async fn lagging_env() -> Env {
    let env = env_with(Timing {
        attach: Duration::from_millis(1000),
        detach: Duration::from_millis(500),
        terminate: Duration::from_millis(500),
    })
    .await;
    let mut faults = FaultConfig { describe_lag_ms: LAG_MS, ..Default::default() };
    for action in ["CreateNetworkInterface", "AttachNetworkInterface"] {
        faults.latency_ms.insert(action.into(), 200);
    }
    env.sim.set_faults(faults);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_describes_cause_no_duplicate_assign_or_eni() {
    let env = lagging_env().await;
    let op = env.start_operator("op-a").await;
    env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;
    // Rounds keep running while EC2 shows the ENI without the new addresses.
    tokio::time::sleep(Duration::from_millis(2 * LAG_MS)).await;
    assert_eq!(env.calls("AssignPrivateIpAddresses"), 1, "{:?}", env.sim.counters());
    assert_eq!(allocated(&env.pool("node-a").await.unwrap()), 8);

    // Ten pods: target 18 fills the primary ENI and needs exactly one more ENI.
    env.agent("node-a", &agent_report(1, 10, 0, None)).await;
    env.wait_pool("node-a", "second ENI", T, |p| {
        target(p) == 18 && allocated(p) == 18 && is_ready(p)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2 * LAG_MS)).await;
    let counters = env.sim.counters();
    assert_eq!(env.calls("CreateNetworkInterface"), 1, "{counters:?}");
    assert_eq!(env.calls("AttachNetworkInterface"), 1, "{counters:?}");
    assert_eq!(env.calls("AssignPrivateIpAddresses"), 2, "{counters:?}");
    let snap = env.sim.snapshot();
    let addrs: usize = snap.enis.values().map(|e| e.secondary.len()).sum();
    assert_eq!(addrs, 18, "addresses in EC2");
    let p = env.pool("node-a").await.unwrap();
    assert_eq!(allocated(&p), 18);
    assert!(p.status.as_ref().unwrap().operations.is_empty());
    op.abort();
}
