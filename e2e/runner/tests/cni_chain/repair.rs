//! Host state that something else removes under a running agent (a network manager, an
//! operator's `ip rule flush`, `nft flush ruleset`) comes back without a restart: rule and route
//! removals trigger the agent's host repair at once, the nftables table (no netlink event) on the
//! repair period.

use super::harness::{self, ping, sh_in, Env, REPAIR_PERIOD_SECS};
use super::restart::{assert_same_host_state, host_state};
use super::{add, assert_ping, spec};
use std::time::Duration;

/// `enipool_agent_host_repairs_total{kind}` of a node's agent.
fn repairs(node: &harness::Node, kind: &str) -> u64 {
    let (code, body) = harness::http_get(node.agent().metrics, "/metrics")
        .unwrap_or_else(|e| panic!("metrics of agent {}: {e:#}", node.label));
    assert_eq!(code, 200, "{body}");
    let prefix = format!("enipool_agent_host_repairs_total{{kind=\"{kind}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap_or_else(|e| panic!("{prefix}{v}: {e}")))
}

/// Whether the node's host state is `before` again (without failing while the table is gone).
fn restored(node: &harness::Node, before: &[(String, String)]) -> anyhow::Result<()> {
    let nft = fabric::exec_in(&node.netns, &["nft", "list", "table", "ip", "enipool"])?;
    anyhow::ensure!(nft.status.success(), "no nftables table yet");
    anyhow::ensure!(host_state(node) == before, "not yet");
    Ok(())
}

fn epoch(env: &Env, node: &harness::Node) -> i64 {
    env.pool(node).unwrap()["status"]["agent"]["epoch"].as_i64().expect("status.agent.epoch")
}

#[test]
fn host_state_removed_under_a_running_agent_comes_back() {
    let env = Env::new();
    let a = env.launch(spec("a", 0, 1, Some(3)));
    let b = env.launch(spec("b", 1, 1, None));
    let p1 = add(&env, &a, "p1", None);
    let p2 = add(&env, &a, "p2", None);
    let b1 = add(&env, &b, "b1", None);
    assert!(a.pool_ips(1).contains(&p2.ip), "p2 on the secondary ENI");
    assert_ping(&p2.netns, b1.ip, "p2 -> b1 before anything is removed");
    // The repair runs all along: by now it has looked at least once and found nothing missing.
    std::thread::sleep(Duration::from_secs(REPAIR_PERIOD_SECS + 1));
    let before = host_state(&a);
    let start = epoch(&env, &a);
    for kind in ["node", "eni", "pod"] {
        assert_eq!(repairs(&a, kind), 0, "{kind} repairs with nothing removed");
    }

    // The pods' rules, the secondary ENI's table and the node's fwmark rule, as `ip rule flush`
    // and a network manager would remove them.
    let p2_ip = p2.ip.to_string();
    sh_in(&a.netns, &["ip", "rule", "del", "to", &p2_ip, "prio", "512"]);
    sh_in(
        &a.netns,
        &["ip", "rule", "del", "from", &p2_ip, "to", harness::VPC_CIDR, "prio", "1536"],
    );
    sh_in(&a.netns, &["ip", "route", "flush", "table", "2"]);
    sh_in(&a.netns, &["ip", "rule", "del", "prio", "1024"]);
    harness::wait_for("the host state put back", Duration::from_secs(10), || {
        let now = host_state(&a);
        anyhow::ensure!(
            now == before,
            "not yet: {:?}",
            now.iter().map(|x| &x.1).collect::<Vec<_>>()
        );
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_same_host_state(&before, &host_state(&a), "after the repair of removed rules");
    assert_eq!(repairs(&a, "pod"), 1, "p2 repaired, p1 untouched");
    assert_eq!(repairs(&a, "eni"), 1, "the secondary ENI's table repaired");
    assert_eq!(repairs(&a, "node"), 1, "the fwmark rule repaired");
    assert_ping(&p2.netns, b1.ip, "p2 -> b1 after the repair");
    assert_ping(&b1.netns, p2.ip, "b1 -> p2 after the repair");

    // The nftables table: no netlink event, put back by the periodic check. Meanwhile pod
    // egress is not SNATed and the "internet" drops it.
    let internet = env.fabric().internet_host_ip();
    sh_in(&a.netns, &["nft", "delete", "table", "ip", "enipool"]);
    sh_in(&a.netns, &["conntrack", "-F"]);
    harness::wait_for(
        "the nftables table put back",
        Duration::from_secs(10 * REPAIR_PERIOD_SECS),
        || restored(&a, &before),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(repairs(&a, "node"), 2, "the nftables table repaired");
    assert!(ping(&p1.netns, internet), "p1 -> internet after the nftables table came back");
    // A flushed chain (the table still there) is a change too.
    sh_in(&a.netns, &["nft", "flush", "chain", "ip", "enipool", "nat-postrouting"]);
    harness::wait_for(
        "the flushed chain put back",
        Duration::from_secs(10 * REPAIR_PERIOD_SECS),
        || restored(&a, &before),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(repairs(&a, "node"), 3);
    assert_eq!(epoch(&env, &a), start, "the agent did not restart");

    // A DEL removes a pod's rules on purpose: the repair that the removal triggers leaves them.
    a.driver.del(&p1.container_id, &p1.path, "eth0", &p1.args(), None).expect("DEL p1");
    std::thread::sleep(Duration::from_secs(REPAIR_PERIOD_SECS + 2));
    let rules = sh_in(&a.netns, &["ip", "rule", "show"]);
    assert!(!rules.contains(&format!("to {} ", p1.ip)), "released pod's rule came back:\n{rules}");
    assert_eq!(repairs(&a, "pod"), 1, "a DEL is not a repair");
}
