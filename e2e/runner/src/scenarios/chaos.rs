//! Failures: agent kill -9 under load, operator leader kill, node termination, EC2 throttling.

use super::sizing::{burst, ec2_view};
use super::{all_pools_ready, check_pod_status_ips, mesh_ping, pool_ready, with_cluster, SETTLE};
use crate::Target;
use anyhow::{bail, ensure, Context, Result};
use cluster::{wait, Cluster, Spec};
use ec2sim::{FaultConfig, TokenBucketSpec};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Every pod's address is on its node's pool, unique, recorded in its Pod, and reachable from the
/// node (the host side of its wiring exists).
pub(super) async fn pods_intact(c: &Cluster) -> Result<()> {
    check_pod_status_ips(c).await?;
    for p in c.pods() {
        let Some(ip) = p.ip else { continue };
        let ns = c.node(&p.node)?.netns;
        let ok = wait::blocking(move || (0..3).any(|_| fabric::ping(&ns, ip))).await;
        ensure!(ok, "node {} cannot reach its pod {} at {ip}", p.node, p.name);
    }
    Ok(())
}

pub async fn agent_kill9(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("agent-kill9-under-load", 1), |c| {
        Box::pin(async move {
            let n = c.nodes()[0].clone();
            pool_ready(c, &n.name).await?;
            let steady = burst(c, "steady", &n.name, 5).await?;
            let before: BTreeMap<String, _> =
                steady.iter().map(|p| (p.clone(), c.pod(p).map(|x| x.ip))).collect();
            // Load: the kubelet keeps adding and deleting pods while the agent dies and returns.
            let load = async {
                for i in 0..16 {
                    let name = format!("load-{i}");
                    wait::poll(&format!("pod {name} to get an address"), SETTLE, || async {
                        if c.pod(&name).is_err() {
                            c.create_pod(&name, &n.name).await?;
                        }
                        c.start_sandbox(&name).await.map(drop)
                    })
                    .await?;
                    if i >= 3 {
                        // DEL while the agent is down goes to the shim's journal.
                        c.delete_pod(&format!("load-{}", i - 3)).await?;
                    }
                }
                Ok::<(), anyhow::Error>(())
            };
            let chaos = async {
                tokio::time::sleep(Duration::from_millis(700)).await;
                c.kill9_agent(&n).await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                c.start_agent(&n).await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                c.kill9_agent(&n).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                c.start_agent(&n).await?;
                Ok::<(), anyhow::Error>(())
            };
            let (l, k) = tokio::join!(load, chaos);
            k?;
            l?;
            for (p, ip) in &before {
                let now = c.pod(p)?.ip;
                ensure!(
                    Some(now) == ip.as_ref().ok().copied(),
                    "pod {p} changed address: {ip:?} -> {now:?}"
                );
            }
            pods_intact(c).await?;
            // Both restarts really happened: each start bumps the agent's epoch.
            wait::poll("the agent's epoch at 3 (two restarts)", SETTLE, || async {
                let epoch = c.pool(&n.name).await?.status.and_then(|s| s.agent).map(|a| a.epoch);
                ensure!(epoch == Some(3), "epoch {epoch:?}");
                Ok(())
            })
            .await?;
            // The agent's count matches the pods that exist (journaled DELs were drained).
            let want = c.pods().len() as i32;
            wait::poll(
                "the restarted agent's in-use count to match the running pods",
                SETTLE,
                || async {
                    let in_use =
                        c.pool(&n.name).await?.status.and_then(|s| s.agent).map(|a| a.in_use);
                    ensure!(in_use == Some(want), "inUse {in_use:?}, {want} pods run");
                    Ok(())
                },
            )
            .await?;
            let names: Vec<String> = c.pods().into_iter().map(|p| p.name).collect();
            mesh_ping(c, &names[..names.len().min(4)]).await
        })
    })
    .await
}

pub(super) async fn leader(c: &Cluster) -> Result<String> {
    use k8s_openapi::api::coordination::v1::Lease;
    let (ns, name) = (&c.names.lease_namespace, &c.names.lease_name);
    let api: kube::Api<Lease> = kube::Api::namespaced(c.client().clone(), ns);
    let l = api.get_opt(name).await?.with_context(|| format!("no Lease {ns}/{name}"))?;
    l.spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        .context("Lease without a holder")
}

