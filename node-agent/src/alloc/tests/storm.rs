//! Property test: a storm of ADD / DEL / time / release requests / operator releases against the
//! real store; the invariants hold after every step and the store reloads to the same state.

use super::super::*;
use crate::store::{AllocKey, Offer, Store};
use crate::testutil::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

#[derive(Debug, Clone)]
enum Op {
    Add(u8),
    Del(u8),
    Tick(u8),
    Request(u8),
    OperatorReleases,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(|c| Op::Add(c % 40)),
        3 => any::<u8>().prop_map(|c| Op::Del(c % 40)),
        1 => (0u8..40).prop_map(Op::Tick),
        1 => (1u8..20).prop_map(Op::Request),
        1 => Just(Op::OperatorReleases),
    ]
}

fn check(v: &PoolView, st: &State) {
    // One holder per address, index consistent.
    let ips: BTreeSet<_> = st.allocations.values().map(|a| a.ip).collect();
    assert_eq!(ips.len(), st.allocations.len(), "address given twice");
    assert_eq!(st.by_ip.len(), st.allocations.len());
    for (ip, k) in &st.by_ip {
        assert_eq!(st.allocations[k].ip, *ip);
    }
    // offered ∩ in-use = ∅.
    for n in st.offered.keys() {
        assert!(ips.iter().all(|ip| !n.contains(ip)), "offered {n} overlaps an address in use");
    }
    // Nothing in use is being released by the operator.
    for n in &v.releasing {
        assert!(ips.iter().all(|ip| !n.contains(ip)), "releasing {n} overlaps an address in use");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn storm(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let (store, mut st) = Store::open(&path).unwrap();
        store.bump_epoch(&mut st, "boot").unwrap();
        let mut v = view(vec![
            eni("eni-0", 0, &["10.0.0.20", "10.0.0.21", "10.0.0.22"], &["10.0.1.0/28"]),
            eni("eni-1", 1, &["10.0.0.30", "10.0.0.31"], &["10.0.2.0/28"]),
        ]);
        let mut now = 1000u64;
        let mut revision = 0i64;
        for op in ops {
            match op {
                Op::Add(c) => {
                    let key = AllocKey::new(format!("c{c}"), "eth0");
                    if st.allocations.contains_key(&key) { continue; }
                    if let Some(p) = pick(&v, &st, now) {
                        let mut a = allocation(&key.container_id, p.ip, &p.eni_id);
                        a.table = p.table;
                        store.add(&mut st, a).unwrap();
                    } else {
                        prop_assert_eq!(available(&v, &st, now), 0);
                    }
                }
                Op::Del(c) => {
                    store.remove(&mut st, &AllocKey::new(format!("c{c}"), "eth0"), now + v.cooldown_seconds).unwrap();
                }
                Op::Tick(s) => {
                    now += s as u64;
                    store.expire_cooling(&mut st, now).unwrap();
                }
                Op::Request(n) => {
                    revision += 1;
                    let items = plan_offer(&v, &st, n as usize, &[], now);
                    let epoch = st.epoch;
                    store.offer(&mut st, &items, Offer { revision, epoch }).unwrap();
                }
                Op::OperatorReleases => {
                    // The operator publishes the offer as releasing, unassigns it, then drops it.
                    let offered: Vec<_> = st.offered.keys().copied().collect();
                    v.releasing = offered.clone();
                    check(&v, &st);
                    for e in &mut v.enis {
                        e.ips.retain(|ip| !offered.iter().any(|n| n.contains(ip)));
                        e.prefixes.retain(|p| !offered.contains(p));
                    }
                    v.releasing.clear();
                    v.released_revision = revision;
                    let done = offers_done(&v, &st);
                    store.forget_offers(&mut st, &done).unwrap();
                }
            }
            check(&v, &st);
            prop_assert_eq!(&store.load().unwrap(), &st, "disk and memory disagree");
        }
    }
}
