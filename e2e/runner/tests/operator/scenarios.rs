//! Scenarios, one simulator + API server each.

use crate::harness::*;
use enipool_crds::{POLICY_LABEL, POOL_FINALIZER};
use kube::ResourceExt;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_join_creates_a_ready_pool_with_one_call() {
    let env = env().await;
    let op = env.start_operator("op-a").await;
    let inst = env.join("node-a", "m5.large", &env.subnet).await;

    let pool = env.wait_pool("node-a", "Ready", T, is_ready).await;
    // Identity, owner reference to the Node, finalizer.
    assert_eq!(pool.spec.instance_id, inst);
    assert_eq!(pool.spec.node_name, "node-a");
    let owner = &pool.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", "node-a"));
    assert!(pool.finalizers().iter().any(|f| f == POOL_FINALIZER));
    assert_eq!(pool.labels().get(POLICY_LABEL), None, "no policy: defaults");
    // Default sizing: warmIPs 8 on an empty node, all on the primary ENI (room for 9).
    assert_eq!(target(&pool), 8);
    assert_eq!(allocated(&pool), 8);
    let st = pool.status.as_ref().unwrap();
    assert_eq!(st.enis.len(), 1);
    assert_eq!(st.instance.as_ref().unwrap().instance_type, "m5.large");
    assert!(
        st.operations.is_empty(),
        "journal drained: {:?}\n{}",
        st.operations,
        serde_json::to_string_pretty(&pool.metadata.managed_fields).unwrap()
    );
    assert!(st.agent.is_none());
    // One mutating EC2 call for the whole join.
    assert_eq!(env.mutating_calls(), 1, "{:?}", env.sim.counters());
    assert_eq!(env.calls("AssignPrivateIpAddresses"), 1);
    // It stays at one: resyncs only read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.mutating_calls(), 1, "{:?}", env.sim.counters());
    op.abort();
}

/// A policy for every node, applied the way GitOps does (SSA, its own field manager).
async fn apply_policy(env: &Env, manager: &str, name: &str, spec: serde_json::Value) {
    use kube::api::{Patch, PatchParams};
    let body = serde_json::json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPoolPolicy", "metadata": {"name": name}, "spec": spec});
    env.policies()
        .patch(name, &PatchParams::apply(manager), &Patch::Apply(&body))
        .await
        .expect("apply policy (no conflict)");
}

fn enis(p: &enipool_crds::ENIPool) -> usize {
    p.status.as_ref().map(|s| s.enis.len()).unwrap_or(0)
}

