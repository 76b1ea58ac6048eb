//! CNI GC releases only its own network's allocations, and only on the runtime's explicit list
//! of valid attachments: a GC from another network (a Multus delegate, a second conflist) or one
//! without the list must not tear down our pods.

use super::*;

fn gc(network: &str, valid: Option<&[&str]>) -> Request {
    let mut r = req(Command::Gc, "");
    r.network = network.into();
    r.valid_attachments = valid.map(|ids| {
        ids.iter()
            .map(|c| Attachment { container_id: c.to_string(), if_name: "eth0".into() })
            .collect()
    });
    r
}

fn three_pods(dir: &tempfile::TempDir) -> Agent {
    let a = agent_at(&dir.path().join("s.redb"), Arc::new(FakeHost::default()));
    for c in ["a", "b", "c"] {
        ip_of(&a.handle(req(Command::Add, c)));
    }
    assert!(a.state().allocations.values().all(|x| x.network == "enipool"), "recorded at ADD");
    a
}

#[test]
fn a_gc_of_another_network_frees_nothing_of_ours() {
    let dir = tempfile::tempdir().unwrap();
    let a = three_pods(&dir);
    assert_eq!(a.handle(gc("macvlan-net", Some(&[]))), Response::Done { released: 0 });
    assert_eq!(a.state().allocations.len(), 3);
    // Our own network's GC still works.
    assert_eq!(a.handle(gc("enipool", Some(&["a"]))), Response::Done { released: 2 });
    assert_eq!(a.state().allocations.len(), 1);
}

#[test]
fn a_gc_without_the_list_or_the_network_frees_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = three_pods(&dir);
    match a.handle(gc("enipool", None)) {
        Response::Error(e) => {
            assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG);
            assert!(e.msg.contains("cni.dev/valid-attachments"), "{}", e.msg);
        }
        other => panic!("{other:?}"),
    }
    match a.handle(gc("", Some(&[]))) {
        Response::Error(e) => assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG, "{}", e.msg),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.state().allocations.len(), 3);
}

#[test]
fn an_allocation_without_a_network_is_left_to_del_until_an_add_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent_at(&dir.path().join("s.redb"), Arc::new(FakeHost::default()));
    // A record whose network was not recorded (made before it was, like this shim's request).
    let mut old = req(Command::Add, "old");
    old.network.clear();
    let ip = ip_of(&a.handle(old.clone()));
    assert_eq!(a.handle(gc("enipool", Some(&[]))), Response::Done { released: 0 });
    // A repeated ADD from the current shim names its network; then its GC can judge it.
    old.network = "enipool".into();
    assert_eq!(ip_of(&a.handle(old)), ip);
    assert_eq!(a.state().allocations[&AllocKey::new("old", "eth0")].network, "enipool");
    assert_eq!(a.handle(gc("enipool", Some(&[]))), Response::Done { released: 1 });
}
