//! Failed reconciles on the pool: the error → condition table, when a write is due, and rounds
//! against the EC2 fake (one write per new failure, nothing else in the status touched).

use super::*;
use crate::ec2::{Ec2Error, Ec2ErrorKind as K};
use crate::reconcile::tests::{cond, world, World};
use crate::reconcile::{reconcile_pool, Memory, FAILURE_EVENT_EVERY};
use enipool_crds::{AgentStatus, OperationKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::time::{Duration, Instant};

fn ec2(kind: K) -> Error {
    Error::Ec2(Ec2Error {
        kind,
        action: "DescribeInstances",
        code: "Code".into(),
        message: "request id 1".into(),
    })
}

fn kube_err(code: u16) -> Error {
    let status = kube::core::Status { code, ..Default::default() };
    Error::Kube { op: "PatchPoolStatus", source: kube::Error::Api(Box::new(status)) }
}

/// (condition type, status, reason).
type Shape = Vec<(&'static str, bool, &'static str)>;

fn shape(e: &Error) -> Shape {
    verdicts(e).into_iter().map(|v| (v.type_, v.ok, v.reason)).collect()
}

#[test]
fn error_to_conditions() {
    let not_synced = |r| vec![(EC2_SYNCED, false, r)];
    let table: Vec<(Error, Shape)> = vec![
        (ec2(K::Transient), not_synced("Transient")),
        (ec2(K::Unauthorized), not_synced("Unauthorized")),
        (ec2(K::NotFound), not_synced("NotFound")),
        (ec2(K::SubnetFull), not_synced("SubnetFull")),
        (ec2(K::InvalidRequest), not_synced("InvalidRequest")),
        (
            ec2(K::Throttled),
            vec![(EC2_SYNCED, false, "Throttled"), (THROTTLED, true, "RequestLimitExceeded")],
        ),
        (
            Error::InstanceNotFound("i-1".into()),
            vec![(EC2_SYNCED, false, "InstanceNotFound"), (READY, false, "InstanceNotFound")],
        ),
        (
            Error::ProviderId { node: "n".into(), provider_id: "gce://x".into() },
            not_synced("InvalidProviderID"),
        ),
        (Error::MissingField("pool uid"), not_synced("InvalidObject")),
        (Error::Serialize(serde_json::from_str::<i32>("x").unwrap_err()), not_synced("Serialize")),
        (kube_err(409), vec![]),
        (kube_err(500), vec![]),
        (Error::Finalizer(Box::new(kube::runtime::finalizer::Error::UnnamedObject)), vec![]),
    ];
    for (e, want) in table {
        assert_eq!(shape(&e), want, "{e}");
        for v in verdicts(&e).iter().filter(|v| v.type_ == EC2_SYNCED) {
            assert_eq!(v.reason, e.category(), "EC2Synced's reason is the category: {e}");
            assert_eq!(v.message, e.to_string(), "EC2Synced's message names the error");
        }
    }
    let gone = verdicts(&Error::InstanceNotFound("i-1".into()));
    assert!(gone[1].message.contains("i-1") && gone[1].message.contains("terminated"));
}

fn c(type_: &str, ok: bool, reason: &str, at: &Time) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: "before".into(),
        observed_generation: Some(1),
        last_transition_time: at.clone(),
    }
}

