//! The account's regional ENI quota: reached, it is the account's, not a node's.

use super::*;

fn ready_reason(st: &ENIPoolStatus) -> String {
    st.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.reason.clone()).unwrap_or_default()
}

/// A create refused for the quota leaves nothing behind and says why on the pool; no pool of the
/// operator creates an ENI again for the cooldown, while existing ENIs are still filled; then
/// creates are tried again.
#[tokio::test]
async fn a_reached_eni_quota_stops_creates_for_every_pool_but_not_assigns() {
    let mut w = world("m5.large", 9, None);
    w.set_agent(AgentStatus { epoch: 1, in_use: 9, ..Default::default() });
    w.fake.fail_next("CreateNetworkInterface", Ec2ErrorKind::EniQuota);
    let out = w.run().await;
    assert_eq!(w.fake.mutations(), ["CreateNetworkInterface"]);
    assert!(!cond(&out.status, "Ready"));
    assert_eq!(ready_reason(&out.status), "ENIQuotaExceeded");
    assert!(out.status.operations.is_empty(), "nothing was created: {:?}", out.status.operations);
    assert_eq!(w.fake.enis().len(), 1);

    // Another round (any pool: the memory is the operator's) plans no create, says why again.
    w.fake.reset_calls();
    let out = w.run().await;
    assert!(w.fake.mutations().is_empty(), "{:?}", w.fake.mutations());
    assert_eq!(ready_reason(&out.status), "ENIQuotaExceeded");

    // Another pool, whose primary ENI has room: that room is filled, the rest waits for the
    // quota.
    let mut other = world("m5.large", 2, None);
    other.shared.memory = std::mem::take(&mut w.shared.memory);
    other.set_agent(AgentStatus { epoch: 1, in_use: 12, ..Default::default() });
    let out = other.run().await;
    assert_eq!(other.fake.mutations(), ["AssignPrivateIpAddresses"]);
    assert_eq!(other.held(), 9);
    assert_eq!(ready_reason(&out.status), "ENIQuotaExceeded");

    // After the cooldown the create is tried again.
    let later = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(1);
    other.shared.memory.eni_quota_reached(
        later - k8s_openapi::jiff::SignedDuration::from_secs(memory::ENI_QUOTA_COOLDOWN_SECS),
    );
    other.fake.reset_calls();
    let out = other.run().await;
    assert!(
        other.fake.mutations().contains(&"CreateNetworkInterface"),
        "{:?}",
        other.fake.mutations()
    );
    assert!(cond(&out.status, "Ready"), "{:?}", out.status.conditions);
}
