//! Reconcile against the in-memory EC2 fake: the call counts and safety properties of the issue.

use super::*;
use crate::ec2::fake::FakeEc2;
use crate::ec2::Ec2ErrorKind;
use crate::journal;
use enipool_crds::{AgentStatus, IpMode, OperationKind, Releasable, ReleaseSettings, Sizing};
use std::sync::Mutex;

mod describes;
mod freeze;
mod ipv6;
mod lag;
mod quota;

/// Records every status write with the number of EC2 mutations made before it, and every
/// removal.
pub(super) struct Sink {
    fake: Arc<FakeEc2>,
    pub(super) writes: Mutex<Vec<(ENIPoolStatus, usize)>>,
    pub(super) removals: Mutex<Vec<Removal>>,
}

#[async_trait::async_trait]
impl StatusSink for Sink {
    async fn write(&self, status: &ENIPoolStatus) -> Result<()> {
        assert!(status.agent.is_none(), "the operator never sends status.agent");
        self.writes.lock().unwrap().push((status.clone(), self.fake.mutations().len()));
        Ok(())
    }

    async fn remove(&self, removals: &[Removal]) -> Result<()> {
        self.removals.lock().unwrap().extend(removals.iter().cloned());
        Ok(())
    }
}

pub(super) struct World {
    pub(super) fake: Arc<FakeEc2>,
    pub(super) shared: Shared,
    pub(super) sink: Sink,
    pub(super) input: PoolInput,
}

pub(super) fn world(
    instance_type: &str,
    launch_ips: i32,
    policy: Option<ENIPoolPolicySpec>,
) -> World {
    let fake = Arc::new(FakeEc2::new());
    fake.launch("i-0000000001", instance_type, launch_ips);
    let shared = Shared {
        ec2: fake.clone(),
        cluster: "test".into(),
        family: enipool_crds::IpFamily::IPv4,
        vpc: crate::ec2::vpc::VpcCidrs::new(vec![]),
        agent_stale_secs: 120,
        resync: Duration::from_secs(60),
        resync_period: crate::round::resync::ResyncPeriod::new(Duration::from_secs(60), None),
        capacity: CapacityCache::new(fake.clone()),
        subnets: SubnetCache::default(),
        memory: Memory::default(),
    };
    let input = PoolInput {
        name: "node-1".into(),
        uid: "uid-1".into(),
        instance_id: "i-0000000001".into(),
        policy_name: "p".into(),
        policy,
        ..Default::default()
    };
    World {
        sink: Sink { fake: fake.clone(), writes: Mutex::new(vec![]), removals: Mutex::new(vec![]) },
        fake,
        shared,
        input,
    }
}

impl World {
    /// One reconcile; the written status becomes the stored one (the agent part is kept).
    pub(super) async fn run(&mut self) -> Outcome {
        let out = run_round(&self.shared, &self.input, &self.sink).await.expect("reconcile");
        let agent = self.input.status.agent.clone();
        self.input.status = ENIPoolStatus { agent, ..out.status.clone() };
        out
    }

    /// Whom the world's ENIs belong to, as the round derives it.
    pub(super) fn owner(&self) -> Owner {
        Owner {
            cluster: self.shared.cluster.clone(),
            node: self.input.name.clone(),
            instance_id: self.input.instance_id.clone(),
            pool_uid: self.input.uid.clone(),
            extra_tags: Default::default(),
        }
    }

    fn set_agent(&mut self, a: AgentStatus) {
        self.input.status.agent = Some(a);
    }

    fn held(&self) -> usize {
        self.input.status.enis.iter().map(|e| e.ips.len() + 16 * e.prefixes.len()).sum()
    }
}

/// The agent's report at `epoch` offering `ips` for release, answering request `revision`.
pub(super) fn offering(epoch: i64, revision: i64, ips: Vec<String>) -> AgentStatus {
    let releasable = Releasable { revision, ips, prefixes: vec![] };
    AgentStatus { epoch, releasable: Some(releasable), ..Default::default() }
}

