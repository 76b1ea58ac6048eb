//! Rounds while EC2's describes do not show the operator's own changes yet.

use super::*;
use crate::round::unconfirmed::Change;

/// A change the describes do not show yet holds the pool's published view back (the agent gets
/// only what EC2 shows), so the pool is looked at again as soon as the describes may have caught
/// up, not at the next resync a minute later.
#[tokio::test]
async fn a_change_not_described_yet_is_looked_at_again_within_seconds() {
    let mut w = world("m5.large", 0, None);
    let settled = w.run().await;
    assert!(settled.requeue >= Duration::from_secs(30), "nothing pending: {:?}", settled.requeue);
    let primary = w.input.status.enis[0].id.clone();
    let assigned =
        Change::AssignedIps { eni_id: primary, ips: vec!["10.0.0.200".parse().unwrap()] };
    w.shared.memory.made(&w.input.name, assigned);
    let lagging = w.run().await;
    assert!(lagging.requeue <= Duration::from_secs(3), "{:?}", lagging.requeue);
    w.shared.memory.forget_changes(&w.input.name);
    let shown = w.run().await;
    assert!(shown.requeue >= Duration::from_secs(30), "{:?}", shown.requeue);
}
