//! Rounds while EC2's describes do not show the operator's own changes yet.

use super::*;
use crate::round::unconfirmed::Change;

/// An ENI created that the describes do not show yet holds the pool's published view back (the
/// agent gets it once EC2 describes it), so the pool is looked at again as soon as the describes
/// may have caught up, not at the next resync a minute later.
#[tokio::test]
async fn a_change_not_described_yet_is_looked_at_again_within_seconds() {
    let mut w = world("m5.large", 0, None);
    let settled = w.run().await;
    assert!(settled.requeue >= Duration::from_secs(30), "nothing pending: {:?}", settled.requeue);
    let created = Change::Created(crate::plan::EniView {
        id: "eni-new".into(),
        device_index: 1,
        subnet_id: "subnet-a".into(),
        ips: 9,
        prefixes: 0,
        ipv6_prefixes: 0,
        excluded: false,
        managed: true,
        attached: true,
    });
    w.shared.memory.made(&w.input.name, created);
    let lagging = w.run().await;
    assert!(lagging.status.enis.iter().all(|e| e.id != "eni-new"), "published once described");
    assert!(lagging.requeue <= Duration::from_secs(3), "{:?}", lagging.requeue);
    w.shared.memory.forget_changes(&w.input.name);
    let shown = w.run().await;
    assert!(shown.requeue >= Duration::from_secs(30), "{:?}", shown.requeue);
}
