//! Sizing: the address target from demand, warm pool, batch, surge and bounds, and the count of
//! addresses a node already holds.

use super::{view, M5_LARGE};
use crate::plan::*;
use enipool_crds::settings::{resolve, CapacitySource, EffectiveSettings, InstanceLimits};
use enipool_crds::{AgentStatus, ENIPoolPolicySpec, IpFamily, IpMode, Sizing, Surge};

/// t3.small: 3 ENIs × 4 IPv4 addresses.
const T3_SMALL: InstanceLimits = InstanceLimits { max_enis: 3, ips_per_eni: 4 };

fn eff(mode: IpMode, limits: InstanceLimits, sizing: Sizing) -> EffectiveSettings {
    let spec = ENIPoolPolicySpec { mode, sizing, ..Default::default() };
    resolve(IpFamily::IPv4, Some(&spec), None, limits, CapacitySource::Static)
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
    let warm_enis = |enis: i32, ips: i32| Sizing {
        warm_enis: Some(enis),
        warm_ips: Some(ips),
        ..Default::default()
    };
    let rows = vec![
        SizingRow {
            name: "warm ENIs: a whole ENI's addresses (9 on m5.large) stay free",
            mode: IpMode::SecondaryIP,
            limits: M5_LARGE,
            sizing: warm_enis(1, 2),
            in_use: 5,
            pending: 0,
            want: 14,
            reason: "demand",
        },
        SizingRow {
            name: "warm ENIs below warm IPs: the larger warm pool wins",
            mode: IpMode::SecondaryIP,
            limits: M5_LARGE,
            sizing: warm_enis(1, 12),
            in_use: 5,
            pending: 0,
            want: 17,
            reason: "demand",
        },
        SizingRow {
            name: "prefix mode: a warm ENI is its prefixes' addresses (9 x 16)",
            mode: IpMode::Prefix,
            limits: M5_LARGE,
            sizing: Sizing { warm_prefixes: Some(0), ..warm_enis(1, 0) },
            in_use: 5,
            pending: 0,
            want: 160,
            reason: "demand",
        },
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
        let got = compute_target(
            &e,
            Demand { in_use: r.in_use, pending_pods: r.pending, ..Default::default() },
        );
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
    assert_eq!(
        compute_target(&e, Demand { in_use: 2, pending_pods: 10, ..Default::default() }).ips,
        5
    );
    let off = Sizing {
        warm_ips: Some(0),
        surge: Some(Surge { enabled: Some(false), max_extra: None }),
        ..Default::default()
    };
    let e = eff(IpMode::SecondaryIP, M5_LARGE, off);
    assert_eq!(
        compute_target(&e, Demand { in_use: 2, pending_pods: 10, ..Default::default() }).ips,
        2
    );
}

#[test]
fn target_is_idempotent_for_a_burst() {
    // 40 pending pods are met by one target, not batch by batch.
    let e = eff(
        IpMode::SecondaryIP,
        InstanceLimits { max_enis: 4, ips_per_eni: 15 },
        sizing(None, Some(2), Some(4), None),
    );
    let t = compute_target(&e, Demand { in_use: 0, pending_pods: 40, ..Default::default() });
    assert_eq!(t.ips, 44);
    assert_eq!(compute_target(&e, Demand { in_use: 0, pending_pods: 40, ..Default::default() }), t);
}

#[test]
fn cooling_addresses_are_held_on_top_of_the_warm_ones() {
    // A node that churned 100 pods: their addresses rest in cooling and cannot be handed out, so
    // the warm addresses and the pending pods' come on top of them.
    let e = eff(
        IpMode::SecondaryIP,
        InstanceLimits { max_enis: 15, ips_per_eni: 50 },
        sizing(None, Some(3), Some(1), None),
    );
    let churned = Demand { in_use: 203, cooling: 100, pending_pods: 7 };
    assert_eq!(compute_target(&e, churned).ips, 203 + 100 + 7 + 3);
    let rested = Demand { cooling: 0, ..churned };
    assert_eq!(compute_target(&e, rested).ips, 203 + 7 + 3);
    let agent = AgentStatus { in_use: 203, cooling: 100, pending_pods: 7, ..Default::default() };
    assert_eq!(Demand::reported(Some(&agent)), churned);
    assert_eq!(Demand::reported(None), Demand::default());
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

#[test]
fn addresses_in_flight_do_not_count_as_held() {
    use enipool_crds::{AgentStatus, ENIPoolStatus, Releasable, ReleaseRequest, Releasing};
    let enis = [view("eni-0", 0, "s", 10, 0), view("eni-1", 1, "s", 6, 1)];
    // Allocated: the secondary ENI's 6 addresses and one /28 (the primary ENI is not counted
    // with first_interface_index 1).
    let allocated = crate::plan::allocated(&enis, 1);
    let request = ReleaseRequest { revision: 3, count: 2, ..Default::default() };
    let offer = Releasable {
        revision: 3,
        ips: vec!["10.0.0.5".into(), "10.0.0.6".into()],
        prefixes: vec![],
    };
    let agent = AgentStatus { releasable: Some(offer.clone()), ..Default::default() };
    let mut st = ENIPoolStatus {
        release_request: Some(request),
        released_revision: 2,
        ..Default::default()
    };
    // Nothing requested: nothing in flight.
    assert_eq!(in_flight(&ENIPoolStatus::default(), Some(&agent)), 0);
    // The agent offered 2 for the outstanding request.
    assert_eq!(in_flight(&st, Some(&agent)), 2);
    assert_eq!(held(&enis, 1, in_flight(&st, Some(&agent))), allocated - 2);
    // An offer for another revision, or a request already released, holds nothing back.
    let stale =
        AgentStatus { releasable: Some(Releasable { revision: 2, ..offer }), ..Default::default() };
    assert_eq!(in_flight(&st, Some(&stale)), 0);
    // Committed: the release counts (its /32s and 16 per prefix), the offer no longer.
    st.releasing = Some(Releasing {
        revision: 3,
        ips: vec!["10.0.0.5".into()],
        prefixes: vec!["10.0.1.0/28".into()],
        ..Default::default()
    });
    assert_eq!(releasing_addresses(st.releasing.as_ref().unwrap()), 17);
    st.enis = vec![enipool_crds::EniStatus {
        id: "eni-1".into(),
        device_index: 1,
        ips: vec!["10.0.0.5".into(), "10.0.0.7".into()],
        prefixes: vec!["10.0.1.0/28".into()],
        ..Default::default()
    }];
    assert_eq!(in_flight(&st, Some(&agent)), 17);
    // Unassigned in EC2 (the describe no longer shows them): gone, not in flight.
    st.enis[0].ips.retain(|i| i != "10.0.0.5");
    st.enis[0].prefixes.clear();
    assert_eq!(in_flight(&st, Some(&agent)), 0, "releasing items EC2 no longer holds");
    st.released_revision = 3;
    st.releasing = None;
    assert_eq!(in_flight(&st, Some(&agent)), 0, "the request was released");
}

#[test]
fn deficit_is_what_is_missing_never_negative() {
    assert_eq!(deficit(10, 4), 6);
    assert_eq!(deficit(10, 10), 0);
    assert_eq!(deficit(4, 10), 0, "above target: nothing to grow");
}

#[test]
fn an_enis_slots_leave_out_its_primary_address() {
    assert_eq!(slots_per_eni(&eff(IpMode::SecondaryIP, M5_LARGE, Sizing::default())), 9);
    assert_eq!(slots_per_eni(&eff(IpMode::SecondaryIP, T3_SMALL, Sizing::default())), 3);
}
