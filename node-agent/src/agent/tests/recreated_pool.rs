//! `kubectl delete enipool <node>` with the node alive: the operator creates the pool again (a
//! new uid, the same name), and its release requests count from 1 again. The agent answers them,
//! and forgets what it offered the old pool once the new one no longer lists it.

use super::*;
use crate::program::{HostSettings, Programmer};
use enipool_crds::ENIPoolStatus;
use serde_json::json;

/// eni-0 (primary) with `ips`, and a release request of `count` at `request` (0: none).
fn status(ips: &[&str], request: i64, count: i32, released: i64) -> ENIPoolStatus {
    let mut v = json!({
        "revision": 1,
        "releasedRevision": released,
        "instance": {"type": "m5.large", "zone": "z", "vpcID": "vpc-1", "subnetID": "subnet-1",
                     "primaryENI": "eni-0", "primaryIP": "10.0.0.10", "vpcCIDRs": ["10.0.0.0/16"],
                     "state": "running"},
        "enis": [
            {"id": "eni-0", "deviceIndex": 0, "mac": "02:00:00:00:00:0a", "subnetID": "subnet-1",
             "subnetCIDR": "10.0.0.0/20", "primaryIP": "10.0.0.10", "ips": ips,
             "state": "Attached"}
        ]
    });
    if request > 0 {
        v["releaseRequest"] = json!({"revision": request, "count": count});
    }
    serde_json::from_value(v).unwrap()
}

fn items(v: &[&str]) -> Vec<Ipv4Net> {
    v.iter().map(|s| format!("{s}/32").parse().unwrap()).collect()
}

#[test]
fn a_release_completes_on_a_pool_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let a = checked(
        Agent::open(
            &dir.path().join("s.redb"),
            "boot",
            Arc::new(FakeHost::default()),
            cfg(),
            Arc::new(Metrics::unregistered()),
        )
        .unwrap(),
    );
    let mut prog = Programmer::new(HostSettings { mtu: 9001, ..Default::default() });
    let mut apply = |uid: &str, st: &ENIPoolStatus| {
        prog.apply_status(&a, "node-a", uid, st, None).expect("a good status");
    };
    let all = ["10.0.0.20", "10.0.0.21", "10.0.0.22", "10.0.0.23"];

    // The old pool's third request: the agent offers two addresses (highest first).
    apply("uid-old", &status(&all, 3, 2, 2));
    let (rev, offered) = a.report().offer.expect("offer");
    assert_eq!((rev, offered.clone()), (3, items(&["10.0.0.23", "10.0.0.22"])));
    // The operator unassigned one of them; then the pool was deleted and created again: its
    // status starts over (revisions from 0) and lists what EC2 has now.
    let now = ["10.0.0.20", "10.0.0.21", "10.0.0.22"];
    apply("uid-new", &status(&now, 0, 0, 0));
    let st = a.state();
    assert!(!st.offered.contains_key(&items(&["10.0.0.23"])[0]), "gone from EC2: forgotten");
    assert!(st.offered.contains_key(&items(&["10.0.0.22"])[0]), "still listed: never handed out");

    // The new pool's first request is answered, re-offering the old pool's leftover first.
    apply("uid-new", &status(&now, 1, 2, 0));
    let (rev, offered) = a.report().offer.expect("the new pool's request answered");
    assert_eq!(rev, 1, "the offer answers the new pool's revision");
    assert_eq!(offered, items(&["10.0.0.22", "10.0.0.21"]));

    // The operator unassigns them and records the release: the agent forgets them.
    apply("uid-new", &status(&["10.0.0.20"], 1, 2, 1));
    assert!(a.state().offered.is_empty(), "{:?}", a.state().offered);
    // A pod gets the one address left; then the pool is empty.
    assert_eq!(ip_of(&a.handle(req(Command::Add, "c1"))).to_string(), "10.0.0.20");
    match a.handle(req(Command::Add, "c2")) {
        Response::Error(e) => assert_eq!(e.code, codes::TRY_AGAIN_LATER, "{}", e.msg),
        other => panic!("{other:?}"),
    }

    // The same pool read again (a watch restart) changes nothing.
    apply("uid-new", &status(&["10.0.0.20", "10.0.0.24"], 2, 1, 1));
    let (rev, offered) = a.report().offer.expect("offer");
    assert_eq!((rev, offered), (2, items(&["10.0.0.24"])));
    apply("uid-new", &status(&["10.0.0.20", "10.0.0.24"], 2, 1, 1));
    assert_eq!(a.report().offer.map(|o| o.0), Some(2), "answered once");
}
