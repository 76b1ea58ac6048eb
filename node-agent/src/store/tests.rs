use super::*;
use crate::testutil::*;

fn open(dir: &tempfile::TempDir) -> (Store, State) {
    Store::open(&dir.path().join("s.redb")).unwrap()
}

#[test]
fn survives_reopen_and_bumps_epoch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, mut st) = open(&dir);
        assert_eq!(s.bump_epoch(&mut st, "b1").unwrap(), 1);
        s.add(&mut st, allocation("a", "10.0.0.5".parse().unwrap(), "eni-0")).unwrap();
        s.add(&mut st, allocation("b", "10.0.0.6".parse().unwrap(), "eni-0")).unwrap();
        s.remove(&mut st, &AllocKey::new("b", "eth0"), 77).unwrap();
        s.offer(&mut st, &[net("10.0.0.7/32")], Offer { revision: 2, epoch: 1 }).unwrap();
    }
    let (s, mut st) = open(&dir);
    assert_eq!(st.epoch, 1);
    assert_eq!(st.boot_id, "b1");
    assert_eq!(st.allocations.len(), 1);
    assert_eq!(st.by_ip.len(), 1);
    assert_eq!(st.cooling.get(&"10.0.0.6".parse().unwrap()), Some(&77));
    assert_eq!(st.offered.len(), 1);
    assert_eq!(s.bump_epoch(&mut st, "b1").unwrap(), 2);
}

#[test]
fn refuses_double_assignment_and_offered_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (s, mut st) = open(&dir);
    s.add(&mut st, allocation("a", "10.0.0.5".parse().unwrap(), "eni-0")).unwrap();
    let dup = s.add(&mut st, allocation("b", "10.0.0.5".parse().unwrap(), "eni-0"));
    assert!(matches!(dup, Err(Error::StoreInvariant(_))));
    let same_key = s.add(&mut st, allocation("a", "10.0.0.9".parse().unwrap(), "eni-0"));
    assert!(matches!(same_key, Err(Error::StoreInvariant(_))));
    s.offer(&mut st, &[net("10.0.1.0/28")], Offer { revision: 1, epoch: 1 }).unwrap();
    let offered = s.add(&mut st, allocation("c", "10.0.1.3".parse().unwrap(), "eni-0"));
    assert!(matches!(offered, Err(Error::StoreInvariant(_))));
    let bad_offer = s.offer(&mut st, &[net("10.0.0.5/32")], Offer { revision: 1, epoch: 1 });
    assert!(matches!(bad_offer, Err(Error::StoreInvariant(_))));
    assert_eq!(s.load().unwrap(), st);
}

#[test]
fn remove_unknown_is_noop_and_cooling_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (s, mut st) = open(&dir);
    assert_eq!(s.remove(&mut st, &AllocKey::new("nope", "eth0"), 5).unwrap(), None);
    s.add(&mut st, allocation("a", "10.0.0.5".parse().unwrap(), "eni-0")).unwrap();
    s.remove(&mut st, &AllocKey::new("a", "eth0"), 5).unwrap();
    assert_eq!(s.expire_cooling(&mut st, 4).unwrap(), 0);
    assert_eq!(s.expire_cooling(&mut st, 5).unwrap(), 1);
    assert!(st.cooling.is_empty());
    assert_eq!(s.load().unwrap(), st);
}