#[test]
fn mark_writes_only_when_status_or_reason_changes() {
    let t0 = Time(Timestamp::now() - SignedDuration::from_mins(10));
    let now = Time(Timestamp::now());
    let ready = || c(READY, true, "Ready", &t0);
    let synced = |ok, r| c(EC2_SYNCED, ok, r, &t0);
    let cases: Vec<(&str, Vec<Condition>, Error, bool)> = vec![
        ("no conditions yet", vec![], ec2(K::Transient), true),
        ("was synced", vec![synced(true, "Synced"), ready()], ec2(K::Transient), true),
        ("same failure again", vec![synced(false, "Transient"), ready()], ec2(K::Transient), false),
        ("another category", vec![synced(false, "Throttled")], ec2(K::Transient), true),
        ("a round's SyncFailed", vec![synced(false, "SyncFailed")], ec2(K::Transient), true),
        (
            "throttled, Throttled not set yet",
            vec![synced(false, "Throttled"), c(THROTTLED, false, "NotThrottled", &t0)],
            ec2(K::Throttled),
            true,
        ),
        (
            "throttled again",
            vec![synced(false, "Throttled"), c(THROTTLED, true, "RequestLimitExceeded", &t0)],
            ec2(K::Throttled),
            false,
        ),
        (
            "instance gone, Ready still True",
            vec![synced(false, "InstanceNotFound"), ready()],
            Error::InstanceNotFound("i-1".into()),
            true,
        ),
        (
            "instance gone again",
            vec![synced(false, "InstanceNotFound"), c(READY, false, "InstanceNotFound", &t0)],
            Error::InstanceNotFound("i-1".into()),
            false,
        ),
        ("kubernetes error", vec![synced(true, "Synced")], kube_err(500), false),
    ];
    for (name, before, err, writes) in cases {
        let mut st = ENIPoolStatus { conditions: before.clone(), ..Default::default() };
        assert_eq!(mark(&mut st, &verdicts(&err), Some(2), &now), writes, "{name}");
        if !writes {
            assert_eq!(st.conditions, before, "{name}: untouched");
            continue;
        }
        for v in verdicts(&err) {
            let got = st.conditions.iter().find(|x| x.type_ == v.type_).unwrap();
            assert_eq!((got.status == "True", got.reason.as_str()), (v.ok, v.reason), "{name}");
            assert_eq!(got.message, v.message, "{name}");
            let was = before.iter().find(|x| x.type_ == v.type_);
            let flipped = was.is_none_or(|w| w.status != got.status);
            let want = if flipped { &now } else { &t0 };
            assert_eq!(&got.last_transition_time, want, "{name}: transition time");
        }
        for b in before.iter().filter(|b| verdicts(&err).iter().all(|v| v.type_ != b.type_)) {
            assert!(st.conditions.contains(b), "{name}: {} untouched", b.type_);
        }
    }
}

#[test]
fn failure_events_are_rate_limited_per_pool_and_reason() {
    let m = Memory::default();
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    assert!(m.failure_event_due("a", "Transient", at(0)));
    assert!(!m.failure_event_due("a", "Transient", at(10)), "same pool and reason: held back");
    assert!(m.failure_event_due("a", "Throttled", at(10)), "another reason goes out");
    assert!(m.failure_event_due("b", "Transient", at(10)), "another pool goes out");
    let window = FAILURE_EVENT_EVERY.as_secs();
    assert!(!m.failure_event_due("a", "Transient", at(window - 1)));
    assert!(m.failure_event_due("a", "Transient", at(window)), "once the window passed");
    assert!(!m.failure_event_due("a", "Transient", at(window + 1)));
}

/// A Ready pool with an agent report, as stored.
async fn ready_world() -> World {
    let mut w = world("m5.large", 0, None);
    w.input.status.agent = Some(AgentStatus { epoch: 1, in_use: 3, ..Default::default() });
    w.run().await;
    assert!(cond(&w.input.status, READY));
    w
}

/// One round expected to fail; what it wrote becomes the stored status (agent kept).
async fn fail(w: &mut World) -> (Error, Option<ENIPoolStatus>) {
    let n = w.sink.writes.lock().unwrap().len();
    let err = reconcile_pool(&w.shared, &w.input, &w.sink).await.expect_err("round fails");
    let writes = w.sink.writes.lock().unwrap();
    assert!(writes.len() <= n + 1, "at most one write for a failed round");
    let written = writes.get(n).map(|(s, _)| s.clone());
    if let Some(s) = &written {
        w.input.status = ENIPoolStatus { agent: w.input.status.agent.clone(), ..s.clone() };
    }
    (err, written)
}

fn reason<'a>(st: &'a ENIPoolStatus, type_: &str) -> &'a str {
    st.conditions.iter().find(|c| c.type_ == type_).map(|c| c.reason.as_str()).unwrap_or("")
}

/// Everything but the conditions.
fn rest(st: &ENIPoolStatus) -> ENIPoolStatus {
    ENIPoolStatus { conditions: vec![], ..st.clone() }
}

