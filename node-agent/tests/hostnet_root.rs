//! Host wiring against the real kernel, as root, in network namespaces this test creates (and
//! removes in Drop, even on failure). Fails — never skips — when not root.

use enipool_agent::hostnet::netlink::NetlinkHost;
use enipool_agent::hostnet::{host_veth_name, HostNet, NodeConfig, PodConfig};
use std::process::Command;

struct Netns(String);
impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        sh(&format!("ip netns add {name}"));
        Netns(name.to_string())
    }
    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn pod_on_primary_eni_is_wired_and_node_rules_are_idempotent() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (it creates network namespaces)"
    );
    let node = Netns::new("enip-t-node");
    let _vpc = Netns::new("enip-t-vpc");
    let pod = Netns::new("enip-t-pod");
    sh("ip -n enip-t-node link add eth0 type veth peer name n0 netns enip-t-vpc");
    sh("ip -n enip-t-node addr add 10.77.0.10/16 dev eth0 && ip -n enip-t-node link set eth0 up");
    sh("ip -n enip-t-vpc link set n0 up && ip -n enip-t-vpc addr add 10.77.0.1/16 dev n0");
    let host = NetlinkHost::start(Some(node.path().into())).unwrap();
    let cfg = NodeConfig {
        primary_mac: None,
        primary_ip: "10.77.0.10".parse().unwrap(),
        vpc_cidrs: vec!["10.77.0.0/16".parse().unwrap()],
        snat_exclude: vec![],
        external_snat: false,
        snat_ports: Default::default(),
        ipv4_egress: None,
    };
    host.setup_node(&cfg).unwrap();
    let first = sh("ip netns exec enip-t-node nft list table ip enipool");
    host.setup_node(&cfg).unwrap();
    let second = sh("ip netns exec enip-t-node nft list table ip enipool");
    assert_eq!(first, second, "re-applying changes the ruleset");
    assert!(first.contains("snat to 10.77.0.10 fully-random"), "{first}");
    let p = PodConfig {
        netns: pod.path(),
        if_name: "eth0".into(),
        host_if: host_veth_name(&pod.path(), "eth0"),
        ip: "10.77.0.20".parse().unwrap(),
        ipv6: None,
        table: 254,
        from_rule_dsts: vec![],
        mtu: 1500,
    };
    let wired = host.setup_pod(&p).unwrap();
    assert!(!wired.host_mac.is_empty() && !wired.pod_mac.is_empty());
    host.ensure_pod_host(&p).unwrap();
    let rules = sh("ip -n enip-t-node rule");
    assert_eq!(rules.matches("to 10.77.0.20 lookup main").count(), 1, "{rules}");
    assert_eq!(rules.matches("fwmark 0x80/0x80 lookup main").count(), 1, "{rules}");
    // Real traffic pod ↔ node (the reply is routed by the to-pod rule 512).
    sh("ip netns exec enip-t-pod ping -c1 -W2 10.77.0.10");
    host.check_pod(&p).unwrap();
    assert!(host.teardown_pod(&p).is_empty());
    assert!(!host.host_links().unwrap().contains(&p.host_if), "torn down: not listed");
    assert!(host.check_pod(&p).is_err(), "torn down: not wired");
    // A quick re-ADD of the same netns + ifname (same host veth name) while the torn-down veth
    // may still wait for the reaper: the old one is deleted first, the new one works.
    host.setup_pod(&p).unwrap();
    sh("ip netns exec enip-t-pod ping -c1 -W2 10.77.0.10");
    host.check_pod(&p).unwrap();
    assert!(host.teardown_pod(&p).is_empty());
    assert!(host.teardown_pod(&p).is_empty(), "teardown twice: gone is success");
    // The reaper deletes it shortly; reap_links (restart) deletes it at once.
    host.reap_links().unwrap();
    let links = sh("ip -n enip-t-node -o link");
    assert!(!links.contains(&p.host_if), "veth left after reap: {links}");
    let pod_links = sh("ip -n enip-t-pod -o link");
    assert!(!pod_links.contains("eth0"), "pod end left after reap: {pod_links}");
    // A veth marked by a DEL of a previous agent that died before its reaper ran (the mark is
    // kernel state): not listed, and the restart's reap_links deletes it.
    sh(&format!(
        "ip -n enip-t-node link add eni00deadbeef group {} type veth peer name eth9 netns enip-t-pod",
        enipool_agent::hostnet::netlink::REAP_GROUP
    ));
    assert!(!host.host_links().unwrap().contains(&"eni00deadbeef".to_string()));
    host.reap_links().unwrap();
    let links = sh("ip -n enip-t-node -o link");
    assert!(!links.contains("eni00deadbeef"), "marked veth left after reap: {links}");
    let rules = sh("ip -n enip-t-node rule");
    assert!(!rules.contains("10.77.0.20"), "{rules}");
    assert!(host.uninstall().is_empty());
    let tables = sh("ip netns exec enip-t-node nft list tables");
    assert!(!tables.contains("enipool"));
    // Idempotent: `enipool-agent uninstall` exits non-zero on any error, so a second run on a
    // clean host must find nothing to fail on.
    assert_eq!(host.uninstall().len(), 0, "a second uninstall reports errors");
}

