//! `--node-selector` (`OperatorConfig::node_selector`): the operator, in process against the EC2
//! simulator and the test Kubernetes API, makes pools only for the Nodes the selector matches,
//! never for the others (also not when it becomes leader and reconciles every Node), leaves a pool
//! alone when its Node stops matching, and refuses a selector the API server cannot parse.
//!
//! The behaviour needs a Kubernetes API (label-filtered watches), which the operator crate has no
//! stand-in for; the platform's lives here, next to the other in-process operator tests.

#[path = "operator/harness.rs"]
#[allow(dead_code)] // the harness serves several test files; this one uses part of it
mod harness;

use harness::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const MANAGED: (&str, &str) = ("enipool.io/managed", "true");

/// EC2 calls that name `instance` can't be told apart in the simulator's counters, so the test
/// checks what the operator leaves behind instead: ENIs attached to the instance.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_selected_nodes_get_pools_and_a_label_change_deletes_nothing() {
    let env = env().await;
    // Nodes exist before the operator starts: becoming leader reconciles every Node it watches.
    let inside = env.launch("m5.large", &env.subnet);
    env.create_node("inside", "m5.large", &inside, &[MANAGED]).await;
    let outside = env.launch("m5.large", &env.subnet);
    env.create_node("outside", "m5.large", &outside, &[("enipool.io/managed", "false")]).await;
    let mut cfg = env.config("op-a");
    cfg.node_selector = Some(format!("{}={}", MANAGED.0, MANAGED.1));
    let op = env.start_with(cfg.clone(), env.ec2(None).await);

    env.wait_pool("inside", "Ready", T, is_ready).await;
    // A Node that joins later, outside the selector, is ignored as well.
    let late = env.launch("m5.large", &env.subnet);
    env.create_node("late-outside", "m5.large", &late, &[]).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // several 1 s resyncs
    for name in ["outside", "late-outside"] {
        assert!(
            env.pool(name).await.is_none(),
            "pool {name} created for a Node outside the selector"
        );
    }
    assert_eq!((enis_on(&env, &outside), enis_on(&env, &late)), (1, 1), "only the primary ENIs");
    assert_eq!(env.calls("AssignPrivateIpAddresses"), 1, "EC2 touched for one node only");

    // The selected Node stops matching: its pool stays (no deletion, EC2 untouched), and so do its
    // addresses, also across a failover (the new leader reconciles everything it watches).
    let before = env.pool("inside").await.expect("pool");
    set_label(&env, "inside", None).await;
    op.abort();
    let op = env.start_with(cfg.clone(), env.ec2(None).await);
    tokio::time::sleep(Duration::from_secs(6)).await; // lease expiry (3 s) + resyncs
    let after =
        env.pool("inside").await.expect("the pool of a Node that stopped matching was deleted");
    assert!(
        after.metadata.deletion_timestamp.is_none(),
        "pool of an unmatched Node is being deleted"
    );
    assert_eq!(allocated(&after), allocated(&before), "addresses changed after a label change");
    assert_eq!(enis_on(&env, &inside), 1);
    assert_eq!(env.calls("UnassignPrivateIpAddresses") + env.calls("DeleteNetworkInterface"), 0);

    // A Node that starts matching gets its pool.
    set_label(&env, "outside", Some(MANAGED.1)).await;
    let pool = env.wait_pool("outside", "Ready", T, is_ready).await;
    assert_eq!(pool.spec.instance_id, outside);
    assert!(env.pool("late-outside").await.is_none());
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
