use super::*;
use crate::testutil::*;
use std::net::Ipv4Addr;

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

/// A store file cut short or altered outside redb is an error naming the file, never a panic
/// (a plain redb open can panic on an altered page) and never a silently repaired store; the file
/// is left as it was for a person to look at.
#[test]
fn a_truncated_or_corrupt_file_is_an_error_and_left_alone() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 5] = [
        ("cut in half", |b| b.truncate(b.len() / 2)),
        ("cut to its header", |b| b.truncate(100)),
        ("header overwritten", |b| b[..64].fill(0xab)),
        ("pages overwritten", |b| {
            let n = b.len();
            b[n / 3..n / 2].fill(0x5a)
        }),
        ("not a store", |b| *b = b"hello".to_vec()),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let (s, mut st) = Store::open(&path).unwrap();
            s.bump_epoch(&mut st, "b").unwrap();
            for i in 0..50u8 {
                let ip = Ipv4Addr::new(10, 0, 1, i);
                s.add(&mut st, allocation(&format!("c{i}"), ip, "eni-0")).unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let r = std::panic::catch_unwind(|| Store::open(&path).map(|_| ()));
        let e = r.unwrap_or_else(|_| panic!("{what}: open panicked")).expect_err(what);
        assert!(matches!(e, Error::StoreFile { .. }), "{what}: {e:?}");
        assert_eq!(e.category(), "store");
        assert!(e.to_string().contains(&path.display().to_string()), "{what}: {e}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: the file was changed");
    }
}

#[test]
fn a_missing_or_empty_file_is_a_created_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("s.redb");
    let (s, mut st) = Store::open(&path).unwrap();
    assert!(s.created(), "missing file (and directory)");
    s.bump_epoch(&mut st, "b").unwrap();
    drop(s);
    let (s, st) = Store::open(&path).unwrap();
    assert!(!s.created());
    assert_eq!(st.epoch, 1);
    drop(s);
    std::fs::write(&path, b"").unwrap();
    let (s, st) = Store::open(&path).unwrap();
    assert!(s.created(), "an empty file is initialised like a missing one");
    assert_eq!(st.epoch, 0);
}

#[test]
fn a_rebuild_and_an_adoption_are_durable() {
    use super::verify::RebuildPlan;
    let dir = tempfile::tempdir().unwrap();
    let (s, mut st) = open(&dir);
    s.bump_epoch(&mut st, "old").unwrap();
    s.add(&mut st, allocation("stale", "10.0.0.5".parse().unwrap(), "eni-0")).unwrap();
    s.remove(&mut st, &AllocKey::new("stale", "eth0"), 99).unwrap();
    s.add(&mut st, allocation("wrong", "10.0.0.6".parse().unwrap(), "eni-0")).unwrap();
    let rebuilt = Allocation {
        container_id: "host:eni0000000000a".into(),
        if_name: String::new(),
        netns: String::new(),
        host_if: "eni0000000000a".into(),
        origin: Origin::Host,
        ipv6: None,
        ..allocation("x", "10.0.0.5".parse().unwrap(), "eni-0")
    };
    let moved = Allocation { ip: "10.0.0.6".parse().unwrap(), ..rebuilt.clone() };
    let moved = Allocation {
        container_id: "host:eni0000000000b".into(),
        host_if: "eni0000000000b".into(),
        ..moved
    };
    let plan = RebuildPlan {
        remove: vec![AllocKey::new("wrong", "eth0")],
        add: vec![rebuilt.clone(), moved],
        offer: vec![(net("10.0.0.7/32"), Offer { revision: 3, epoch: 9 })],
        epoch: 10,
        ..Default::default()
    };
    s.rebuild(&mut st, &plan, "new").unwrap();
    assert_eq!((st.epoch, st.boot_id.as_str()), (10, "new"));
    assert!(!st.cooling.contains_key(&"10.0.0.5".parse().unwrap()), "held again, not cooling");
    assert_eq!(st.allocations.len(), 2);
    assert_eq!(s.load().unwrap(), st);
    // The runtime's DEL for the sandbox names it: the record becomes that container's.
    let adopted = Allocation {
        container_id: "ctr".into(),
        if_name: "eth0".into(),
        origin: Origin::Cni,
        ipv6: None,
        ..rebuilt.clone()
    };
    s.replace(&mut st, &rebuilt.key(), adopted.clone()).unwrap();
    assert_eq!(st.by_ip[&adopted.ip], AllocKey::new("ctr", "eth0"));
    assert_eq!(s.load().unwrap(), st);
    let other = Allocation { ip: "10.0.0.9".parse().unwrap(), ..adopted };
    assert!(matches!(s.replace(&mut st, &rebuilt.key(), other), Err(Error::StoreInvariant(_))));
    drop(s);
    let (_, reopened) = open(&dir);
    assert_eq!(reopened, st);
}

/// A store written before records carried their network and origin still opens: such a record
/// reads as a CNI ADD's with no network.
#[test]
fn records_of_an_older_agent_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let old = r#"{"containerId":"c1","ifName":"eth0","ip":"10.0.0.5","eniId":"eni-0","table":254,
        "netns":"/var/run/netns/c1","hostIf":"eni0123456789a","podNamespace":"default",
        "podName":"web","createdAt":7,"epoch":3}"#;
    {
        let (s, _) = Store::open(&path).unwrap();
        let tx = s.db.begin_write().unwrap();
        tx.open_table(ALLOCATIONS).unwrap().insert("c1\0eth0", old.as_bytes()).unwrap();
        tx.open_table(BY_IP)
            .unwrap()
            .insert(ip_key("10.0.0.5".parse().unwrap()), "c1\0eth0")
            .unwrap();
        tx.commit().unwrap();
    }
    let (_, st) = Store::open(&path).unwrap();
    let a = &st.allocations[&AllocKey::new("c1", "eth0")];
    assert_eq!((a.network.as_str(), a.origin, a.pod_name.as_str()), ("", Origin::Cni, "web"));
    assert_eq!(st.by_ip[&a.ip], a.key());
}
