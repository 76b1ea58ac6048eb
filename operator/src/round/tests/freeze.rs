//! A pool frozen because its Node is cordoned under a policy with `freezeWhenCordoned`: demand
//! moves no EC2 call until the uncordon, while a create an earlier round started is still
//! finished, so nothing it made leaks.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

fn freezing() -> Option<ENIPoolPolicySpec> {
    policy(|p| p.freeze_when_cordoned = true)
}

fn condition(st: &ENIPoolStatus, ty: &str) -> (String, String) {
    let c = st.conditions.iter().find(|c| c.type_ == ty).expect(ty);
    (c.status.clone(), c.reason.clone())
}

#[tokio::test]
async fn a_cordoned_node_under_a_freezing_policy_neither_grows_nor_releases_until_uncordoned() {
    let mut w = world("m5.large", 9, freezing());
    w.input.cordoned = true;
    w.set_agent(AgentStatus { epoch: 1, in_use: 9, ..Default::default() });
    let out = w.run().await;
    assert_eq!(w.fake.mutations(), Vec::<&str>::new(), "no growth while frozen");
    assert_eq!(w.held(), 9);
    assert_eq!(condition(&out.status, "Frozen"), ("True".into(), "NodeCordoned".into()));
    assert_eq!(condition(&out.status, "Ready"), ("False".into(), "NodeCordoned".into()));
    assert!(out.status.effective.as_ref().unwrap().freeze_when_cordoned);

    // Demand gone: the excess is not released either (no request to the agent, no unassign).
    w.set_agent(AgentStatus { epoch: 1, in_use: 0, ..Default::default() });
    w.run().await;
    assert_eq!(w.fake.mutations(), Vec::<&str>::new());
    assert!(w.input.status.release_request.is_none(), "no release started");

    w.set_agent(AgentStatus { epoch: 1, in_use: 9, ..Default::default() });
    w.input.cordoned = false;
    let out = w.run().await;
    assert!(w.fake.mutations().contains(&"CreateNetworkInterface"), "grows once uncordoned");
    assert_eq!(w.held(), 17);
    assert_eq!(condition(&out.status, "Frozen"), ("False".into(), "NotFrozen".into()));
    assert!(cond(&out.status, "Ready"));
}

#[tokio::test]
async fn a_cordoned_node_grows_as_usual_when_its_policy_does_not_freeze() {
    let mut w = world("m5.large", 9, None);
    w.input.cordoned = true;
    w.set_agent(AgentStatus { epoch: 1, in_use: 9, ..Default::default() });
    let out = w.run().await;
    assert!(w.fake.mutations().contains(&"CreateNetworkInterface"));
    assert_eq!(condition(&out.status, "Frozen"), ("False".into(), "NotFrozen".into()));
}

#[tokio::test]
async fn a_frozen_pool_still_finishes_a_create_an_earlier_round_started() {
    let mut w = world("m5.large", 9, freezing());
    w.run().await;
    w.input.cordoned = true;
    // An earlier round journaled the create and made it; the operator stopped before the attach.
    let now = Time(Timestamp::now());
    let items = journal::create_items("subnet-a", &["sg-node".into()], false);
    let entry = journal::new_op(OperationKind::CreateENI, "", 2, items, Some(1), &now);
    let made =
        w.fake.create_eni(&journal::create_request(&entry, &w.owner())).await.expect("create");
    w.fake.reset_calls();
    w.input.status.operations = vec![entry];
    let out = w.run().await;
    assert!(w.fake.mutations().contains(&"AttachNetworkInterface"), "{:?}", w.fake.mutations());
    let attached = w.fake.enis().into_iter().find(|e| e.id == made.id).expect("not deleted");
    assert!(attached.attachment.is_some(), "the half-done create is finished, not left behind");
    assert!(out.status.operations.is_empty(), "journal drained");
    assert!(cond(&out.status, "Frozen"));
}
