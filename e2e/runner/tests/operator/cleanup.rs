//! `enipool-operator cleanup` (what the chart's post-delete hook runs after `helm uninstall`),
//! called as the subcommand calls it (`enipool_operator::cleanup::cleanup`): once the operator is
//! gone it removes the `enipool.io/release` finalizer and deletes the pools in scope, without a
//! single EC2 call; while an operator still leads it waits, then fails naming the holder and
//! changes nothing; with `--node-selector` it leaves other Nodes' pools alone. Every run is made
//! with a token of its own, and each request the API server audited for it must be granted to the
//! chart's hook ServiceAccount by the rendered chart (`helm template`): the hook's least-privilege
//! RBAC is enough for what the code really calls.

use crate::harness::*;
use enipool_crds::{ENIPool, POOL_FINALIZER};
use enipool_operator::cleanup::{cleanup, CleanupConfig, CleanupError, CleanupReport};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use kube::ResourceExt;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../common/chart_rbac.rs"]
mod chart_rbac;

const T: Duration = Duration::from_secs(30);

fn cfg(timeout: Duration) -> CleanupConfig {
    let mut c = CleanupConfig::new();
    c.identity = "cleanup-test".into();
    c.lease_duration = Duration::from_secs(3);
    c.timeout = timeout;
    c.poll = Duration::from_millis(200);
    c
}

async fn lease(env: &Env) -> Lease {
    Api::<Lease>::namespaced(env.client.clone(), "kube-system")
        .get("enipool-operator")
        .await
        .expect("get lease")
}

fn holder(l: &Lease) -> String {
    l.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default()
}

fn transitions(l: &Lease) -> i32 {
    l.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0)
}

/// Run the cleanup as the hook: with a token the API server does not know (audited as
/// `system:anonymous`, which nothing else here uses), then check every audited request against
/// what the chart rendered with `values` grants the hook's ServiceAccount `<prefix>-cleanup`.
async fn cleanup_as_hook(
    env: &Env,
    cfg: &CleanupConfig,
    values: &str,
    prefix: &str,
) -> Result<CleanupReport, CleanupError> {
    let mut kc = kube::Config::new(env.kube.url().parse().expect("url"));
    kc.auth_info.token = Some("enipool-cleanup-hook-token".to_string().into());
    let client = kube::Client::try_from(kc).expect("client");
    let result = cleanup(client, cfg).await;
    let docs = chart_rbac::render("enipool", "kube-system", values).expect("helm template");
    let grants = chart_rbac::grants(&docs, "kube-system", &format!("{prefix}-cleanup"));
    assert!(!grants.is_empty(), "{values}: no grants for the hook's ServiceAccount");
    let uses: BTreeSet<(String, String, String, String)> = env
        .kube
        .audit()
        .iter()
        .filter(|r| r.user == "system:anonymous" && r.is_resource())
        .map(|r| (r.api_group.clone(), r.resource_path(), r.verb.clone(), r.namespace.clone()))
        .collect();
    assert!(!uses.is_empty(), "no request of the cleanup was audited");
    let denied: Vec<_> = uses
        .iter()
        .filter(|(group, resource, verb, ns)| {
            !grants.iter().any(|g| {
                &g.api_group == group
                    && &g.resource == resource
                    && &g.verb == verb
                    && g.namespace.as_ref().is_none_or(|n| n == ns)
            })
        })
        .collect();
    assert!(denied.is_empty(), "{values}: the hook's RBAC does not grant {denied:?}");
    result
}

/// EC2 as the pods see it: every ENI with its attachment and addresses, and every instance.
fn ec2_state(env: &Env) -> (Value, Value) {
    let st = env.sim.snapshot();
    (serde_json::to_value(&st.enis).unwrap(), serde_json::to_value(&st.instances).unwrap())
}