#[tokio::test]
async fn describe_instances_failing_shows_once_and_clears() {
    let mut w = ready_world().await;
    let before = w.input.status.clone();
    w.fake.fail_next("DescribeInstances", K::Transient);
    let (err, written) = fail(&mut w).await;
    assert_eq!(err.category(), "Transient", "the round's own error is returned");
    let written = written.expect("the failure is written");
    assert!(!cond(&written, EC2_SYNCED));
    assert_eq!(reason(&written, EC2_SYNCED), "Transient");
    assert!(cond(&written, READY), "a transient EC2 failure leaves Ready alone");
    assert_eq!(rest(&written), rest(&crate::reconcile::operator_part(&before)));
    assert_eq!(w.input.status.agent, before.agent);

    // Retried while EC2 still fails: nothing more is written.
    for _ in 0..3 {
        w.fake.fail_next("DescribeInstances", K::Transient);
        assert!(fail(&mut w).await.1.is_none(), "no write for the same failure");
    }
    // Another category is news.
    w.fake.fail_next("DescribeInstances", K::Throttled);
    let (_, written) = fail(&mut w).await;
    let written = written.expect("a new category is written");
    assert_eq!(reason(&written, EC2_SYNCED), "Throttled");
    assert!(cond(&written, THROTTLED));

    let out = w.run().await;
    assert!(cond(&out.status, EC2_SYNCED) && cond(&out.status, READY));
    assert!(!cond(&out.status, THROTTLED));
    assert_eq!(out.status.enis, before.enis);
    assert_eq!(out.status.revision, before.revision);
}

#[tokio::test]
async fn unknown_instance_is_not_ready() {
    let mut w = ready_world().await;
    let before = w.input.status.clone();
    w.input.instance_id = "i-0000000099".into();
    let (err, written) = fail(&mut w).await;
    assert_eq!(err.category(), "InstanceNotFound");
    let written = written.expect("written");
    assert_eq!(reason(&written, READY), "InstanceNotFound");
    assert!(!cond(&written, READY) && !cond(&written, EC2_SYNCED));
    assert_eq!(rest(&written), rest(&crate::reconcile::operator_part(&before)));
    assert!(fail(&mut w).await.1.is_none(), "no write for the same failure");
}

#[tokio::test]
async fn terminated_instance_is_not_ready() {
    let mut w = ready_world().await;
    w.fake.terminate("i-0000000001");
    let out = w.run().await;
    assert!(!cond(&out.status, READY));
    assert_eq!(reason(&out.status, READY), "InstanceTerminated");
}

/// The journal this round wrote is the base of the failure write, not the older cached status.
#[tokio::test]
async fn failure_write_starts_from_the_last_write_of_the_round() {
    let w = ready_world().await;
    let rec = Recording::new(&w.sink);
    let now = Time(Timestamp::now());
    let items = crate::journal::create_items("subnet-a", &["sg-node".to_string()], false);
    let op = crate::journal::new_op(OperationKind::CreateENI, "", 2, items, None, &now);
    let mut journaled = crate::reconcile::operator_part(&w.input.status);
    journaled.operations.push(op);
    rec.write(&journaled).await.unwrap();
    let written = record(&w.input, &rec, &ec2(K::Transient), &now).await.expect("written");
    assert_eq!(written.operations, journaled.operations, "the journal entry is kept");
    assert_eq!(reason(&written, EC2_SYNCED), "Transient");
}

struct Broken;

#[async_trait::async_trait]
impl StatusSink for Broken {
    async fn write(&self, _: &ENIPoolStatus) -> Result<()> {
        Err(kube_err(500))
    }

    async fn remove(&self, _: &[crate::reconcile::Removal]) -> Result<()> {
        Err(kube_err(500))
    }
}

#[tokio::test]
async fn a_failing_failure_write_does_not_hide_the_error() {
    let w = ready_world().await;
    w.fake.fail_next("DescribeInstances", K::Unauthorized);
    let err = reconcile_pool(&w.shared, &w.input, &Broken).await.expect_err("fails");
    assert_eq!(err.category(), "Unauthorized");
}
