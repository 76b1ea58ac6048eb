//! The VPC CNI host layout verified with real traffic, as root, in the namespaces of
//! [`common::Lab`] (removed in Drop, even on failure). Drives the agent core exactly as the
//! binary does: `Programmer` (node + ENIs from the pool view), CNI requests through
//! `Agent::handle`, and the restart path (reopen the store, re-program, reconcile the host).
//! Fails — never skips — when not root.

mod common;

use common::*;
use enipool_agent::agent::{Agent, CoreConfig, StoreCheck};
use enipool_agent::hostnet::netlink::NetlinkHost;
use enipool_agent::metrics::Metrics;
use enipool_agent::program::{HostSettings, Programmer};
use enipool_agent::store::verify::Published;
use enipool_cni::proto::{Command, Response};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Open the agent core on the node netns and program the pool, as `enipool-agent --netns` does
/// after a (re)start before it checks its store.
fn open_agent(node: &str, store: &std::path::Path) -> Arc<Agent> {
    let host = Arc::new(NetlinkHost::start(Some(node.into())).unwrap());
    let cfg = CoreConfig { mtu: 1500, external_snat: false, leak_grace_seconds: 600 };
    let agent =
        Arc::new(Agent::open(store, "boot", host, cfg, Arc::new(Metrics::unregistered())).unwrap());
    let mut p = Programmer::new(HostSettings { mtu: 1500, ..Default::default() });
    p.apply_to(&agent, &view(), None);
    assert_eq!(p.ready().len(), 2, "both ENIs programmed");
    agent
}

/// [`open_agent`], then the store check (consistent) and the host reconcile.
fn start_agent(node: &str, store: &std::path::Path) -> Arc<Agent> {
    let agent = open_agent(node, store);
    assert_eq!(agent.verify_store(None, false).unwrap(), StoreCheck::Consistent);
    agent.reconcile_host().unwrap();
    agent
}

fn add(agent: &Agent, cid: &str, netns: &str) -> (Ipv4Addr, String) {
    match agent.handle(req(Command::Add, cid, netns)) {
        Response::Added(a) => (a.ip, a.host_if_name),
        other => panic!("ADD {cid}: {other:?}"),
    }
}

/// Every reachability claim of the layout, with real packets.
fn check_traffic(lab: &Lab, pod_a: &str, pod_b: &str, veth_b: &str) {
    // Pod on the primary ENI: its node, another VPC host, the internet SNATed to the primary IP.
    lab.ping(pod_a, PRIMARY_IP);
    lab.ping(pod_a, VPC_HOST);
    assert_eq!(ask_echo(pod_a, None).as_deref(), Some(PRIMARY_IP), "pod A egress not SNATed");
    // Pod on the secondary ENI: VPC traffic by table 2 and eth1 (the vpc netns drops it if it
    // leaves by eth0: source check), internet traffic by eth0 SNATed (CONNMARK → fwmark rule).
    let route = sh(&format!("ip -n {} route get {VPC_HOST} from {POD_B} iif {veth_b}", lab.node.0));
    assert!(route.contains("dev eth1") && route.contains("table 2"), "{route}");
    let route_out = sh(&format!(
        "ip -n {} route get 203.0.113.2 from {POD_B} iif {veth_b} mark 0x80",
        lab.node.0
    ));
    assert!(route_out.contains("dev eth0"), "marked egress must use main/eth0: {route_out}");
    lab.ping(pod_b, VPC_HOST);
    lab.ping(pod_b, PRIMARY_IP);
    lab.ping(pod_b, POD_A);
    assert_eq!(ask_echo(pod_b, None).as_deref(), Some(PRIMARY_IP), "pod B egress not SNATed");
}

fn snapshot(node: &str) -> (String, String, String) {
    (
        sh(&format!("ip netns exec {node} nft list ruleset")),
        sh(&format!("ip -n {node} rule")),
        sh(&format!("ip -n {node} route show table all | grep -v '^local\\|^broadcast\\|^multicast\\|fe80\\|ff00\\|^::1'")),
    )
}

