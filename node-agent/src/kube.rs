//! The agent's Kubernetes side, scoped to its own node: watches on its ENIPool and its Node (field
//! selector `metadata.name`) that program the node and ENIs and feed the allocator, a watch on pods bound to the node
//! (pending demand), and the debounced server-side-apply publisher of `status.agent`.

use crate::agent::Agent;
use crate::error::{Error, Result};
use crate::program::{HostSettings, Programmer};
use crate::report::Report;
use crate::store::verify::Published;
use enipool_crds::{AgentStatus, ENIPool, ENIPoolStatus, Releasable, AGENT_FIELD_MANAGER};
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings of the Kubernetes side.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    pub node_name: String,
    pub mtu: u32,
    pub snat_exclude: Vec<Ipv4Net>,
    pub external_snat: bool,
    /// Source-port selection of the SNAT rule.
    pub snat_ports: crate::hostnet::SnatPorts,
    /// IPv6 clusters: the pods' node-local IPv4 range.
    pub ipv4_egress: Ipv4Net,
    pub debounce: Duration,
    /// Period of the host repair (zero: only on rule and route removals).
    pub repair_interval: Duration,
}

/// What the agent takes from its Node object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub exists: bool,
    /// Its first `InternalIP` (fallback SNAT source while the ENIPool lacks the primary IP).
    pub internal_ip: Option<std::net::Ipv4Addr>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

/// The first usable ENIPool, as the start-up store check needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolArrived {
    /// Its `status.agent`: what this node's agent last published (`None`: nothing yet).
    pub published: Option<Published>,
}

/// Facts from a Node object.
pub fn node_facts(n: &Node) -> NodeFacts {
    NodeFacts {
        exists: true,
        internal_ip: n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse().ok()),
        deleting: n.metadata.deletion_timestamp.is_some(),
    }
}

