//! The account's regional ENI quota, as EC2 answers it (`NetworkInterfaceLimitExceeded` through the
//! real SDK): a node that needs another ENI says why on its pool, keeps what it has, and the
//! operator does not retry the create round after round.

use crate::harness::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reached_eni_quota_is_shown_and_not_hammered() {
    let env = env().await;
    let op = env.start_operator("op-a").await;
    env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;
    let enis = env.sim.snapshot().enis.len();
    env.sim.set_account(ec2sim::Account { eni_quota: enis, ..ec2sim::Account::default() });

    // Ten pods: the primary ENI is filled, the second ENI is refused for the quota.
    env.agent("node-a", &agent_report(1, 10, 0, None)).await;
    let p = env
        .wait_pool("node-a", "Ready=False for the quota", T, |p| {
            cond(p, "Ready").as_deref() == Some("False")
                && p.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.reason == "ENIQuotaExceeded")
                })
        })
        .await;
    assert_eq!(allocated(&p), 9, "the primary ENI is filled");
    let creates = env.calls("CreateNetworkInterface");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let again = env.calls("CreateNetworkInterface") - creates;
    assert_eq!(again, 0, "no create retried within the cooldown: {:?}", env.sim.counters());
    assert_eq!(env.sim.snapshot().enis.len(), enis, "nothing created, nothing left behind");
    op.abort();

    // Raised quota: a new operator process (or the cooldown) grows the node.
    env.sim.set_account(ec2sim::Account::default());
    let op = env.start_operator("op-b").await;
    env.wait_pool("node-a", "second ENI", T, |p| is_ready(p) && allocated(p) == 18).await;
    op.abort();
}
