//! Table tests of the pure planner. Rows use named fields so a reordered column cannot silently
//! change what a row means (the positional-row drift Cilium's node_test.go warns about).

use super::placement::SubnetView;
use super::release::{empty_enis, excess, EniRelease};
use super::*;
use enipool_crds::settings::{resolve, CapacitySource, EffectiveSettings, InstanceLimits};
use enipool_crds::{
    AgentStatus, ENIPoolPolicySpec, EniState, EniStatus, IpMode, Releasable, ReleaseRequest,
    ReleaseSettings, Releasing, Sizing, Surge,
};
use std::collections::BTreeSet;

/// t3.small: 3 ENIs × 4 IPv4 addresses.
const T3_SMALL: InstanceLimits = InstanceLimits { max_enis: 3, ips_per_eni: 4 };
/// m5.large: 3 ENIs × 10.
const M5_LARGE: InstanceLimits = InstanceLimits { max_enis: 3, ips_per_eni: 10 };

fn eff(mode: IpMode, limits: InstanceLimits, sizing: Sizing) -> EffectiveSettings {
    let spec = ENIPoolPolicySpec { mode, sizing, ..Default::default() };
    resolve(Some(&spec), None, limits, CapacitySource::Static)
}

fn sizing(min: Option<i32>, warm: Option<i32>, batch: Option<i32>, max: Option<i32>) -> Sizing {
    Sizing { min_allocate: min, warm_ips: warm, batch, max_allocate: max, ..Default::default() }
}

struct SizingRow {
    name: &'static str,
    mode: IpMode,
    limits: InstanceLimits,
    sizing: Sizing,
    in_use: i32,
    pending: i32,
    want: i32,
    reason: &'static str,
}

#[test]
fn target_table() {
    let rows = vec![
        SizingRow {
            name: "defaults, idle node: warm 8",
            mode: IpMode::SecondaryIP,
            limits: M5_LARGE,
            sizing: Sizing::default(),
            in_use: 0,
            pending: 0,
            want: 8,
            reason: "demand",
        },
        SizingRow {
            name: "demand + warm",
            mode: IpMode::SecondaryIP,
            limits: M5_LARGE,
            sizing: Sizing::default(),
            in_use: 5,
            pending: 0,
            want: 13,
            reason: "demand",
        },
        SizingRow {
            name: "pending pods count (surge)",
            mode: IpMode::SecondaryIP,
            limits: M5_LARGE,
            sizing: Sizing::default(),
            in_use: 5,
            pending: 4,
            want: 17,
            reason: "demand",
        },
        SizingRow {
            name: "capacity caps (m5.large 27)",
            mode: IpMode::SecondaryIP,
            limits: M5_LARGE,
            sizing: Sizing::default(),
            in_use: 25,
            pending: 0,
            want: 27,
            reason: "capacity",
        },
        SizingRow {
            name: "batch rounds up",
            mode: IpMode::SecondaryIP,
            limits: M5_LARGE,
            sizing: sizing(None, Some(2), Some(5), None),
            in_use: 4,
            pending: 0,
            want: 10,
            reason: "demand",
        },
        SizingRow {
            name: "minAllocate floor",
            mode: IpMode::SecondaryIP,
            limits: M5_LARGE,
            sizing: sizing(Some(12), Some(1), None, None),
            in_use: 0,
            pending: 0,
            want: 12,
            reason: "minAllocate",
        },
        SizingRow {
            name: "maxAllocate ceiling",
            mode: IpMode::SecondaryIP,
            limits: M5_LARGE,
            sizing: sizing(None, Some(4), None, Some(10)),
            in_use: 9,
            pending: 0,
            want: 10,
            reason: "maxAllocate",
        },
        SizingRow {
            name: "t3.small warm1 min1, 0 pods (vpc-cni row)",
            mode: IpMode::SecondaryIP,
            limits: T3_SMALL,
            sizing: sizing(Some(1), Some(1), None, None),
            in_use: 0,
            pending: 0,
            want: 1,
            reason: "demand",
        },
        SizingRow {
            name: "t3.small warm1 min1, 5 pods",
            mode: IpMode::SecondaryIP,
            limits: T3_SMALL,
            sizing: sizing(Some(1), Some(1), None, None),
            in_use: 5,
            pending: 0,
            want: 6,
            reason: "demand",
        },
        SizingRow {
            name: "t3.small warm2 min5, 0 pods",
            mode: IpMode::SecondaryIP,
            limits: T3_SMALL,
            sizing: sizing(Some(5), Some(2), None, None),
            in_use: 0,
            pending: 0,
            want: 5,
            reason: "minAllocate",
        },
        SizingRow {
            name: "t3.small full",
            mode: IpMode::SecondaryIP,
            limits: T3_SMALL,
            sizing: sizing(Some(5), Some(2), None, None),
            in_use: 9,
            pending: 0,
            want: 9,
            reason: "capacity",
        },
        SizingRow {
            name: "prefix: idle = 1 prefix",
            mode: IpMode::Prefix,
            limits: T3_SMALL,
            sizing: Sizing::default(),
            in_use: 0,
            pending: 0,
            want: 16,
            reason: "demand",
        },
        SizingRow {
            name: "prefix: 5 pods + warm prefix",
            mode: IpMode::Prefix,
            limits: T3_SMALL,
            sizing: Sizing::default(),
            in_use: 5,
            pending: 0,
            want: 32,
            reason: "demand",
        },
        SizingRow {
            name: "prefix: 17 pods",
            mode: IpMode::Prefix,
            limits: T3_SMALL,
            sizing: Sizing::default(),
            in_use: 17,
            pending: 0,
            want: 48,
            reason: "demand",
        },
        SizingRow {
            name: "prefix: warmIPs dominate",
            mode: IpMode::Prefix,
            limits: M5_LARGE,
            sizing: Sizing { warm_ips: Some(20), warm_prefixes: Some(0), ..Default::default() },
            in_use: 0,
            pending: 0,
            want: 32,
            reason: "demand",
        },
        SizingRow {
            name: "prefix: min rounded up to a prefix",
            mode: IpMode::Prefix,
            limits: M5_LARGE,
            sizing: Sizing {
                min_allocate: Some(20),
                warm_ips: Some(0),
                warm_prefixes: Some(0),
                ..Default::default()
            },
            in_use: 0,
            pending: 0,
            want: 32,
            reason: "minAllocate",
        },
        SizingRow {
            name: "prefix: max rounded down",
            mode: IpMode::Prefix,
            limits: M5_LARGE,
            sizing: Sizing { max_allocate: Some(40), ..Default::default() },
            in_use: 40,
            pending: 0,
            want: 32,
            reason: "maxAllocate",
        },
    ];
    for r in rows {
        let e = eff(r.mode, r.limits, r.sizing);
        let got = compute_target(&e, Demand { in_use: r.in_use, pending_pods: r.pending });
        assert_eq!((got.ips, got.reason), (r.want, r.reason), "{}", r.name);
    }
}

