//! The operator acts only on what EC2 confirms. A pool's status is writable by more than the
//! operator (its node's agent, an admin, a hole in admission), so journal entries and release
//! intents read back from it are checked against EC2 before anything is done: forged ones aimed at
//! another node's ENI and addresses, or at subnets and security groups the policy does not allow,
//! are dropped with a Warning Event and a metric, are removed from the status whoever wrote them,
//! and EC2 is never called to change anything for them.

use crate::harness::*;
use enipool_crds::{tags, ENIPool};
use enipool_operator::ec2::CreateEni;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn settled(p: &ENIPool) -> bool {
    let st = p.status.as_ref();
    is_ready(p)
        && allocated(p) == 18
        && st.is_some_and(|s| s.enis.len() == 2 && s.operations.is_empty() && s.releasing.is_none())
}

/// Mutating EC2 calls by action.
fn mutations(env: &Env) -> BTreeMap<String, u64> {
    env.sim
        .counters()
        .into_iter()
        .filter(|(a, _)| is_mutating(a))
        .map(|(a, c)| (a, c.calls))
        .collect()
}

/// An ENI as the simulator holds it (attachment, addresses, tags).
fn eni_state(env: &Env, id: &str) -> serde_json::Value {
    serde_json::to_value(env.sim.snapshot().enis.get(id)).unwrap()
}

