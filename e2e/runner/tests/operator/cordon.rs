//! `freezeWhenCordoned`: a cordoned node's pool makes no EC2 change for new demand, and grows as
//! soon as the node is uncordoned (the cordon reaches the pool through the Node watch alone).

use crate::harness::*;
use enipool_crds::CORDONED_LABEL;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

async fn set_unschedulable(env: &Env, node: &str, on: bool) {
    let patch = serde_json::json!({"spec": {"unschedulable": on}});
    Api::<Node>::all(env.client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("cordon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_node_is_frozen_until_uncordoned() {
    let env = env().await;
    let body = serde_json::json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPoolPolicy",
        "metadata": {"name": "freeze"}, "spec": {"freezeWhenCordoned": true}});
    env.policies()
        .patch("freeze", &PatchParams::apply("gitops"), &Patch::Apply(&body))
        .await
        .expect("policy");
    let op = env.start_operator("op-a").await;
    env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;

    set_unschedulable(&env, "node-a", true).await;
    let frozen = |p: &enipool_crds::ENIPool| cond(p, "Frozen").as_deref() == Some("True");
    let p = env.wait_pool("node-a", "Frozen", T, frozen).await;
    assert_eq!(p.labels().get(CORDONED_LABEL).map(String::as_str), Some("true"));
    let calls = env.mutating_calls();
    // Demand beyond the primary ENI: growth would create a second ENI.
    env.agent("node-a", &agent_report(1, 9, 0, None)).await;
    env.wait_pool("node-a", "target moved", T, |p| target(p) == 17).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // four resyncs
    let p = env.pool("node-a").await.expect("pool");
    assert_eq!(env.mutating_calls(), calls, "EC2 changed while frozen: {:?}", env.sim.counters());
    assert_eq!(allocated(&p), 8);
    assert!(!is_ready(&p), "Ready while below target and frozen");

    set_unschedulable(&env, "node-a", false).await;
    let p = env
        .wait_pool("node-a", "grown after the uncordon", T, |p| {
            allocated(p) == 17 && cond(p, "Frozen").as_deref() == Some("False")
        })
        .await;
    assert!(!p.labels().contains_key(CORDONED_LABEL));
    assert!(env.calls("CreateNetworkInterface") >= 1);
    op.abort();
}
