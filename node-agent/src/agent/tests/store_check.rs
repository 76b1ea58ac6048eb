//! The start-up store check as the binary runs it (open, pool view, [`Agent::verify_store`] with
//! what the ENIPool says was published): a store that forgot allocations never hands their
//! addresses out again; it refuses to serve, or is rebuilt from the host when that is allowed.

use super::*;
use crate::hostnet::host_veth_name;
use crate::store::verify::Published;
use crate::store::Origin;
use std::net::Ipv4Addr;

fn ns(pod: &str) -> String {
    format!("/var/run/netns/{pod}")
}

/// A request of `cmd` for pod `pod`'s sandbox (netns named after the pod, container `c-<pod>`).
fn pod_req(cmd: Command, pod: &str) -> Request {
    Request { netns: ns(pod), ..req(cmd, &format!("c-{pod}")) }
}

fn published(epoch: u64, boot_id: &str) -> Published {
    Published { epoch, boot_id: boot_id.into(), in_use: 2, offer: None }
}

/// Open `path` as the binary does after a restart, with the pool view in place.
fn reopen(path: &std::path::Path, boot_id: &str, host: Arc<FakeHost>, metrics: Metrics) -> Agent {
    let a = Agent::open(path, boot_id, host, cfg(), Arc::new(metrics)).unwrap();
    a.set_view(pool());
    a
}

fn error_of(r: Response) -> enipool_cni::proto::ErrorReply {
    match r {
        Response::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn a_lost_store_refuses_to_serve_instead_of_double_assigning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let host = Arc::new(FakeHost::default());
    let held = {
        let a = agent_at(&path, host.clone());
        ip_of(&a.handle(pod_req(Command::Add, "running")))
    };
    // The store file disappears; the running pod's wiring stays on the host, and the ENIPool
    // still shows what the last agent published.
    std::fs::remove_file(&path).unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let a = reopen(&path, "boot", host.clone(), Metrics::new(&mut registry));
    host.calls.lock().unwrap().clear();
    let check = a.verify_store(Some(&published(1, "boot")), false).unwrap();
    let StoreCheck::Refused(reason) = check else { panic!("{check:?}") };
    assert!(reason.contains("store epoch 0 (the store file was missing or empty)"), "{reason}");
    assert!(reason.contains(&format!("{held} on {}", host_veth_name(&ns("running"), "eth0"))));

    let e = error_of(a.handle(pod_req(Command::Add, "new")));
    assert_eq!(e.code, codes::IO_FAILURE);
    assert!(e.msg.contains("does not match this node"), "{}", e.msg);
    assert!(e.msg.contains("--rebuild-store-from-host"), "{}", e.msg);
    assert!(e.details.contains("store_mismatch"), "{}", e.details);
    for cmd in [Command::Del, Command::Check] {
        assert_eq!(error_of(a.handle(pod_req(cmd, "running"))).code, codes::IO_FAILURE, "{cmd:?}");
    }
    let mut gc = req(Command::Gc, "");
    gc.valid_attachments = Some(Vec::new());
    assert_eq!(error_of(a.handle(gc)).code, codes::IO_FAILURE);
    assert!(a.readiness().unwrap_err().contains("does not match this node"));
    let s = a.status();
    assert!(!s.ready && s.reason.contains("does not match this node"), "{s:?}");
    assert!(!a.publishable(), "publishing would hide the lost store from the next start");
    assert!(a.reconcile_host().is_err(), "no reconcile on a refused store");
    a.tick().unwrap();
    assert!(a.state().allocations.is_empty());
    assert_eq!(a.state().epoch, 0, "a refused start does not start an epoch");
    assert!(host.links().contains(&host_veth_name(&ns("running"), "eth0")), "pod untouched");
    assert!(host.calls.lock().unwrap().is_empty(), "{:?}", host.calls.lock().unwrap());
    let metrics = metric_text(&registry);
    assert!(metrics.contains("enipool_agent_store_mismatch 1"), "{metrics}");

    // The next start refuses as well, also once the pod is gone: the refused start published
    // nothing and left the (now existing) store at epoch 0.
    drop(a);
    host.teardown_pod(&crate::hostnet::PodConfig {
        netns: ns("running"),
        if_name: "eth0".into(),
        host_if: host_veth_name(&ns("running"), "eth0"),
        ip: held,
        ipv6: None,
        table: 254,
        from_rule_dsts: vec![],
        mtu: 9001,
    });
    let a = reopen(&path, "boot", host, Metrics::unregistered());
    let check = a.verify_store(Some(&published(1, "boot")), false).unwrap();
    let StoreCheck::Refused(reason) = check else { panic!("{check:?}") };
    assert!(reason.contains("store epoch 0 is behind epoch 1"), "{reason}");
}

#[test]
fn a_missing_store_behind_the_published_epoch_refuses_with_no_pod_wired() {
    let dir = tempfile::tempdir().unwrap();
    let a = reopen(&dir.path().join("s.redb"), "boot", Arc::default(), Metrics::unregistered());
    let check = a.verify_store(Some(&published(4, "boot")), false).unwrap();
    let StoreCheck::Refused(reason) = check else { panic!("{check:?}") };
    assert!(reason.contains("behind epoch 4"), "{reason}");
    assert!(matches!(a.handle(pod_req(Command::Add, "p")), Response::Error(_)));
}

#[test]
fn pods_wired_on_the_host_refuse_a_store_without_a_published_status() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    host.wire(&host_veth_name(&ns("p1"), "eth0"), Ipv4Addr::new(10, 0, 0, 20), 254);
    let a = reopen(&dir.path().join("s.redb"), "boot", host, Metrics::unregistered());
    let check = a.verify_store(None, false).unwrap();
    let StoreCheck::Refused(reason) = check else { panic!("{check:?}") };
    assert!(reason.contains("1 pods wired on the host"), "{reason}");
}