/// DEL deletes a pod's rules by their specification (no dump of the node's rules): every from-pod
/// rule whatever its destination (also one for a VPC CIDR dropped since the ADD), the to-pod rule,
/// nothing of another pod's or at another priority; a repeated DEL and the DEL of a half-done ADD
/// (only the to-pod rule, no veth) succeed and clean up.
#[test]
fn teardown_deletes_exactly_the_pods_rules() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (it creates network namespaces)"
    );
    let node = Netns::new("enip-t2-node");
    let pod = Netns::new("enip-t2-pod");
    let host = NetlinkHost::start(Some(node.path().into())).unwrap();
    let p = PodConfig {
        netns: pod.path(),
        if_name: "eth0".into(),
        host_if: host_veth_name(&pod.path(), "eth0"),
        ip: "10.77.0.30".parse().unwrap(),
        ipv6: None,
        table: 3,
        from_rule_dsts: vec!["10.77.0.0/16".parse().unwrap(), "10.99.0.0/16".parse().unwrap()],
        mtu: 1500,
    };
    host.setup_pod(&p).unwrap();
    let n = "ip -n enip-t2-node rule add";
    // A from-pod rule of a VPC CIDR removed since the ADD, and rules that are not this pod's.
    sh(&format!("{n} prio 1536 from 10.77.0.30 to 10.55.0.0/16 lookup 3"));
    sh(&format!("{n} prio 512 to 10.77.0.3 lookup main"));
    sh(&format!("{n} prio 1536 from 10.77.0.3 to 10.77.0.0/16 lookup 3"));
    sh(&format!("{n} prio 1537 from 10.77.0.30 lookup 4"));
    sh(&format!("{n} prio 512 to 10.77.0.30/31 lookup main"));
    let rules = sh("ip -n enip-t2-node rule");
    assert_eq!(rules.matches("from 10.77.0.30 to").count(), 3, "{rules}");
    assert!(rules.contains("512:\tfrom all to 10.77.0.30 lookup main"), "{rules}");
    // DEL after an agent restart: a new host knows only what the store has (the PodConfig).
    drop(host);
    let host = NetlinkHost::start(Some(node.path().into())).unwrap();
    assert!(host.teardown_pod(&p).is_empty());
    let rules = sh("ip -n enip-t2-node rule");
    assert!(!rules.contains("from 10.77.0.30 to"), "{rules}");
    assert!(!rules.contains("to 10.77.0.30 lookup"), "{rules}");
    for other in [
        "512:\tfrom all to 10.77.0.3 lookup main",
        "1536:\tfrom 10.77.0.3 to 10.77.0.0/16 lookup 3",
        "1537:\tfrom 10.77.0.30 lookup 4",
        "512:\tfrom all to 10.77.0.30/31 lookup main",
    ] {
        assert!(rules.contains(other), "{other:?} deleted: {rules}");
    }
    assert!(host.teardown_pod(&p).is_empty(), "teardown twice: gone is success");
    // Half-done ADD (crash after the to-pod rule, before anything else): no veth, one rule.
    sh(&format!("{n} prio 512 to 10.77.0.31 lookup main"));
    let half = PodConfig {
        ip: "10.77.0.31".parse().unwrap(),
        ipv6: None,
        host_if: host_veth_name(&pod.path(), "eth1"),
        if_name: "eth1".into(),
        ..p.clone()
    };
    assert!(host.teardown_pod(&half).is_empty());
    let rules = sh("ip -n enip-t2-node rule");
    assert!(!rules.contains("10.77.0.31"), "{rules}");
}

