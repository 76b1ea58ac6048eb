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
    use enipool_e2e::ec2sim::{ErrorRule, FaultConfig};
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