pub(super) fn cond(st: &ENIPoolStatus, ty: &str) -> bool {
    enipool_crds::summary::is_true(&st.conditions, ty)
}

fn policy(f: impl FnOnce(&mut ENIPoolPolicySpec)) -> Option<ENIPoolPolicySpec> {
    let mut p = ENIPoolPolicySpec::default();
    f(&mut p);
    Some(p)
}

#[tokio::test]
async fn node_join_fills_the_primary_eni_with_one_call_journaled_first() {
    let mut w = world("m5.large", 0, None);
    let out = w.run().await;
    assert_eq!(w.fake.mutations(), vec!["AssignPrivateIpAddresses"]);
    assert_eq!(w.held(), 8);
    assert!(cond(&out.status, "Ready"));
    assert!(out.status.operations.is_empty());
    let writes = w.sink.writes.lock().unwrap();
    // The first write carries the journal entry and precedes the call.
    assert_eq!(writes[0].1, 0);
    assert_eq!(writes[0].0.operations.len(), 1);
    assert_eq!(writes.last().unwrap().0.enis[0].ips.len(), 8);
    assert!(out.status.revision > 0);
    assert_eq!(out.status.effective.as_ref().unwrap().capacity.max_pods, 29);
}

#[tokio::test]
async fn launch_time_addresses_are_adopted_without_calls() {
    let mut w = world("m5.large", 8, None);
    w.run().await;
    assert!(w.fake.mutations().is_empty());
    assert_eq!(w.held(), 8);
    // A second round with nothing new writes nothing.
    let n = w.sink.writes.lock().unwrap().len();
    w.run().await;
    assert_eq!(w.sink.writes.lock().unwrap().len(), n);
}

#[tokio::test]
async fn new_eni_costs_create_attach_modify() {
    let mut w = world("m5.large", 9, None);
    w.set_agent(AgentStatus { epoch: 1, in_use: 9, ..Default::default() });
    w.run().await;
    assert_eq!(
        w.fake.mutations(),
        vec!["CreateNetworkInterface", "AttachNetworkInterface", "ModifyNetworkInterfaceAttribute"]
    );
    assert_eq!(w.held(), 17);
    let eni = w
        .fake
        .enis()
        .into_iter()
        .find(|e| e.attachment.as_ref().is_some_and(|a| a.device_index == 1))
        .unwrap();
    assert!(eni.attachment.unwrap().delete_on_termination);
    for t in [
        enipool_crds::tags::CLUSTER,
        enipool_crds::tags::NODE,
        enipool_crds::tags::INSTANCE_ID,
        enipool_crds::tags::OWNER,
        enipool_crds::tags::CREATED_AT,
    ] {
        assert!(eni.tags.contains_key(t), "missing tag {t}");
    }
    assert!(w.input.status.enis[1].managed);
}

#[tokio::test]
async fn prefix_mode_falls_back_to_ips_on_insufficient_cidr_blocks() {
    let mut w = world("m5.large", 0, policy(|p| p.mode = IpMode::PrefixWithFallback));
    w.fake.state.lock().unwrap().no_cidr.insert("subnet-a".into());
    let first = w.run().await;
    assert!(first.requeue <= Duration::from_secs(1));
    assert_eq!(w.held(), 0);
    w.run().await;
    assert!(w.held() >= 16, "got {}", w.held());
    assert!(w.input.status.enis.iter().all(|e| e.prefixes.is_empty()));

    let mut strict = world("m5.large", 0, policy(|p| p.mode = IpMode::Prefix));
    strict.fake.state.lock().unwrap().no_cidr.insert("subnet-a".into());
    strict.run().await;
    let out = strict.run().await;
    assert!(cond(&out.status, "SubnetExhausted"));
}

