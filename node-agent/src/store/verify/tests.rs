use super::*;
use crate::testutil::*;

fn pod(host_if: &str, ip: &str, table: u32) -> HostPod {
    HostPod { host_if: host_if.into(), ip: ip.parse().unwrap(), table }
}

fn published(epoch: u64, boot_id: &str) -> Published {
    Published { epoch, boot_id: boot_id.into(), in_use: 2, offer: None }
}

fn missing() -> Opened {
    Opened { created: true, epoch: 0, boot_id: String::new() }
}

fn mismatch(v: Verdict) -> Mismatch {
    match v {
        Verdict::Mismatch(m) => m,
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[test]
fn a_fresh_node_and_a_normal_restart_are_consistent() {
    let st = State::default();
    assert_eq!(check(&missing(), &st, None, &[], "b"), Verdict::Consistent, "fresh node");
    let mut st = State { epoch: 6, ..Default::default() };
    use_ip(&mut st, "c1", "10.0.0.20");
    let held = &st.allocations[&AllocKey::new("c1", "eth0")];
    let wired = [pod(&held.host_if.clone(), "10.0.0.20", 254)];
    let opened = Opened { created: false, epoch: 5, boot_id: "b".into() };
    assert_eq!(
        check(&opened, &st, Some(&published(5, "b")), &wired, "b"),
        Verdict::Consistent,
        "restart: the store is at the published epoch and holds every wired pod"
    );
}

#[test]
fn a_missing_store_behind_the_published_epoch_is_a_mismatch() {
    let st = State { epoch: 1, ..Default::default() };
    let m = mismatch(check(&missing(), &st, Some(&published(4, "b")), &[], "b"));
    assert_eq!(m.behind, Some((4, 2)));
    let msg = m.to_string();
    assert!(
        msg.contains("store epoch 0 (the store file was missing or empty) is behind epoch 4"),
        "{msg}"
    );
    assert!(msg.contains("--rebuild-store-from-host"), "{msg}");
    // The first start ever published epoch 1: a store lost after it is behind too.
    mismatch(check(&missing(), &st, Some(&published(1, "b")), &[], "b"));
    // An existing store restored from an old copy.
    let old = Opened { created: false, epoch: 3, boot_id: "b".into() };
    let m = mismatch(check(&old, &st, Some(&published(9, "b")), &[], "b"));
    assert!(!m.to_string().contains("missing"), "{m}");
}

#[test]
fn pods_wired_on_the_host_that_the_store_does_not_hold_are_a_mismatch() {
    // No published status at all (the ENIPool never had one): the host alone decides.
    let st = State { epoch: 1, ..Default::default() };
    let wired = [pod("eni0000000000a", "10.0.0.20", 254), pod("eni0000000000b", "10.0.0.30", 2)];
    let m = mismatch(check(&missing(), &st, None, &wired, "b"));
    assert_eq!(m.untracked.len(), 2);
    assert_eq!(m.behind, None);
    let msg = m.to_string();
    assert!(msg.contains("2 pods wired on the host hold addresses the store does not"), "{msg}");
    assert!(msg.contains("10.0.0.20 on eni0000000000a"), "{msg}");
    // The store holds the address, but for another veth: the host's pod is still untracked.
    let mut st = State { epoch: 2, ..Default::default() };
    use_ip(&mut st, "c1", "10.0.0.20");
    let opened = Opened { created: false, epoch: 1, boot_id: "b".into() };
    let m = mismatch(check(&opened, &st, None, &wired[..1], "b"));
    assert_eq!(m.untracked, wired[..1]);
    // Many pods: the message names a few and counts the rest.
    let many: Vec<HostPod> =
        (0..8).map(|i| pod(&format!("eni000000000{i:02}"), &format!("10.0.1.{i}"), 254)).collect();
    let msg = mismatch(check(&missing(), &State::default(), None, &many, "b")).to_string();
    assert!(msg.contains("8 pods wired") && msg.contains("and 3 more"), "{msg}");
}

#[test]
fn after_a_reboot_a_lost_store_lost_nothing_that_runs() {
    let st = State { epoch: 1, ..Default::default() };
    assert_eq!(check(&missing(), &st, Some(&published(4, "old")), &[], "new"), Verdict::Reseed);
    // A pod wired in this boot that the store does not hold: still a mismatch.
    let wired = [pod("eni0000000000a", "10.0.0.20", 254)];
    mismatch(check(&missing(), &st, Some(&published(4, "old")), &wired, "new"));
    // An unknown boot id (unreadable) is never taken for a reboot.
    mismatch(check(&missing(), &st, Some(&published(4, "old")), &[], ""));
    mismatch(check(&missing(), &st, Some(&published(4, "")), &[], "new"));
}

#[test]
fn published_status_is_read_with_its_offer() {
    let a: AgentStatus = serde_json::from_value(serde_json::json!({
        "bootID": "b", "epoch": 7, "inUse": 3,
        "releasable": {"revision": 4, "ips": ["10.0.0.21", "bad"], "prefixes": ["10.0.2.0/28"]}
    }))
    .unwrap();
    let p = Published::from_status(&a);
    assert_eq!((p.epoch, p.boot_id.as_str(), p.in_use), (7, "b", 3));
    assert_eq!(p.offer, Some((4, vec![net("10.0.0.21/32"), net("10.0.2.0/28")])));
}

fn pool() -> PoolView {
    view(vec![
        eni("eni-0", 0, &["10.0.0.20", "10.0.0.21"], &[]),
        eni("eni-1", 1, &["10.0.0.30"], &["10.0.2.0/28"]),
    ])
}

#[test]
fn a_rebuild_records_every_wired_pod_above_the_published_epoch() {
    let st = State { epoch: 1, ..Default::default() };
    let wired = [pod("eni0000000000a", "10.0.0.20", 254), pod("eni0000000000b", "10.0.0.30", 2)];
    let mut p = published(7, "b");
    p.offer = Some((4, vec![net("10.0.0.21/32"), net("10.0.2.0/28"), net("10.0.0.30/32")]));
    let plan = plan_rebuild(&st, &wired, Some(&p), &pool(), 100);
    assert_eq!(plan.epoch, 8, "above the published epoch");
    assert!(plan.remove.is_empty() && plan.unoffer.is_empty());
    let added: Vec<(Ipv4Addr, &str, u32, Origin)> =
        plan.add.iter().map(|a| (a.ip, a.eni_id.as_str(), a.table, a.origin)).collect();
    assert_eq!(
        added,
        [
            ("10.0.0.20".parse().unwrap(), "eni-0", 254, Origin::Host),
            ("10.0.0.30".parse().unwrap(), "eni-1", 2, Origin::Host),
        ]
    );
    assert!(plan.add.iter().all(|a| a.host_if == a.container_id["host:".len()..]));
    let offered: Vec<Ipv4Net> = plan.offer.iter().map(|(n, _)| *n).collect();
    assert_eq!(offered, [net("10.0.0.21/32"), net("10.0.2.0/28")], "never the pod's address");
    assert!(plan.offer.iter().all(|(_, o)| *o == Offer { revision: 4, epoch: 7 }));
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(plan.warnings[0].contains("10.0.0.30/32"), "{:?}", plan.warnings);
}

#[test]
fn a_rebuild_drops_what_the_host_contradicts_and_keeps_the_rest() {
    let mut st = State { epoch: 4, ..Default::default() };
    // c1's record says .20 on its veth, but the host routes .20 to another veth.
    use_ip(&mut st, "c1", "10.0.0.20");
    // c2 holds .21 and the host agrees (or its veth is gone): kept either way.
    use_ip(&mut st, "c2", "10.0.0.21");
    st.offered.insert(net("10.0.2.0/28"), Offer { revision: 2, epoch: 3 });
    let wired = [pod("eni0000000000a", "10.0.0.20", 254), pod("eni0000000000b", "10.0.2.3", 2)];
    let plan = plan_rebuild(&st, &wired, Some(&published(3, "b")), &pool(), 100);
    assert_eq!(plan.epoch, 5, "the store's next epoch, already above the published one");
    assert_eq!(plan.remove, [AllocKey::new("c1", "eth0")]);
    assert_eq!(plan.unoffer, [net("10.0.2.0/28")]);
    assert!(plan.warnings[0].contains("withdrawn"), "{:?}", plan.warnings);
    assert_eq!(
        plan.add.iter().map(|a| a.ip.to_string()).collect::<Vec<_>>(),
        ["10.0.0.20", "10.0.2.3"]
    );
}