/// Watch the node's own ENIPool and Node, both by name (field selector `metadata.name`); program
/// node and ENIs and hand the view to the agent whenever either changes. The first usable status
/// goes to `ready_tx` with what it says this node's agent published. Returns when a watch stream
/// ends (the caller exits: the DaemonSet restarts us).
pub async fn watch_pool(
    client: kube::Client,
    agent: Arc<Agent>,
    cfg: KubeConfig,
    ready_tx: tokio::sync::watch::Sender<Option<PoolArrived>>,
) -> Result<()> {
    let by_name = || watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name));
    let pools: Api<ENIPool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let mut pool_stream = watcher(pools, by_name()).default_backoff().boxed();
    let mut node_stream = watcher(nodes, by_name()).default_backoff().boxed();
    let settings = HostSettings {
        mtu: cfg.mtu,
        snat_exclude: cfg.snat_exclude.clone(),
        external_snat: cfg.external_snat,
        snat_ports: cfg.snat_ports,
        ipv4_egress: Some(cfg.ipv4_egress),
    };
    let programmer = Arc::new(std::sync::Mutex::new(Programmer::new(settings)));
    let mut status: Option<ENIPoolStatus> = None;
    let mut pool_uid = String::new();
    let mut facts = NodeFacts::default();
    let mut warned_missing = false;
    // The host repair: on its period, and shortly after the kernel reports a rule or route
    // removal (coalescing a burst, such as a DEL's, into one check).
    let mut removals = agent.host().removals();
    let mut period = (!cfg.repair_interval.is_zero()).then(|| {
        let mut i = tokio::time::interval(cfg.repair_interval);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let soon = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(soon);
    let mut repair_due = false;
    loop {
        tokio::select! {
            _ = async { period.as_mut().unwrap().tick().await }, if period.is_some() => {
                repair_host(&agent, &programmer).await;
                continue;
            }
            r = async { removals.as_mut().unwrap().changed().await }, if removals.is_some() => {
                match r {
                    Ok(()) if !repair_due => {
                        repair_due = true;
                        soon.as_mut().reset(tokio::time::Instant::now() + REPAIR_COALESCE);
                    }
                    Ok(()) => {}
                    Err(_) => removals = None,
                }
                continue;
            }
            _ = &mut soon, if repair_due => {
                repair_due = false;
                if let Some(r) = removals.as_mut() {
                    r.borrow_and_update();
                }
                repair_host(&agent, &programmer).await;
                continue;
            }
            ev = pool_stream.next() => match ev {
                None => return Err(Error::Stopped("ENIPool watch stream ended".into())),
                Some(Err(e)) => {
                    tracing::warn!(error = &e as &dyn std::error::Error, "ENIPool watch");
                    continue;
                }
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                    if p.status.is_none() {
                        tracing::info!(pool = %cfg.node_name, "ENIPool has no status yet (operator has not synced the node)");
                    }
                    pool_uid = p.metadata.uid.clone().unwrap_or_default();
                    status = p.status;
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    // Keep serving the last view: pods in use keep their addresses (invariant: a
                    // lost address is an alarm, not a release, docs/design.md).
                    tracing::warn!(pool = %cfg.node_name, "ENIPool deleted; keeping the last view");
                    continue;
                }
                Some(Ok(watcher::Event::Init)) => continue,
                Some(Ok(watcher::Event::InitDone)) => {
                    if status.is_none() && !warned_missing {
                        warned_missing = true;
                        tracing::warn!(pool = %cfg.node_name, "no ENIPool named after this node yet; waiting for the operator (STATUS answers not ready)");
                    }
                    continue;
                }
            },
            ev = node_stream.next() => match ev {
                None => return Err(Error::Stopped("Node watch stream ended".into())),
                Some(Err(e)) => {
                    tracing::warn!(error = &e as &dyn std::error::Error, "Node watch");
                    continue;
                }
                Some(Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n))) => {
                    let f = node_facts(&n);
                    if f == facts {
                        continue;
                    }
                    if f.deleting && !facts.deleting {
                        tracing::warn!(node = %cfg.node_name, "Node is being deleted");
                    }
                    tracing::info!(node = %cfg.node_name, internal_ip = ?f.internal_ip, "Node observed");
                    facts = f;
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    tracing::warn!(node = %cfg.node_name, "Node object deleted");
                    facts = NodeFacts::default();
                    continue;
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => continue,
            },
        }
        let Some(st) = status.clone() else { continue };
        let arrived = PoolArrived { published: st.agent.as_ref().map(Published::from_status) };
        let (a, p, fallback) = (agent.clone(), programmer.clone(), facts.internal_ip);
        let (pool, uid) = (cfg.node_name.clone(), pool_uid.clone());
        let r = tokio::task::spawn_blocking(move || {
            p.lock().unwrap_or_else(|e| e.into_inner()).apply_status(&a, &pool, &uid, &st, fallback)
        })
        .await;
        let first = |v: &mut Option<PoolArrived>| {
            if v.is_some() {
                return false;
            }
            *v = Some(arrived);
            true
        };
        match r {
            // Logged and counted by apply_status; startup keeps waiting for a usable status.
            Ok(Err(_)) => {}
            Ok(Ok(())) => {
                ready_tx.send_if_modified(first);
            }
            Err(e) => {
                tracing::error!(%e, "host programming task");
                ready_tx.send_if_modified(first);
            }
        }
    }
}

/// How long after a rule or route removal the repair runs: a DEL removes several at once.
const REPAIR_COALESCE: Duration = Duration::from_secs(1);

/// One host repair on a blocking thread; failures are logged (the next one tries again).
async fn repair_host(agent: &Arc<Agent>, programmer: &Arc<std::sync::Mutex<Programmer>>) {
    let (a, p) = (agent.clone(), programmer.clone());
    let r =
        tokio::task::spawn_blocking(move || p.lock().unwrap_or_else(|e| e.into_inner()).repair(&a))
            .await;
    match r {
        Ok(Ok(done)) if done != Default::default() => {
            tracing::info!(
                node = done.node,
                enis = done.enis,
                pods = done.pods,
                "host repair done"
            );
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = &e as &dyn std::error::Error, "host repair"),
        Err(e) => tracing::error!(%e, "host repair task"),
    }
}