#[tokio::test]
async fn subnet_full_sets_condition() {
    let mut w = world("m5.large", 9, None);
    w.fake.state.lock().unwrap().subnets.get_mut("subnet-a").unwrap().available_ips = 0;
    w.set_agent(AgentStatus { epoch: 1, in_use: 9, ..Default::default() });
    let out = w.run().await;
    assert!(cond(&out.status, "SubnetExhausted"));
    assert!(!cond(&out.status, "Ready"));
    assert!(w.fake.mutations().is_empty(), "the planner saw the subnet full; no doomed call");
}

#[tokio::test]
async fn instance_limit_sets_capacity_exhausted() {
    let mut w = world("t3.small", 3, None);
    w.set_agent(AgentStatus { epoch: 1, in_use: 20, ..Default::default() });
    for _ in 0..3 {
        w.run().await;
    }
    assert_eq!(w.held(), 9, "t3.small holds 3 ENIs x 3 addresses");
    assert!(cond(&w.input.status, "CapacityExhausted"));
    assert_eq!(w.input.status.enis.len(), 3);
}

#[tokio::test]
async fn throttling_storm_converges_without_overshoot() {
    let mut w = world(
        "m5.large",
        0,
        policy(|p| p.sizing = Sizing { batch: Some(4), ..Default::default() }),
    );
    let batch = 4;
    for round in 0..40 {
        if round % 3 != 2 {
            w.fake.fail_next("*", Ec2ErrorKind::Throttled);
        }
        // Demand only grows here, so the pool must end within one batch above the final target.
        let in_use = (round / 2).min(10);
        w.set_agent(AgentStatus { epoch: 1, in_use, ..Default::default() });
        let _ = run_round(&w.shared, &w.input, &w.sink).await.map(|o| {
            let agent = w.input.status.agent.clone();
            w.input.status = ENIPoolStatus { agent, ..o.status };
        });
        let target = w.input.status.target.as_ref().map(|t| t.ips).unwrap_or(0) as usize;
        assert!(w.held() < target + batch, "round {round}: held {} target {target}", w.held());
    }
    for _ in 0..3 {
        w.run().await;
    }
    let target = w.input.status.target.as_ref().unwrap().ips as usize;
    assert!(
        w.held() >= target && w.held() < target + batch + 1,
        "held {} target {target}",
        w.held()
    );
    assert!(!cond(&w.input.status, "Throttled"));
}

#[tokio::test]
async fn crash_after_create_before_attach_adopts_the_same_eni() {
    let mut w = world("m5.large", 9, None);
    w.set_agent(AgentStatus { epoch: 1, in_use: 9, ..Default::default() });
    // The crashed leader journaled and sent CreateENI; EC2 created it; nothing else happened.
    let now = Time(Timestamp::now());
    let mut op = journal::new_op(
        OperationKind::CreateENI,
        "",
        4,
        journal::create_items("subnet-a", &["sg-node".into()], false),
        Some(1),
        &now,
    );
    w.fake.create_eni(&journal::create_request(&op, &w.owner())).await.unwrap();
    op.attempts = 1;
    w.input.status.operations = vec![op];
    w.fake.reset_calls();
    w.run().await;
    let enis = w.fake.enis();
    assert_eq!(enis.len(), 2, "no duplicate ENI");
    assert!(enis.iter().all(|e| e.attachment.is_some()), "no leaked ENI");
    assert!(w.input.status.operations.is_empty());
    // Crash before the create was sent: the replay creates it exactly once.
    let mut w2 = world("m5.large", 9, None);
    w2.set_agent(AgentStatus { epoch: 1, in_use: 9, ..Default::default() });
    let op2 = journal::new_op(
        OperationKind::CreateENI,
        "",
        4,
        journal::create_items("subnet-a", &["sg-node".into()], false),
        Some(1),
        &now,
    );
    w2.input.status.operations = vec![op2];
    w2.run().await;
    w2.run().await;
    assert_eq!(w2.fake.enis().len(), 2);
}

