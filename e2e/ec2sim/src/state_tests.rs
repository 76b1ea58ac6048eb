//! Unit tests of the pure model: address accounting and the all-or-nothing rules, without HTTP.

use super::hooks::HookEvent;
use super::ops::{CreateEniReq, RunReq};
use super::state::*;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn seeded(cidr: &str) -> (State, String) {
    let mut st = State {
        timing: Timing {
            attach: Duration::ZERO,
            detach: Duration::from_secs(1),
            terminate: Duration::from_secs(1),
        },
        ..Default::default()
    };
    let vpc = st.create_vpc("10.0.0.0/16".parse().unwrap(), Tags::new());
    let subnet = st.create_subnet(&vpc, cidr.parse().unwrap(), "us-west-2a", Tags::new()).unwrap();
    st.create_security_group(&vpc, "default", Tags::new()).unwrap();
    (st, subnet)
}

fn run(st: &mut State, subnet: &str, itype: &str) -> String {
    let req = RunReq {
        instance_type: itype.into(),
        count: 1,
        subnet_id: subnet.into(),
        delete_on_termination: true,
        ..Default::default()
    };
    st.run_instances(&req, &mut Vec::new()).unwrap().1.remove(0)
}

#[test]
fn reserved_addresses_and_available_count() {
    let (mut st, sid) = seeded("10.0.1.0/28");
    let s = st.subnets.get_mut(&sid).unwrap();
    assert_eq!(s.available(), 11);
    let ips = s.take_ips(11).unwrap();
    assert_eq!(ips.first(), Some(&Ipv4Addr::new(10, 0, 1, 4)));
    assert_eq!(ips.last(), Some(&Ipv4Addr::new(10, 0, 1, 14)));
    assert_eq!(s.take_ips(1).unwrap_err().code(), "InsufficientFreeAddressesInSubnet");
    s.release([Ipv4Addr::new(10, 0, 1, 9)]);
    assert_eq!(s.take_ips(1).unwrap(), [Ipv4Addr::new(10, 0, 1, 9)]);
}

#[test]
fn prefix_carving_skips_blocks_with_reserved_or_used_addresses() {
    let (mut st, sid) = seeded("10.0.2.0/26");
    let s = st.subnets.get_mut(&sid).unwrap();
    s.take_exact(&[Ipv4Addr::new(10, 0, 2, 20)]).unwrap();
    // Block .0 has reserved addresses, .16 has .20 in use, .48 has the broadcast: only .32 is free.
    assert_eq!(s.take_prefixes(1).unwrap(), ["10.0.2.32/28".parse().unwrap()]);
    assert_eq!(s.take_prefixes(1).unwrap_err().code(), "InsufficientCidrBlocks");
    assert_eq!(s.available(), 59 - 1 - 16);
    assert_eq!(
        s.take_exact(&[Ipv4Addr::new(10, 0, 2, 33)]).unwrap_err().code(),
        "InvalidIPAddress.InUse"
    );
    assert_eq!(
        s.take_exact(&[Ipv4Addr::new(10, 0, 2, 63)]).unwrap_err().code(),
        "InvalidParameterValue"
    );
}

#[test]
fn failed_create_allocates_nothing() {
    let (mut st, sid) = seeded("10.0.3.0/28");
    let before = st.subnets[&sid].available();
    let req =
        CreateEniReq { subnet_id: sid.clone(), secondary_count: Some(11), ..Default::default() };
    assert_eq!(
        st.create_eni(&req, &mut Vec::new()).unwrap_err().code(),
        "InsufficientFreeAddressesInSubnet"
    );
    assert_eq!(st.subnets[&sid].available(), before);
    assert!(st.enis.is_empty());
}

#[test]
fn failed_launch_of_many_launches_none() {
    let (mut st, sid) = seeded("10.0.4.0/28");
    let req = RunReq {
        instance_type: "m5.large".into(),
        count: 3,
        subnet_id: sid.clone(),
        secondary_count: 3,
        ..Default::default()
    };
    assert_eq!(
        st.run_instances(&req, &mut Vec::new()).unwrap_err().code(),
        "InsufficientFreeAddressesInSubnet"
    );
    assert!(st.instances.is_empty() && st.enis.is_empty());
    assert_eq!(st.subnets[&sid].available(), 11);
}

