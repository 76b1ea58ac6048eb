//! An ADD that finds the pool empty waits, bounded, for the operator to grow it, instead of
//! failing into the runtime's back-off; it fails at once when the pool cannot grow.

use super::*;

/// An agent whose pool has no address yet.
fn empty_agent(dir: &std::path::Path, wait: Duration) -> Arc<Agent> {
    let a = Agent::open(
        &dir.join("s.redb"),
        "boot",
        Arc::new(FakeHost::default()),
        cfg(),
        Arc::new(Metrics::unregistered()),
    )
    .unwrap();
    a.set_view(view(vec![eni("eni-0", 0, &[], &[])]));
    let a = Arc::new(checked(a));
    a.set_add_wait(wait);
    a
}

#[test]
fn an_add_on_an_empty_pool_gets_the_address_growth_brings() {
    let dir = tempfile::tempdir().unwrap();
    let a = empty_agent(dir.path(), Duration::from_secs(10));
    let started = Instant::now();
    let add = std::thread::spawn({
        let a = a.clone();
        move || a.handle(req(Command::Add, "c1"))
    });
    // The refused attempt is reported as demand while the ADD waits.
    let t0 = Instant::now();
    while a.report().refused_adds == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "the waiting ADD raised no demand");
        std::thread::sleep(Duration::from_millis(10));
    }
    a.set_view(view(vec![eni("eni-0", 0, &["10.0.0.20"], &[])]));
    let r = add.join().unwrap();
    assert_eq!(ip_of(&r).to_string(), "10.0.0.20");
    assert!(started.elapsed() < Duration::from_secs(5), "it waited for the view, not the bound");
    assert_eq!(a.report().refused_adds, 0, "the demand clears once served");
}

#[test]
fn an_add_fails_after_the_bound_or_at_once_when_the_pool_cannot_grow() {
    let dir = tempfile::tempdir().unwrap();
    let a = empty_agent(dir.path(), Duration::from_millis(300));
    let t0 = Instant::now();
    match a.handle(req(Command::Add, "c1")) {
        Response::Error(e) => assert_eq!(e.code, codes::TRY_AGAIN_LATER),
        other => panic!("{other:?}"),
    }
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(300), "failed before the bound: {waited:?}");

    let mut blocked = view(vec![eni("eni-0", 0, &[], &[])]);
    blocked.growth_blocked = true;
    a.set_view(blocked);
    a.set_add_wait(Duration::from_secs(30));
    let t0 = Instant::now();
    match a.handle(req(Command::Add, "c2")) {
        Response::Error(e) => assert_eq!(e.code, codes::TRY_AGAIN_LATER),
        other => panic!("{other:?}"),
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "a pool that cannot grow must not make ADD wait"
    );
}