#[tokio::test]
async fn release_goes_through_the_agent_offer() {
    let mut w = world(
        "m5.large",
        9,
        policy(|p| {
            p.release = ReleaseSettings {
                delay_seconds: Some(0),
                hysteresis_ips: Some(0),
                ..Default::default()
            }
        }),
    );
    w.set_agent(AgentStatus { epoch: 3, in_use: 0, ..Default::default() });
    w.run().await;
    let req = w.input.status.release_request.clone().expect("request");
    assert_eq!(req.count, 1);
    assert!(w.fake.mutations().is_empty(), "nothing released before the agent offers");
    let offered = w.input.status.enis[0].ips[8].clone();
    w.set_agent(offering(3, req.revision, vec![offered.clone()]));
    w.run().await;
    assert_eq!(w.fake.mutations(), vec!["UnassignPrivateIpAddresses"]);
    let writes = w.sink.writes.lock().unwrap();
    let published =
        writes.iter().find(|(s, _)| s.releasing.is_some()).expect("releasing published");
    assert_eq!(published.1, 0, "releasing published before the unassign");
    assert_eq!(published.0.releasing.as_ref().unwrap().epoch, 3);
    drop(writes);
    assert_eq!(w.held(), 8);
    assert!(!w.input.status.enis[0].ips.contains(&offered));
    assert_eq!(w.input.status.released_revision, req.revision);
    assert!(w.input.status.releasing.is_none());
}

/// Addresses freed after an excess began wait their own delay: a node whose pool already held a
/// little excess loses pods, and only the old excess goes at once (freed addresses are what a
/// rolling restart reuses).
#[tokio::test]
async fn excess_that_appears_later_waits_its_own_delay() {
    let mut w = world(
        "m5.large",
        9,
        policy(|p| {
            p.sizing = Sizing {
                warm_ips: Some(2),
                min_allocate: Some(0),
                batch: Some(1),
                ..Default::default()
            };
            p.release = ReleaseSettings {
                delay_seconds: Some(2),
                hysteresis_ips: Some(0),
                ..Default::default()
            };
        }),
    );
    // 9 held, 5 in use + 2 warm: an excess of 2.
    w.set_agent(AgentStatus { epoch: 3, in_use: 5, ..Default::default() });
    w.run().await;
    assert!(w.input.status.release_request.is_none(), "nothing requested before the delay");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The pods go: the excess is 7 now, 5 of it just freed.
    w.set_agent(AgentStatus { epoch: 3, in_use: 0, ..Default::default() });
    w.run().await;
    assert!(w.input.status.release_request.is_none(), "nothing requested before the delay");
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.run().await;
    let req = w.input.status.release_request.clone().expect("the old excess is requested");
    assert_eq!(req.count, 2, "only the excess that lasted the delay");
    // The agent offers, the operator releases.
    let offered: Vec<String> = w.input.status.enis[0].ips[7..9].to_vec();
    w.set_agent(offering(3, req.revision, offered));
    w.run().await;
    assert_eq!(w.held(), 7);
    w.set_agent(AgentStatus { epoch: 3, in_use: 0, ..Default::default() });
    w.run().await;
    assert_eq!(w.input.status.release_request.as_ref().map(|r| r.revision), Some(req.revision));
    // The freed addresses go once they have lasted the delay themselves.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.run().await;
    let next = w.input.status.release_request.clone().expect("the rest is requested");
    assert_eq!((next.revision, next.count), (req.revision + 1, 5));
}