#[test]
fn surge_is_capped_and_can_be_disabled() {
    let capped = Sizing {
        warm_ips: Some(0),
        surge: Some(Surge { enabled: Some(true), max_extra: Some(3) }),
        ..Default::default()
    };
    let e = eff(IpMode::SecondaryIP, M5_LARGE, capped);
    assert_eq!(compute_target(&e, Demand { in_use: 2, pending_pods: 10 }).ips, 5);
    let off = Sizing {
        warm_ips: Some(0),
        surge: Some(Surge { enabled: Some(false), max_extra: None }),
        ..Default::default()
    };
    let e = eff(IpMode::SecondaryIP, M5_LARGE, off);
    assert_eq!(compute_target(&e, Demand { in_use: 2, pending_pods: 10 }).ips, 2);
}

#[test]
fn target_is_idempotent_for_a_burst() {
    // 40 pending pods are met by one target, not batch by batch.
    let e = eff(
        IpMode::SecondaryIP,
        InstanceLimits { max_enis: 4, ips_per_eni: 15 },
        sizing(None, Some(2), Some(4), None),
    );
    let t = compute_target(&e, Demand { in_use: 0, pending_pods: 40 });
    assert_eq!(t.ips, 44);
    assert_eq!(compute_target(&e, Demand { in_use: 0, pending_pods: 40 }), t);
}

fn view(id: &str, idx: i32, subnet: &str, ips: i32, prefixes: i32) -> EniView {
    EniView {
        id: id.into(),
        device_index: idx,
        subnet_id: subnet.into(),
        ips,
        prefixes,
        excluded: false,
        managed: idx > 0,
        attached: true,
    }
}

struct GrowthRow {
    name: &'static str,
    enis: Vec<EniView>,
    deficit: i32,
    prefixes: bool,
    fallback: bool,
    no_cidr: &'static [&'static str],
    first: i32,
    max_enis: i32,
    slots: i32,
    subnets: Option<Vec<SubnetView>>,
    want_steps: Vec<Step>,
    want_blocked: Option<Blocked>,
}

fn subnet(id: &str, available: i32) -> SubnetView {
    SubnetView { id: id.into(), available }
}

fn assign(eni: &str, count: i32) -> Step {
    Step::AssignIps { eni_id: eni.into(), count }
}

fn create(subnet: &str, idx: i32, ips: i32, prefixes: i32) -> Step {
    Step::CreateEni { subnet_id: subnet.into(), device_index: idx, ips, prefixes }
}

