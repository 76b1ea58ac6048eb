//! The agent takes its ENIPool's status through the same path as the pool watch
//! (`Programmer::apply_status`) and refuses one with a bad value whole: the view, the host and
//! what ADD hands out stay as they were, and the refusal is logged and counted.

use super::*;
use crate::program::{HostSettings, Programmer};
use enipool_crds::ENIPoolStatus;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// eni-0 (primary, loose IPs) and eni-1 (one /28), as the operator writes them.
fn status(revision: i64, eni0_ips: &[&str], eni1_prefixes: &[&str]) -> ENIPoolStatus {
    let v: Value = json!({
        "revision": revision,
        "instance": {"type": "m5.large", "zone": "z", "vpcID": "vpc-1", "subnetID": "subnet-1",
                     "primaryENI": "eni-0", "primaryIP": "10.0.0.10", "vpcCIDRs": ["10.0.0.0/16"],
                     "state": "running"},
        "enis": [
            {"id": "eni-0", "deviceIndex": 0, "mac": "02:00:00:00:00:0a", "subnetID": "subnet-1",
             "subnetCIDR": "10.0.0.0/20", "primaryIP": "10.0.0.10", "ips": eni0_ips,
             "state": "Attached"},
            {"id": "eni-1", "deviceIndex": 1, "mac": "02:00:00:00:00:0b", "subnetID": "subnet-2",
             "subnetCIDR": "10.0.16.0/20", "primaryIP": "10.0.16.5", "prefixes": eni1_prefixes,
             "state": "Attached"}
        ]
    });
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_bad_pool_status_is_refused_whole_and_the_view_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let host = Arc::new(FakeHost::default());
    let a = checked(
        Agent::open(&dir.path().join("s.redb"), "boot", host.clone(), cfg(), metrics).unwrap(),
    );
    let mut prog = Programmer::new(HostSettings { mtu: 9001, ..Default::default() });

    prog.apply_status(&a, "node-a", "uid-a", &status(1, &["10.0.0.20"], &["10.0.17.0/28"]), None)
        .expect("a good status is applied");
    let good = a.view();
    assert_eq!(good.revision, 1);
    assert_eq!(a.status().available, 17, "one loose IP and one /28");
    let host_calls = host.calls.lock().unwrap().len();

    // An address outside eni-0's subnet, then a /1 prefix (2^31 addresses) on eni-1.
    let outside = status(2, &["192.168.1.1", "10.0.0.20"], &["10.0.17.0/28"]);
    let huge = status(3, &["10.0.0.20"], &["0.0.0.0/1"]);
    for (bad, eni, value) in [(&outside, "eni-0", "192.168.1.1"), (&huge, "eni-1", "0.0.0.0/1")] {
        let (r, logs) = logs_of(|| prog.apply_status(&a, "node-a", "uid-a", bad, None));
        let e = r.expect_err(value);
        assert_eq!(e.category(), "invalid_pool", "{e}");
        assert_eq!(*a.view(), *good, "{value}: the view it had is kept");
        assert_eq!(a.status().available, 17, "{value}: allocatable addresses unchanged");
        assert_eq!(host.calls.lock().unwrap().len(), host_calls, "{value}: host untouched");
        let line = logs.lines().find(|l| l.contains("ENIPool status refused")).unwrap_or("");
        assert!(line.contains("ERROR"), "{value}: {logs}");
        for needle in ["pool=\"node-a\"", &format!("eni=\"{eni}\""), value] {
            assert!(line.contains(needle), "{value}: {needle} not in {line:?}");
        }
    }
    assert!(
        metric_text(&registry).contains("enipool_agent_pool_status_refusals_total 2\n"),
        "{}",
        metric_text(&registry)
    );

    // What ADD hands out is the good view's addresses, all of them and nothing else.
    let mut got = Vec::new();
    for i in 0..18 {
        match a.handle(req(Command::Add, &format!("c{i}"))) {
            Response::Added(r) => got.push(r.ip),
            Response::Error(e) => assert_eq!(e.code, codes::TRY_AGAIN_LATER, "{}", e.msg),
            other => panic!("{other:?}"),
        }
    }
    let prefix: Ipv4Net = "10.0.17.0/28".parse().unwrap();
    assert_eq!(got.len(), 17, "{got:?}");
    assert_eq!(got[0], Ipv4Addr::new(10, 0, 0, 20));
    assert!(got[1..].iter().all(|ip| prefix.contains(ip)), "{got:?}");

    // A later good status is taken as usual.
    prog.apply_status(&a, "node-a", "uid-a", &status(4, &["10.0.0.20", "10.0.0.21"], &[]), None)
        .expect("good again");
    assert_eq!(a.view().revision, 4);
}