/// ENIs in EC2 tagged for this cluster: (attached to instance, unattached).
fn tagged_enis(c: &Cluster) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let st = c.sim().snapshot();
    let mut attached: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut loose = Vec::new();
    for e in st.enis.values() {
        if e.tags.get(enipool_crds::tags::CLUSTER) != Some(&c.name) {
            continue;
        }
        match &e.attachment {
            Some(a) => attached.entry(a.instance_id.clone()).or_default().push(e.id.clone()),
            None => loose.push(e.id.clone()),
        }
    }
    (attached, loose)
}

/// A kill -9'd leader process: the standby takes the Lease, pods keep working, no ENI doubled or
/// leaked; the journal replay is `killed_mid_create_then_restarted_no_duplicate_no_leak`'s.
pub async fn leader_kill(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("operator-leader-kill", 1), |c| {
        Box::pin(async move {
            let n = c.nodes()[0].clone();
            pool_ready(c, &n.name).await?;
            let old = wait::poll("a leader", SETTLE, || leader(c)).await?;
            let old_proc = old.clone();
            ensure!(c.core.procs.running(&old_proc), "leader {old} is not one of our replicas");
            // Slow EC2 writes so the kill lands while a CreateNetworkInterface/Attach is in flight.
            let slow = FaultConfig {
                latency_ms: [("Mutate*".to_string(), 1500)].into(),
                ..Default::default()
            };
            c.sim().set_faults(slow);
            for i in 0..14 {
                c.create_pod(&format!("w-{i}"), &n.name).await?;
            }
            wait::poll("the leader to start creating an ENI", SETTLE, || async {
                let calls = c.sim().counters().get("CreateNetworkInterface").map_or(0, |a| a.calls);
                ensure!(calls > 0, "no CreateNetworkInterface yet");
                Ok(())
            })
            .await?;
            c.core.procs.kill9(&old_proc)?;
            let new =
                wait::poll("the standby to take the Lease", Duration::from_secs(30), || async {
                    let l = leader(c).await?;
                    ensure!(l != old, "still held by {l}");
                    Ok(l)
                })
                .await?;
            c.sim().set_faults(FaultConfig::default());
            for i in 0..14 {
                let name = format!("w-{i}");
                wait::poll(&format!("pod {name} to get an address"), SETTLE, || {
                    c.start_sandbox(&name)
                })
                .await?;
            }
            pool_ready(c, &n.name).await?;
            // No duplicate ENI (one secondary ENI for 14 pods) and none leaked once GC has run.
            wait::poll(
                "exactly one secondary ENI and no unattached tagged ENI",
                SETTLE,
                || async {
                    let (attached, loose) = tagged_enis(c);
                    let mine = attached.get(&n.instance_id).cloned().unwrap_or_default();
                    ensure!(
                        mine.len() == 1 && loose.is_empty(),
                        "attached {mine:?}, loose {loose:?}"
                    );
                    Ok(())
                },
            )
            .await?;
            let (enis, _, _) = ec2_view(c, &n.instance_id);
            ensure!(enis == 2, "{enis} ENIs on the instance");
            pods_intact(c).await?;
            // The killed replica comes back (its Deployment would restart it) as the standby.
            c.core.procs.restart(&old_proc)?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            ensure!(leader(c).await? == new, "the restarted replica took the Lease back");
            Ok(())
        })
    })
    .await
}

pub async fn node_terminated(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("node-terminated", 2), |c| {
        Box::pin(async move {
            all_pools_ready(c).await?;
            let nodes = c.nodes();
            let (keep, gone) = (&nodes[0], &nodes[1]);
            burst(c, "stay", &keep.name, 2).await?;
            burst(c, "doomed", &gone.name, 12).await?;
            pool_ready(c, &gone.name).await?;
            ensure!(
                ec2_view(c, &gone.instance_id).0 >= 2,
                "the doomed node should have a secondary ENI"
            );
            let enis: Vec<String> = c
                .sim()
                .snapshot()
                .enis
                .values()
                .filter(|e| {
                    e.attachment.as_ref().is_some_and(|a| a.instance_id == gone.instance_id)
                })
                .map(|e| e.id.clone())
                .collect();
            c.terminate_node(&gone.name).await?;
            wait::poll(
                "the terminated node's ENIs gone from EC2 and its ENIPool deleted",
                SETTLE,
                || async {
                    let st = c.sim().snapshot();
                    let left: Vec<_> = enis.iter().filter(|id| st.enis.contains_key(*id)).collect();
                    ensure!(left.is_empty(), "ENIs still in EC2: {left:?}");
                    let api: kube::Api<enipool_crds::ENIPool> = kube::Api::all(c.client().clone());
                    ensure!(
                        api.get_opt(&gone.name).await?.is_none(),
                        "ENIPool {} still exists",
                        gone.name
                    );
                    Ok(())
                },
            )
            .await?;
            let (_, loose) = tagged_enis(c);
            ensure!(loose.is_empty(), "unattached tagged ENIs left: {loose:?}");
            // The other node is untouched.
            pool_ready(c, &keep.name).await?;
            mesh_ping(c, &["stay-0".into(), "stay-1".into()]).await
        })
    })
    .await
}