#[test]
fn growth_table() {
    let rows = vec![
        GrowthRow {
            name: "primary has room: one assign",
            enis: vec![view("eni-0", 0, "s-a", 0, 0)],
            deficit: 8,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: None,
            want_steps: vec![assign("eni-0", 8)],
            want_blocked: None,
        },
        GrowthRow {
            name: "nothing missing",
            enis: vec![view("eni-0", 0, "s-a", 5, 0)],
            deficit: 0,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: None,
            want_steps: vec![],
            want_blocked: None,
        },
        GrowthRow {
            name: "fill then ask for subnets",
            enis: vec![view("eni-0", 0, "s-a", 5, 0)],
            deficit: 10,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: None,
            want_steps: vec![assign("eni-0", 4)],
            want_blocked: Some(Blocked::NeedSubnets),
        },
        GrowthRow {
            name: "fill then one create with all the rest",
            enis: vec![view("eni-0", 0, "s-a", 5, 0)],
            deficit: 10,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: Some(vec![subnet("s-a", 100)]),
            want_steps: vec![assign("eni-0", 4), create("s-a", 1, 6, 0)],
            want_blocked: None,
        },
        GrowthRow {
            name: "burst: two creates",
            enis: vec![view("eni-0", 0, "s-a", 9, 0)],
            deficit: 15,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: Some(vec![subnet("s-a", 100)]),
            want_steps: vec![create("s-a", 1, 9, 0), create("s-a", 2, 6, 0)],
            want_blocked: None,
        },
        GrowthRow {
            name: "most free subnet first",
            enis: vec![view("eni-0", 0, "s-a", 9, 0)],
            deficit: 3,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: Some(vec![subnet("s-a", 10), subnet("s-b", 50)]),
            want_steps: vec![create("s-b", 1, 3, 0)],
            want_blocked: None,
        },
        GrowthRow {
            name: "subnet nearly full: partial, then exhausted",
            enis: vec![view("eni-0", 0, "s-a", 9, 0)],
            deficit: 8,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: Some(vec![subnet("s-a", 4)]),
            want_steps: vec![create("s-a", 1, 3, 0)],
            want_blocked: Some(Blocked::Subnets),
        },
        GrowthRow {
            name: "subnet full",
            enis: vec![view("eni-0", 0, "s-a", 9, 0)],
            deficit: 2,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: Some(vec![subnet("s-a", 1)]),
            want_steps: vec![],
            want_blocked: Some(Blocked::Subnets),
        },
        GrowthRow {
            name: "instance limit",
            enis: vec![view("eni-0", 0, "s-a", 9, 0), view("eni-1", 1, "s-a", 9, 0)],
            deficit: 12,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: Some(vec![subnet("s-a", 100)]),
            want_steps: vec![create("s-a", 2, 9, 0)],
            want_blocked: Some(Blocked::Capacity),
        },
        GrowthRow {
            name: "firstInterfaceIndex 1 skips primary",
            enis: vec![view("eni-0", 0, "s-a", 0, 0)],
            deficit: 4,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 1,
            max_enis: 3,
            slots: 9,
            subnets: Some(vec![subnet("s-b", 100)]),
            want_steps: vec![create("s-b", 1, 4, 0)],
            want_blocked: None,
        },
        GrowthRow {
            name: "device index gap reused",
            enis: vec![view("eni-0", 0, "s-a", 9, 0), view("eni-2", 2, "s-a", 9, 0)],
            deficit: 1,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 4,
            slots: 9,
            subnets: Some(vec![subnet("s-a", 100)]),
            want_steps: vec![create("s-a", 1, 1, 0)],
            want_blocked: None,
        },
        GrowthRow {
            name: "excluded ENI occupies index and slot but is not filled",
            enis: vec![
                view("eni-0", 0, "s-a", 9, 0),
                EniView { excluded: true, ..view("eni-x", 1, "s-a", 0, 0) },
            ],
            deficit: 2,
            prefixes: false,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: Some(vec![subnet("s-a", 100)]),
            want_steps: vec![create("s-a", 2, 2, 0)],
            want_blocked: None,
        },
        GrowthRow {
            name: "prefix: one assign of 2 prefixes",
            enis: vec![view("eni-0", 0, "s-a", 0, 0)],
            deficit: 32,
            prefixes: true,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: None,
            want_steps: vec![Step::AssignPrefixes { eni_id: "eni-0".into(), count: 2 }],
            want_blocked: None,
        },
        GrowthRow {
            name: "prefix fallback subnet takes /32s",
            enis: vec![view("eni-0", 0, "s-a", 0, 0)],
            deficit: 16,
            prefixes: true,
            fallback: true,
            no_cidr: &["s-a"],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: Some(vec![subnet("s-a", 100)]),
            want_steps: vec![assign("eni-0", 9), create("s-a", 1, 7, 0)],
            want_blocked: None,
        },
        GrowthRow {
            name: "prefix mode without fallback: no-cidr subnet unusable",
            enis: vec![view("eni-0", 0, "s-a", 0, 0)],
            deficit: 16,
            prefixes: true,
            fallback: false,
            no_cidr: &["s-a"],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: Some(vec![subnet("s-a", 100)]),
            want_steps: vec![],
            want_blocked: Some(Blocked::Subnets),
        },
        GrowthRow {
            name: "prefix: new ENI created with its prefixes",
            enis: vec![view("eni-0", 0, "s-a", 0, 9)],
            deficit: 48,
            prefixes: true,
            fallback: false,
            no_cidr: &[],
            first: 0,
            max_enis: 3,
            slots: 9,
            subnets: Some(vec![subnet("s-a", 1000)]),
            want_steps: vec![create("s-a", 1, 0, 3)],
            want_blocked: None,
        },
    ];
    for r in rows {
        let no_cidr: BTreeSet<String> = r.no_cidr.iter().map(|s| s.to_string()).collect();
        let g = plan_growth(&GrowthInput {
            enis: &r.enis,
            deficit: r.deficit,
            prefixes: r.prefixes,
            allow_fallback: r.fallback,
            no_cidr_subnets: &no_cidr,
            first_interface_index: r.first,
            max_enis: r.max_enis,
            slots_per_eni: r.slots,
            subnets: r.subnets.as_deref(),
            max_steps: 16,
        });
        assert_eq!(g.steps, r.want_steps, "{}", r.name);
        assert_eq!(g.blocked, r.want_blocked, "{}", r.name);
        assert_eq!(g.planned, r.want_steps.iter().map(Step::addresses).sum::<i32>(), "{}", r.name);
    }
}

