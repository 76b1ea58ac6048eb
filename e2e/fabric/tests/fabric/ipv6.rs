//! IPv6 through the fabric: nodes' addresses, /128 addresses and /80 prefixes routed only to the ENI
//! EC2 assigned them to, the source check, and the IGW without NAT.

use super::bench::{setup, subnets6, A, B, C, SUBNET};
use ec2sim::hooks::FabricHook;
use enipool_fabric::{self as fabric, Fabric};
use ipnet::Ipv6Net;
use std::net::Ipv6Addr;

/// Puts `addr` on the namespace's `lo`, as a pod address the node answers for itself.
fn on_lo(netns: &str, addr: Ipv6Addr) {
    fabric::run_in(
        netns,
        &["ip", "-6", "addr", "add", &format!("{addr}/128"), "dev", "lo", "nodad"],
    )
    .unwrap();
}

/// A counter of the namespace's `/proc/net/snmp6` (e.g. `Icmp6InEchos`).
fn snmp6(netns: &str, key: &str) -> u64 {
    let snmp = fabric::run_in(netns, &["cat", "/proc/net/snmp6"]).unwrap();
    let line = snmp.lines().find(|l| l.split_whitespace().next() == Some(key)).expect(key);
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn echo_requests_in(netns: &str) -> u64 {
    snmp6(netns, "Icmp6InEchos")
}

/// Whether one echo request from `src` in `from` arrives in `to_ns` at all: a one-way check, so a
/// lost reply cannot pass for a dropped request. `src` `None` lets routing pick.
fn arrives(from: &str, src: Option<Ipv6Addr>, to_ns: &str, to: Ipv6Addr) -> bool {
    let before = echo_requests_in(to_ns);
    match src {
        Some(src) => fabric::ping6_from(from, src, to),
        None => fabric::ping6(from, to),
    };
    echo_requests_in(to_ns) > before
}

/// A positive ping, tried up to three times: a negative check just before may leave the VPC
/// router's "address unreachable" error in flight, and it fails the next ping to that address.
fn ping6(netns: &str, to: Ipv6Addr) -> bool {
    (0..3).any(|_| fabric::ping6(netns, to))
}

/// [`ping6`] from `src`.
fn ping6_from(netns: &str, src: Ipv6Addr, to: Ipv6Addr) -> bool {
    (0..3).any(|_| fabric::ping6_from(netns, src, to))
}

/// Puts `addr` on the namespace's `eth0` (a node's primary ENI).
fn on_eth0(netns: &str, addr: Ipv6Addr) {
    let cidr = format!("{addr}/128");
    fabric::run_in(netns, &["ip", "-6", "addr", "add", &cidr, "dev", "eth0", "nodad"]).unwrap();
}

/// What the internet host saw as the source of a UDP echo from `src`, if it answered.
fn echo_seen(netns: &str, src: Option<Ipv6Addr>, f: &Fabric) -> Option<Ipv6Addr> {
    fabric::udp_echo6(netns, src, f.internet_host_ipv6()).unwrap().map(|s| *s.ip())
}

#[test]
fn ipv6_nodes_are_configured_like_ec2_and_reach_each_other_and_the_internet() {
    let (_g, f) = setup();
    subnets6(&f);
    let (a, b, c) = (A.launch6(&f), B.launch6(&f), C.launch6(&f));
    let addrs = fabric::run_in(&a, &["ip", "-6", "-o", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(addrs.contains(&format!("{}/128", A.ipv6)), "eth0: {addrs}");
    assert!(!addrs.contains("tentative"), "eth0: {addrs}");
    let route = fabric::run_in(&a, &["ip", "-6", "route", "show", "default"]).unwrap();
    assert!(route.contains("via fe80:ec2::1 dev eth0"), "default route: {route}");

    assert!(ping6(&a, B.ipv6), "A -> B across subnets");
    assert!(ping6(&b, A.ipv6), "B -> A");
    assert!(ping6(&c, A.ipv6), "C -> A in the same subnet (through the VPC)");
    assert!(ping6(&a, f.internet_host_ipv6()), "A -> internet");
    assert_eq!(echo_seen(&a, None, &f), Some(A.ipv6), "the internet sees the node's own address");
    assert_eq!(f.hook_errors(), Vec::<String>::new());
}

#[test]
fn an_ipv6_prefix_reaches_and_sends_only_from_the_eni_ec2_delegated_it_to() {
    let (_g, f) = setup();
    subnets6(&f);
    let (a, b, c) = (A.launch6(&f), B.launch6(&f), C.launch6(&f));
    let (inet, host) = (f.internet_netns(), f.internet_host_ipv6());
    let pfx: Ipv6Net = "2600:1f14:0:101:1::/80".parse().unwrap();
    let pod: Ipv6Addr = "2600:1f14:0:101:1::77".parse().unwrap();
    on_lo(&a, pod);
    assert!(!arrives(&b, None, &a, pod), "B reached a prefix EC2 never delegated");
    assert!(!arrives(&inet, None, &a, pod), "the internet reached a prefix EC2 never delegated");
    assert!(!arrives(&a, Some(pod), &b, B.ipv6), "A sent from a prefix EC2 never delegated");
    assert!(!arrives(&a, Some(pod), &inet, host), "A sent to the internet from it");

    f.ipv6_assigned(A.eni, A.mac, SUBNET, &[], &[pfx]);
    f.ipv6_assigned(A.eni, A.mac, SUBNET, &[], &[pfx]); // repeated: a no-op
    assert_eq!(f.hook_errors(), Vec::<String>::new());
    assert_eq!(f.eni_ipv6(A.eni), (vec![A.ipv6], vec![pfx]));
    assert!(ping6(&b, pod), "B -> A's prefix");
    assert!(ping6(&c, pod), "C -> A's prefix (same subnet)");
    assert!(ping6(&inet, pod), "internet -> A's prefix");
    assert!(ping6_from(&a, pod, B.ipv6), "A's prefix -> B");
    assert!(ping6_from(&a, pod, host), "A's prefix -> internet");
    assert_eq!(echo_seen(&a, Some(pod), &f), Some(pod), "egress keeps the pod's address");

    // Another address of A's prefix, held by C (A's subnet, so the same bridge) and B: neither
    // may send from it, nor receive it.
    let other: Ipv6Addr = "2600:1f14:0:101:1::78".parse().unwrap();
    on_lo(&c, other);
    on_lo(&b, other);
    assert!(!arrives(&c, Some(other), &inet, host), "C sent from A's prefix");
    assert!(!arrives(&b, Some(other), &inet, host), "B sent from A's prefix");
    assert!(!arrives(&c, Some(other), &b, B.ipv6), "C sent from A's prefix inside the VPC");
    assert!(!arrives(&inet, None, &c, other), "A's prefix was delivered to C");
    assert!(!arrives(&inet, None, &b, other), "A's prefix was delivered to B");
    on_lo(&a, other);
    assert!(arrives(&inet, None, &a, other), "the same address once A holds it");

    f.ipv6_unassigned(A.eni, A.mac, SUBNET, &[], &[pfx]);
    f.ipv6_unassigned(A.eni, A.mac, SUBNET, &[], &[pfx]); // repeated: a no-op
    assert_eq!(f.eni_ipv6(A.eni), (vec![A.ipv6], vec![]));
    assert!(!arrives(&b, None, &a, pod), "B reached A's prefix after unassign");
    assert!(!arrives(&inet, None, &a, pod), "the internet reached A's prefix after unassign");
    assert!(!arrives(&a, Some(pod), &b, B.ipv6), "A sent from its prefix after unassign");
    assert!(!arrives(&a, Some(pod), &inet, host), "egress from the prefix after unassign");
    assert!(ping6(&b, A.ipv6), "A's own address still reachable");
    assert_eq!(f.hook_errors(), Vec::<String>::new());
}

#[test]
fn an_ipv6_address_reaches_and_sends_only_from_the_eni_ec2_assigned_it_to() {
    let (_g, f) = setup();
    subnets6(&f);
    let (a, b, c) = (A.launch6(&f), B.launch6(&f), C.launch6(&f));
    let (inet, host) = (f.internet_netns(), f.internet_host_ipv6());
    let pod: Ipv6Addr = "2600:1f14:0:101::77".parse().unwrap();
    // On eth0, where A would answer the VPC's neighbour solicitations if it sent any.
    on_eth0(&a, pod);
    assert!(!arrives(&b, None, &a, pod), "B reached an address EC2 never assigned");
    assert!(!arrives(&c, None, &a, pod), "C reached an unassigned address in its own subnet");
    assert!(!arrives(&a, Some(pod), &inet, host), "A sent from an address EC2 never assigned");

    f.ipv6_assigned(A.eni, A.mac, SUBNET, &[pod], &[]);
    f.ipv6_assigned(A.eni, A.mac, SUBNET, &[pod], &[]); // repeated: a no-op
    assert_eq!(f.eni_ipv6(A.eni), (vec![A.ipv6, pod], vec![]));
    assert!(ping6(&b, pod), "B -> A's address");
    assert!(ping6(&c, pod), "C -> A's address");
    assert!(ping6(&inet, pod), "internet -> A's address");
    assert!(ping6_from(&a, pod, B.ipv6), "A's address -> B");
    assert_eq!(echo_seen(&a, Some(pod), &f), Some(pod), "egress keeps the address");
    assert_eq!(f.primary_ipv6(A.instance), Some(A.ipv6), "the node's address is still the first");

    // C (same bridge as A) holding A's address can neither send from it nor receive it.
    on_eth0(&c, pod);
    assert!(!arrives(&c, Some(pod), &inet, host), "C sent from A's address");
    assert!(!arrives(&c, Some(pod), &b, B.ipv6), "C sent from A's address inside the VPC");
    assert!(!arrives(&inet, None, &c, pod), "A's address was delivered to C");
    assert!(arrives(&inet, None, &a, pod), "delivered to A");

    f.ipv6_unassigned(A.eni, A.mac, SUBNET, &[pod], &[]);
    f.ipv6_unassigned(A.eni, A.mac, SUBNET, &[pod], &[]); // repeated: a no-op
    assert!(!arrives(&b, None, &a, pod), "B reached the address after unassign");
    assert!(!arrives(&inet, None, &a, pod), "the internet reached the address after unassign");
    assert!(!arrives(&a, Some(pod), &b, B.ipv6), "A sent from the address after unassign");
    // A would have answered for its address on eth0: the VPC knows, it never asks.
    assert_eq!(snmp6(&a, "Icmp6InNeighborSolicits"), 0, "the VPC solicited a neighbour");
    assert!(ping6(&c, A.ipv6), "A's own address still reachable");
    assert_eq!(f.hook_errors(), Vec::<String>::new());
}
