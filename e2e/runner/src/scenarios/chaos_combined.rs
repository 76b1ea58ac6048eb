//! Several failures in one run, with pods coming and going throughout: the Kubernetes API stops
//! answering the agents and then the operator's leader, EC2 Describe calls fail now and then, and
//! a node's agent restarts while its pods are deleted and again while its pool is released. At
//! the end both promises hold: no address held by two pods, no ENI leaked.

use super::chaos::{leader, pods_intact};
use super::real::{env, pools_match_ec2_check};
use super::sizing::{burst, ec2_view};
use super::{all_pools_ready, with_cluster, SETTLE};
use crate::Target;
use anyhow::{ensure, Context, Result};
use cluster::{wait, Cluster, NodeInfo, Spec};
use ec2sim::{ErrorRule, FaultConfig};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Injected Describe failures: (action, EC2 error code, how many). Each call fails with
/// probability one half while the chaos runs, so the failures spread over it; those chance left
/// over fail the next calls after it. The operator describes a pool's instance about every 30 s
/// (a leader that took over, at once): a few calls per minute across the nodes, so fewer of
/// those are asked to fail.
const DESCRIBE_FAULTS: [(&str, &str, u32); 2] = [
    ("DescribeNetworkInterfaces", "InternalError", 8),
    ("DescribeInstances", "ServiceUnavailable", 2),
];
/// How long the agents' user gets no answer.
const AGENT_STALL: Duration = Duration::from_secs(5);
/// The leader stays cut off this long after the Lease has moved, so that its held renewals and
/// writes land late, on a Lease someone else holds.
const LEADER_STALL_AFTER_MOVE: Duration = Duration::from_secs(3);
/// The platform's Lease lasts 6 s (cluster/node.rs): a standby takes over well within this.
const TAKEOVER: Duration = Duration::from_secs(30);
/// Pods of the burst on the chaos node (beyond its primary ENI), and how many of them stay.
const BURST: usize = 14;
const KEEP: usize = 2;
/// Churn pods alive at once across the nodes.
const CHURN_LIVE: usize = 4;
/// The policy's warm addresses (`Spec::new`).
const WARM: i32 = 2;

/// What the run injected, to prove it was not vacuous.
struct Injected {
    /// (old, new) Lease holder, when the API stalls could be injected.
    leader_moved: Option<(String, String)>,
    /// Agent restarts on the chaos node.
    agent_restarts: i64,
}

pub async fn combined(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("chaos-combined", 2), |c| {
        Box::pin(async move {
            all_pools_ready(c).await?;
            let stalls = c.kube.is_local();
            if !stalls {
                println!(
                    "    NOT INJECTED: the Kubernetes API stalls (the agents' and the operator \
                     leader's connections frozen): this Kubernetes API is not the platform's own \
                     (--kubeconfig) and cannot freeze one client. Injected: EC2 Describe failures, \
                     agent restarts, pod churn."
                );
            }
            let before = c.sim().counters();
            c.sim().set_faults(describe_faults());
            let stop = AtomicBool::new(false);
            let churned = AtomicUsize::new(0);
            let chaos = async {
                let r = script(c, stalls).await;
                stop.store(true, Ordering::SeqCst);
                r
            };
            let (injected, churn) = tokio::join!(chaos, churn(c, &stop, &churned));
            churn.context("pod churn")?;
            let injected = injected?;
            // Every injected Describe failure happened (and none is left for the audit's reads).
            c.sim().fire_remaining_faults();
            wait::poll("every injected EC2 Describe failure to have fired", SETTLE, || async {
                let now = c.sim().counters();
                for (action, _, n) in DESCRIBE_FAULTS {
                    let b = before.get(action).map_or(0, |a| a.injected);
                    let got = now.get(action).map_or(0, |a| a.injected) - b;
                    ensure!(got == u64::from(n), "{action}: {got} of {n} failures injected");
                }
                Ok(())
            })
            .await?;
            c.sim().set_faults(FaultConfig::default());
            // The restarts really happened: each start bumps the agent's epoch.
            let node = c.nodes()[0].name.clone();
            let want = 1 + injected.agent_restarts;
            wait::poll(&format!("{node}'s agent at epoch {want}"), SETTLE, || async {
                let epoch = c.pool(&node).await?.status.and_then(|s| s.agent).map(|a| a.epoch);
                ensure!(epoch == Some(want), "epoch {epoch:?}");
                Ok(())
            })
            .await?;
            settled(c).await?;
            pods_intact(c).await?;
            pools_match_ec2_check(&env::platform(c).await).await?;
            let moved = match &injected.leader_moved {
                Some((old, new)) => format!("leader {old} -> {new}"),
                None => "no API stall (not the platform's API)".into(),
            };
            let faults: Vec<String> =
                DESCRIBE_FAULTS.iter().map(|(a, code, n)| format!("{n} {a} {code}")).collect();
            println!(
                "    injected {}; {moved}; {} agent restarts; {} churn pods",
                faults.join(", "),
                injected.agent_restarts,
                churned.load(Ordering::SeqCst)
            );
            Ok(())
        })
    })
    .await
}