#[test]
fn journal_room_limits_steps() {
    let enis = vec![view("eni-0", 0, "s-a", 9, 0)];
    let none = BTreeSet::new();
    let subnets = vec![subnet("s-a", 100)];
    let g = plan_growth(&GrowthInput {
        enis: &enis,
        deficit: 20,
        prefixes: false,
        allow_fallback: false,
        no_cidr_subnets: &none,
        first_interface_index: 0,
        max_enis: 4,
        slots_per_eni: 9,
        subnets: Some(&subnets),
        max_steps: 1,
    });
    assert_eq!(g.steps.len(), 1);
    assert_eq!(g.blocked, Some(Blocked::JournalFull));
}

#[test]
fn device_index_table() {
    let rows: Vec<(&[i32], i32)> =
        vec![(&[], 1), (&[0], 1), (&[0, 1], 2), (&[0, 2], 1), (&[0, 1, 2, 4], 3)];
    for (used, want) in rows {
        assert_eq!(next_device_index(used), want, "{used:?}");
    }
}

#[test]
fn prefix_fallback_table() {
    let p = Step::AssignPrefixes { eni_id: "eni-1".into(), count: 2 };
    assert_eq!(prefix_fallback(&p, 9), Some(assign("eni-1", 9)));
    assert_eq!(prefix_fallback(&p, 40), Some(assign("eni-1", 32)));
    assert_eq!(prefix_fallback(&p, 0), None);
    assert_eq!(prefix_fallback(&create("s", 1, 0, 1), 9), Some(create("s", 1, 9, 0)));
    assert_eq!(prefix_fallback(&create("s", 1, 4, 0), 9), None);
    assert_eq!(prefix_fallback(&assign("eni-1", 3), 9), None);
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
    resolve(Some(&spec), None, M5_LARGE, CapacitySource::Static)
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
    let base = ReleaseInput {
        eff: &e,
        target: 2,
        allocated: 5,
        excess_held_secs: 0,
        request: None,
        released_revision: 0,
        releasing: None,
        agent: None,
        enis: &enis,
    };
    // Excess appears: wait the delay.
    assert_eq!(decide_release(&base), ReleaseDecision::Wait { excess: 3, remaining_secs: 60 });
    // Held long enough: request 3, highest device index first.
    let held = ReleaseInput { excess_held_secs: 60, ..base.clone() };
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
    let input = ReleaseInput {
        eff: &e,
        target: 0,
        allocated: 1,
        excess_held_secs: 100,
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
    let input = ReleaseInput {
        eff: &e,
        target: 0,
        allocated: 33,
        excess_held_secs: 0,
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
fn allocated_counts_pod_enis_only() {
    let enis = vec![
        view("eni-0", 0, "s", 3, 0),
        view("eni-1", 1, "s", 2, 1),
        EniView { excluded: true, ..view("eni-2", 2, "s", 5, 0) },
    ];
    assert_eq!(allocated(&enis, 0), 21);
    assert_eq!(allocated(&enis, 1), 18);
}