/// Twin of the runner's `scale-up-new-eni` and `scale-down-after-delay` (real pods wired on the
/// new ENI, nothing released before the delay): this one proves the EC2 calls of each step and
/// the offer protocol (request, offer of whole ENIs first, released revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_then_down_through_the_offer_protocol() {
    let env = env().await;
    apply_policy(&env, "argocd", "all", serde_json::json!({"release": {"delaySeconds": 1}})).await;
    let op = env.start_operator("op-a").await;
    env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;
    assert_eq!(env.mutating_calls(), 1);

    // One pod: target 9 fills the primary ENI (one more Assign).
    env.agent("node-a", &agent_report(1, 1, 0, None)).await;
    env.wait_pool("node-a", "primary full", T, |p| target(p) == 9 && allocated(p) == 9).await;
    assert_eq!(env.mutating_calls(), 2, "{:?}", env.sim.counters());

    // Ten pods: target 18 needs a new ENI: create (with all 9 addresses) + attach + modify.
    env.agent("node-a", &agent_report(1, 10, 0, None)).await;
    let p = env
        .wait_pool("node-a", "second ENI", T, |p| {
            target(p) == 18 && allocated(p) == 18 && is_ready(p)
        })
        .await;
    assert_eq!(enis(&p), 2);
    assert!(env.mutating_calls() - 2 <= 3, "{:?}", env.sim.counters());
    assert_eq!(env.calls("CreateNetworkInterface"), 1);

    // Pods gone: after the delay the operator asks for an offer.
    env.agent("node-a", &agent_report(1, 0, 0, None)).await;
    let p = env
        .wait_pool("node-a", "release request", T, |p| {
            p.status.as_ref().and_then(|s| s.release_request.as_ref()).is_some_and(|r| r.count > 0)
        })
        .await;
    let st = p.status.clone().unwrap();
    let req = st.release_request.clone().unwrap();
    assert_eq!(req.count, 10, "18 held, target 8");
    // The agent offers whole ENIs first, as asked.
    let mut offered: Vec<String> = Vec::new();
    for id in req.prefer_enis.iter().chain(st.enis.iter().map(|e| &e.id)) {
        let e = st.enis.iter().find(|e| &e.id == id).unwrap();
        for ip in &e.ips {
            if offered.len() < req.count as usize && !offered.contains(ip) {
                offered.push(ip.clone());
            }
        }
    }
    let offer =
        enipool_crds::Releasable { revision: req.revision, ips: offered.clone(), prefixes: vec![] };
    env.agent("node-a", &agent_report(1, 0, 0, Some(offer))).await;
    let p = env
        .wait_pool("node-a", "released", T, |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.released_revision == req.revision && s.releasing.is_none())
        })
        .await;
    let held: Vec<String> =
        p.status.as_ref().unwrap().enis.iter().flat_map(|e| e.ips.clone()).collect();
    assert!(offered.iter().all(|ip| !held.contains(ip)), "offered addresses gone from the pool");
    let sim_ips: Vec<String> = env
        .sim
        .snapshot()
        .enis
        .values()
        .flat_map(|e| e.all_addrs())
        .map(|a| a.to_string())
        .collect();
    assert!(offered.iter().all(|ip| !sim_ips.contains(ip)), "offered addresses unassigned in EC2");
    assert_eq!(allocated(&p), 8);
    // The emptied secondary ENI is detached and deleted.
    env.wait_pool("node-a", "empty ENI released", T, |p| {
        enis(p) == 1 && p.status.as_ref().unwrap().operations.is_empty()
    })
    .await;
    wait_for("ENI deleted in EC2", T, || async {
        (env.sim.snapshot().enis.len() == 1).then_some(())
    })
    .await;
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_limit_is_capacity_exhausted() {
    let env = env().await;
    let op = env.start_operator("op-a").await;
    env.join("node-a", "t3.micro", &env.subnet).await; // 2 ENIs x 2 addresses: 2 pod addresses
    env.wait_pool("node-a", "Ready", T, is_ready).await;
    env.agent("node-a", &agent_report(1, 5, 0, None)).await;
    let p = env
        .wait_pool("node-a", "CapacityExhausted", T, |p| {
            cond(p, "CapacityExhausted").as_deref() == Some("True")
        })
        .await;
    assert_eq!(target(&p), 2, "target clamped to the instance's capacity");
    env.wait_pool("node-a", "full", T, |p| allocated(p) == 2).await;
    op.abort();
}

