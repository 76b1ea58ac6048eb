use super::*;
use crate::hostnet::fake::FakeHost;
use crate::testutil::*;
use enipool_cni::proto::{Attachment, PROTOCOL_VERSION};
use std::collections::BTreeSet;

fn cfg() -> CoreConfig {
    CoreConfig { mtu: 9001, external_snat: false, leak_grace_seconds: 0 }
}

/// The pool of [`agent_at`].
fn pool() -> crate::pool::PoolView {
    view(vec![
        eni("eni-0", 0, &["10.0.0.20", "10.0.0.21"], &[]),
        eni("eni-1", 1, &["10.0.0.30"], &["10.0.2.0/28"]),
    ])
}

/// The pool of an IPv6 node: the primary ENI's /80, and pods' node-local IPv4 addresses from a
/// /27 (30 of them).
fn pool_v6() -> crate::pool::PoolView {
    let mut primary = eni("eni-0", 0, &["10.0.0.20"], &[]);
    primary.ipv6_prefixes = vec!["2600:1f14:0:100:1::/80".parse().unwrap()];
    let mut v = view(vec![primary]);
    v.ip_family = enipool_crds::IpFamily::IPv6;
    v.ipv4_egress = Some("169.254.172.0/27".parse().unwrap());
    v
}

/// An agent as the binary starts it on a node whose ENIPool never had a `status.agent`.
fn agent_at(path: &std::path::Path, host: Arc<FakeHost>) -> Agent {
    agent_with(path, host, pool())
}

/// [`agent_at`] with the pool `view`.
fn agent_with(path: &std::path::Path, host: Arc<FakeHost>, view: crate::pool::PoolView) -> Agent {
    let a = Agent::open(path, "boot", host, cfg(), Arc::new(Metrics::unregistered())).unwrap();
    a.set_view(view);
    checked(a)
}

/// `a` after the start-up store check found its store consistent.
fn checked(a: Agent) -> Agent {
    assert_eq!(a.verify_store(None, false).unwrap(), StoreCheck::Consistent);
    a
}

fn ip_of(r: &Response) -> std::net::Ipv4Addr {
    match r {
        Response::Added(a) => a.ip,
        other => panic!("expected Added, got {other:?}"),
    }
}

/// Log lines written while `f` runs.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt().with_ansi(false).with_writer(move || w.clone()).finish();
    let out = tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

fn metric_text(registry: &prometheus_client::registry::Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, registry).unwrap();
    s
}

#[test]
fn add_is_idempotent_and_del_cools() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let a = agent_at(&dir.path().join("s.redb"), host.clone());
    let r1 = a.handle(req(Command::Add, "c1"));
    assert_eq!(ip_of(&r1), "10.0.0.20".parse::<std::net::Ipv4Addr>().unwrap());
    assert_eq!(ip_of(&a.handle(req(Command::Add, "c1"))), ip_of(&r1), "repeated ADD, same address");
    assert!(matches!(a.handle(req(Command::Check, "c1")), Response::Added(_)));
    assert_eq!(a.handle(req(Command::Del, "c1")), Response::Done { released: 0 });
    assert_eq!(a.handle(req(Command::Del, "c1")), Response::Done { released: 0 }, "DEL twice");
    assert_eq!(a.handle(req(Command::Del, "never")), Response::Done { released: 0 }, "DEL unknown");
    assert!(a.state().cooling.contains_key(&"10.0.0.20".parse().unwrap()));
    // Cooling: the next ADD gets another address.
    assert_ne!(ip_of(&a.handle(req(Command::Add, "c2"))), ip_of(&r1));
    match a.handle(req(Command::Check, "nope")) {
        Response::Error(e) => assert_eq!(e.code, codes::UNKNOWN_CONTAINER),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_pool_answers_try_again_and_raises_demand() {
    let dir = tempfile::tempdir().unwrap();
    let a = checked(
        Agent::open(
            &dir.path().join("s.redb"),
            "b",
            Arc::new(FakeHost::default()),
            cfg(),
            Arc::new(Metrics::unregistered()),
        )
        .unwrap(),
    );
    match a.handle(req(Command::Add, "c1")) {
        Response::Error(e) => assert_eq!(e.code, codes::TRY_AGAIN_LATER),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.report().refused_adds, 1);
    assert!(!a.status().ready);
}

#[test]
fn retried_sandboxes_of_one_pod_count_as_one_demand_and_clear_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let a = checked(
        Agent::open(
            &dir.path().join("s.redb"),
            "b",
            host,
            cfg(),
            Arc::new(Metrics::unregistered()),
        )
        .unwrap(),
    );
    let pod_req = |cid: &str, name: &str| {
        let mut r = req(Command::Add, cid);
        r.args.insert("K8S_POD_NAMESPACE".into(), "default".into());
        r.args.insert("K8S_POD_NAME".into(), name.into());
        r
    };
    // The runtime retries a failed sandbox with a new container id each time.
    for cid in ["s1", "s2", "s3"] {
        assert!(matches!(a.handle(pod_req(cid, "web-0")), Response::Error(_)));
    }
    assert!(matches!(a.handle(pod_req("t1", "web-1")), Response::Error(_)));
    assert_eq!(a.report().refused_adds, 2, "two pods wait, however often they were retried");
    // Addresses arrive; web-0's next sandbox succeeds and its demand is gone.
    a.set_view(view(vec![eni("eni-0", 0, &["10.0.0.20", "10.0.0.21"], &[])]));
    ip_of(&a.handle(pod_req("s4", "web-0")));
    assert_eq!(a.report().refused_adds, 1, "only web-1 still waits");
}