#[test]
fn a_fresh_node_starts_normally() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let a = reopen(&dir.path().join("s.redb"), "boot", Arc::default(), Metrics::new(&mut registry));
    assert!(!a.publishable(), "nothing published before the check");
    assert_eq!(a.verify_store(None, false).unwrap(), StoreCheck::Consistent);
    assert!(a.publishable());
    assert_eq!(ip_of(&a.handle(pod_req(Command::Add, "p"))), Ipv4Addr::new(10, 0, 0, 20));
    assert_eq!(a.state().epoch, 1);
    assert!(metric_text(&registry).contains("enipool_agent_store_mismatch 0"));
}

#[test]
fn rebuild_from_the_host_never_hands_out_an_address_a_running_pod_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let host = Arc::new(FakeHost::default());
    // Two running pods a previous agent wired (eni-0 in main, eni-1 by table 2); the previous
    // agent's offer answered revision 2 with 10.0.0.21.
    let (veth1, veth2) = (host_veth_name(&ns("p1"), "eth0"), host_veth_name(&ns("p2"), "eth0"));
    host.wire(&veth1, Ipv4Addr::new(10, 0, 0, 20), 254);
    host.wire(&veth2, Ipv4Addr::new(10, 0, 0, 30), 2);
    let mut last = published(5, "boot");
    last.offer = Some((2, vec![net("10.0.0.21/32")]));
    let mut registry = prometheus_client::registry::Registry::default();
    let a = reopen(&path, "boot", host.clone(), Metrics::new(&mut registry));
    assert_eq!(a.verify_store(Some(&last), true).unwrap(), StoreCheck::Rebuilt { added: 2 });
    let st = a.state();
    assert_eq!(st.epoch, 6, "above the published epoch");
    let rebuilt: Vec<(Ipv4Addr, &str, &str, u32, Origin)> = st
        .allocations
        .values()
        .map(|x| (x.ip, x.host_if.as_str(), x.eni_id.as_str(), x.table, x.origin))
        .collect();
    assert_eq!(
        rebuilt,
        [
            (Ipv4Addr::new(10, 0, 0, 20), veth1.as_str(), "eni-0", 254, Origin::Host),
            (Ipv4Addr::new(10, 0, 0, 30), veth2.as_str(), "eni-1", 2, Origin::Host),
        ]
    );
    assert!(st.offered.contains_key(&net("10.0.0.21/32")));
    assert!(metric_text(&registry).contains("enipool_agent_store_rebuilds_total 1"));
    a.reconcile_host().unwrap();
    assert_eq!(a.state().allocations.len(), 2, "both pods are wired: no leak");

    // A runtime GC cannot name the rebuilt records' containers: they stay.
    let mut gc = req(Command::Gc, "");
    gc.valid_attachments = Some(Vec::new());
    assert_eq!(a.handle(gc), Response::Done { released: 0 });

    // Drain the pool: nothing a running pod holds, nothing offered.
    let mut given = BTreeSet::new();
    for i in 0..30 {
        match a.handle(pod_req(Command::Add, &format!("new{i}"))) {
            Response::Added(r) => assert!(given.insert(r.ip), "{} given twice", r.ip),
            Response::Error(e) => assert_eq!(e.code, codes::TRY_AGAIN_LATER, "{e:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(given.len(), 19 - 3, "every address but the two pods' and the offered one");
    for held in ["10.0.0.20", "10.0.0.30", "10.0.0.21"] {
        assert!(!given.contains(&held.parse::<Ipv4Addr>().unwrap()), "{held} handed out");
    }

    // The runtime's requests for the running pods adopt their records: a repeated ADD gets the
    // same address, a DEL frees it through the normal path (cooling).
    assert_eq!(ip_of(&a.handle(pod_req(Command::Add, "p2"))), Ipv4Addr::new(10, 0, 0, 30));
    let p2 = a.state().allocations[&AllocKey::new("c-p2", "eth0")].clone();
    assert_eq!((p2.origin, p2.netns.as_str()), (Origin::Cni, ns("p2").as_str()));
    assert_eq!(a.handle(pod_req(Command::Del, "p1")), Response::Done { released: 0 });
    let st = a.state();
    assert!(!st.by_ip.contains_key(&Ipv4Addr::new(10, 0, 0, 20)));
    assert!(st.cooling.contains_key(&Ipv4Addr::new(10, 0, 0, 20)));
    assert!(!host.links().contains(&veth1), "torn down");
    assert!(st.allocations.values().all(|x| x.origin == Origin::Cni));

    // The next start finds the rebuilt store consistent.
    drop(a);
    let a = reopen(&path, "boot", host, Metrics::unregistered());
    assert_eq!(a.verify_store(Some(&published(6, "boot")), false).unwrap(), StoreCheck::Consistent);
}

#[test]
fn a_rebuilt_record_whose_pod_is_gone_is_freed_as_a_leak() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let veth = host_veth_name(&ns("p1"), "eth0");
    host.wire(&veth, Ipv4Addr::new(10, 0, 0, 20), 254);
    let a = reopen(&dir.path().join("s.redb"), "boot", host.clone(), Metrics::unregistered());
    assert!(matches!(a.verify_store(None, true), Ok(StoreCheck::Rebuilt { added: 1 })));
    a.reconcile_host().unwrap();
    // The pod is deleted and its DEL names no netns (the runtime lost it): the veth goes with
    // the netns, and the record waits out the leak grace (0 here) like any other leak.
    let pod = a.pod_config(&a.state().allocations.values().next().unwrap().clone(), &a.view());
    host.teardown_pod(&pod);
    let mut del = req(Command::Del, "c-p1");
    del.netns.clear();
    assert_eq!(a.handle(del), Response::Done { released: 0 });
    assert_eq!(a.state().allocations.len(), 1, "a DEL without netns cannot name it");
    a.tick().unwrap();
    assert!(a.state().allocations.is_empty());
    assert!(a.state().cooling.contains_key(&Ipv4Addr::new(10, 0, 0, 20)));
}

#[test]
fn after_a_reboot_a_lost_store_starts_above_the_published_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let a = reopen(&dir.path().join("s.redb"), "boot-2", Arc::default(), Metrics::unregistered());
    let mut last = published(5, "boot-1");
    last.offer = Some((3, vec![net("10.0.0.20/32")]));
    assert_eq!(a.verify_store(Some(&last), false).unwrap(), StoreCheck::Reseeded);
    let st = a.state();
    assert_eq!(st.epoch, 6);
    assert!(st.allocations.is_empty());
    assert_eq!(
        st.offered.get(&net("10.0.0.20/32")),
        Some(&crate::store::Offer { revision: 3, epoch: 5 })
    );
    assert_eq!(ip_of(&a.handle(pod_req(Command::Add, "p"))), Ipv4Addr::new(10, 0, 0, 21));
}