/// (name, resourceVersion, finalizers, deleting) of every pool, by name.
async fn pools(env: &Env) -> Vec<(String, String, Vec<String>, bool)> {
    let mut out: Vec<_> = env
        .pools()
        .list(&Default::default())
        .await
        .expect("list pools")
        .items
        .iter()
        .map(|p: &ENIPool| {
            (
                p.name_any(),
                p.resource_version().unwrap_or_default(),
                p.finalizers().to_vec(),
                p.metadata.deletion_timestamp.is_some(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Two Nodes with Ready pools from a running operator, which is then stopped gracefully.
async fn two_ready_pools_then_operator_stopped(env: &Env, labels_a: &[(&str, &str)]) {
    let op = env.start_operator("op-a").await;
    wait_for("op-a leads", T, || async { op.is_leader().then_some(()) }).await;
    let a = env.launch("m5.large", &env.subnet);
    env.create_node("node-a", "m5.large", &a, labels_a).await;
    env.join("node-b", "m5.large", &env.subnet).await;
    for n in ["node-a", "node-b"] {
        let p = env.wait_pool(n, "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;
        assert!(p.finalizers().iter().any(|f| f == POOL_FINALIZER), "{n}: {p:?}");
    }
    op.shutdown().await.expect("graceful shutdown");
    assert_eq!(holder(&lease(env).await), "", "the stopped operator released the Lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_operator_is_gone_cleanup_releases_and_deletes_every_pool_without_ec2() {
    let env = env().await;
    two_ready_pools_then_operator_stopped(&env, &[]).await;
    // The bug this fixes: with no operator left, a deleted pool stays Terminating for good.
    env.pools().delete("node-b", &DeleteParams::default()).await.expect("delete pool");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = pools(&env).await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before[1].3 && before[1].2.contains(&POOL_FINALIZER.to_string()), "{before:?}");
    let ec2_before = ec2_state(&env);
    let addresses: usize = env.sim.snapshot().enis.values().map(|e| e.secondary.len()).sum();
    assert!(addresses >= 16, "the pools' addresses are assigned in EC2 ({addresses})");
    let calls = env.sim.counters();
    let transitions_before = transitions(&lease(&env).await);

    let report =
        cleanup_as_hook(&env, &cfg(T), "default-values.yaml", "enipool").await.expect("cleanup");

    assert_eq!(report, CleanupReport { released: 2, deleted: 2, left_alone: 0 });
    assert_eq!(pools(&env).await, vec![], "no ENIPool left");
    // EC2 untouched: not one call, ENIs still attached with their addresses.
    assert_eq!(env.sim.counters(), calls, "the cleanup called EC2");
    assert_eq!(ec2_state(&env), ec2_before, "EC2 state changed");
    // It took the Lease (one transition), and released it.
    let l = lease(&env).await;
    assert_eq!(holder(&l), "", "the Lease is released: {l:?}");
    assert_eq!(transitions(&l), transitions_before + 1, "the cleanup held the Lease: {l:?}");
    // A second run (a retried hook) finds nothing to do and succeeds.
    let again = cleanup(env.client.clone(), &cfg(T)).await.expect("second cleanup");
    assert_eq!(again, CleanupReport::default());
    // Nothing blocks the CRD's deletion any more.
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    crds.delete("enipools.enipool.io", &DeleteParams::default()).await.expect("delete CRD");
    wait_for("the CRD is gone", T, || async {
        crds.get_opt("enipools.enipool.io").await.expect("get CRD").is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_an_operator_leads_cleanup_waits_then_fails_naming_it_and_changes_nothing() {
    let env = env().await;
    let op = env.start_operator("op-a").await;
    wait_for("op-a leads", T, || async { op.is_leader().then_some(()) }).await;
    env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;
    let before = pools(&env).await;
    let ec2_before = ec2_state(&env);

    // 4 s: longer than the operator's 3 s Lease, which it keeps renewing.
    let started = Instant::now();
    let err = cleanup_as_hook(&env, &cfg(Duration::from_secs(4)), "default-values.yaml", "enipool")
        .await
        .expect_err("cleanup must not run while an operator leads");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(4), "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(15), "waited {waited:?}");
    match &err {
        CleanupError::LeaseHeld { holder, .. } => assert_eq!(holder, "op-a"),
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("\"op-a\"") && msg.contains("kube-system/enipool-operator"), "{msg}");
    // Nothing changed: the pool, its finalizer, the Lease, EC2.
    assert!(op.is_leader());
    assert_eq!(holder(&lease(&env).await), "op-a");
    let after = pools(&env).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].2, before[0].2, "finalizers changed");
    assert!(!after[0].3, "the pool is being deleted");
    assert_eq!(
        ec2_state(&env).0.as_object().map(|m| m.len()),
        ec2_before.0.as_object().map(|m| m.len())
    );
    op.shutdown().await.expect("graceful shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_node_selector_pools_of_other_living_nodes_are_untouched() {
    let env = env().await;
    // node-a is selected; node-b is not (another installation's, say); node-c is selected too
    // and then deleted after the operator stopped: its pool is Terminating, its Node gone.
    two_ready_pools_then_operator_stopped(&env, &[("enipool.io/managed", "true")]).await;
    let op = env.start_operator("op-a2").await;
    let c = env.launch("m5.large", &env.subnet);
    env.create_node("node-c", "m5.large", &c, &[("enipool.io/managed", "true")]).await;
    env.wait_pool("node-c", "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;
    op.shutdown().await.expect("graceful shutdown");
    env.delete_node("node-c").await;
    wait_for("node-c's pool Terminating (ownerReference GC)", T, || async {
        pools(&env).await.iter().find(|p| p.0 == "node-c").is_some_and(|p| p.3).then_some(())
    })
    .await;
    let before = pools(&env).await;
    let ec2_before = ec2_state(&env);
    let calls = env.sim.counters();

    let mut c = cfg(T);
    c.node_selector = Some("enipool.io/managed=true".into());
    // custom-values.yaml sets a managedNodeSelector: the hook may list Nodes there.
    let report = cleanup_as_hook(&env, &c, "custom-values.yaml", "netpool").await.expect("cleanup");

    assert_eq!(report, CleanupReport { released: 2, deleted: 2, left_alone: 1 });
    let after = pools(&env).await;
    let b = before.iter().find(|p| p.0 == "node-b").unwrap();
    assert_eq!(after, vec![b.clone()], "only node-b's pool is left, unchanged");
    assert_eq!(env.sim.counters(), calls, "the cleanup called EC2");
    assert_eq!(ec2_state(&env), ec2_before, "EC2 state changed");
    assert_eq!(holder(&lease(&env).await), "");
}
