//! The pool finalizer finds a deleted node's leftover ENIs by their tags, not only through the
//! pool's status and journal.

use crate::harness::*;
use enipool_crds::OperationKind;
use enipool_operator::journal::{self, Owner};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// An ENI created for node-a exactly as the operator creates one (same request, same tags), whose
/// journal entry and status write were lost: EC2 has it, the pool does not know it. When the Node
/// is deleted and the instance terminates, the finalizer deletes it before the pool goes, with a
/// leak grace of a day (GC cannot be what deletes it). ENIs that are not this node's leftovers
/// stay: another cluster's, and one of ours tagged for the node but attached (in use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizer_deletes_unrecorded_enis_tagged_for_the_instance() {
    let env = env().await;
    let mut cfg = env.config("op-a");
    cfg.leak_grace_secs = 24 * 3600;
    let op = env.start_with(cfg, env.ec2(None).await);
    let inst = env.join("node-a", "m5.large", &env.subnet).await;
    let pool = env.wait_pool("node-a", "Ready", T, is_ready).await;

    let ec2 = env.ec2(None).await;
    let owner = Owner {
        cluster: CLUSTER.into(),
        node: "node-a".into(),
        instance_id: inst.clone(),
        pool_uid: pool.metadata.uid.clone().unwrap(),
        extra_tags: Default::default(),
    };
    let create = |owner: &Owner| {
        let items = journal::create_items(&env.subnet, std::slice::from_ref(&env.sg), false);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let op = journal::new_op(OperationKind::CreateENI, "", 2, items, None, &now);
        journal::create_request(&op, owner)
    };
    let lost = ec2.create_eni(&create(&owner)).await.unwrap().id;
    let other = Owner { cluster: "other-cluster".into(), ..owner.clone() };
    let foreign = ec2.create_eni(&create(&other)).await.unwrap().id;
    let busy = ec2.create_eni(&create(&owner)).await.unwrap().id;
    let elsewhere = env.launch("m5.large", &env.subnet);
    ec2.attach_eni(&busy, &elsewhere, 1).await.unwrap();
    let st = env.pool("node-a").await.unwrap().status.unwrap();
    let known: Vec<&String> =
        st.enis.iter().map(|e| &e.id).chain(st.operations.iter().map(|o| &o.eni_id)).collect();
    assert!(!known.contains(&&lost), "the pool does not know the lost ENI: {known:?}");

    // The Node goes at once (nothing holds it); the pool waits for the instance.
    env.delete_node("node-a").await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    assert!(nodes.get_opt("node-a").await.unwrap().is_none(), "Node deletion is not blocked");
    env.wait_pool("node-a", "deleting", T, |p| p.metadata.deletion_timestamp.is_some()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(env.pool("node-a").await.is_some(), "the finalizer waits for the instance");
    assert!(env.sim.snapshot().enis.contains_key(&lost), "nothing deleted while it runs");

    env.sim.terminate_instances(std::slice::from_ref(&inst)).unwrap();
    wait_for("pool finalized and gone", T, || async {
        env.pool("node-a").await.is_none().then_some(())
    })
    .await;
    let enis = env.sim.snapshot().enis;
    assert!(!enis.contains_key(&lost), "the finalizer deleted the unrecorded leftover");
    assert!(enis.contains_key(&foreign), "another cluster's ENI is not ours to delete");
    assert!(enis.contains_key(&busy), "an in-use ENI is never deleted");
    let metrics = op.metrics_text();
    let line = r#"enipool_operator_enis_deleted_total{reason="node_deleted"} 1"#;
    assert!(metrics.contains(line), "{line} missing in:\n{metrics}");
    op.abort();
}