/// Twin of the runner's `ec2-throttling-storm` (real processes converge in time, throttled calls a
/// minority): this one proves a throttled CreateNetworkInterface is never repeated (one ENI a node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_storm_converges_without_overshoot() {
    use ec2sim::{FaultConfig, TokenBucketSpec};
    let env = env().await;
    env.sim.set_faults(FaultConfig {
        throttle: [("Mutate*".to_string(), TokenBucketSpec { capacity: 2.0, refill_per_sec: 2.0 })]
            .into(),
        ..Default::default()
    });
    let op = env.start_operator("op-a").await;
    let names = ["n1", "n2", "n3", "n4"];
    for n in names {
        env.join(n, "m5.large", &env.subnet).await;
    }
    for n in names {
        env.wait_pool(n, "pool", T, |_| true).await;
        env.agent(n, &agent_report(1, 10, 0, None)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut done = 0;
        for n in names {
            let p = env.pool(n).await.unwrap();
            let t = target(&p);
            assert!(
                allocated(&p) <= t.max(8) + 1,
                "{n}: {} held, target {t} (+ batch 1)",
                allocated(&p)
            );
            if t == 18 && allocated(&p) == 18 && p.status.as_ref().unwrap().operations.is_empty() {
                done += 1;
            }
        }
        if done == names.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no convergence: {:?}", env.sim.counters());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = env.sim.counters();
    let throttled: u64 = c.values().map(|c| c.throttled).sum();
    assert!(throttled > 0, "the storm happened: {c:?}");
    assert_eq!(
        env.calls("CreateNetworkInterface") - c["CreateNetworkInterface"].throttled,
        4,
        "one ENI per node: {c:?}"
    );
    op.abort();
}

/// Twin of the runner's `operator-leader-kill` (the standby takes over a kill -9'd leader, pods
/// keep working): this one proves the next leader replays the journaled CreateENI to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_create_then_restarted_no_duplicate_no_leak() {
    use ec2sim::FaultConfig;
    let env = env().await;
    let op = env.start_operator("op-a").await;
    let inst = env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;
    env.sim.set_faults(FaultConfig {
        latency_ms: [("CreateNetworkInterface".to_string(), 1500)].into(),
        ..Default::default()
    });
    env.agent("node-a", &agent_report(1, 10, 0, None)).await;
    env.wait_pool("node-a", "CreateENI journaled", T, |p| {
        p.status.as_ref().is_some_and(|s| {
            s.operations.iter().any(|o| o.kind == enipool_crds::OperationKind::CreateENI)
        })
    })
    .await;
    wait_for("CreateNetworkInterface in flight", T, || async {
        (env.calls("CreateNetworkInterface") > 0).then_some(())
    })
    .await;
    op.abort();
    tokio::time::sleep(Duration::from_secs(2)).await; // the in-flight request lands (or not)
    env.sim.set_faults(FaultConfig::default());
    let op2 = env.start_operator("op-b").await;
    let p = env
        .wait_pool("node-a", "replayed", Duration::from_secs(40), |p| {
            allocated(p) == 18 && p.status.as_ref().unwrap().operations.is_empty()
        })
        .await;
    assert_eq!(enis(&p), 2);
    let st = env.sim.snapshot();
    let tagged: Vec<_> =
        st.enis.values().filter(|e| e.tags.contains_key(enipool_crds::tags::CLUSTER)).collect();
    assert_eq!(tagged.len(), 1, "exactly one created ENI: {tagged:?}");
    assert!(
        tagged[0].attachment.as_ref().is_some_and(|a| a.instance_id == inst),
        "and it is attached"
    );
    // The new leader finished the entry by replaying it, and says so in its metrics.
    let metrics = op2.metrics_text();
    assert!(
        metrics.contains(
            r#"enipool_operator_journal_replays_total{kind="CreateENI",outcome="finished"} 1"#
        ),
        "{metrics}"
    );
    op2.abort();
}

/// Twin of the runner's `gitops-policy-apply` (kubectl apply, kstatus Ready, refusal of an invalid
/// change): this one proves server-side apply by a GitOps manager never conflicts with the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_policy_edits_change_targets_without_conflicts() {
    let env = env().await;
    apply_policy(&env, "argocd", "all", serde_json::json!({"sizing": {"warmIPs": 4}})).await;
    let op = env.start_operator("op-a").await;
    env.join("node-a", "m5.large", &env.subnet).await;
    let p = env.wait_pool("node-a", "Ready at 4", T, |p| is_ready(p) && allocated(p) == 4).await;
    assert_eq!(p.labels().get(POLICY_LABEL).map(String::as_str), Some("all"));
    wait_for("policy status", T, || async {
        let st = env.policies().get("all").await.unwrap().status?;
        (st.matched_nodes == 1).then_some(())
    })
    .await;
    // Argo CD syncs a new revision: no force needed, no conflict with the operator's status.
    apply_policy(&env, "argocd", "all", serde_json::json!({"sizing": {"warmIPs": 6}})).await;
    env.wait_pool("node-a", "target 6", T, |p| target(p) == 6 && allocated(p) == 6).await;
    apply_policy(
        &env,
        "argocd",
        "all",
        serde_json::json!({"sizing": {"warmIPs": 6, "minAllocate": 7}}),
    )
    .await;
    env.wait_pool("node-a", "target 7", T, |p| target(p) == 7 && allocated(p) == 7).await;
    let pol = env.policies().get("all").await.unwrap();
    let managers: Vec<_> = pol
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager.unwrap_or_default(), m.subresource.unwrap_or_default()))
        .collect();
    assert!(managers.contains(&("argocd".into(), "".into())), "{managers:?}");
    assert!(managers.contains(&("enipool-operator".into(), "status".into())), "{managers:?}");
    op.abort();
}