#[test]
fn timers_complete_detach_and_termination() {
    let (mut st, sid) = seeded("10.0.5.0/24");
    let inst = run(&mut st, &sid, "m5.large");
    let eni = st
        .create_eni(&CreateEniReq { subnet_id: sid.clone(), ..Default::default() }, &mut Vec::new())
        .unwrap();
    let t0 = Instant::now();
    let att = st.attach(&eni, &inst, 1, t0, &mut Vec::new()).unwrap();
    st.detach(&att, t0, &mut Vec::new()).unwrap();
    assert_eq!(st.enis[&eni].status(), "detaching");
    let mut ev = Vec::new();
    assert!(!st.advance(t0 + Duration::from_millis(999), &mut ev));
    assert!(st.advance(t0 + Duration::from_secs(1), &mut ev));
    assert_eq!(st.enis[&eni].status(), "available");
    assert_eq!(ev.len(), 1);
    st.terminate(std::slice::from_ref(&inst), t0, &mut ev).unwrap();
    assert_eq!(st.instances[&inst].state, InstanceState::ShuttingDown);
    st.advance(t0 + Duration::from_secs(2), &mut ev);
    assert_eq!(st.instances[&inst].state, InstanceState::Terminated);
    assert_eq!(st.enis.len(), 1, "primary ENI deleted, the spare remains");
    assert_eq!(st.subnets[&sid].available(), 251 - 1);
}

#[test]
fn client_tokens() {
    let (st, _) = seeded("10.0.6.0/24");
    let mut st = st;
    let t0 = Instant::now();
    assert_eq!(st.check_token("t", "CreateNetworkInterface", "a=1", t0).unwrap(), None);
    st.remember_token("t", "CreateNetworkInterface", "a=1", vec!["eni-1".into()], t0);
    assert_eq!(
        st.check_token("t", "CreateNetworkInterface", "a=1", t0).unwrap(),
        Some(vec!["eni-1".into()])
    );
    assert_eq!(
        st.check_token("t", "CreateNetworkInterface", "a=2", t0).unwrap_err().code(),
        "IdempotentParameterMismatch"
    );
    // After the account's token lifetime the token is a new request, with any parameters.
    let later = t0 + st.account.client_token_ttl;
    assert_eq!(st.check_token("t", "CreateNetworkInterface", "a=1", later).unwrap(), None);
    assert_eq!(st.check_token("t", "CreateNetworkInterface", "a=2", later).unwrap(), None);
}

#[test]
fn the_regional_eni_quota_counts_every_eni() {
    let (mut st, sid) = seeded("10.0.7.0/24");
    st.account.eni_quota = st.enis.len() + 1;
    let req = CreateEniReq { subnet_id: sid.clone(), ..Default::default() };
    let mut ev = Vec::new();
    let first = st.create_eni(&req, &mut ev).expect("under the quota");
    let e = st.create_eni(&req, &mut ev).unwrap_err();
    assert_eq!(e.code(), "NetworkInterfaceLimitExceeded");
    let before = st.subnets[&sid].available();
    assert_eq!(st.create_eni(&req, &mut ev).unwrap_err().code(), "NetworkInterfaceLimitExceeded");
    assert_eq!(st.subnets[&sid].available(), before, "a refused create takes no address");
    st.enis.remove(&first);
    st.create_eni(&req, &mut ev).expect("a deleted ENI frees its place");
}

/// `seeded` with IPv6 on the VPC and the subnet; returns the subnet's /64.
fn with_ipv6(st: &mut State, subnet: &str) -> ipnet::Ipv6Net {
    let vpc = st.subnets[subnet].vpc_id.clone();
    st.associate_vpc_ipv6(&vpc).unwrap();
    st.associate_subnet_ipv6(subnet, 0).unwrap()
}

fn ipv6_event(ev: &HookEvent) -> Option<(bool, &str, &[std::net::Ipv6Addr], &[ipnet::Ipv6Net])> {
    match ev {
        HookEvent::Ipv6Assigned { eni_id, addrs, prefixes, .. } => {
            Some((true, eni_id, addrs, prefixes))
        }
        HookEvent::Ipv6Unassigned { eni_id, addrs, prefixes, .. } => {
            Some((false, eni_id, addrs, prefixes))
        }
        _ => None,
    }
}

