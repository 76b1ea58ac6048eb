//! Release: how much excess is given back, the offer/accept handshake with the agent, and which
//! empty ENIs go.

use super::M5_LARGE;
use crate::plan::release::{
    empty_enis, excess, offered_items, pending_releases, EniRelease, ExcessTimer,
};
use crate::plan::*;
use enipool_crds::settings::{resolve, CapacitySource, EffectiveSettings};
use enipool_crds::{
    AgentStatus, ENIPoolPolicySpec, ENIPoolStatus, EniState, EniStatus, IpFamily, IpMode,
    OperationKind, Releasable, ReleaseRequest, ReleaseSettings, Releasing,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::BTreeSet;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// A timer that saw `excess` first at `at(0)`.
fn aged(excess: i32) -> ExcessTimer {
    let mut t = ExcessTimer::default();
    t.observe(at(0), excess);
    t
}

fn status_eni(id: &str, idx: i32, ips: &[&str], prefixes: &[&str]) -> EniStatus {
    EniStatus {
        id: id.into(),
        device_index: idx,
        ips: ips.iter().map(|s| s.to_string()).collect(),
        prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        state: EniState::Attached,
        managed: idx > 0,
        ..Default::default()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn release_eff(delay: i32, hysteresis: i32) -> EffectiveSettings {
    let spec = ENIPoolPolicySpec {
        release: ReleaseSettings {
            delay_seconds: Some(delay),
            hysteresis_ips: Some(hysteresis),
            ..Default::default()
        },
        ..Default::default()
    };
    resolve(IpFamily::IPv4, Some(&spec), None, M5_LARGE, CapacitySource::Static)
}

#[test]
fn excess_table() {
    let e = release_eff(60, 2);
    assert_eq!(excess(&e, 10, 10), 0);
    assert_eq!(excess(&e, 12, 10), 0, "inside the hysteresis band");
    assert_eq!(excess(&e, 13, 10), 3, "above the band: release down to target");
    let mut off = e.clone();
    off.release_enabled = false;
    assert_eq!(excess(&off, 30, 10), 0);
    let mut p = e.clone();
    p.mode = IpMode::Prefix;
    assert_eq!(excess(&p, 48, 20), 16, "whole prefixes only");
}

#[test]
fn release_handshake() {
    let e = release_eff(60, 0);
    let enis = vec![
        status_eni("eni-0", 0, &["10.0.0.5", "10.0.0.6"], &[]),
        status_eni("eni-1", 1, &["10.0.1.5", "10.0.1.6", "10.0.1.7"], &[]),
    ];
    let age = aged(3);
    let base = ReleaseInput {
        eff: &e,
        target: 2,
        allocated: 5,
        excess_age: &age,
        now: at(0),
        request: None,
        released_revision: 0,
        releasing: None,
        agent: None,
        enis: &enis,
    };
    // Excess appears: wait the delay.
    assert_eq!(decide_release(&base), ReleaseDecision::Wait { excess: 3, remaining_secs: 60 });
    // Held long enough: request 3, highest device index first.
    let held = ReleaseInput { now: at(60), ..base.clone() };
    let req = ReleaseRequest { revision: 1, count: 3, prefer_enis: strings(&["eni-1", "eni-0"]) };
    assert_eq!(decide_release(&held), ReleaseDecision::Request(req.clone()));
    // Outstanding, agent silent or answering an old revision: wait.
    let old_offer = AgentStatus {
        epoch: 4,
        releasable: Some(Releasable { revision: 0, ips: strings(&["10.0.1.5"]), prefixes: vec![] }),
        ..Default::default()
    };
    let waiting = ReleaseInput { request: Some(&req), agent: Some(&old_offer), ..held.clone() };
    assert_eq!(decide_release(&waiting), ReleaseDecision::AwaitOffer);
    // The agent offers (one address already gone from EC2): commit only what EC2 still holds.
    let offer = AgentStatus {
        epoch: 4,
        releasable: Some(Releasable {
            revision: 1,
            ips: strings(&["10.0.1.5", "10.0.1.6", "10.9.9.9"]),
            prefixes: vec![],
        }),
        ..Default::default()
    };
    let answered = ReleaseInput { agent: Some(&offer), ..waiting.clone() };
    let committed = Releasing {
        revision: 1,
        epoch: 4,
        ips: strings(&["10.0.1.5", "10.0.1.6"]),
        prefixes: vec![],
    };
    assert_eq!(decide_release(&answered), ReleaseDecision::Commit(committed.clone()));
    // Published: unassign per ENI.
    let publishing = ReleaseInput { releasing: Some(&committed), ..answered.clone() };
    assert_eq!(
        decide_release(&publishing),
        ReleaseDecision::Unassign(vec![EniRelease {
            eni_id: "eni-1".into(),
            ips: strings(&["10.0.1.5", "10.0.1.6"]),
            prefixes: vec![]
        }])
    );
    // A new agent epoch mid-handshake does not stop what is already releasing.
    let restarted = AgentStatus { epoch: 5, ..Default::default() };
    let after_restart = ReleaseInput { agent: Some(&restarted), ..publishing.clone() };
    assert!(matches!(decide_release(&after_restart), ReleaseDecision::Unassign(_)));
    // Gone from EC2: finish.
    let gone = vec![
        status_eni("eni-0", 0, &["10.0.0.5", "10.0.0.6"], &[]),
        status_eni("eni-1", 1, &["10.0.1.7"], &[]),
    ];
    let done = ReleaseInput { enis: &gone, ..publishing.clone() };
    assert_eq!(decide_release(&done), ReleaseDecision::Finish { revision: 1 });
    // After finishing, the next request gets the next revision.
    let next =
        ReleaseInput { released_revision: 1, allocated: 5, request: Some(&req), ..held.clone() };
    assert!(matches!(
        decide_release(&next),
        ReleaseDecision::Request(ReleaseRequest { revision: 2, .. })
    ));
}

#[test]
fn excess_ages_by_part() {
    let delay = SignedDuration::from_secs(60);
    let mut t = ExcessTimer::default();
    t.observe(at(0), 2);
    t.observe(at(30), 7);
    assert_eq!(t.lasted(at(59), delay), 0);
    assert_eq!(t.next_due(at(59), delay), Some(SignedDuration::from_secs(1)));
    assert_eq!(t.lasted(at(60), delay), 2, "only the part that lasted the delay");
    assert_eq!(t.next_due(at(60), delay), Some(SignedDuration::from_secs(30)));
    assert_eq!(t.lasted(at(90), delay), 7);
    // A dip caps every part: what is left has been excess since the start.
    t.observe(at(40), 1);
    t.observe(at(50), 7);
    assert_eq!(t.lasted(at(60), delay), 1);
    assert_eq!(t.lasted(at(109), delay), 1, "the part back at 50 is new again");
    assert_eq!(t.lasted(at(110), delay), 7);
    // Requested addresses leave the oldest part; the rest keeps its age.
    t.consume(1);
    assert_eq!((t.lasted(at(60), delay), t.lasted(at(110), delay)), (0, 6));
    // No excess: nothing waits.
    t.observe(at(120), 0);
    assert_eq!((t.lasted(at(999), delay), t.next_due(at(999), delay)), (0, None));
}

#[test]
fn fresh_excess_on_top_of_old_excess_waits() {
    // 2 addresses have been excess for the delay, 5 more were freed just now: request 2.
    let e = release_eff(60, 0);
    let enis = vec![status_eni("eni-0", 0, &["10.0.0.5", "10.0.0.6"], &[])];
    let mut age = aged(2);
    age.observe(at(50), 7);
    let input = ReleaseInput {
        eff: &e,
        target: 2,
        allocated: 9,
        excess_age: &age,
        now: at(60),
        request: None,
        released_revision: 0,
        releasing: None,
        agent: None,
        enis: &enis,
    };
    assert!(matches!(
        decide_release(&input),
        ReleaseDecision::Request(ReleaseRequest { count: 2, .. })
    ));
    let early = ReleaseInput { now: at(59), ..input.clone() };
    assert_eq!(decide_release(&early), ReleaseDecision::Wait { excess: 7, remaining_secs: 1 });
}

#[test]
fn never_releases_unoffered_items() {
    // An offer naming another ENI's address or a primary address that EC2 does not list as
    // secondary is ignored; an offer with nothing present finishes without EC2 calls.
    let e = release_eff(0, 0);
    let enis = vec![status_eni("eni-0", 0, &["10.0.0.5"], &[])];
    let req = ReleaseRequest { revision: 3, count: 1, prefer_enis: vec![] };
    let offer = AgentStatus {
        epoch: 1,
        releasable: Some(Releasable { revision: 3, ips: strings(&["10.0.0.1"]), prefixes: vec![] }),
        ..Default::default()
    };
    let age = aged(1);
    let input = ReleaseInput {
        eff: &e,
        target: 0,
        allocated: 1,
        excess_age: &age,
        now: at(100),
        request: Some(&req),
        released_revision: 2,
        releasing: None,
        agent: Some(&offer),
        enis: &enis,
    };
    assert_eq!(decide_release(&input), ReleaseDecision::Finish { revision: 3 });
}

#[test]
fn prefixes_are_released_whole_per_eni() {
    let e = release_eff(0, 0);
    let enis = vec![status_eni("eni-1", 1, &["10.0.1.5"], &["10.0.2.0/28", "10.0.2.16/28"])];
    let r = Releasing {
        revision: 1,
        epoch: 1,
        ips: strings(&["10.0.1.5"]),
        prefixes: strings(&["10.0.2.16/28"]),
    };
    let age = aged(33);
    let input = ReleaseInput {
        eff: &e,
        target: 0,
        allocated: 33,
        excess_age: &age,
        now: at(0),
        request: None,
        released_revision: 0,
        releasing: Some(&r),
        agent: None,
        enis: &enis,
    };
    assert_eq!(
        decide_release(&input),
        ReleaseDecision::Unassign(vec![EniRelease {
            eni_id: "eni-1".into(),
            ips: strings(&["10.0.1.5"]),
            prefixes: strings(&["10.0.2.16/28"])
        }])
    );
}

#[test]
fn empty_enis_table() {
    let e = release_eff(0, 0);
    let enis = vec![
        status_eni("eni-0", 0, &[], &[]),
        status_eni("eni-1", 1, &[], &[]),
        status_eni("eni-2", 2, &["10.0.2.5"], &[]),
        EniStatus { managed: false, ..status_eni("eni-3", 3, &[], &[]) },
    ];
    assert_eq!(
        empty_enis(&enis, &e, false, false),
        strings(&["eni-1"]),
        "never primary, never unmanaged"
    );
    assert!(empty_enis(&enis, &e, true, false).is_empty(), "not while growing");
    assert!(empty_enis(&enis, &e, false, true).is_empty(), "not while releasing");
    let mut keep = e.clone();
    keep.release_empty_enis = false;
    assert!(empty_enis(&enis, &keep, false, false).is_empty());
}

#[test]
fn pending_releases_are_journaled_detaches_and_deletes() {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let op = |kind, eni: &str| crate::journal::new_op(kind, eni, 0, vec![], None, &now);
    let ops = vec![
        op(OperationKind::DetachENI, "eni-1"),
        op(OperationKind::DeleteENI, "eni-2"),
        op(OperationKind::AssignIPs, "eni-3"),
        op(OperationKind::UnassignIPs, "eni-4"),
        op(OperationKind::CreateENI, ""),
        op(OperationKind::DetachENI, ""),
    ];
    let want: BTreeSet<String> = strings(&["eni-1", "eni-2"]).into_iter().collect();
    assert_eq!(pending_releases(&ops), want);
    assert!(pending_releases(&[]).is_empty());
}

/// What counts as given up: only what answers the outstanding request, from the agent's offer
/// or the `releasing` published for it.
#[test]
fn offered_items_table() {
    let request = |revision| Some(ReleaseRequest { revision, count: 2, prefer_enis: vec![] });
    let offer = |revision| {
        Some(AgentStatus {
            releasable: Some(Releasable {
                revision,
                ips: strings(&["10.0.1.5"]),
                prefixes: strings(&["10.0.2.16/28"]),
            }),
            ..Default::default()
        })
    };
    let releasing = |revision| {
        Some(Releasing { revision, epoch: 1, ips: strings(&["10.0.1.6"]), prefixes: vec![] })
    };
    let st = |req, released, rel, agent| ENIPoolStatus {
        release_request: req,
        released_revision: released,
        releasing: rel,
        agent,
        ..Default::default()
    };
    let cases: Vec<(&str, ENIPoolStatus, &[&str])> = vec![
        ("nothing requested", st(None, 0, None, offer(1)), &[]),
        (
            "offer answering the request",
            st(request(2), 1, None, offer(2)),
            &["10.0.1.5", "10.0.2.16/28"],
        ),
        (
            "offer and releasing",
            st(request(2), 1, releasing(2), offer(2)),
            &["10.0.1.5", "10.0.1.6", "10.0.2.16/28"],
        ),
        ("an old offer", st(request(2), 1, None, offer(1)), &[]),
        ("request already released", st(request(2), 2, releasing(2), offer(2)), &[]),
        ("releasing for another revision", st(request(3), 2, releasing(2), None), &[]),
    ];
    for (case, status, want) in cases {
        let want: BTreeSet<String> = strings(want).into_iter().collect();
        assert_eq!(offered_items(&status), want, "{case}");
    }
}
