//! The IPv6 data path with real traffic, as root, in [`common::Lab`]'s namespaces with IPv6
//! added: a pod gets a /128 of the primary ENI's /80 and reaches another VPC host with it (the
//! "VPC" routes the /80 to the node), reaches the IPv4 internet from its node-local egress
//! address SNATed to the node's, and keeps both across an agent restart; DEL removes its route
//! and cools its address. Fails, never skips, when not root.

mod common;

use common::*;
use enipool_agent::agent::{Agent, CoreConfig, StoreCheck};
use enipool_agent::hostnet::netlink::NetlinkHost;
use enipool_agent::metrics::Metrics;
use enipool_agent::pool::PoolView;
use enipool_agent::program::{HostSettings, Programmer};
use enipool_cni::proto::{AddResult, Command, Response};
use std::sync::Arc;

const PREFIX: &str = "2600:1f14:77:100:1::/80";
/// The node's own IPv6 address on eth0 and the VPC router's on the subnet.
const NODE_V6: &str = "2600:1f14:77:100::10";
const ROUTER_V6: &str = "2600:1f14:77:100::1";
/// A host in another subnet.
const VPC_HOST_V6: &str = "2600:1f14:77:101::50";

/// The lab's IPv4 topology plus IPv6: the subnet and a second one routed by the "VPC router",
/// which sends the node's /80 to the node's eth0 as EC2 does.
fn ipv6_lab(prefix: &str) -> Lab {
    let lab = Lab::new(prefix, &[]);
    let (n, v, h) = (&lab.node.0, &lab.vpc.0, &lab.vpchost.0);
    sh(&format!(
        "ip netns exec {v} sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/forwarding' && \
         ip -n {v} addr add {ROUTER_V6}/64 dev br0 nodad && \
         ip -n {n} addr add {NODE_V6}/64 dev eth0 nodad && \
         ip -n {n} -6 route add default via {ROUTER_V6} dev eth0 && \
         ip -n {v} -6 route add {PREFIX} via {NODE_V6} dev br0 && \
         ip -n {v} addr add 2600:1f14:77:101::1/64 dev v0 nodad && \
         ip -n {h} addr add {VPC_HOST_V6}/64 dev eth0 nodad && \
         ip -n {h} -6 route add default via 2600:1f14:77:101::1 dev eth0"
    ));
    lab
}

fn ipv6_view() -> PoolView {
    let mut v = view();
    v.ip_family = enipool_crds::IpFamily::IPv6;
    v.enis[0].ipv6_prefixes = vec![PREFIX.parse().unwrap()];
    v
}

fn start(node: &str, store: &std::path::Path) -> Arc<Agent> {
    let host = Arc::new(NetlinkHost::start(Some(node.into())).unwrap());
    let cfg = CoreConfig { mtu: 1500, external_snat: false, leak_grace_seconds: 600 };
    let agent =
        Arc::new(Agent::open(store, "boot", host, cfg, Arc::new(Metrics::unregistered())).unwrap());
    let mut p = Programmer::new(HostSettings { mtu: 1500, ..Default::default() });
    p.apply_to(&agent, &ipv6_view(), None);
    assert_eq!(agent.verify_store(None, false).unwrap(), StoreCheck::Consistent);
    agent.reconcile_host().unwrap();
    agent
}

fn add(agent: &Agent, cid: &str, netns: &str) -> AddResult {
    match agent.handle(req(Command::Add, cid, netns)) {
        Response::Added(a) => a,
        other => panic!("ADD {cid}: {other:?}"),
    }
}

/// The pod's IPv6 reaches the other subnet's host and its IPv4 reaches the internet as the
/// node.
fn check_traffic(lab: &Lab, pod: &str) {
    lab.ping(pod, VPC_HOST_V6);
    lab.ping(pod, NODE_V6);
    assert_eq!(ask_echo(pod, None).as_deref(), Some(PRIMARY_IP), "IPv4 egress not SNATed");
}

#[test]
fn an_ipv6_pod_reaches_both_families_and_keeps_its_address_across_a_restart() {
    assert_root();
    let mut lab = ipv6_lab("enip-6");
    let pa = lab.pod("pa");
    let pod = lab.pods[0].0.clone();
    let n = lab.node.0.clone();
    // Negative control: nothing in the VPC answers the /80 before a pod is wired there.
    assert!(!ok(&format!("ip netns exec {} ping -c1 -W1 2600:1f14:77:100:1::1", lab.vpchost.0)));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("allocations.redb");
    let agent = start(&lab.node.path(), &store);
    assert_eq!(
        sh(&format!("ip netns exec {n} cat /proc/sys/net/ipv6/conf/all/forwarding")).trim(),
        "1",
        "the node forwards IPv6"
    );

    let a = add(&agent, "ctr-a", &pa);
    let v6 = a.ipv6.expect("an IPv6 pod");
    assert_eq!(v6.to_string(), "2600:1f14:77:100:1::1");
    assert_eq!(a.ip.to_string(), "169.254.172.1", "its node-local IPv4");
    let addrs = sh(&format!("ip -n {pod} addr show dev eth0"));
    assert!(addrs.contains(&format!("{v6}/128")), "{addrs}");
    assert!(addrs.contains("169.254.172.1/32"), "{addrs}");
    let route = sh(&format!("ip -n {pod} -6 route show default"));
    assert!(route.contains("via fe80::1 dev eth0"), "{route}");
    let host_route = sh(&format!("ip -n {n} -6 route show {v6}"));
    assert!(host_route.contains(&format!("dev {}", a.host_if_name)), "{host_route}");
    check_traffic(&lab, &pod);
    // The other host reaches the pod by its own address (no NAT on IPv6).
    lab.ping(&lab.vpchost.0, &v6.to_string());
    // New connections into the egress range from outside the node are refused.
    let nft = sh(&format!("ip netns exec {n} nft list table ip enipool"));
    assert!(nft.contains("ip daddr 169.254.172.0/22 ct state new reject"), "{nft}");

    // Restart on the same store: the pod keeps both addresses and its traffic.
    drop(agent);
    let agent = start(&lab.node.path(), &store);
    let held = agent.state().allocations.values().map(|a| (a.ip, a.ipv6)).collect::<Vec<_>>();
    assert_eq!(held, [(a.ip, Some(v6))]);
    assert_eq!(add(&agent, "ctr-a", &pa), a, "a repeated ADD answers the same");
    check_traffic(&lab, &pod);

    // DEL: the /128 route goes and the address cools; the next pod gets the next one.
    assert_eq!(agent.handle(req(Command::Del, "ctr-a", &pa)), Response::Done { released: 0 });
    assert!(sh(&format!("ip -n {n} -6 route show {v6}")).trim().is_empty());
    let pb = lab.pod("pb");
    let b = add(&agent, "ctr-b", &pb);
    assert_eq!(b.ipv6.unwrap().to_string(), "2600:1f14:77:100:1::2", "the first one cools");
    check_traffic(&lab, &lab.pods[1].0.clone());
}
