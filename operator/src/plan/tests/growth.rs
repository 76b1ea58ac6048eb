//! Growth: where new addresses go (assign to an ENI with room, create an ENI in a subnet with
//! room), device indexes, and the fallback from prefixes to single addresses.

use super::view;
use crate::plan::placement::SubnetView;
use crate::plan::*;
use std::collections::BTreeSet;

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
            releasing_enis: &BTreeSet::new(),
            first_interface_index: r.first,
            max_enis: r.max_enis,
            create_enis: true,
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
        releasing_enis: &none,
        first_interface_index: 0,
        max_enis: 4,
        create_enis: true,
        slots_per_eni: 9,
        subnets: Some(&subnets),
        max_steps: 1,
    });
    assert_eq!(g.steps.len(), 1);
    assert_eq!(g.blocked, Some(Blocked::JournalFull));
}

/// An ENI with a journaled detach is never filled, however much room it has: the replay detaches
/// it. It still takes its device index and ENI slot, so new ENIs go around it.
#[test]
fn an_eni_being_released_is_never_filled() {
    struct Row {
        name: &'static str,
        releasing: &'static [&'static str],
        max_enis: i32,
        want_steps: Vec<Step>,
        want_blocked: Option<Blocked>,
    }
    let rows = vec![
        Row {
            name: "nothing released: the empty ENI is filled",
            releasing: &[],
            max_enis: 3,
            want_steps: vec![assign("eni-1", 8)],
            want_blocked: None,
        },
        Row {
            name: "released: a new ENI beside it",
            releasing: &["eni-1"],
            max_enis: 3,
            want_steps: vec![create("s-a", 2, 8, 0)],
            want_blocked: None,
        },
        Row {
            name: "released, no ENI slot left",
            releasing: &["eni-1"],
            max_enis: 2,
            want_steps: vec![],
            want_blocked: Some(Blocked::Capacity),
        },
        Row {
            name: "another ENI released",
            releasing: &["eni-9"],
            max_enis: 3,
            want_steps: vec![assign("eni-1", 8)],
            want_blocked: None,
        },
    ];
    let none = BTreeSet::new();
    let subnets = vec![subnet("s-a", 100)];
    let enis = vec![view("eni-0", 0, "s-a", 9, 0), view("eni-1", 1, "s-a", 0, 0)];
    for r in rows {
        let releasing: BTreeSet<String> = r.releasing.iter().map(|s| s.to_string()).collect();
        let g = plan_growth(&GrowthInput {
            enis: &enis,
            deficit: 8,
            prefixes: false,
            allow_fallback: false,
            no_cidr_subnets: &none,
            releasing_enis: &releasing,
            first_interface_index: 0,
            max_enis: r.max_enis,
            create_enis: true,
            slots_per_eni: 9,
            subnets: Some(&subnets),
            max_steps: 16,
        });
        assert_eq!(g.steps, r.want_steps, "{}", r.name);
        assert_eq!(g.blocked, r.want_blocked, "{}", r.name);
    }
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

#[test]
fn subnets_tagged_role_cni_0_hold_no_enis() {
    use crate::plan::placement::{subnet_allowed, SUBNET_ROLE_TAG};
    let tags = |v: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    assert!(subnet_allowed(&tags(&[])));
    assert!(subnet_allowed(&tags(&[(SUBNET_ROLE_TAG, "1")])));
    assert!(!subnet_allowed(&tags(&[(SUBNET_ROLE_TAG, "0"), ("kind", "pods")])));
}

/// Once the account's regional ENI quota is reached, growth fills the ENIs the node has and
/// creates none; the shortfall is blamed on the quota, not on the node's capacity.
#[test]
fn a_reached_eni_quota_fills_existing_enis_only() {
    let enis = vec![view("eni-0", 0, "s-a", 5, 0)];
    let none = BTreeSet::new();
    let subnets = vec![subnet("s-a", 100)];
    let input = |create_enis| GrowthInput {
        enis: &enis,
        deficit: 10,
        prefixes: false,
        allow_fallback: false,
        no_cidr_subnets: &none,
        releasing_enis: &none,
        first_interface_index: 0,
        max_enis: 3,
        create_enis,
        slots_per_eni: 9,
        subnets: Some(&subnets),
        max_steps: 16,
    };
    let g = plan_growth(&input(false));
    assert_eq!(g.steps, vec![assign("eni-0", 4)]);
    assert_eq!(g.blocked, Some(Blocked::EniQuota));
    let g = plan_growth(&input(true));
    assert_eq!(g.steps, vec![assign("eni-0", 4), create("s-a", 1, 6, 0)]);
    assert_eq!(g.blocked, None);
}
