//! Failed rounds against the EC2 fake: one write per new failure, nothing else in the status
//! touched, and the round's own error returned.

use super::*;
use crate::ec2::{Ec2Error, Ec2ErrorKind as K};
use crate::round::tests::{cond, world, World};
use crate::round::{operator_part, run_round};
use enipool_crds::conditions::{EC2_SYNCED, READY, THROTTLED};
use enipool_crds::{AgentStatus, OperationKind};
use k8s_openapi::jiff::Timestamp;

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

/// A Ready pool with an agent report, as stored. Its instance answer is forgotten, so the next
/// round describes the instance: the call these tests make fail.
async fn ready_world() -> World {
    let mut w = world("m5.large", 0, None);
    w.input.status.agent = Some(AgentStatus { epoch: 1, in_use: 3, ..Default::default() });
    w.run().await;
    assert!(cond(&w.input.status, READY));
    w.shared.memory.forget_instance(&w.input.name);
    w
}

/// One round expected to fail; what it wrote becomes the stored status (agent kept).
async fn fail(w: &mut World) -> (Error, Option<ENIPoolStatus>) {
    let n = w.sink.writes.lock().unwrap().len();
    let err = run_round(&w.shared, &w.input, &w.sink).await.expect_err("round fails");
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
    assert_eq!(rest(&written), rest(&operator_part(&before)));
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
    assert_eq!(rest(&written), rest(&operator_part(&before)));
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
    let mut journaled = operator_part(&w.input.status);
    journaled.operations.push(op);
    rec.write(&journaled).await.unwrap();
    let written = record_failure(&w.input, &rec, &ec2(K::Transient), &now).await.expect("written");
    assert_eq!(written.operations, journaled.operations, "the journal entry is kept");
    assert_eq!(reason(&written, EC2_SYNCED), "Transient");
}

struct Broken;

#[async_trait::async_trait]
impl StatusSink for Broken {
    async fn write(&self, _: &ENIPoolStatus) -> Result<()> {
        Err(kube_err(500))
    }

    async fn remove(&self, _: &[Removal]) -> Result<()> {
        Err(kube_err(500))
    }
}

#[tokio::test]
async fn a_failing_failure_write_does_not_hide_the_error() {
    let w = ready_world().await;
    w.fake.fail_next("DescribeInstances", K::Unauthorized);
    let err = run_round(&w.shared, &w.input, &Broken).await.expect_err("fails");
    assert_eq!(err.category(), "Unauthorized");
}