#[test]
fn vpc_cni_layout_with_real_traffic_and_restart() {
    assert_root();
    let mut lab = Lab::new("enip-l", &[(POD_A, MAC0), (POD_B, MAC1)]);
    let pa = lab.pod("pa");
    let pb = lab.pod("pb");
    let (pod_a, pod_b) = (lab.pods[0].0.clone(), lab.pods[1].0.clone());
    // Sanity of the lab itself (negative controls): only the primary IP may reach the internet,
    // and nothing is SNATed before the agent runs.
    assert_eq!(ask_echo(&lab.node.0, None).as_deref(), Some(PRIMARY_IP));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("allocations.redb");
    let agent = start_agent(&lab.node.path(), &store);

    // Secondary ENI programming on a real kernel.
    let n = &lab.node.0;
    let link = sh(&format!("ip -n {n} -d link show eth1"));
    assert!(link.contains("state UP") && link.contains("mtu 1500"), "{link}");
    let t2 = sh(&format!("ip -n {n} route show table 2"));
    assert!(t2.contains(&format!("default via {GATEWAY} dev eth1")), "{t2}");
    assert!(t2.contains(&format!("{GATEWAY} dev eth1")), "{t2}");
    let main = sh(&format!("ip -n {n} route show table main"));
    assert!(!main.contains("dev eth1"), "eth1's connected route must leave main: {main}");
    assert_eq!(
        sh(&format!("ip netns exec {n} cat /proc/sys/net/ipv4/conf/eth1/rp_filter")).trim(),
        "2"
    );
    let rules = sh(&format!("ip -n {n} rule"));
    assert!(rules.contains(&format!("32765:\tfrom {ENI1_IP} lookup 2")), "{rules}");
    // The ENI's own address routes by its table: leaving by eth1, the internet refuses it.
    assert_eq!(
        ask_echo(n, Some(ENI1_IP.parse().unwrap())),
        None,
        "only the primary IP reaches the internet (negative control)"
    );

    let (ip_a, _) = add(&agent, "ctr-a", &pa);
    let (ip_b, veth_b) = add(&agent, "ctr-b", &pb);
    assert_eq!(ip_a.to_string(), POD_A, "primary ENI first");
    assert_eq!(ip_b.to_string(), POD_B);
    let rules = sh(&format!("ip -n {n} rule"));
    assert!(rules.contains(&format!("512:\tfrom all to {POD_A} lookup main")), "{rules}");
    assert!(rules.contains(&format!("1536:\tfrom {POD_B} to {VPC_CIDR} lookup 2")), "{rules}");
    assert!(!rules.contains(&format!("from {POD_A} ")), "no from-rule for a primary-ENI pod");
    assert!(!rules.contains(" none"), "a rule without the to-table action: {rules}");
    check_traffic(&lab, &pod_a, &pod_b, &veth_b);

    // Restart: drop the agent, start again on the same store; the whole reconcile re-runs.
    let before = snapshot(n);
    drop(agent);
    let agent = start_agent(&lab.node.path(), &store);
    let after = snapshot(n);
    assert_eq!(before.0, after.0, "nft ruleset changed across restart");
    assert_eq!(before.1, after.1, "ip rule list changed across restart");
    assert_eq!(before.2, after.2, "routes changed across restart");
    assert_eq!(agent.state().allocations.len(), 2);
    check_traffic(&lab, &pod_a, &pod_b, &veth_b);
    // And once more without a restart: re-programming is a no-op too.
    let mut p = Programmer::new(HostSettings { mtu: 1500, ..Default::default() });
    p.apply_to(&agent, &view(), None);
    agent.reconcile_host().unwrap();
    assert_eq!(snapshot(n), after);

    // The store is lost while both pods run. The restarted agent finds them on the host and
    // refuses to serve rather than hand their addresses out again; the pods keep working.
    drop(agent);
    std::fs::remove_file(&store).unwrap();
    let last = Published { epoch: 2, boot_id: "boot".into(), in_use: 2, offer: None };
    let agent = open_agent(&lab.node.path(), &store);
    let check = agent.verify_store(Some(&last), false).unwrap();
    let StoreCheck::Refused(reason) = check else { panic!("{check:?}") };
    assert!(reason.contains("2 pods wired on the host"), "{reason}");
    let new_pod = format!("/var/run/netns/{}-none", lab.node.0);
    match agent.handle(req(Command::Add, "ctr-c", &new_pod)) {
        Response::Error(e) => assert!(e.msg.contains("does not match this node"), "{e:?}"),
        other => panic!("ADD on a refused store: {other:?}"),
    }
    assert_eq!(snapshot(n), after, "a refusing agent changes nothing on the host");
    check_traffic(&lab, &pod_a, &pod_b, &veth_b);
    // Restarted with --rebuild-store-from-host: the store holds both pods again (from the veths,
    // routes and rules), the reconcile re-programs exactly what was there, and a new pod waits
    // for an address instead of getting a running pod's (the pool has no other).
    drop(agent);
    let agent = open_agent(&lab.node.path(), &store);
    assert_eq!(agent.verify_store(Some(&last), true).unwrap(), StoreCheck::Rebuilt { added: 2 });
    agent.reconcile_host().unwrap();
    assert_eq!(snapshot(n), after);
    let held: Vec<String> = agent.state().by_ip.keys().map(|ip| ip.to_string()).collect();
    assert_eq!(held, [POD_A, POD_B]);
    assert_eq!(agent.state().epoch, 3, "above the published epoch");
    match agent.handle(req(Command::Add, "ctr-c", &new_pod)) {
        Response::Error(e) => assert_eq!(e.code, 11, "try again later: {e:?}"),
        other => panic!("ADD with every address held: {other:?}"),
    }
    check_traffic(&lab, &pod_a, &pod_b, &veth_b);

    // Negative control: without its from-pod rule, pod B's VPC traffic leaves by eth0 and the
    // VPC's source check drops it; the restart reconcile puts the rule back.
    sh(&format!("ip -n {n} rule del prio 1536 from {POD_B} to {VPC_CIDR} lookup 2"));
    assert!(!ok(&format!("ip netns exec {pod_b} ping -c1 -W1 {VPC_HOST}")), "source check");
    agent.reconcile_host().unwrap();
    assert_eq!(snapshot(n), after, "reconcile restores exactly the missing rule");
    lab.ping(&pod_b, VPC_HOST);

    // DEL: rules and routes go, the address cools; DEL again succeeds.
    for (cid, ns) in [("ctr-a", &pa), ("ctr-b", &pb)] {
        assert_eq!(agent.handle(req(Command::Del, cid, ns)), Response::Done { released: 0 });
        assert_eq!(agent.handle(req(Command::Del, cid, ns)), Response::Done { released: 0 });
    }
    let rules = sh(&format!("ip -n {n} rule"));
    assert!(!rules.contains(POD_A) && !rules.contains(POD_B), "{rules}");
    assert!(!ok(&format!("ip netns exec {pod_a} ping -c1 -W1 {PRIMARY_IP}")));
    assert!(agent.state().allocations.is_empty());
}

