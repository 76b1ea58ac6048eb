//! The agent restarted under running pods: the host state stays byte-identical, pods keep their
//! addresses, and a DEL that came while it was down is applied from the shim's journal.

use super::harness::{self, sh_in, Env, Node};
use super::{add, allocation, assert_no_hook_errors, assert_ping, host_if, spec, wait_in_use};
use serde_json::json;
use std::time::Duration;

/// The host state a restart must leave unchanged.
pub(super) fn host_state(node: &Node) -> Vec<(String, String)> {
    [
        &["ip", "rule", "show"][..],
        &["nft", "list", "table", "ip", "enipool"],
        &["ip", "-4", "route", "show", "table", "all"],
    ]
    .iter()
    .map(|argv| (argv.join(" "), sh_in(&node.netns, argv)))
    .collect()
}

pub(super) fn assert_same_host_state(
    before: &[(String, String)],
    after: &[(String, String)],
    when: &str,
) {
    for ((cmd, b), (_, a)) in before.iter().zip(after) {
        assert!(b == a, "`{cmd}` changed {when}:\n--- before\n{b}--- after\n{a}");
    }
}

/// kill -9 and restart of the agent leaves the host rules byte-identical (no
/// duplicates), pods keep working, the store survives (a new pod gets a new address), and a later
/// pool update re-programs nothing twice.
#[test]
fn agent_restart_keeps_rules_and_pods() {
    let env = Env::new();
    let mut a = env.launch(spec("a", 0, 1, Some(3)));
    let b = env.launch(spec("b", 1, 1, None));
    let p1 = add(&env, &a, "p1", None);
    let p2 = add(&env, &a, "p2", None);
    let b1 = add(&env, &b, "b1", None);
    assert!(a.pool_ips(1).contains(&p2.ip), "p2 on the secondary ENI");
    assert_ping(&p1.netns, b1.ip, "p1 -> b1 before the restart");
    assert_ping(&p2.netns, b1.ip, "p2 -> b1 before the restart");
    let before = host_state(&a);
    let rules = &before[0].1;
    for needle in
        ["1024:\tfrom all fwmark 0x80/0x80 lookup main", &format!("to {} lookup main", p2.ip)]
    {
        assert_eq!(rules.matches(needle).count(), 1, "{needle:?} once in:\n{rules}");
    }
    let epoch = env.pool(&a).unwrap()["status"]["agent"]["epoch"].as_i64().expect("epoch");

    env.kill_agent(&a);
    // The data path lives in the kernel: pods keep working while the agent is down.
    assert_ping(&p2.netns, b1.ip, "p2 -> b1 with the agent down");
    env.restart_agent(&a);
    let new_epoch = env.wait_agent_ready(&a, 2, Some(epoch)).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(new_epoch > epoch, "epoch {epoch} -> {new_epoch}");
    // Reconcile runs before the socket is served; give the pool watch a moment as well.
    std::thread::sleep(Duration::from_secs(1));
    assert_same_host_state(&before, &host_state(&a), "across kill -9 + restart");

    // The allocations survived.
    for p in [&p1, &p2] {
        assert_eq!(allocation(&env, &a, p)["ip"], p.ip.to_string(), "allocation of {}", p.name);
    }
    // A pool update after the restart (same ENIs, new revision) re-programs nothing twice.
    env.update_status(&mut a, |_| {});
    std::thread::sleep(Duration::from_millis(500));
    assert_same_host_state(&before, &host_state(&a), "after a pool update following the restart");

    for (p, what) in [(&p1, "p1"), (&p2, "p2")] {
        assert_ping(&p.netns, b1.ip, &format!("{what} -> b1 after the restart"));
        assert_ping(&b1.netns, p.ip, &format!("b1 -> {what} after the restart"));
        assert_ping(&a.netns, p.ip, &format!("node a -> {what} after the restart"));
    }
    // A new pod gets an address no existing pod holds (the store was reopened, not reset).
    // The restart really re-programs: host state removed while the agent is down comes back
    // (node table and fwmark rule from the pool, the pod's rules from the store), identical.
    env.kill_agent(&a);
    let epoch = new_epoch;
    sh_in(&a.netns, &["nft", "delete", "table", "ip", "enipool"]);
    sh_in(&a.netns, &["ip", "rule", "del", "prio", "1024"]);
    sh_in(&a.netns, &["ip", "rule", "del", "to", &p2.ip.to_string(), "prio", "512"]);
    let p2_from = ["from", &p2.ip.to_string(), "to", harness::VPC_CIDR, "prio", "1536"];
    let mut del = vec!["ip", "rule", "del"];
    del.extend(p2_from);
    sh_in(&a.netns, &del);
    env.restart_agent(&a);
    env.wait_agent_ready(&a, 2, Some(epoch)).unwrap_or_else(|e| panic!("{e:#}"));
    std::thread::sleep(Duration::from_secs(1));
    assert_same_host_state(&before, &host_state(&a), "after a restart that had to re-program");
    assert_ping(&b1.netns, p2.ip, "b1 -> p2 after the re-programming restart");

    let p3 = add(&env, &a, "p3", None);
    assert!(![p1.ip, p2.ip].contains(&p3.ip), "new pod got {} (p1 {}, p2 {})", p3.ip, p1.ip, p2.ip);
    assert_ping(&p3.netns, b1.ip, "p3 -> b1");
    wait_in_use(&env, &a, 3);
    assert_no_hook_errors(&env);
}

/// A DEL while the agent is down succeeds through the whole chain (the shim journals it) and the
/// restarted agent drains the journal: wiring and allocation gone, the address reusable.
#[test]
fn del_while_agent_down_is_journaled_and_drained() {
    let env = Env::new();
    let a = env.launch(spec("a", 0, 2, None));
    let caps =
        json!({"portMappings": [{"hostPort": 8083, "containerPort": 80, "protocol": "tcp"}]});
    let p = add(&env, &a, "gone", Some(&caps));
    let veth = host_if(&env, &a, &p);
    let epoch = env.pool(&a).unwrap()["status"]["agent"]["epoch"].as_i64().expect("epoch");

    env.kill_agent(&a);
    a.driver
        .del(&p.container_id, &p.path, "eth0", &p.args(), Some(&caps))
        .unwrap_or_else(|e| panic!("DEL with the agent down: {e:#}"));
    let journal = a.dir.join("journal");
    let entries = std::fs::read_dir(&journal).unwrap().count();
    assert_eq!(entries, 1, "one journaled DEL in {}", journal.display());

    env.restart_agent(&a);
    env.wait_agent_ready(&a, 1, Some(epoch)).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(env.allocation_of(&a, &p.container_id), None, "journaled DEL not applied");
    let host = fabric::exec_in(&a.netns, &["ip", "link", "show", &veth]).unwrap();
    assert!(!host.status.success(), "host veth {veth} still there after the drained DEL");
    let rules = sh_in(&a.netns, &["ip", "rule"]);
    assert!(!rules.contains(&p.ip.to_string()), "rules of the deleted pod left:\n{rules}");
    assert_eq!(std::fs::read_dir(&journal).unwrap().count(), 0, "journal not emptied");
    wait_in_use(&env, &a, 0);
    assert_no_hook_errors(&env);
}
