//! What a pool's status claims, forged, against the EC2 fake: another node's ENIs and addresses
//! are never touched, rejected entries are removed, and what EC2 cannot confirm yet waits.

use super::*;
use crate::ec2::Ec2Api;
use crate::journal::Owner;
use crate::round::tests::{world, World};
use enipool_crds::{EniStatus, ReleaseRequest, Releasing};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

const OTHER: &str = "i-0000000002";

fn now() -> Time {
    Time(Timestamp::now())
}

fn owner_of(instance_id: &str, uid: &str) -> Owner {
    Owner {
        cluster: "test".into(),
        node: format!("node-of-{instance_id}"),
        instance_id: instance_id.into(),
        pool_uid: uid.into(),
        extra_tags: Default::default(),
    }
}

/// A CreateENI entry growth could have journaled for the world's node.
fn create_entry() -> Operation {
    let items = journal::create_items("subnet-a", &["sg-node".into()], false);
    journal::new_op(OperationKind::CreateENI, "", 2, items, Some(1), &now())
}

/// A settled world: the node holds its 9 launch addresses, nothing left to do.
async fn settled() -> World {
    let mut w = world("m5.large", 9, None);
    w.run().await;
    w.run().await;
    w.fake.reset_calls();
    w
}

/// Another node with a secondary ENI the operator created for it; returns (ENI, one address).
async fn other_node(w: &World) -> (String, String) {
    w.fake.launch(OTHER, "m5.large", 0);
    let op = create_entry();
    let eni = w
        .fake
        .create_eni(&journal::create_request(&op, &owner_of(OTHER, "uid-2")))
        .await
        .expect("create");
    w.fake.attach_eni(&eni.id, OTHER, 1).await.expect("attach");
    w.fake.reset_calls();
    (eni.id, eni.secondary_ips[0].to_string())
}

fn eni_of(w: &World, id: &str) -> Option<crate::ec2::Eni> {
    w.fake.enis().into_iter().find(|e| e.id == id)
}

#[tokio::test]
async fn release_entries_for_another_nodes_eni_are_rejected_and_removed() {
    let mut w = settled().await;
    let (theirs, _) = other_node(&w).await;
    let before = eni_of(&w, &theirs);
    let ops = vec![
        journal::new_op(OperationKind::DetachENI, &theirs, 0, vec![], None, &now()),
        journal::new_op(OperationKind::DeleteENI, &theirs, 0, vec![], None, &now()),
    ];
    w.input.status.operations = ops.clone();
    let out = w.run().await;
    assert_eq!(w.fake.mutations(), Vec::<&str>::new(), "EC2 untouched");
    assert_eq!(eni_of(&w, &theirs), before);
    assert_eq!(out.rejected, ["eni_not_this_pool", "eni_not_this_pool"]);
    assert!(w.input.status.operations.is_empty(), "dropped from the status written");
    let removals = w.sink.removals.lock().unwrap().clone();
    let want: Vec<Removal> = ops
        .iter()
        .enumerate()
        .map(|(index, o)| Removal::Operation { index, id: o.id.clone() })
        .collect();
    assert_eq!(removals, want, "removed whoever wrote them");
    for o in &ops {
        let n = out.notes.iter().find(|n| n.message.contains(&o.id)).expect("a note per entry");
        assert!(n.warning && n.reason == REJECTED, "{n:?}");
        assert!(n.message.contains(&theirs) && n.message.contains(OTHER), "{}", n.message);
    }
}

/// The unassign targets come from EC2's view of the instance's ENIs, never from the status: a
/// forged `status.enis` claiming another node's ENI and a forged handshake naming its address
/// (consistent with itself) unassign nothing.
#[tokio::test]
async fn a_forged_releasing_never_unassigns_another_nodes_address() {
    let mut w = settled().await;
    let (theirs, ip) = other_node(&w).await;
    let st = &mut w.input.status;
    st.enis.push(EniStatus {
        id: theirs.clone(),
        device_index: 1,
        ips: vec![ip.clone()],
        managed: true,
        ..Default::default()
    });
    st.release_request = Some(ReleaseRequest { revision: 5, count: 1, prefer_enis: vec![] });
    st.released_revision = 4;
    st.releasing =
        Some(Releasing { revision: 5, epoch: 1, ips: vec![ip.clone()], prefixes: vec![] });
    let out = w.run().await;
    assert_eq!(w.fake.mutations(), Vec::<&str>::new(), "nothing unassigned");
    assert!(eni_of(&w, &theirs).unwrap().secondary_ips.iter().any(|a| a.to_string() == ip));
    assert!(out.status.enis.iter().all(|e| e.id != theirs), "status.enis is EC2's view");
    assert!(out.status.releasing.is_none(), "nothing of it held here: finished");
}