/// An `available` ENI created for node-b (`pool`, on `instance`), tagged as the operator tags its
/// ENIs but without a created-at tag, so GC leaves it alone.
async fn spare_eni_of(env: &Env, pool: &ENIPool, instance: &str, secondary_ips: i32) -> String {
    let tags: BTreeMap<String, String> = [
        (tags::CLUSTER, CLUSTER),
        (tags::OWNER, tags::OWNER_VALUE),
        (tags::NODE, "node-b"),
        (tags::INSTANCE_ID, instance),
        (tags::POOL_UID, pool.metadata.uid.as_deref().unwrap()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let req = CreateEni {
        subnet_id: env.subnet.clone(),
        security_groups: vec![env.sg.clone()],
        secondary_ips,
        tags,
        ..Default::default()
    };
    env.ec2(None).await.create_eni(&req).await.unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_journal_entries_and_releasing_are_dropped_without_touching_ec2() {
    let env = env().await;
    let op = env.start_operator("op-a").await;
    env.join("node-a", "m5.large", &env.subnet).await;
    let inst_b = env.join("node-b", "m5.large", &env.subnet).await;
    for n in ["node-a", "node-b"] {
        env.wait_pool(n, "created", T, |_| true).await;
        env.agent(n, &agent_report(1, 10, 0, None)).await;
    }
    let a = env.wait_pool("node-a", "two ENIs, 18 addresses", T, settled).await;
    let b = env.wait_pool("node-b", "two ENIs, 18 addresses", T, settled).await;
    let b_eni = b.status.as_ref().unwrap().enis.iter().find(|e| e.device_index == 1).unwrap();
    let (b_eni, b_ip) = (b_eni.id.clone(), b_eni.ips[0].clone());

    // An `available` ENI created for node-b (tagged as the operator tags its ENIs; no created-at
    // tag, so GC leaves it alone), not for node-a.
    let spare = spare_eni_of(&env, &b, &inst_b, 2).await;
    // A security group of the VPC that no policy selects for node-a.
    let evil_sg = env.sim.create_security_group(&env.vpc, "evil", &[]).unwrap();

    // Settled: no EC2 change over three resync periods.
    let before = wait_for("EC2 quiet", T, || async {
        let first = mutations(&env);
        tokio::time::sleep(Duration::from_secs(3)).await;
        (mutations(&env) == first).then_some(first)
    })
    .await;
    let b_before = eni_state(&env, &b_eni);
    let spare_before = eni_state(&env, &spare);
    let a_enis: Vec<String> =
        a.status.as_ref().unwrap().enis.iter().map(|e| e.id.clone()).collect();

    // An admin (not the operator's field manager) writes forged entries into node-a's status.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let id = || uuid::Uuid::new_v4().to_string();
    let forged = [
        (id(), "DetachENI", json!({"eniID": b_eni})),
        (id(), "DeleteENI", json!({"eniID": b_eni})),
        (id(), "CreateENI", json!({"count": 4, "items": [env.tiny, env.sg], "deviceIndex": 2})),
        (id(), "CreateENI", json!({"count": 4, "items": [env.subnet, evil_sg], "deviceIndex": 2})),
        (id(), "AttachENI", json!({"eniID": spare, "deviceIndex": 2})),
        ("forged-detach".to_string(), "DetachENI", json!({"eniID": b_eni})),
    ];
    let want_reasons = [
        "eni_not_this_pool",
        "eni_not_this_pool",
        "subnet_not_allowed",
        "security_group_not_allowed",
        "attach_not_journaled",
        "bad_id",
    ];
    let ops: Vec<serde_json::Value> = forged
        .iter()
        .map(|(id, kind, rest)| {
            let mut o = json!({"id": id, "type": kind, "startedAt": now});
            o.as_object_mut().unwrap().extend(rest.as_object().unwrap().clone());
            o
        })
        .collect();
    let patch = json!({"status": {
        "operations": ops,
        "releasing": {"revision": 7, "epoch": 1, "ips": [b_ip]},
    }});
    env.pools()
        .patch_status("node-a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("forge");

    // The operator gets to them (or the deadline passes): then EC2 first, the status after.
    let deadline = Instant::now() + T;
    let dropped = |p: &ENIPool| {
        p.status.as_ref().is_some_and(|s| s.operations.is_empty() && s.releasing.is_none())
    };
    while !dropped(&env.pool("node-a").await.unwrap()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let untouched = |when: &str| {
        assert_eq!(mutations(&env), before, "{when}: no EC2 change for forged entries");
        assert_eq!(eni_state(&env, &b_eni), b_before, "{when}: node-b's ENI intact");
        assert_eq!(eni_state(&env, &spare), spare_before, "{when}: the spare ENI intact");
    };
    untouched("after the forgery");
    let b_now = env.sim.snapshot().enis[&b_eni].clone();
    assert_eq!(b_now.attachment.map(|a| a.instance_id), Some(inst_b.clone()));
    assert!(b_now.secondary.iter().any(|ip| ip.to_string() == b_ip), "node-b keeps {b_ip}");
    let a_now = env.pool("node-a").await.unwrap();
    assert!(dropped(&a_now), "forged entries removed: {:?}", a_now.status);
    let a_now_enis: Vec<String> =
        a_now.status.as_ref().unwrap().enis.iter().map(|e| e.id.clone()).collect();
    assert_eq!(a_now_enis, a_enis, "node-a got no ENI");

    // One Warning Event per forged entry, on its place in the status, naming it, its kind, its
    // ENI and why; one for the releasing.
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let notes = wait_for("a Warning Event per forged entry", T, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let notes: Vec<(String, String)> = list
            .items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter(|e| e.reason.as_deref() == Some("JournalEntryRejected"))
            .filter_map(|e| {
                let r = e.regarding?;
                (r.name.as_deref() == Some("node-a")).then_some((r.field_path?, e.note?))
            })
            .collect();
        let has = |id: &str| notes.iter().any(|(_, n)| n.contains(id));
        let all = forged.iter().all(|(id, _, _)| has(id))
            && notes.iter().any(|(f, n)| f == "status.releasing" && n.contains(&b_ip));
        all.then_some(notes)
    })
    .await;
    for (i, (id, kind, rest)) in forged.iter().enumerate() {
        let (field, note) = notes.iter().find(|(_, n)| n.contains(id.as_str())).unwrap();
        assert_eq!(field, &format!("status.operations[{i}]"), "{note}");
        assert!(note.contains(kind) && note.contains(want_reasons[i]), "{note}");
        if let Some(eni) = rest["eniID"].as_str() {
            assert!(note.contains(eni), "{note}");
        }
    }
    let metrics = op.metrics_text();
    for reason in want_reasons.iter().chain(&["releasing_without_request"]) {
        let series = format!("enipool_operator_journal_rejected_total{{reason=\"{reason}\"}} ");
        assert!(metrics.contains(&series), "{series} missing in:\n{metrics}");
    }

    // They stay gone and EC2 stays untouched over further rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    untouched("three resyncs later");
    assert!(dropped(&env.pool("node-a").await.unwrap()));
    op.abort();
}

/// A deleted node's pool finalizer deletes the leftovers EC2 lists as created for its instance,
/// never an ENI its status names: a forged `status.enis` entry naming an `available` ENI created
/// for another node leaves that ENI alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finalizer_never_deletes_another_nodes_eni_the_status_names() {
    let env = env().await;
    let op = env.start_operator("op-a").await;
    let inst_a = env.join("node-a", "m5.large", &env.subnet).await;
    let inst_b = env.join("node-b", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, is_ready).await;
    let b = env.wait_pool("node-b", "Ready", T, is_ready).await;
    let spare = spare_eni_of(&env, &b, &inst_b, 0).await;
    let spare_before = eni_state(&env, &spare);
    let forged = json!({"status": {"enis": [{
        "id": spare, "deviceIndex": 1, "mac": "02:00:00:00:00:01", "subnetID": env.subnet,
        "subnetCIDR": "10.0.0.0/20", "primaryIP": "10.0.0.99", "state": "Attached", "managed": true,
    }]}});
    env.pools()
        .patch_status("node-a", &PatchParams::default(), &Patch::Merge(&forged))
        .await
        .expect("forge");
    env.sim.terminate_instances(std::slice::from_ref(&inst_a)).unwrap();
    env.delete_node("node-a").await;
    wait_for("node-a's pool finalized and gone", T, || async {
        env.pool("node-a").await.is_none().then_some(())
    })
    .await;
    assert_eq!(eni_state(&env, &spare), spare_before, "node-b's spare ENI is not deleted");
    assert_eq!(env.calls("DeleteNetworkInterface"), 0, "{:?}", env.sim.counters());
    op.abort();
}
