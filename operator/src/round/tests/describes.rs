//! What a node's rounds cost in EC2 describes: the instance's answer is reused between rounds,
//! and what EC2 answered to the round's own assign is published without describing it again.

use super::*;

fn counted(w: &World, action: &str) -> usize {
    w.fake.describes().iter().filter(|a| **a == action).count()
}

/// Once the process-wide caches (instance types, subnets, VPCs) are warm, all a join describes
/// is the instance and its ENIs: the addresses the assign answered are published as they are.
#[tokio::test]
async fn a_node_join_costs_two_describes() {
    let mut w = world("m5.large", 0, None);
    w.run().await; // a first node warms the process-wide caches
    let id = "i-0000000002";
    w.fake.launch(id, "m5.large", 0);
    let second = PoolInput {
        name: "node-2".into(),
        uid: "uid-2".into(),
        instance_id: id.into(),
        policy_name: "p".into(),
        ..Default::default()
    };
    w.fake.reset_calls();
    let out = run_round(&w.shared, &second, &w.sink).await.expect("round");
    assert_eq!(w.fake.mutations(), vec!["AssignPrivateIpAddresses"]);
    assert_eq!(w.fake.describes(), vec!["DescribeInstances", "DescribeNetworkInterfaces"]);
    assert_eq!(out.status.enis[0].ips.len(), 8, "what EC2 assigned is published");
    assert!(cond(&out.status, "Ready"));
    assert!(out.requeue >= Duration::from_secs(30), "nothing to look at again: {:?}", out.requeue);
}

/// EC2's describes lag behind the assign. The join still costs two describes and publishes what
/// the assign answered; the rounds right after it (the agent's first reports) describe only the
/// ENIs, and a describe not showing the addresses yet neither takes them from the agent nor
/// assigns them again.
#[tokio::test]
async fn a_lagging_describe_does_not_take_answered_addresses_back() {
    let mut w = world("m5.large", 0, None);
    w.fake.lag_describes();
    let joined = w.run().await;
    let published = joined.status.enis[0].ips.clone();
    assert_eq!(published.len(), 8);
    assert!(joined.requeue >= Duration::from_secs(30), "{:?}", joined.requeue);
    assert_eq!(
        (counted(&w, "DescribeInstances"), counted(&w, "DescribeNetworkInterfaces")),
        (1, 1)
    );

    w.set_agent(AgentStatus { epoch: 1, ..Default::default() });
    let report = w.run().await;
    assert_eq!(report.status.enis[0].ips, published, "still published while EC2 lags");
    assert_eq!(report.status.revision, joined.status.revision, "nothing changed for the agent");
    assert_eq!(w.fake.mutations(), vec!["AssignPrivateIpAddresses"], "no second assign");
    assert_eq!(
        (counted(&w, "DescribeInstances"), counted(&w, "DescribeNetworkInterfaces")),
        (1, 2)
    );

    w.fake.catch_up();
    let shown = w.run().await;
    assert_eq!(shown.status.enis[0].ips, published);
    assert_eq!(shown.status.revision, joined.status.revision);
}

/// The instance's answer is reused only while its ENIs show it alive: a terminated instance (its
/// ENIs deleted with it) is described again in the same round and no EC2 change is made for it.
#[tokio::test]
async fn a_terminated_instance_is_described_again_at_once() {
    let mut w = world("m5.large", 0, None);
    w.run().await;
    w.fake.terminate("i-0000000001");
    w.fake.reset_calls();
    w.set_agent(AgentStatus { epoch: 1, in_use: 3, ..Default::default() });
    let out = w.run().await;
    assert_eq!(counted(&w, "DescribeInstances"), 1);
    assert!(w.fake.mutations().is_empty(), "{:?}", w.fake.mutations());
    let ready = out.status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.reason, conditions::reason::INSTANCE_TERMINATED);
}

/// An address the assign answered, offered back and unassigned before any describe showed it,
/// is not published again from the assign's answer.
#[tokio::test]
async fn an_address_released_before_describes_showed_it_stays_released() {
    let sizing = |warm: i32| {
        policy(|p| {
            p.sizing = Sizing {
                warm_ips: Some(warm),
                min_allocate: Some(0),
                batch: Some(1),
                ..Default::default()
            };
            p.release = ReleaseSettings {
                delay_seconds: Some(0),
                hysteresis_ips: Some(0),
                ..Default::default()
            };
        })
    };
    let mut w = world("m5.large", 0, sizing(8));
    w.fake.lag_describes();
    w.set_agent(AgentStatus { epoch: 1, ..Default::default() });
    w.run().await;
    assert_eq!(w.held(), 8);
    w.input.policy = sizing(7);
    w.run().await;
    let req = w.input.status.release_request.clone().expect("release requested");
    let offered = w.input.status.enis[0].ips[0].clone();
    w.set_agent(offering(1, req.revision, vec![offered.clone()]));
    w.run().await;
    assert_eq!(w.fake.mutations(), vec!["AssignPrivateIpAddresses", "UnassignPrivateIpAddresses"]);
    assert!(!w.input.status.enis[0].ips.contains(&offered), "{:?}", w.input.status.enis);
    assert_eq!(w.held(), 7);
    w.run().await;
    assert!(!w.input.status.enis[0].ips.contains(&offered), "{:?}", w.input.status.enis);
}