/// An ENI that leaves the pool takes its host state with it: while its from-ENI rule stayed,
/// a pod that later got the ENI's former primary address would route by the stale table.
#[test]
fn an_eni_that_leaves_the_pool_leaves_no_rule_or_table() {
    assert_root();
    let lab = Lab::new("enip-g", &[(POD_A, MAC0)]);
    let node = lab.node.0.clone();
    let host = Arc::new(NetlinkHost::start(Some(lab.node.path().into())).unwrap());
    let mut p = Programmer::new(HostSettings { mtu: 1500, ..Default::default() });
    p.apply(host.as_ref(), &view(), None);
    assert!(p.ready().contains("eni-1"), "eni-1 programmed");
    let rules = sh(&format!("ip -n {node} rule"));
    assert!(rules.contains(&format!("from {ENI1_IP} lookup 2")), "{rules}");
    assert!(!sh(&format!("ip -n {node} route show table 2")).trim().is_empty());

    let mut without = view();
    without.enis.retain(|e| e.id != "eni-1");
    p.apply(host.as_ref(), &without, None);
    assert!(!p.ready().contains("eni-1"));
    let rules = sh(&format!("ip -n {node} rule"));
    assert!(!rules.contains(&format!("from {ENI1_IP}")), "stale from-ENI rule:\n{rules}");
    let table = sh(&format!("ip -n {node} route show table 2"));
    assert!(table.trim().is_empty(), "stale routes in table 2:\n{table}");
}