#[test]
fn failed_wiring_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let a = agent_at(&dir.path().join("s.redb"), host.clone());
    host.fail_setup_pod.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(a.handle(req(Command::Add, "c1")), Response::Error(_)));
    let st = a.state();
    assert!(st.allocations.is_empty());
    host.fail_setup_pod.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        ip_of(&a.handle(req(Command::Add, "c1"))),
        "10.0.0.20".parse::<std::net::Ipv4Addr>().unwrap()
    );
}

#[test]
fn gc_frees_what_the_runtime_no_longer_knows() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent_at(&dir.path().join("s.redb"), Arc::new(FakeHost::default()));
    for c in ["a", "b", "c"] {
        ip_of(&a.handle(req(Command::Add, c)));
    }
    let mut gc = req(Command::Gc, "");
    gc.valid_attachments =
        Some(vec![Attachment { container_id: "b".into(), if_name: "eth0".into() }]);
    assert_eq!(a.handle(gc), Response::Done { released: 2 });
    assert_eq!(a.state().allocations.len(), 1);
}

#[test]
fn offers_never_include_addresses_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent_at(&dir.path().join("s.redb"), Arc::new(FakeHost::default()));
    for c in ["a", "b"] {
        ip_of(&a.handle(req(Command::Add, c)));
    }
    let mut v = (*a.view()).clone();
    v.release_request = Some((1, 100, vec![]));
    a.set_view(v);
    let (rev, items) = a.report().offer.unwrap();
    assert_eq!(rev, 1);
    let st = a.state();
    assert!(!items.is_empty());
    for n in &items {
        assert!(st.by_ip.keys().all(|ip| !n.contains(ip)), "{n} offered while in use");
    }
    // Offered items are never handed out: drain the pool.
    let mut got = Vec::new();
    for i in 0..40 {
        if let Response::Added(r) = a.handle(req(Command::Add, &format!("x{i}"))) {
            got.push(r.ip);
        }
    }
    assert!(got.iter().all(|ip| items.iter().all(|n| !n.contains(ip))));
}