#[tokio::test]
async fn empty_managed_eni_is_detached_then_deleted() {
    let mut w = world(
        "m5.large",
        9,
        policy(|p| {
            p.release = ReleaseSettings {
                delay_seconds: Some(0),
                hysteresis_ips: Some(0),
                ..Default::default()
            }
        }),
    );
    w.set_agent(AgentStatus { epoch: 1, in_use: 9, ..Default::default() });
    w.run().await; // creates eni at index 1 with 8 addresses (target 17)
    assert_eq!(w.input.status.enis.len(), 2);
    w.set_agent(AgentStatus { epoch: 1, in_use: 0, ..Default::default() });
    w.run().await; // request
    let req = w.input.status.release_request.clone().unwrap();
    let second = w.input.status.enis[1].clone();
    let mut offer = second.ips.clone();
    offer.push(w.input.status.enis[0].ips[0].clone());
    w.set_agent(offering(1, req.revision, offer));
    w.run().await;
    w.run().await;
    assert!(w.fake.enis().iter().all(|e| e.id != second.id), "emptied ENI deleted");
    assert!(w.input.status.operations.is_empty());
    assert_eq!(w.input.status.enis.len(), 1);
}

/// A DetachENI that failed transiently stays journaled; the ENI is still attached and empty. A
/// round with demand must not fill it (the agent would hand its addresses to pods), and the
/// replay must not detach an ENI that holds addresses nobody offered back.
#[tokio::test]
async fn an_eni_being_released_is_never_refilled_nor_detached_with_addresses() {
    let mut w = world(
        "m5.large",
        9,
        policy(|p| {
            p.release = ReleaseSettings {
                delay_seconds: Some(0),
                hysteresis_ips: Some(0),
                ..Default::default()
            }
        }),
    );
    w.set_agent(AgentStatus { epoch: 1, in_use: 9, ..Default::default() });
    w.run().await; // a second ENI with 8 addresses
    w.set_agent(AgentStatus { epoch: 1, in_use: 0, ..Default::default() });
    w.run().await; // release request
    let req = w.input.status.release_request.clone().unwrap();
    let second = w.input.status.enis[1].clone();
    let mut offer = second.ips.clone();
    offer.push(w.input.status.enis[0].ips[0].clone());
    w.set_agent(offering(1, req.revision, offer));
    // The emptied ENI's detach fails in this round and again in the next round's replay.
    w.fake.fail_next("DetachNetworkInterface", Ec2ErrorKind::Transient);
    w.fake.fail_next("DetachNetworkInterface", Ec2ErrorKind::Transient);
    w.run().await;
    let pending =
        |w: &World| {
            w.input.status.operations.iter().any(|o| {
                o.kind == OperationKind::DetachENI && o.eni_id == second.id && o.attempts > 0
            })
        };
    assert!(pending(&w), "the failed detach stays journaled: {:?}", w.input.status.operations);
    let never_detached_holding_addresses = |w: &World, round: &str| {
        for e in w.fake.enis().iter().filter(|e| e.id == second.id) {
            assert!(
                e.attachment.is_some() || (e.secondary_ips.is_empty() && e.prefixes.is_empty()),
                "{round}: {} detached holding {:?}",
                e.id,
                e.secondary_ips
            );
        }
    };
    never_detached_holding_addresses(&w, "release round");

    // Demand: pods need 17 addresses. The agent hands out whatever the pool lists.
    w.set_agent(AgentStatus { epoch: 1, in_use: 17, ..Default::default() });
    w.run().await;
    assert!(pending(&w), "the detach is still pending after the failed replay");
    let refilled = w.fake.enis().into_iter().find(|e| e.id == second.id).unwrap();
    assert!(refilled.secondary_ips.is_empty(), "growth filled the ENI being released");
    never_detached_holding_addresses(&w, "demand round");
    for round in 0..3 {
        w.run().await;
        never_detached_holding_addresses(&w, &format!("replay round {round}"));
    }
    assert!(w.fake.enis().iter().all(|e| e.id != second.id), "the empty ENI is released");
    assert!(w.input.status.operations.is_empty(), "{:?}", w.input.status.operations);
    assert!(w.held() >= 17, "the demand is met elsewhere: {}", w.held());
}
