//! CNI STATUS tells the runtime whether the plugin can serve at all. A runtime that gets an error
//! marks the node's pod network NotReady (containerd's NetworkReady=false), and the node stops
//! taking pods and may lose its running ones; so a pool whose every address is in use, for a
//! moment or through a subnet exhaustion, must still answer ready.

use super::*;

fn open(dir: &std::path::Path) -> Agent {
    let m = Arc::new(Metrics::unregistered());
    Agent::open(&dir.join("s.redb"), "boot", Arc::new(FakeHost::default()), cfg(), m).unwrap()
}

#[test]
fn a_full_pool_is_still_ready_for_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path());
    a.set_view(view(vec![eni("eni-0", 0, &["10.0.0.20"], &[])]));
    let a = checked(a);
    ip_of(&a.handle(req(Command::Add, "c1")));
    match a.handle(req(Command::Add, "c2")) {
        Response::Error(e) => assert_eq!(e.code, codes::TRY_AGAIN_LATER),
        other => panic!("{other:?}"),
    }
    let s = a.status();
    assert!(s.ready, "STATUS with every address in use: {s:?}");
    assert_eq!(s.available, 0);
    assert!(s.reason.contains("no free address"), "{s:?}");
    assert!(a.readiness().is_ok());
}

#[test]
fn an_agent_that_cannot_serve_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path());
    let s = a.status();
    assert!(!s.ready && s.reason.contains("not checked"), "unchecked store: {s:?}");
    let a = checked(a);
    let s = a.status();
    assert!(!s.ready && s.reason.contains("no pool view"), "no ENIPool yet: {s:?}");
    let mut v = view(vec![eni("eni-0", 0, &["10.0.0.20"], &[])]);
    v.enis[0].ready = false;
    a.set_view(v);
    let s = a.status();
    assert!(!s.ready && s.reason.contains("no ENI programmed"), "no ENI on the host: {s:?}");
}
