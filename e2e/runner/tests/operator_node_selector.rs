//! `--node-selector` (`OperatorConfig::node_selector`): the operator, in process against the EC2
//! simulator and the test Kubernetes API, makes pools only for the Nodes the selector matches,
//! never for the others (also not when it becomes leader and reconciles every Node); leaves alone
//! what is not its own (another operator's pool and the policy only that pool uses: no status
//! write, no deletion), and a pool whose Node stops matching (not reconciled, not deleted, EC2
//! untouched) until the Node matches again; and refuses a selector the API server cannot parse.
//!
//! The behaviour needs a Kubernetes API (label-filtered watches), which the operator crate has no
//! stand-in for; the platform's lives here, next to the other in-process operator tests.

#[path = "operator/harness.rs"]
#[allow(dead_code)] // the harness serves several test files; this one uses part of it
mod harness;

use enipool_crds::{ENIPool, ENIPoolPolicy, POLICY_LABEL};
use harness::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const MANAGED: (&str, &str) = ("enipool.io/managed", "true");

/// ENIs attached to `instance` in EC2.
fn enis_on(env: &Env, instance: &str) -> usize {
    env.sim
        .snapshot()
        .enis
        .values()
        .filter(|e| e.attachment.as_ref().is_some_and(|a| a.instance_id == instance))
        .count()
}

async fn set_label(env: &Env, node: &str, value: Option<&str>) {
    let patch = serde_json::json!({"metadata": {"labels": {MANAGED.0: value}}});
    Api::<Node>::all(env.client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label node");
}

async fn apply(env: &Env, manager: &str, obj: serde_json::Value) {
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let pp = PatchParams::apply(manager);
    match obj["kind"].as_str() {
        Some("ENIPoolPolicy") => {
            env.policies().patch(&name, &pp, &Patch::Apply(&obj)).await.map(drop)
        }
        _ => env.pools().patch(&name, &pp, &Patch::Apply(&obj)).await.map(drop),
    }
    .expect("apply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_selected_nodes_are_managed_and_the_rest_is_left_alone() {
    let env = env().await;
    // A policy for every Node, and one only the unselected Nodes use (priority 10 wins there).
    let sizing = serde_json::json!({"mode": "SecondaryIP", "sizing": {"warmIPs": 2, "batch": 1}});
    apply(
        &env,
        "gitops",
        serde_json::json!({"apiVersion": "enipool.io/v1alpha1",
        "kind": "ENIPoolPolicy", "metadata": {"name": "everyone"}, "spec": sizing}),
    )
    .await;
    let mut others = sizing.clone();
    others["priority"] = 10.into();
    others["nodeSelector"] = serde_json::json!({"matchLabels": {MANAGED.0: "false"}});
    apply(
        &env,
        "gitops",
        serde_json::json!({"apiVersion": "enipool.io/v1alpha1",
        "kind": "ENIPoolPolicy", "metadata": {"name": "others"}, "spec": others}),
    )
    .await;
    // Nodes exist before the operator starts: becoming leader reconciles every Node it watches.
    let inside = env.launch("m5.large", &env.subnet);
    env.create_node("inside", "m5.large", &inside, &[MANAGED]).await;
    let outside = env.launch("m5.large", &env.subnet);
    env.create_node("outside", "m5.large", &outside, &[(MANAGED.0, "false")]).await;
    // Another operator's pool for the unselected Node (made by its Node controller).
    apply(
        &env,
        "another-operator",
        serde_json::json!({"apiVersion": "enipool.io/v1alpha1",
        "kind": "ENIPool", "metadata": {"name": "outside", "labels": {POLICY_LABEL: "others"},
        "finalizers": ["another.example/cleanup"]},
        "spec": {"nodeName": "outside", "instanceID": outside}}),
    )
    .await;
    let mut cfg = env.config("op-a");
    cfg.node_selector = Some(format!("{}={}", MANAGED.0, MANAGED.1));
    let op = env.start_with(cfg.clone(), env.ec2(None).await);

    let pool = env.wait_pool("inside", "Ready", T, is_ready).await;
    assert_eq!(pool.labels().get(POLICY_LABEL).map(String::as_str), Some("everyone"));
    // A Node that joins later, outside the selector, is ignored as well.
    let late = env.launch("m5.large", &env.subnet);
    env.create_node("late-outside", "m5.large", &late, &[]).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // several 1 s resyncs
    assert!(env.pool("late-outside").await.is_none(), "pool for a Node outside the selector");
    let foreign = env.pool("outside").await.expect("the other operator's pool was deleted");
    assert!(
        foreign.status.is_none(),
        "the other operator's pool got a status: {:?}",
        foreign.status
    );
    assert!(foreign.metadata.deletion_timestamp.is_none());
    assert_eq!((enis_on(&env, &outside), enis_on(&env, &late)), (1, 1), "only the primary ENIs");
    assert_eq!(env.calls("AssignPrivateIpAddresses"), 1, "EC2 touched for one node only");
    let status_of = |p: &ENIPoolPolicy| p.status.is_some();
    let policies = env.policies();
    assert!(status_of(&policies.get("everyone").await.unwrap()), "the used policy has no status");
    assert!(!status_of(&policies.get("others").await.unwrap()), "status on another's policy");

    // The selected Node stops matching: its pool is left as it is, not deleted, not reconciled
    // (demand it would answer stays unanswered), also across a failover.
    set_label(&env, "inside", None).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let assigns = env.calls("AssignPrivateIpAddresses");
    env.agent("inside", &agent_report(1, 0, 5, None)).await;
    op.abort();
    let op = env.start_with(cfg.clone(), env.ec2(None).await);
    tokio::time::sleep(Duration::from_secs(6)).await; // lease expiry (3 s) + resyncs
    let after = env.pool("inside").await.expect("the pool of a Node that stopped matching");
    assert!(after.metadata.deletion_timestamp.is_none(), "pool of an unmatched Node deleted");
    assert_eq!(target(&after), target(&pool), "a pool of an unmatched Node was reconciled");
    assert_eq!(env.calls("AssignPrivateIpAddresses"), assigns, "EC2 changed for an unmatched Node");
    assert_eq!(env.calls("UnassignPrivateIpAddresses") + env.calls("DeleteNetworkInterface"), 0);

    // Matching again: the pool is managed again and meets the demand (5 pending + 2 warm).
    set_label(&env, "inside", Some(MANAGED.1)).await;
    env.agent("inside", &agent_report(1, 0, 5, None)).await;
    env.wait_pool("inside", "target 7 allocated", T, |p| target(p) == 7 && allocated(p) == 7).await;
    // A Node that starts matching gets its pool.
    set_label(&env, "late-outside", Some(MANAGED.1)).await;
    let p: ENIPool = env.wait_pool("late-outside", "Ready", T, is_ready).await;
    assert_eq!(p.spec.instance_id, late);
    assert!(env.pool("outside").await.unwrap().status.is_none());
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_selector_stops_the_operator_with_the_reason() {
    let env = env().await;
    let mut cfg = env.config("op-bad");
    cfg.node_selector = Some("tier in (a,b".into());
    let op = env.start_with(cfg, env.ec2(None).await);
    wait_for("the operator to refuse the selector", T, || async { op.is_finished().then_some(()) })
        .await;
    let err = op.shutdown().await.expect_err("an invalid selector must stop the operator");
    assert!(format!("{err:#}").contains("--node-selector"), "unclear error: {err:#}");
}