#[test]
fn an_ipv6_node_gets_one_address_at_launch_reported_after_its_ipv4() {
    let (mut st, sid) = seeded("10.0.8.0/24");
    let plain = run(&mut st, &sid, "m5.large");
    let sub6 = with_ipv6(&mut st, &sid);
    assert!(st.enis[&st.instances[&plain].primary_eni].ipv6_addrs.is_empty());
    let req = RunReq {
        instance_type: "m5.large".into(),
        count: 1,
        subnet_id: sid.clone(),
        delete_on_termination: true,
        ..Default::default()
    };
    let mut ev = Vec::new();
    let inst = st.run_instances(&req, &mut ev).unwrap().1.remove(0);
    let eni = &st.enis[&st.instances[&inst].primary_eni];
    assert_eq!(eni.ipv6_addrs.len(), 1);
    assert!(sub6.contains(&eni.ipv6_addrs[0]));
    let kinds: Vec<&str> = ev
        .iter()
        .map(|e| match e {
            HookEvent::InstanceLaunched { .. } => "launched",
            HookEvent::EniAttached { .. } => "attached",
            HookEvent::AddressesAssigned { .. } => "v4",
            HookEvent::Ipv6Assigned { .. } => "v6",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["launched", "attached", "v4", "v6"]);
    assert_eq!(
        ev[3],
        HookEvent::Ipv6Assigned {
            eni_id: eni.id.clone(),
            mac: eni.mac.clone(),
            subnet_id: sid.clone(),
            addrs: eni.ipv6_addrs.clone(),
            prefixes: vec![],
        }
    );
}

#[test]
fn ipv6_assign_and_unassign_report_what_changed() {
    use super::ipv6::Ipv6AssignReq;
    let (mut st, sid) = seeded("10.0.9.0/24");
    with_ipv6(&mut st, &sid);
    let eni = st
        .create_eni(&CreateEniReq { subnet_id: sid.clone(), ..Default::default() }, &mut Vec::new())
        .unwrap();
    let mut ev = Vec::new();
    let req = Ipv6AssignReq { prefix_count: Some(2), ..Default::default() };
    let (_, pfx) = st.assign_ipv6(&eni, &req, &mut ev).unwrap();
    let req = Ipv6AssignReq { addr_count: Some(1), ..Default::default() };
    let (addrs, _) = st.assign_ipv6(&eni, &req, &mut ev).unwrap();
    let got: Vec<_> = ev.iter().filter_map(ipv6_event).collect();
    assert_eq!(got, [(true, eni.as_str(), &[][..], &pfx[..]), (true, &eni, &addrs[..], &[][..])]);
    assert_eq!(ev.len(), 2);

    let mut ev = Vec::new();
    let refused = Ipv6AssignReq { prefix_count: Some(100), ..Default::default() };
    assert!(st.assign_ipv6(&eni, &refused, &mut ev).is_err());
    assert!(st
        .unassign_ipv6(&eni, &[], &[pfx[0], "2001:db8::/80".parse().unwrap()], &mut ev)
        .is_err());
    assert!(ev.is_empty(), "a refused call reports nothing: {ev:?}");

    st.unassign_ipv6(&eni, &addrs, &pfx[..1], &mut ev).unwrap();
    let got: Vec<_> = ev.iter().filter_map(ipv6_event).collect();
    assert_eq!(got, [(false, eni.as_str(), &addrs[..], &pfx[..1])]);
}

#[test]
fn ipv6_leaves_with_a_deleted_or_terminated_eni() {
    use super::ipv6::Ipv6AssignReq;
    let (mut st, sid) = seeded("10.0.10.0/24");
    with_ipv6(&mut st, &sid);
    let one_prefix = Ipv6AssignReq { prefix_count: Some(1), ..Default::default() };
    let spare = st
        .create_eni(&CreateEniReq { subnet_id: sid.clone(), ..Default::default() }, &mut Vec::new())
        .unwrap();
    let (_, spare_pfx) = st.assign_ipv6(&spare, &one_prefix, &mut Vec::new()).unwrap();
    let mut ev = Vec::new();
    st.delete_eni(&spare, &mut ev).unwrap();
    assert!(matches!(ev[0], HookEvent::AddressesUnassigned { .. }), "{ev:?}");
    assert_eq!(
        ev.iter().filter_map(ipv6_event).collect::<Vec<_>>(),
        [(false, spare.as_str(), &[][..], &spare_pfx[..])]
    );

    // Termination: the DoT primary's IPv6 goes (before InstanceTerminated); a kept ENI keeps its.
    let inst = run(&mut st, &sid, "m5.large");
    let primary = st.instances[&inst].primary_eni.clone();
    let primary_addrs = st.enis[&primary].ipv6_addrs.clone();
    let (_, pfx) = st.assign_ipv6(&primary, &one_prefix, &mut Vec::new()).unwrap();
    assert_eq!(pfx, spare_pfx, "the deleted ENI gave its prefix back");
    let kept = st
        .create_eni(&CreateEniReq { subnet_id: sid.clone(), ..Default::default() }, &mut Vec::new())
        .unwrap();
    st.assign_ipv6(&kept, &one_prefix, &mut Vec::new()).unwrap();
    let t0 = Instant::now();
    st.attach(&kept, &inst, 1, t0, &mut Vec::new()).unwrap();
    let mut ev = Vec::new();
    st.terminate(std::slice::from_ref(&inst), t0, &mut ev).unwrap();
    st.advance(t0 + Duration::from_secs(2), &mut ev);
    let v6: Vec<_> = ev.iter().filter_map(ipv6_event).collect();
    assert_eq!(v6, [(false, primary.as_str(), &primary_addrs[..], &pfx[..])]);
    let at = |want: fn(&HookEvent) -> bool| ev.iter().position(want).unwrap();
    assert!(
        at(|e| matches!(e, HookEvent::Ipv6Unassigned { .. }))
            > at(|e| matches!(e, HookEvent::AddressesUnassigned { .. }))
    );
    assert!(matches!(ev.last(), Some(HookEvent::InstanceTerminated { .. })), "{ev:?}");
    let v6 = st.subnets[&sid].ipv6.as_ref().unwrap();
    assert!(!v6.prefixes.contains(&pfx[0]) && !v6.addrs.contains(&primary_addrs[0]), "given back");
}