/// A `releasing` that answers no request is not the operator's: not even this node's own
/// addresses are unassigned for it; it is cleared (the agent told by a new revision) and removed.
#[tokio::test]
async fn a_releasing_without_its_request_is_rejected_and_removed() {
    let mut w = settled().await;
    let own = w.input.status.enis[0].ips[0].clone();
    let revision = w.input.status.revision;
    w.input.status.releasing =
        Some(Releasing { revision: 7, epoch: 1, ips: vec![own.clone()], prefixes: vec![] });
    let out = w.run().await;
    assert_eq!(w.fake.mutations(), Vec::<&str>::new(), "nothing unassigned");
    assert!(w.input.status.enis[0].ips.contains(&own));
    assert_eq!(out.rejected, ["releasing_without_request"]);
    assert!(out.status.releasing.is_none());
    assert!(out.status.revision > revision, "the agent learns the items are no longer released");
    assert_eq!(*w.sink.removals.lock().unwrap(), [Removal::Releasing { revision: 7 }]);
    let n = out.notes.iter().find(|n| n.reason == REJECTED).expect("a note");
    assert!(n.warning && n.message.contains("releasing") && n.message.contains(&own), "{n:?}");
}

/// A CreateENI EC2 answers (ClientToken) with an ENI created for another node — its entry id
/// copied from that node's journal — is neither attached nor deleted.
#[tokio::test]
async fn a_create_answered_with_another_nodes_eni_is_left_alone() {
    let mut w = settled().await;
    w.fake.launch(OTHER, "m5.large", 0);
    let copied = create_entry();
    let req = journal::create_request(&copied, &owner_of(OTHER, "uid-2"));
    let theirs = w.fake.create_eni(&req).await.expect("create").id;
    w.fake.reset_calls();
    w.input.status.operations = vec![copied];
    w.run().await;
    assert_eq!(w.fake.mutations(), ["CreateNetworkInterface"], "only the idempotent create");
    let eni = eni_of(&w, &theirs).expect("not deleted");
    assert!(eni.attachment.is_none(), "not attached to this node");
    assert!(w.input.status.operations.is_empty(), "abandoned");
}

/// EC2 not answering a describe the verdict needs is no verdict: the entry stays, untouched, and
/// is judged (and finished) once EC2 answers.
#[tokio::test]
async fn an_entry_waits_while_ec2_cannot_confirm_it() {
    let mut w = settled().await;
    let entry = create_entry();
    w.input.status.operations = vec![entry.clone()];
    w.fake.fail_next("DescribeSubnets", crate::ec2::Ec2ErrorKind::Transient);
    let out = w.run().await;
    assert_eq!(w.fake.mutations(), Vec::<&str>::new());
    assert!(out.rejected.is_empty());
    assert_eq!(w.input.status.operations, [entry], "kept as it was");
    assert!(w.sink.removals.lock().unwrap().is_empty());
    w.run().await;
    assert!(w.fake.mutations().contains(&"AttachNetworkInterface"), "finished");
    assert!(w.input.status.operations.is_empty());
    assert_eq!(w.input.status.enis.len(), 2);
}

/// A paused pool replays nothing, but forged entries are still dropped and removed.
#[tokio::test]
async fn a_paused_pool_drops_forged_entries_and_replays_nothing() {
    let mut w = settled().await;
    let (theirs, _) = other_node(&w).await;
    w.input.paused = true;
    let entry = create_entry();
    let forged = journal::new_op(OperationKind::DetachENI, &theirs, 0, vec![], None, &now());
    w.input.status.operations = vec![forged.clone(), entry.clone()];
    let out = w.run().await;
    assert_eq!(w.fake.mutations(), Vec::<&str>::new());
    assert_eq!(out.rejected, ["eni_not_this_pool"]);
    assert_eq!(w.input.status.operations, [entry], "the valid entry waits for the unpause");
    assert_eq!(*w.sink.removals.lock().unwrap(), [Removal::Operation { index: 0, id: forged.id }]);
}

#[test]
fn removal_patch_guards_then_removes_from_the_last() {
    let removals = [
        Removal::Operation { index: 1, id: "b".into() },
        Removal::Releasing { revision: 7 },
        Removal::Operation { index: 3, id: "d".into() },
    ];
    let patch = removal_patch(&removals);
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/status/operations/3/id", "value": "d"},
            {"op": "test", "path": "/status/operations/1/id", "value": "b"},
            {"op": "test", "path": "/status/releasing/revision", "value": 7},
            {"op": "remove", "path": "/status/operations/3"},
            {"op": "remove", "path": "/status/operations/1"},
            {"op": "remove", "path": "/status/releasing"},
        ])
    );
    let doc = |ids: &[&str]| {
        let ops: Vec<_> = ids.iter().map(|id| json!({"id": id})).collect();
        json!({"status": {"operations": ops, "releasing": {"revision": 7}, "revision": 3}})
    };
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
    let mut live = doc(&["a", "b", "c", "d", "e"]);
    json_patch::patch(&mut live, &patch).expect("applies");
    assert_eq!(
        live,
        json!({"status": {"operations": [{"id": "a"}, {"id": "c"}, {"id": "e"}], "revision": 3}})
    );
    // Changed since it was read (an entry in front was removed): nothing is removed.
    let mut moved = doc(&["b", "c", "d", "e"]);
    let before = moved.clone();
    assert!(json_patch::patch(&mut moved, &patch).is_err());
    assert_eq!(moved, before);
}
