//! A failed round's conditions: the error → condition table, and when a write is due.

use super::*;
use crate::ec2::{Ec2Error, Ec2ErrorKind as K};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

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