/// IPv6 node: a store rebuilt from the host gives each running pod back the /128 its node-local
/// address maps to, and a repeated ADD answers it; no new pod gets a running pod's address.
#[test]
fn an_ipv6_nodes_store_rebuilt_from_the_host_keeps_each_pods_ipv6_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let host = Arc::new(FakeHost::default());
    let veth = host_veth_name(&ns("p1"), "eth0");
    host.wire(&veth, Ipv4Addr::new(169, 254, 172, 7), 254);
    let a = Agent::open(&path, "boot", host, cfg(), Arc::new(Metrics::unregistered())).unwrap();
    a.set_view(pool_v6());
    let rebuilt = a.verify_store(Some(&published(5, "boot")), true).unwrap();
    assert_eq!(rebuilt, StoreCheck::Rebuilt { added: 1 });
    let held: Vec<_> = a.state().allocations.values().map(|x| (x.ip, x.ipv6)).collect();
    let v6: std::net::Ipv6Addr = "2600:1f14:0:100:1::7".parse().unwrap();
    assert_eq!(held, [(Ipv4Addr::new(169, 254, 172, 7), Some(v6))]);
    match a.handle(pod_req(Command::Add, "p1")) {
        Response::Added(r) => assert_eq!(r.ipv6, Some(v6), "the running pod's own address"),
        other => panic!("{other:?}"),
    }
    let mut given = BTreeSet::new();
    for i in 0..40 {
        if let Response::Added(r) = a.handle(pod_req(Command::Add, &format!("new{i}"))) {
            assert!(given.insert(r.ipv6.expect("an IPv6 pod")), "given twice");
        }
    }
    assert_eq!(given.len(), 29, "every address of the /27 but the running pod's");
    assert!(!given.contains(&v6), "{v6} handed out again");
}
