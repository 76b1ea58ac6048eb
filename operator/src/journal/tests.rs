//! Replay and the create request, against the in-memory EC2 fake.

use super::*;

use crate::ec2::fake::FakeEc2;

fn owner() -> Owner {
    Owner {
        cluster: "c".into(),
        node: "n".into(),
        instance_id: "i-1".into(),
        pool_uid: "uid".into(),
        extra_tags: BTreeMap::new(),
    }
}

async fn attached_eni(fake: &FakeEc2) -> String {
    fake.launch("i-1", "m5.large", 0);
    let req = CreateEni {
        subnet_id: "subnet-a".into(),
        client_token: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let id = fake.create_eni(&req).await.expect("create").id;
    fake.attach_eni(&id, "i-1", 1).await.expect("attach");
    id
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

/// A replay re-sends the create of an entry read back from the API server, which keeps
/// timestamps to the second. EC2 answers a ClientToken reused with other parameters with
/// IdempotentParameterMismatch, so the request must not change on the way.
#[test]
fn a_create_replayed_from_the_stored_entry_is_the_same_request() {
    let now =
        Time(k8s_openapi::jiff::Timestamp::from_nanosecond(1_800_000_000_123_456_789).unwrap());
    let items = create_items("subnet-a", &["sg-1".to_string()], false);
    let op = new_op(OperationKind::CreateENI, "", 3, items, Some(1), &now);
    let stored: Operation = serde_json::from_value(serde_json::to_value(&op).unwrap()).unwrap();
    assert_eq!(create_request(&stored, &owner()), create_request(&op, &owner()));
}

/// An entry kept across a long refusal outlives EC2's memory of its ClientToken: the replay
/// must find the ENI the entry created (by id, or by the entry's tag when the id was never
/// written) instead of creating a second one.
#[tokio::test]
async fn a_create_replayed_after_its_token_expired_makes_no_second_eni() {
    let fake = FakeEc2::new();
    fake.launch("i-1", "m5.large", 0);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    for (known_id, index) in [(true, 1), (false, 2)] {
        let items = create_items("subnet-a", &[], false);
        let mut op = new_op(OperationKind::CreateENI, "", 2, items, Some(index), &now);
        fake.fail_next("AttachNetworkInterface", Ec2ErrorKind::Unauthorized);
        let e = create_attach(&fake, &mut op, &owner()).await.expect_err("attach refused");
        assert_eq!(e.kind, Ec2ErrorKind::Unauthorized);
        let created = op.eni_id.clone();
        if !known_id {
            op.eni_id.clear();
        }
        fake.expire_client_tokens();
        let r = replay(&fake, vec![op], &owner(), &[], &none()).await;
        assert!(r.errors.is_empty() && r.keep.is_empty(), "{known_id}: {r:?}");
        let mine: Vec<Eni> =
            fake.enis().into_iter().filter(|e| e.tags.contains_key(tags::OPERATION)).collect();
        let attached: Vec<&str> =
            mine.iter().filter(|e| e.attachment.is_some()).map(|e| e.id.as_str()).collect();
        assert!(attached.contains(&created.as_str()), "{known_id}: {mine:?}");
        assert_eq!(
            mine.iter().filter(|e| e.attachment.is_none()).count(),
            0,
            "{known_id}: no second ENI: {mine:?}"
        );
    }
}

fn release_op(kind: OperationKind, eni: &str) -> Operation {
    new_op(kind, eni, 0, vec![], None, &Time(k8s_openapi::jiff::Timestamp::now()))
}

/// A release in progress is not a failure: detaching waits without spending attempts, and
/// the next round deletes the ENI.
#[tokio::test]
async fn a_detach_in_progress_waits_without_counting_attempts() {
    let fake = FakeEc2::new();
    let eni = attached_eni(&fake).await;
    let ops = vec![release_op(OperationKind::DetachENI, &eni)];
    let r = replay(&fake, ops, &owner(), &[], &none()).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.outcomes, [(OperationKind::DetachENI, "waiting")]);
    assert_eq!(r.keep.len(), 1, "kept until the ENI is gone");
    assert_eq!(r.keep[0].attempts, 0, "waiting is not a failed attempt");
    let r = replay(&fake, r.keep, &owner(), &[], &none()).await;
    assert!(r.keep.is_empty() && r.errors.is_empty(), "{r:?}");
    assert_eq!(r.outcomes, [(OperationKind::DetachENI, "finished")]);
    assert!(fake.enis().iter().all(|e| e.id != eni), "deleted");
}

/// A release that keeps failing frees its journal slot: at once for an error retrying cannot
/// fix, after MAX_ATTEMPTS for transient ones; never with the ENI deleted behind EC2's back.
#[tokio::test]
async fn failing_releases_are_abandoned_not_kept_forever() {
    let fake = FakeEc2::new();
    let eni = attached_eni(&fake).await;
    fake.fail_next("DetachNetworkInterface", Ec2ErrorKind::Unauthorized);
    let ops = vec![release_op(OperationKind::DetachENI, &eni)];
    let r = replay(&fake, ops, &owner(), &[], &none()).await;
    assert!(r.keep.is_empty(), "a permission error is not retried: {r:?}");
    assert_eq!(r.outcomes, [(OperationKind::DetachENI, "dropped")]);
    assert!(fake.enis().iter().any(|e| e.id == eni), "the ENI stays (in the pool's status)");

    let mut ops = vec![release_op(OperationKind::DeleteENI, &eni)];
    for round in 1..MAX_ATTEMPTS {
        fake.fail_next("DetachNetworkInterface", Ec2ErrorKind::Transient);
        let r = replay(&fake, ops, &owner(), &[], &none()).await;
        assert_eq!((r.keep.len(), r.errors.len()), (1, 1), "round {round}: kept and retried");
        assert_eq!(r.outcomes, [(OperationKind::DeleteENI, "retry")]);
        assert_eq!(r.keep[0].attempts, round);
        ops = r.keep;
    }
    fake.fail_next("DetachNetworkInterface", Ec2ErrorKind::Transient);
    let r = replay(&fake, ops, &owner(), &[], &none()).await;
    assert!(r.keep.is_empty() && r.errors.is_empty(), "abandoned after {MAX_ATTEMPTS} attempts");
    assert_eq!(r.outcomes, [(OperationKind::DeleteENI, "dropped")]);
    assert!(fake.enis().iter().any(|e| e.id == eni));
}

/// A detach replayed for an ENI that holds addresses again is dropped (counted as dropped),
/// never sent, unless every address on it is one the agent offered for release.
#[tokio::test]
async fn a_release_of_an_eni_holding_addresses_is_dropped() {
    let fake = FakeEc2::new();
    let eni = attached_eni(&fake).await;
    let assigned = fake.assign_ips(&eni, 2).await.expect("assign");
    let items: Vec<String> = assigned.iter().map(|a| a.to_string()).collect();
    fake.reset_calls();

    for kind in [OperationKind::DetachENI, OperationKind::DeleteENI] {
        let some: BTreeSet<String> = items[..1].iter().cloned().collect();
        for offered in [none(), some] {
            let r = replay(&fake, vec![release_op(kind, &eni)], &owner(), &[], &offered).await;
            assert_eq!(r.outcomes, [(kind, "dropped")], "{offered:?}");
            assert!(r.keep.is_empty() && r.errors.is_empty(), "{r:?}");
        }
    }
    assert!(fake.mutations().is_empty(), "nothing detached: {:?}", fake.mutations());
    assert!(fake.enis().iter().any(|e| e.id == eni && e.attachment.is_some()));

    let all: BTreeSet<String> = items.into_iter().collect();
    let r =
        replay(&fake, vec![release_op(OperationKind::DetachENI, &eni)], &owner(), &[], &all).await;
    assert_eq!(r.outcomes, [(OperationKind::DetachENI, "waiting")], "only offered addresses");
    assert_eq!(fake.mutations(), ["DetachNetworkInterface"]);
}

#[test]
fn holds_only_table() {
    let eni = |ips: &[&str], prefixes: &[&str]| Eni {
        secondary_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        prefixes: prefixes.iter().map(|s| s.parse().unwrap()).collect(),
        ..Default::default()
    };
    let offered: BTreeSet<String> =
        ["10.0.0.5", "10.0.1.16/28"].into_iter().map(String::from).collect();
    let cases = [
        (eni(&[], &[]), true, "empty"),
        (eni(&["10.0.0.5"], &["10.0.1.16/28"]), true, "only offered items"),
        (eni(&["10.0.0.5", "10.0.0.6"], &[]), false, "an address not offered"),
        (eni(&[], &["10.0.1.32/28"]), false, "a prefix not offered"),
        (eni(&[], &["10.0.1.16/28"]), true, "the offered prefix"),
    ];
    for (e, want, case) in cases {
        assert_eq!(holds_only(&e, &offered), want, "{case}");
    }
    assert!(!holds_only(&eni(&["10.0.0.5"], &[]), &BTreeSet::new()), "nothing offered");
}
