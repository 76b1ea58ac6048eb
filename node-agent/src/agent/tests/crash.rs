//! Crash consistency: a child process (this test binary, re-executed) runs ADD/DEL against a real
//! store and aborts at a fault point (as `kill -9` would). The parent reopens the store, runs the
//! restart reconcile, and checks that no address is held twice and none is lost. In both
//! families: an IPv6 pod's address follows from the node-local IPv4 one the store holds, and must
//! survive with it.

use super::*;

const CHILD_ENV: &str = "ENIPOOL_AGENT_CRASH_CHILD_DIR";
/// Set (to anything) when the child plays an IPv6 node.
const CHILD_IPV6_ENV: &str = "ENIPOOL_AGENT_CRASH_CHILD_IPV6";

/// The pool of the node the child and the parent play, and its first pick.
fn family_pool(ipv6: bool) -> (crate::pool::PoolView, &'static str) {
    match ipv6 {
        true => (pool_v6(), "169.254.172.1"),
        false => (pool(), "10.0.0.20"),
    }
}

const POINTS: &[&str] = &[
    "add-after-pick",
    "store-add-before-commit",
    "add-after-commit",
    "add-after-wire",
    "del-after-teardown",
    "store-remove-before-commit",
    "del-after-commit",
    // Killed after DEL c1 was answered: its veth is torn down but not deleted yet (the real host
    // deletes it asynchronously; the fake never does on its own).
    "del-after-reply",
];

/// Not a test by itself: the body the parent re-executes with the fault point set.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let dir = std::path::PathBuf::from(dir);
    let host = Arc::new(FakeHost::persistent(dir.join("links.json")));
    let (view, _) = family_pool(std::env::var_os(CHILD_IPV6_ENV).is_some());
    let a = agent_with(&dir.join("s.redb"), host, view);
    // Acknowledged work is written to `acked` after each reply, like a runtime that got an answer.
    let ack = |s: &str| {
        use std::io::Write;
        let mut f =
            std::fs::OpenOptions::new().append(true).create(true).open(dir.join("acked")).unwrap();
        writeln!(f, "{s}").unwrap();
        f.sync_all().unwrap();
    };
    ip_of(&a.handle(req(Command::Add, "c1")));
    ack("add c1");
    ip_of(&a.handle(req(Command::Add, "c2")));
    ack("add c2");
    a.handle(req(Command::Del, "c1"));
    ack("del c1");
    crate::fault::point("del-after-reply");
    ip_of(&a.handle(req(Command::Add, "c3")));
    ack("add c3");
    a.handle(req(Command::Del, "c2"));
    ack("del c2");
}

#[test]
fn kill_at_every_step_of_add_and_del() {
    kill_at_every_step(false, 2 + 1 + 16); // the view in agent_at
}

#[test]
fn kill_at_every_step_of_an_ipv6_add_and_del() {
    kill_at_every_step(true, 30); // the egress /27 of pool_v6
}

fn kill_at_every_step(ipv6: bool, total_addrs: usize) {
    let exe = std::env::current_exe().unwrap();
    let (view, first_pick) = family_pool(ipv6);
    for point in POINTS {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(&exe);
        if ipv6 {
            child.env(CHILD_IPV6_ENV, "1");
        }
        let status = child
            .args([
                "--exact",
                "agent::tests::crash::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(crate::fault::FAULT_ENV, point)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "{point}: child should have aborted");
        let acked = std::fs::read_to_string(dir.path().join("acked")).unwrap_or_default();
        // Restart: reopen, reconcile with what the fake host kept (leak grace 0 here).
        let host = Arc::new(FakeHost::persistent(dir.path().join("links.json")));
        let a = agent_with(&dir.path().join("s.redb"), host.clone(), view.clone());
        assert_eq!(a.state().epoch, 2, "{point}: epoch bumped");
        a.reconcile_host().unwrap();
        let st = a.state();
        let ips: BTreeSet<_> = st.allocations.values().map(|x| x.ip).collect();
        assert_eq!(ips.len(), st.allocations.len(), "{point}: address held twice");
        // An IPv6 pod keeps the /128 its node-local address maps to.
        for al in st.allocations.values() {
            assert_eq!(al.ipv6, view.ipv6_of(al.ip), "{point}: {} has IPv6 {:?}", al.ip, al.ipv6);
        }
        // Every acknowledged live pod still holds its address and its wiring.
        // The operation in flight when the child died (the first not acknowledged).
        let ops = ["add c1", "add c2", "del c1", "add c3", "del c2"];
        let in_flight = ops.get(acked.lines().count()).copied().unwrap_or("");
        for c in ["c1", "c2", "c3"] {
            let added = acked.contains(&format!("add {c}"));
            let deleted = acked.contains(&format!("del {c}"));
            let key = AllocKey::new(c, "eth0");
            if added && !deleted && in_flight != format!("del {c}") {
                assert!(
                    st.allocations.contains_key(&key),
                    "{point}: live pod {c} lost its address"
                );
            }
            if deleted {
                assert!(!st.allocations.contains_key(&key), "{point}: deleted pod {c} still holds");
            }
        }
        // Nothing lost: every allocation has wiring, and in-use + cooling + free = all.
        let links = host.links();
        for al in st.allocations.values() {
            assert!(
                links.contains(&al.host_if),
                "{point}: allocation {} without wiring survived",
                al.ip
            );
        }
        let now = crate::store::now_secs();
        let free = alloc::available(&a.view(), &st, now);
        let cooling = st.cooling.values().filter(|t| **t > now).count();
        assert_eq!(free + cooling + st.allocations.len(), total_addrs, "{point}: address lost");
        // No veth is left torn down but undeleted after the restart.
        assert_eq!(host.doomed(), BTreeSet::new(), "{point}: torn-down veth leaked");
        // A deleted pod's address cools; it is not handed out again before the cooldown.
        let c1_ip: std::net::Ipv4Addr = first_pick.parse().unwrap();
        if acked.contains("del c1") {
            assert!(st.cooling.get(&c1_ip).is_some_and(|t| *t > now), "{point}: c1 not cooling");
        }
        // And the agent keeps working.
        let after = ip_of(&a.handle(req(Command::Add, "after")));
        if acked.contains("del c1") {
            assert_ne!(after, c1_ip, "{point}: address reused before its cooldown");
        }
    }
}