/// The JSON patch that removes every taint with `key` from `taints` (the Node's `spec.taints`),
/// guarded by a test of the whole list so that a concurrent change of the taints fails the patch
/// instead of being overwritten; `None` when no taint has that key.
pub fn untaint_patch(taints: &[serde_json::Value], key: &str) -> Option<serde_json::Value> {
    let keep: Vec<&serde_json::Value> = taints.iter().filter(|t| t["key"] != key).collect();
    (keep.len() != taints.len()).then(|| {
        serde_json::json!([
            {"op": "test", "path": "/spec/taints", "value": taints},
            {"op": "replace", "path": "/spec/taints", "value": keep},
        ])
    })
}

/// Remove the startup taint `key` from this node's Node. `Ok(true)` when it was removed,
/// `Ok(false)` when the Node does not carry it.
pub async fn remove_startup_taint(client: kube::Client, node: &str, key: &str) -> Result<bool> {
    let api: Api<Node> = Api::all(client);
    let n = api.get(node).await.map_err(|source| Error::Kube { op: "get Node", source })?;
    let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
    let taints: Vec<serde_json::Value> =
        taints.iter().map(|t| serde_json::to_value(t).unwrap_or_default()).collect();
    let Some(patch) = untaint_patch(&taints, key) else { return Ok(false) };
    let patch: json_patch::Patch = serde_json::from_value(patch)
        .map_err(|e| Error::Stopped(format!("startup taint patch: {e}")))?;
    api.patch(node, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|source| Error::Kube { op: "remove the startup taint", source })?;
    Ok(true)
}

/// Pods bound to this node that show no address yet, as `namespace/name`.
pub type WaitingPods = Arc<Mutex<BTreeSet<String>>>;

/// Watch pods bound to this node and keep the set of those still waiting for an address.
pub async fn watch_pods(
    client: kube::Client,
    node: String,
    pending: WaitingPods,
    agent: Arc<Agent>,
) -> Result<()> {
    let api: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher(api, wc).default_backoff().boxed();
    let mut waiting: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut init: BTreeMap<String, Option<String>> = BTreeMap::new();
    let is_waiting = |p: &Pod| {
        let host_net = p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let st = p.status.as_ref();
        let no_ip = st.and_then(|s| s.pod_ip.as_ref()).is_none();
        let pending_phase = st.and_then(|s| s.phase.as_deref()).is_none_or(|ph| ph == "Pending");
        (!host_net && no_ip && pending_phase).then(|| {
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            format!("{ns}/{}", p.metadata.name.as_deref().unwrap_or_default())
        })
    };
    let key = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(p)) => {
                waiting.insert(key(&p), is_waiting(&p));
            }
            Ok(watcher::Event::Delete(p)) => {
                waiting.remove(&key(&p));
            }
            Ok(watcher::Event::Init) => init.clear(),
            Ok(watcher::Event::InitApply(p)) => {
                init.insert(key(&p), is_waiting(&p));
            }
            Ok(watcher::Event::InitDone) => waiting = std::mem::take(&mut init),
            Err(e) => {
                tracing::warn!(error = &e as &dyn std::error::Error, "pod watch");
                continue;
            }
        }
        let now: BTreeSet<String> = waiting.values().flatten().cloned().collect();
        let before = std::mem::replace(&mut *pending.lock().unwrap(), now.clone());
        if now.difference(&before).next().is_some() {
            agent.urgent.notify_one();
        } else {
            agent.changed.notify_one();
        }
    }
    Err(Error::Stopped("pod watch stream ended".into()))
}