fn describe_faults() -> FaultConfig {
    FaultConfig {
        errors: DESCRIBE_FAULTS
            .iter()
            .map(|(action, code, n)| ErrorRule {
                action: Some(action.to_string()),
                code: code.to_string(),
                status: 0,
                probability: 0.5,
                count: Some(*n),
                html: false,
            })
            .collect(),
        ..Default::default()
    }
}

/// The failures on the first node, in order: agents cut off from the API; the leader cut off
/// while a burst of pods needs a new ENI; the agent killed while most of the burst is deleted;
/// the agent stopped again while the operator asks it to give addresses back.
async fn script(c: &Cluster, stalls: bool) -> Result<Injected> {
    let n = c.nodes()[0].clone();
    if stalls {
        let agents = c.agent_identity.as_ref().context("no agent identity")?.user();
        c.kube.freeze_user(&agents, true)?;
        tokio::time::sleep(AGENT_STALL).await;
        c.kube.freeze_user(&agents, false)?;
    }
    let old = wait::poll("a leader", SETTLE, || leader(c)).await?;
    let stall = async {
        if !stalls {
            return Ok(None);
        }
        c.kube.freeze_user(&old, true)?;
        let cut = Instant::now();
        let moved = wait::poll("the Lease to move off the cut-off leader", TAKEOVER, || async {
            let l = leader(c).await?;
            ensure!(l != old, "still held by {l}");
            Ok(l)
        })
        .await;
        if moved.is_ok() {
            tokio::time::sleep(LEADER_STALL_AFTER_MOVE).await;
        }
        c.kube.freeze_user(&old, false)?;
        let new = moved?;
        println!(
            "    leader {old} cut off from the API for {:.1?}; {new} took over",
            cut.elapsed()
        );
        Ok::<_, anyhow::Error>(Some((old.clone(), new)))
    };
    let (leader_moved, grown) = tokio::join!(stall, burst(c, "grow", &n.name, BURST));
    let leader_moved = leader_moved?;
    let grown = grown?;
    ensure!(ec2_view(c, &n.instance_id).0 >= 2, "the burst on {} made no new ENI", n.name);
    // Most of the burst goes; the agent is killed amid the deletes (the shim journals the DELs).
    let deletes = async {
        for p in &grown[KEEP..] {
            c.delete_pod(p).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<(), anyhow::Error>(())
    };
    let kill = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.kill9_agent(&n).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.start_agent(&n).await?;
        Ok::<i64, anyhow::Error>(1)
    };
    let (d, k) = tokio::join!(deletes, kill);
    let mut agent_restarts = k?;
    d?;
    restart_during_release(c, &n).await?;
    agent_restarts += 1;
    Ok(Injected { leader_moved, agent_restarts })
}

/// Waits for the operator to ask the agent of `n` to offer addresses back (the pool shrinks
/// after the release delay), then stops the agent gracefully and starts it again.
async fn restart_during_release(c: &Cluster, n: &NodeInfo) -> Result<()> {
    let what = format!("the operator to ask {}'s agent for addresses back", n.name);
    wait::until(&what, SETTLE, Duration::from_millis(50), || async {
        let st = c.pool(&n.name).await?.status.context("no status")?;
        let pending = st.release_request.as_ref().filter(|r| r.revision > st.released_revision);
        ensure!(pending.is_some(), "no pending release request");
        Ok(())
    })
    .await?;
    c.stop_agent(n).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.start_agent(n).await?;
    Ok(())
}

/// Pods created and deleted, alternating between the nodes, until `stop`: each gets its address
/// (retried as the kubelet does), and the oldest beyond [`CHURN_LIVE`] is deleted.
async fn churn(c: &Cluster, stop: &AtomicBool, made: &AtomicUsize) -> Result<()> {
    let nodes = c.nodes();
    let mut live = VecDeque::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("churn-{i}");
        c.create_pod(&name, &nodes[i % nodes.len()].name).await?;
        wait::poll(&format!("pod {name} to get an address"), SETTLE, || c.start_sandbox(&name))
            .await?;
        live.push_back(name);
        if live.len() > CHURN_LIVE {
            if let Some(old) = live.pop_front() {
                c.delete_pod(&old).await?;
            }
        }
        i += 1;
        made.store(i, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// Every node's pool back at its target (its pods plus the warm addresses), EC2 holding that
/// (one over at most, the release hysteresis), and the agent counting exactly its pods.
async fn settled(c: &Cluster) -> Result<()> {
    wait::poll("every pool shrunk back to its target", SETTLE * 2, || async {
        for n in c.nodes() {
            let pods = c.pods().iter().filter(|p| p.node == n.name).count() as i32;
            let st = c.pool(&n.name).await?.status.context("no status")?;
            let target = st.target.as_ref().map(|t| t.ips);
            let in_use = st.agent.as_ref().map(|a| a.in_use);
            let (enis, addrs, _) = ec2_view(c, &n.instance_id);
            let want = pods + WARM;
            ensure!(
                target == Some(want) && (want..=want + 1).contains(&(addrs as i32)),
                "{}: {pods} pods, target {target:?} (want {want}), EC2 holds {addrs} addresses \
                 on {enis} ENIs",
                n.name
            );
            ensure!(in_use == Some(pods), "{}: agent inUse {in_use:?}, {pods} pods", n.name);
        }
        Ok(())
    })
    .await
}