/// The pod side's batched socket: a missing link is `None`, and a failing request in a batch is
/// reported with what it was (the first failure in order), without waiting for answers that the
/// kernel never sends.
#[test]
fn pod_socket_reports_the_failing_step() {
    use enipool_agent::hostnet::netlink::podside::{PodSide, PodSocket};
    use enipool_agent::hostnet::HostError;
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (it creates network namespaces)"
    );
    let pod = Netns::new("enip-t3-pod");
    let host_ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    let pod_ns = std::fs::File::open(pod.path()).unwrap();
    let ps = PodSocket::open(&pod_ns, &host_ns).unwrap();
    assert!(ps.link("eth0").unwrap().is_none());
    assert_eq!(ps.link("lo").unwrap().unwrap().header.index, 1);
    let side = PodSide {
        index: 4242,
        if_name: "eth0",
        ip: "10.77.0.40".parse().unwrap(),
        ipv6: None,
        host_mac: vec![2, 0, 0, 0, 0, 1],
    };
    match ps.configure(&side) {
        Err(HostError::Netlink { op: "pod link up", msg }) => {
            assert!(msg.contains("No such device"), "{msg}")
        }
        other => panic!("expected the link-up step to fail: {other:?}"),
    }
    // The socket stays usable, and the thread is back in its own netns.
    assert!(ps.link("eth0").unwrap().is_none());
    let me = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_eq!(me, std::fs::read_link("/proc/self/ns/net").unwrap());
}

/// The pods wired on the host, read back without a store (the start-up check and the store
/// rebuild): each live pod veth with its /32 route and the table of its from-pod rule; not a
/// veth torn down, not a link that only looks like one, not a veth without a route.
#[test]
fn pod_wiring_lists_what_is_wired_on_the_host() {
    use enipool_agent::hostnet::HostPod;
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (it creates network namespaces)"
    );
    let node = Netns::new("enip-t4-node");
    let pod_a = Netns::new("enip-t4-pa");
    let pod_b = Netns::new("enip-t4-pb");
    let host = NetlinkHost::start(Some(node.path().into())).unwrap();
    let pod = |ns: &Netns, ip: &str, table: u32| PodConfig {
        netns: ns.path(),
        if_name: "eth0".into(),
        host_if: host_veth_name(&ns.path(), "eth0"),
        ip: ip.parse().unwrap(),
        ipv6: None,
        table,
        from_rule_dsts: if table == 254 { vec![] } else { vec!["10.77.0.0/16".parse().unwrap()] },
        mtu: 1500,
    };
    let (a, b) = (pod(&pod_a, "10.77.0.50", 254), pod(&pod_b, "10.77.0.51", 3));
    host.setup_pod(&a).unwrap();
    host.setup_pod(&b).unwrap();
    // Look-alikes: a bridge with a pod veth's name and a route, a pod veth without a route.
    sh("ip -n enip-t4-node link add eni0000000000d type bridge && ip -n enip-t4-node link set eni0000000000d up");
    sh("ip -n enip-t4-node route add 10.77.0.52/32 dev eni0000000000d");
    sh("ip -n enip-t4-node link add eni0000000000e type veth peer name eth9 netns enip-t4-pa");
    let want = |pods: &[&PodConfig]| -> Vec<HostPod> {
        let mut v: Vec<HostPod> = pods
            .iter()
            .map(|p| HostPod { host_if: p.host_if.clone(), ip: p.ip, table: p.table })
            .collect();
        v.sort();
        v
    };
    assert_eq!(host.pod_wiring().unwrap(), want(&[&a, &b]));
    assert!(host.teardown_pod(&a).is_empty());
    assert_eq!(host.pod_wiring().unwrap(), want(&[&b]), "a torn-down pod is not listed");
}
