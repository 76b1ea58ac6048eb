//! A reconcile that fails shows on the pool and in a Warning Event, not only in the operator's
//! log: EC2 failing persistently turns `EC2Synced` False with the error's category (one status
//! write, however often the reconcile is retried), and clears once EC2 answers again; the journal,
//! the ENIs and the agent's report in the status are never touched by it.

use crate::harness::*;
use ec2sim::{ErrorRule, FaultConfig};
use enipool_crds::ENIPool;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn condition(p: &ENIPool, type_: &str) -> Option<(String, String)> {
    let c = p.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// The parts of the status a failure must leave alone: ENIs, revision, journal, agent report.
fn kept(p: &ENIPool) -> serde_json::Value {
    let s = p.status.clone().unwrap_or_default();
    json!({"enis": s.enis, "revision": s.revision, "operations": s.operations, "agent": s.agent})
}

/// The operator's status writes to `pool` recorded by the API server since the audit was cleared.
fn status_writes(env: &Env, pool: &str) -> usize {
    env.kube
        .audit()
        .iter()
        .filter(|r| r.resource == "enipools" && r.subresource == "status" && r.name == pool)
        .filter(|r| r.verb == "patch" && !r.implied)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_instances_failing_shows_on_the_pool_and_in_an_event() {
    let env = env().await;
    let op = env.start_operator("op-a").await;
    env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "created", T, |_| true).await;
    env.agent("node-a", &agent_report(1, 2, 0, None)).await;
    let settled = |p: &ENIPool| {
        is_ready(p)
            && cond(p, "EC2Synced").as_deref() == Some("True")
            && allocated(p) >= target(p)
            && p.status.as_ref().is_some_and(|s| s.operations.is_empty() && s.agent.is_some())
    };
    // Settled: ready and unchanged over a few resync periods.
    let pool = wait_for("pool Ready and settled", T, || async {
        let first = env.wait_pool("node-a", "Ready", T, settled).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let again = env.pool("node-a").await?;
        (settled(&again) && kept(&again) == kept(&first)).then_some(again)
    })
    .await;
    let before = kept(&pool);
    assert!(!pool.status.as_ref().unwrap().enis.is_empty());

    let down = ErrorRule {
        action: Some("DescribeInstances".into()),
        code: "InternalError".into(),
        status: 0,
        probability: 1.0,
        count: None,
        html: false,
    };
    env.sim.set_faults(FaultConfig { errors: vec![down], ..Default::default() });
    let failed =
        |p: &ENIPool| condition(p, "EC2Synced") == Some(("False".into(), "Transient".into()));
    let pool = env.wait_pool("node-a", "EC2Synced=False (Transient)", T, failed).await;
    let msg = &pool.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "EC2Synced");
    assert!(msg.unwrap().message.contains("DescribeInstances"), "the message names the error");
    assert_eq!(kept(&pool), before, "ENIs, journal and agent report untouched");

    // A Warning Event with the category as reason, on the pool.
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let warning = wait_for("a Warning Event for the pool", T, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("Transient")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("node-a")
        })
    })
    .await;
    assert_eq!(warning.regarding.as_ref().unwrap().kind.as_deref(), Some("ENIPool"));
    assert!(warning.note.as_deref().unwrap_or("").contains("DescribeInstances"));

    // Reconciles retried while EC2 keeps failing write nothing more (no write storm): each edit
    // of the pool's metadata wakes a reconcile that meets the failure again.
    env.kube.clear_audit();
    let pools = env.pools();
    for i in 0..3 {
        let injected = env.sim.counters()["DescribeInstances"].injected;
        let patch = json!({"metadata": {"annotations": {"test/poke": i.to_string()}}});
        pools.patch("node-a", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        wait_for("a retried reconcile", T, || async {
            (env.sim.counters()["DescribeInstances"].injected > injected).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_writes(&env, "node-a"), 0, "a failure already shown is not written again");
    let pool = env.pool("node-a").await.unwrap();
    assert!(failed(&pool));
    assert_eq!(kept(&pool), before);
    let warnings = events.list(&ListParams::default()).await.unwrap().items;
    let ours = warnings
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Transient"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("node-a"))
        .collect::<Vec<_>>();
    assert_eq!(ours.len(), 1, "one Event for the outage: {ours:?}");
    assert!(ours[0].series.is_none(), "rate-limited, not re-sent on every retry: {ours:?}");

    // EC2 answers again: synced, Ready, nothing else changed.
    env.sim.set_faults(FaultConfig::default());
    let pool = env
        .wait_pool("node-a", "EC2Synced=True again", T, |p| {
            condition(p, "EC2Synced").is_some_and(|(s, _)| s == "True") && is_ready(p)
        })
        .await;
    assert_eq!(kept(&pool), before, "ENIs, journal and agent report untouched");
    op.abort();
}
