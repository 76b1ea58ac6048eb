//! Lease handover: a leader stopped gracefully releases the Lease and a standby takes it at its
//! next retry, long before the Lease could have expired; a crashed (aborted) leader releases
//! nothing, so the standby waits for expiry. The lease durations are long on purpose: the bounds
//! are generous for a loaded CI machine and still cannot be met by expiry.

use crate::harness::*;
use enipool_operator::OperatorHandle;
use k8s_openapi::api::coordination::v1::Lease;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn holder(lease: &Lease) -> String {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default()
}

async fn lease(env: &Env) -> Lease {
    kube::Api::<Lease>::namespaced(env.client.clone(), "kube-system")
        .get("enipool-operator")
        .await
        .expect("get lease")
}

async fn start(env: &Env, identity: &str, lease: Duration) -> OperatorHandle {
    let mut cfg = env.config(identity);
    cfg.lease_duration = lease;
    env.start_with(cfg, env.ec2(None).await)
}

/// `enipool_operator_leader` on the replica's `/metrics`.
fn leader_gauge(op: &OperatorHandle) -> Option<i64> {
    let text = op.metrics_text();
    let line = text.lines().find(|l| l.starts_with("enipool_operator_leader "))?;
    line["enipool_operator_leader ".len()..].trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_releases_the_lease_to_the_standby_at_once() {
    // 120 s: a Lease renewed at most 40 s before the stop cannot expire for 80 s after it.
    const LEASE: Duration = Duration::from_secs(120);
    let env = env().await;
    let a = start(&env, "op-a", LEASE).await;
    wait_for("op-a leads", T, || async { a.is_leader().then_some(()) }).await;
    let b = start(&env, "op-b", LEASE).await;
    wait_for("op-b ready", T, || async { b.is_ready().then_some(()) }).await;
    env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;
    assert!(!b.is_leader());
    assert_eq!(holder(&lease(&env).await), "op-a");
    assert_eq!(leader_gauge(&a), Some(1));
    assert_eq!(leader_gauge(&b), Some(0));
    let transitions = lease(&env).await.spec.unwrap().lease_transitions.unwrap_or(0);

    let stopped = Instant::now();
    a.shutdown().await.expect("graceful shutdown");
    // Released (empty holder) or already taken by the standby: never op-a any more.
    let after = lease(&env).await;
    assert_ne!(holder(&after), "op-a", "the stopped leader still holds the Lease: {after:?}");
    wait_for("op-b takes the released Lease", T, || async {
        (b.is_leader() && holder(&lease(&env).await) == "op-b").then_some(())
    })
    .await;
    let took = stopped.elapsed();
    assert!(took < LEASE / 4, "handover took {took:?}: the Lease expired, it was not released");
    let spec = lease(&env).await.spec.unwrap();
    assert_eq!(spec.lease_transitions, Some(transitions + 1));
    assert_eq!(spec.lease_duration_seconds, Some(LEASE.as_secs() as i32), "op-b's duration");
    wait_for("op-b's leader gauge", T, || async { (leader_gauge(&b) == Some(1)).then_some(()) })
        .await;
    // And it continues the work: a new demand is served by the new leader.
    env.agent("node-a", &agent_report(1, 4, 0, None)).await;
    env.wait_pool("node-a", "grown by the new leader", T, |p| {
        target(p) == 12 && allocated(p) == 12
    })
    .await;
    b.shutdown().await.expect("graceful shutdown");
    // The last replica releases too (nobody takes it).
    assert_eq!(holder(&lease(&env).await), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_releases_nothing_the_standby_waits_for_expiry() {
    // Renewed every 2 s: at the abort the last renewal is at most that old (plus scheduling
    // delay), and the standby saw it no earlier, so it waits at least ~18 s after the abort.
    const LEASE: Duration = Duration::from_secs(20);
    let env = env().await;
    let a = start(&env, "op-a", LEASE).await;
    wait_for("op-a leads", T, || async { a.is_leader().then_some(()) }).await;
    let b = start(&env, "op-b", LEASE).await;
    wait_for("op-b ready", T, || async { b.is_ready().then_some(()) }).await;
    assert_eq!(holder(&lease(&env).await), "op-a");

    let renewed = lease(&env).await.spec.unwrap().renew_time.unwrap().0;
    a.abort();
    let aborted = Instant::now();
    // Several standby retries (every 2 s) while the Lease is still valid: op-a keeps it.
    while aborted.elapsed() < Duration::from_secs(8) {
        assert!(!b.is_leader(), "the standby took an unexpired Lease");
        assert_eq!(holder(&lease(&env).await), "op-a");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Then it expires and the standby takes it.
    wait_for("op-b takes the expired Lease", LEASE + T, || async {
        (b.is_leader() && holder(&lease(&env).await) == "op-b").then_some(())
    })
    .await;
    let acquired = lease(&env).await.spec.unwrap().acquire_time.unwrap().0;
    let held = acquired.duration_since(renewed);
    assert!(
        held.as_secs_f64() >= LEASE.as_secs_f64(),
        "taken {held:?} after the last renewal, before the {LEASE:?} expiry"
    );
    b.abort();
}