/// Real processes converge within a time budget with throttled calls a minority; that a throttled
/// create is never repeated is `throttling_storm_converges_without_overshoot`'s.
pub async fn throttling_storm(t: Target) -> Result<()> {
    let mut spec = Spec::new("ec2-throttling-storm", 3);
    // A small account budget shared by everything: EC2 answers RequestLimitExceeded beyond it.
    let bucket = |capacity, refill_per_sec| TokenBucketSpec { capacity, refill_per_sec };
    spec.faults = FaultConfig {
        throttle: [
            ("Mutate*".to_string(), bucket(2.0, 0.5)),
            ("Describe*".to_string(), bucket(3.0, 1.0)),
        ]
        .into(),
        // On top, a third of all calls answered RequestLimitExceeded: the storm.
        errors: vec![ec2sim::ErrorRule {
            action: None,
            code: "RequestLimitExceeded".into(),
            status: 0,
            probability: 0.3,
            count: None,
            html: false,
        }],
        ..Default::default()
    };
    with_cluster(&t, spec, |c| {
        Box::pin(async move {
            all_pools_ready(c).await?;
            let started = Instant::now();
            let before = c.sim().counters();
            // A burst on every node at once: new ENIs everywhere.
            for (k, n) in c.nodes().iter().enumerate() {
                for i in 0..12 {
                    c.create_pod(&format!("n{k}-{i}"), &n.name).await?;
                }
            }
            for p in c.pods() {
                wait::poll(
                    &format!("pod {} to get an address", p.name),
                    Duration::from_secs(120),
                    || c.start_sandbox(&p.name),
                )
                .await?;
            }
            all_pools_ready(c).await?;
            let took = started.elapsed();
            ensure!(took < Duration::from_secs(120), "converged in {took:?}, budget 120 s");
            let after = c.sim().counters();
            let (mut total, mut throttled) = (0u64, 0u64);
            for (k, v) in &after {
                let b = before.get(k).copied().unwrap_or_default();
                total += v.calls - b.calls;
                throttled += (v.throttled - b.throttled) + (v.injected - b.injected);
            }
            // The operator paces itself: throttled calls stay a minority, no retry storm.
            println!("    {throttled} of {total} EC2 calls throttled; converged in {took:.1?}");
            ensure!(throttled > 0, "the storm never throttled a call ({total} calls): not a storm");
            if throttled * 2 > total {
                bail!("{throttled} of {total} EC2 calls throttled: the operator does not back off");
            }
            // Converged means the target is the demand (12 pods + 2 warm each) and EC2 holds it,
            // never more than target + batch (1). One address over the target is also where a
            // node may stay: a transient pending pod can raise the target by one, and an excess of
            // one is inside the release hysteresis (warmIPs / 2 = 1), which exists so such an
            // address is not released and re-assigned back and forth.
            wait::poll(
                "every node's EC2 allocation at its target of 14 (+ batch 1)",
                SETTLE,
                || async {
                    for n in c.nodes() {
                        let pool = c.pool(&n.name).await?;
                        let target = pool.status.and_then(|s| s.target).map(|t| t.ips);
                        let (enis, addrs, _) = ec2_view(c, &n.instance_id);
                        ensure!(
                            target == Some(14) && (14..=15).contains(&addrs),
                            "{}: target {target:?}, EC2 holds {addrs} addresses on {enis} ENIs",
                            n.name
                        );
                    }
                    Ok(())
                },
            )
            .await?;
            check_pod_status_ips(c).await
        })
    })
    .await
}