#[test]
fn concurrent_storm_keeps_addresses_unique() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(agent_at(&dir.path().join("s.redb"), Arc::new(FakeHost::default())));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || {
                for i in 0..30 {
                    let cid = format!("c{}", (i * 7 + t) % 12);
                    let cmd = if i % 3 == 2 { Command::Del } else { Command::Add };
                    a.handle(req(cmd, &cid));
                    if i % 10 == 0 {
                        let mut v = (*a.view()).clone();
                        v.release_request = Some((i + 1 + t * 100, 2, vec![]));
                        a.set_view(v);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = a.state();
    let ips: BTreeSet<_> = st.allocations.values().map(|x| x.ip).collect();
    assert_eq!(ips.len(), st.allocations.len());
    for n in st.offered.keys() {
        assert!(ips.iter().all(|ip| !n.contains(ip)));
    }
}

mod add_wait;
mod crash;
mod gc_scope;
mod pool_trust;
mod reboot;
mod recreated_pool;
mod status_verb;
mod store_check;

#[test]
fn drains_the_shims_del_journal() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let a = agent_at(&dir.path().join("s.redb"), host);
    let ip = ip_of(&a.handle(req(Command::Add, "c1")));
    let jdir = dir.path().join("journal");
    // Written by the shim's own code while the agent was "down".
    enipool_cni::journal::record(&jdir, &req(Command::Del, "c1")).unwrap();
    enipool_cni::journal::record(&jdir, &req(Command::Del, "unknown")).unwrap();
    std::fs::write(jdir.join("bad@eth0.json"), b"{").unwrap();
    assert_eq!(a.drain_journal(&jdir), 2);
    assert!(a.state().allocations.is_empty());
    assert!(a.state().cooling.contains_key(&ip));
    assert!(enipool_cni::journal::drain(&jdir).unwrap().is_empty(), "processed entries removed");
    assert!(jdir.join("bad@eth0.json.corrupt").exists(), "corrupt entry kept for a person");
}

/// A DEL the shim journaled after start-up (the socket was not open yet, or the agent was busy)
/// is delivered by the next tick, not at the next restart.
#[test]
fn a_del_journaled_after_start_up_is_drained_by_the_next_tick() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent_at(&dir.path().join("s.redb"), Arc::new(FakeHost::default()));
    let jdir = dir.path().join("journal");
    a.set_del_journal(&jdir);
    let ip = ip_of(&a.handle(req(Command::Add, "c1")));
    a.tick().unwrap();
    assert!(a.state().allocations.values().any(|x| x.ip == ip), "nothing journaled yet");
    enipool_cni::journal::record(&jdir, &req(Command::Del, "c1")).unwrap();
    a.tick().unwrap();
    assert!(a.state().allocations.is_empty(), "the journaled DEL was not delivered");
    assert!(a.state().cooling.contains_key(&ip));
    assert!(enipool_cni::journal::drain(&jdir).unwrap().is_empty(), "entry removed");
}

/// A shim of another protocol version gets CNI's "incompatible version" code and changes
/// nothing; a malformed request gets "invalid network config", whatever its message says.
#[test]
fn protocol_mismatch_and_malformed_requests_get_their_own_codes() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent_at(&dir.path().join("s.redb"), Arc::new(FakeHost::default()));
    let code = |r: Response| match r {
        Response::Error(e) => (e.code, e.msg),
        other => panic!("expected an error, got {other:?}"),
    };
    let mut newer = req(Command::Add, "c1");
    newer.protocol = PROTOCOL_VERSION + 1;
    let (c, msg) = code(a.handle(newer));
    assert_eq!(c, codes::INCOMPATIBLE_VERSION, "{msg}");
    assert!(msg.contains("upgrade the shim and the agent together"), "{msg}");
    assert!(a.state().allocations.is_empty(), "nothing allocated for a refused request");
    let mut no_netns = req(Command::Add, "c1");
    no_netns.netns.clear();
    assert_eq!(code(a.handle(no_netns)).0, codes::INVALID_NETWORK_CONFIG);
    let mut no_id = req(Command::Add, "");
    no_id.args.insert("note".into(), "protocol".into());
    assert_eq!(code(a.handle(no_id)).0, codes::INVALID_NETWORK_CONFIG);
}

/// A repeated ADD that finds the wiring gone rebuilds it with the MTU the request asks for, like
/// the first ADD, not the agent's default.
#[test]
fn rewiring_on_a_repeated_add_keeps_the_requested_mtu() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let a = agent_at(&dir.path().join("s.redb"), host.clone());
    let mut add = req(Command::Add, "c1");
    add.mtu = Some(1400);
    let first = a.handle(add.clone());
    let ip = ip_of(&first);
    let alloc = a.state().allocations.values().next().unwrap().clone();
    // The wiring disappears behind the agent's back (the runtime retries the ADD).
    host.teardown_pod(&a.pod_config(&alloc, &a.view()));
    host.calls.lock().unwrap().clear();
    assert_eq!(ip_of(&a.handle(add)), ip, "same address");
    let calls = host.calls.lock().unwrap().clone();
    let setups: Vec<&String> = calls.iter().filter(|c| c.starts_with("setup_pod")).collect();
    assert_eq!(setups.len(), 1, "re-wired once: {calls:?}");
    assert!(setups[0].ends_with("mtu 1400"), "{calls:?}");
}

/// The per-container lock map keeps no entry once a request is done, also when the work under
/// the lock failed (GC and the leak reaper return early on a failed release).
#[test]
fn container_locks_are_dropped_after_failures_too() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent_at(&dir.path().join("s.redb"), Arc::new(FakeHost::default()));
    let r: Result<()> = a.with_container_lock("c1", || Err(Error::PoolEmpty));
    assert!(r.is_err());
    a.handle(req(Command::Add, "c2"));
    let mut bad = req(Command::Add, "c3");
    bad.netns.clear();
    a.handle(bad);
    assert!(a.locks.lock().unwrap().is_empty(), "lock entries left behind");
}