/// The `status.agent` block for a report. A waiting pod the agent already serves is not demand:
/// the kubelet writes a pod's address seconds after its ADD, and counting such pods on top of
/// `inUse` would make a burst grow the pool by twice its size.
pub fn agent_status(r: &Report, waiting: &BTreeSet<String>) -> AgentStatus {
    let unserved = waiting.difference(&r.served_pods).count();
    AgentStatus {
        boot_id: r.boot_id.clone(),
        epoch: r.epoch as i64,
        observed_revision: r.observed_revision,
        ready_enis: r.ready_enis.clone(),
        in_use: r.in_use as i32,
        pending_pods: unserved.max(r.refused_adds) as i32,
        cooling: r.cooling as i32,
        releasable: r.offer.as_ref().map(|(rev, items)| Releasable {
            revision: *rev,
            ips: items
                .iter()
                .filter(|n| n.prefix_len() == 32)
                .map(|n| n.addr().to_string())
                .collect(),
            prefixes: items
                .iter()
                .filter(|n| n.prefix_len() != 32)
                .map(|n| n.to_string())
                .collect(),
        }),
        last_heartbeat: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        )),
        orphaned_in_use: r.orphaned.clone(),
    }
}

/// Publish `status.agent` with server-side apply: at once when woken urgently (demand, offer, the
/// store checked), otherwise at most once per debounce, and at least every 30 s as a heartbeat.
/// Nothing before the store was checked, nor while the agent refuses to serve: the status keeps
/// what the agent published last, the witness the next start's check compares with. No force: the
/// agent is the only manager of `status.agent`, so a conflict is a bug to surface, not override.
pub async fn publish(
    client: kube::Client,
    agent: Arc<Agent>,
    node: String,
    pending: WaitingPods,
    debounce: Duration,
) -> Result<()> {
    let api: Api<ENIPool> = Api::all(client);
    let pp = PatchParams::apply(AGENT_FIELD_MANAGER);
    let mut last: Option<serde_json::Value> = None;
    let mut last_sent = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = agent.urgent.notified() => {}
            _ = async { agent.changed.notified().await; tokio::time::sleep(debounce).await } => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        if !agent.publishable() {
            continue;
        }
        let a = agent.clone();
        let report = tokio::task::spawn_blocking(move || a.report()).await.unwrap_or_default();
        let waiting = pending.lock().unwrap().clone();
        let mut st = agent_status(&report, &waiting);
        let mut cmp = serde_json::to_value(&st).unwrap_or_default();
        cmp["lastHeartbeat"] = serde_json::Value::Null;
        if last.as_ref() == Some(&cmp) && last_sent.elapsed() < Duration::from_secs(30) {
            continue;
        }
        st.last_heartbeat = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let patch = serde_json::json!({
            "apiVersion": "enipool.io/v1alpha1",
            "kind": "ENIPool",
            "status": { "agent": st },
        });
        match api.patch_status(&node, &pp, &Patch::Apply(&patch)).await {
            Ok(_) => {
                agent.metrics().status_patch("ok");
                last = Some(cmp);
                last_sent = tokio::time::Instant::now();
            }
            Err(e) => {
                agent.metrics().status_patch("error");
                tracing::warn!(error = &e as &dyn std::error::Error, "publishing status.agent");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_the_startup_taint_is_removed_and_only_from_the_list_seen() {
        let ready =
            serde_json::json!({"key": "enipool.io/agent-not-ready", "effect": "NoSchedule"});
        let other = serde_json::json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"});
        let p = untaint_patch(&[other.clone(), ready.clone()], "enipool.io/agent-not-ready");
        assert_eq!(
            p.unwrap(),
            serde_json::json!([
                {"op": "test", "path": "/spec/taints", "value": [other.clone(), ready]},
                {"op": "replace", "path": "/spec/taints", "value": [other.clone()]},
            ])
        );
        assert_eq!(untaint_patch(&[other], "enipool.io/agent-not-ready"), None);
        assert_eq!(untaint_patch(&[], "enipool.io/agent-not-ready"), None);
    }

    #[test]
    fn pods_served_but_not_yet_showing_their_address_are_not_demand() {
        let r = Report {
            in_use: 2,
            served_pods: set(&["default/a", "default/b"]),
            ..Default::default()
        };
        let st = agent_status(&r, &set(&["default/a", "default/b", "default/c"]));
        assert_eq!((st.in_use, st.pending_pods), (2, 1));
        // Refused ADDs count when the pod watch has not seen those pods yet.
        let refused = Report { refused_adds: 3, ..r };
        assert_eq!(agent_status(&refused, &set(&["default/a"])).pending_pods, 3);
    }
}