/// EC2 answering nothing but errors does not hold a deleted node's pool forever: past the
/// termination wait the finalizer goes (what is left is GC's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_failures_hold_the_pool_no_longer_than_the_termination_wait() {
    use ec2sim::{ErrorRule, FaultConfig};
    let env = env().await;
    let mut cfg = env.config("op-a");
    cfg.termination_wait = Duration::from_secs(3);
    let op = env.start_with(cfg, env.ec2(None).await);
    env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, is_ready).await;
    let down = |action: &str| ErrorRule {
        action: Some(action.into()),
        code: "InternalError".into(),
        status: 0,
        probability: 1.0,
        count: None,
        html: false,
    };
    env.sim.set_faults(FaultConfig {
        errors: vec![down("DescribeInstances"), down("DescribeNetworkInterfaces")],
        ..Default::default()
    });
    env.delete_node("node-a").await;
    wait_for("pool finalized despite EC2 failing", T, || async {
        env.pool("node-a").await.is_none().then_some(())
    })
    .await;
    let c = env.sim.counters();
    assert!(c["DescribeInstances"].injected > 0, "the finalizer met the failures: {c:?}");
    op.abort();
}

/// A kubelet re-registering deletes its Node and creates it again: same name, same providerID,
/// a new uid. The old pool goes with its Node's uid (garbage collection), but the instance is the
/// same live node: the finalizer releases it without waiting for a termination, the new pool adopts
/// the instance's ENIs and is Ready within a normal settle time, and no ENI is detached, deleted
/// or left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_re_registered_on_its_instance_keeps_its_enis() {
    use std::collections::BTreeSet;
    let env = env().await;
    let op = env.start_operator("op-a").await;
    let inst = env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, is_ready).await;
    // Enough demand for a secondary ENI, so there is an ENI the operator created to lose.
    env.agent("node-a", &agent_report(1, 12, 0, None)).await;
    let old = env
        .wait_pool("node-a", "secondary ENIs, Ready", T, |p| {
            is_ready(p) && p.status.as_ref().is_some_and(|s| s.enis.len() >= 2)
        })
        .await;
    let of_instance = || -> BTreeSet<String> {
        env.sim
            .snapshot()
            .enis
            .values()
            .filter(|e| e.attachment.as_ref().is_some_and(|a| a.instance_id == inst))
            .map(|e| e.id.clone())
            .collect()
    };
    let before = of_instance();
    assert_eq!(before.len(), old.status.as_ref().unwrap().enis.len(), "{before:?}");
    let tagged_before: BTreeSet<String> = env.tagged_enis().into_iter().collect();
    let (detaches, deletes) =
        (env.calls("DetachNetworkInterface"), env.calls("DeleteNetworkInterface"));

    env.delete_node("node-a").await;
    env.create_node("node-a", "m5.large", &inst, &[]).await;
    let old_uid = old.metadata.uid.clone();
    let new = env
        .wait_pool("node-a", "the re-registered node's pool Ready", T, |p| {
            p.metadata.uid != old_uid && p.metadata.deletion_timestamp.is_none() && is_ready(p)
        })
        .await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let node = nodes.get("node-a").await.unwrap();
    let owner = new.metadata.owner_references.as_ref().and_then(|o| o.first()).unwrap();
    assert_eq!(Some(&owner.uid), node.metadata.uid.as_ref(), "the new pool is the new Node's");
    let adopted: BTreeSet<String> =
        new.status.as_ref().unwrap().enis.iter().map(|e| e.id.clone()).collect();
    assert!(adopted.is_superset(&before), "adopted {adopted:?}, the instance had {before:?}");

    assert_eq!(of_instance(), before, "every ENI still attached to the instance");
    let tagged_after: BTreeSet<String> = env.tagged_enis().into_iter().collect();
    assert_eq!(tagged_after, tagged_before, "no ENI created or deleted");
    let available: Vec<String> = env
        .sim
        .snapshot()
        .enis
        .values()
        .filter(|e| tagged_after.contains(&e.id) && e.attachment.is_none())
        .map(|e| e.id.clone())
        .collect();
    assert!(available.is_empty(), "leaked (detached) ENIs: {available:?}");
    assert_eq!(env.calls("DetachNetworkInterface"), detaches, "nothing detached");
    assert_eq!(env.calls("DeleteNetworkInterface"), deletes, "nothing deleted");
    op.abort();
}
