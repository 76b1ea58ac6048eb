//! After a reboot no pod of the previous boot survives (their netns are gone): their allocations
//! are reclaimed at the restart, through the release a DEL uses, instead of waiting out the leak
//! grace that protects pods whose runtime may still DEL or re-ADD them.

use super::*;
use crate::agent::housekeeping::leak_deadline;

#[test]
fn the_leak_grace_applies_unless_the_node_rebooted() {
    assert_eq!(leak_deadline("b1", "b1", 100, 600), 700, "same boot: the grace");
    assert_eq!(leak_deadline("b1", "b2", 100, 600), 100, "rebooted: at once");
    assert_eq!(leak_deadline("", "b2", 100, 600), 700, "no boot recorded: not a reboot");
    assert_eq!(leak_deadline("b1", "", 100, 600), 700, "boot id unreadable: not a reboot");
}

/// An agent with the leak grace the chart uses, on `host`, in boot `boot_id`.
fn agent(path: &std::path::Path, boot_id: &str, host: Arc<FakeHost>) -> Agent {
    let cfg = CoreConfig { mtu: 9001, external_snat: false, leak_grace_seconds: 600 };
    let a = Agent::open(path, boot_id, host, cfg, Arc::new(Metrics::unregistered())).unwrap();
    a.set_view(pool());
    checked(a)
}

/// Two pods of boot `b1` (the second then deleted, cooling); returns their addresses.
fn pods_of_boot_one(path: &std::path::Path) -> (std::net::Ipv4Addr, std::net::Ipv4Addr) {
    let a = agent(path, "b1", Arc::new(FakeHost::default()));
    let one = ip_of(&a.handle(req(Command::Add, "c1")));
    let two = ip_of(&a.handle(req(Command::Add, "c2")));
    (one, two)
}

#[test]
fn a_reboot_reclaims_the_previous_boots_allocations_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let (one, two) = pods_of_boot_one(&path);
    // The node rebooted: a new boot id, and nothing of the old pods on the host.
    let host = Arc::new(FakeHost::default());
    let a = agent(&path, "b2", host.clone());
    assert_eq!(a.state().allocations.len(), 2);
    let (r, logs) = logs_of(|| a.reconcile_host());
    r.unwrap();
    assert!(
        logs.contains("the node rebooted since the allocation store was last opened"),
        "{logs}"
    );
    assert!(logs.contains("previous_boot=\"b1\"") || logs.contains("previous_boot=b1"), "{logs}");
    let st = a.state();
    assert!(st.allocations.is_empty(), "reclaimed without the 600 s grace");
    // Through the release a DEL uses: torn down (best effort) and cooling, never offered.
    for ip in [one, two] {
        assert!(st.cooling.get(&ip).is_some_and(|t| *t > crate::store::now_secs()), "{ip}");
    }
    let calls = host.calls.lock().unwrap().clone();
    assert_eq!(calls.iter().filter(|c| c.starts_with("teardown_pod")).count(), 2, "{calls:?}");
    assert_eq!(st.boot_id, "b2");
}

#[test]
fn a_restart_in_the_same_boot_keeps_the_leak_grace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    pods_of_boot_one(&path);
    // Same boot, the veths gone (the fake host starts empty): leak candidates, not freed yet.
    let a = agent(&path, "b1", Arc::new(FakeHost::default()));
    let (r, logs) = logs_of(|| a.reconcile_host());
    r.unwrap();
    assert!(!logs.contains("rebooted"), "{logs}");
    assert_eq!(a.state().allocations.len(), 2, "the runtime may still DEL or re-ADD them");
    assert_eq!(a.leaks.lock().unwrap().len(), 2);
}
