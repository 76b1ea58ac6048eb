//! The agent's Kubernetes side, scoped to its own node: a watch on its ENIPool (field selector
//! `metadata.name`) that programs ENIs and feeds the allocator, a watch on pods bound to the node
//! (pending demand), and the debounced server-side-apply publisher of `status.agent`.

use crate::agent::{Agent, Report};
use crate::error::{Error, Result};
use crate::hostnet::{EniConfig, NodeConfig};
use crate::pool::PoolView;
use enipool_crds::{AgentStatus, ENIPool, Releasable, AGENT_FIELD_MANAGER};
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Settings of the Kubernetes side.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// This node.
    pub node_name: String,
    /// MTU for ENIs.
    pub mtu: u32,
    /// SNAT exclusions.
    pub snat_exclude: Vec<Ipv4Net>,
    /// External SNAT.
    pub external_snat: bool,
    /// Publish debounce.
    pub debounce: Duration,
}

/// Watch the node's ENIPool; program node and ENIs; hand the view to the agent. Returns when the
/// watch stream ends (the caller exits: the DaemonSet restarts us).
pub async fn watch_pool(
    client: kube::Client,
    agent: Arc<Agent>,
    cfg: KubeConfig,
    ready_tx: tokio::sync::watch::Sender<bool>,
) -> Result<()> {
    let api: Api<ENIPool> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name));
    let mut stream = watcher(api, wc).default_backoff().applied_objects().boxed();
    let mut ready: BTreeSet<String> = BTreeSet::new();
    let mut node_cfg: Option<NodeConfig> = None;
    while let Some(ev) = stream.next().await {
        let pool = match ev {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = &e as &dyn std::error::Error, "ENIPool watch");
                continue;
            }
        };
        let Some(status) = pool.status.as_ref() else { continue };
        let view = PoolView::from_status(status, &BTreeSet::new());
        // Node-wide programming, whenever its inputs change.
        if let Some(primary_ip) = view.node_primary_ip {
            let want = NodeConfig {
                primary_mac: view.enis.iter().find(|e| e.device_index == 0).map(|e| e.mac.clone()),
                primary_ip,
                vpc_cidrs: view.vpc_cidrs.clone(),
                snat_exclude: cfg.snat_exclude.clone(),
                external_snat: cfg.external_snat,
            };
            if node_cfg.as_ref() != Some(&want) {
                let host = agent.host().clone();
                let w = want.clone();
                match tokio::task::spawn_blocking(move || host.setup_node(&w)).await {
                    Ok(Ok(())) => node_cfg = Some(want),
                    Ok(Err(e)) => tracing::error!(
                        error = &e as &dyn std::error::Error,
                        "programming node networking"
                    ),
                    Err(e) => tracing::error!(%e, "node setup task"),
                }
            }
        }
        // ENIs: the primary is the node's own link (never reconfigured); secondaries get a table.
        ready.retain(|id| view.enis.iter().any(|e| e.id == *id && e.attached));
        let todo: Vec<_> =
            view.enis.iter().filter(|e| e.attached && !ready.contains(&e.id)).cloned().collect();
        for e in &todo {
            if e.device_index == 0 {
                if node_cfg.is_some() {
                    ready.insert(e.id.clone());
                }
                continue;
            }
            let (Some(subnet), Some(gateway)) = (e.subnet, e.gateway()) else { continue };
            let ec = EniConfig {
                id: e.id.clone(),
                mac: e.mac.clone(),
                table: e.table(),
                subnet,
                gateway,
                primary_ip: e.primary_ip,
                mtu: cfg.mtu,
            };
            let host = agent.host().clone();
            match tokio::task::spawn_blocking(move || host.setup_eni(&ec)).await {
                Ok(Ok(())) => {
                    tracing::info!(eni = %e.id, table = e.table(), "ENI programmed");
                    ready.insert(e.id.clone());
                }
                Ok(Err(err)) => {
                    tracing::warn!(eni = %e.id, error = &err as &dyn std::error::Error, "ENI not programmed yet")
                }
                Err(err) => tracing::error!(%err, "ENI setup task"),
            }
        }
        let a = agent.clone();
        let v = PoolView::from_status(status, &ready);
        let _ = tokio::task::spawn_blocking(move || a.set_view(v)).await;
        let _ = ready_tx.send(true);
    }
    Err(Error::InvalidRequest("ENIPool watch stream ended".into()))
}

/// Watch pods bound to this node and count those still waiting for an address.
pub async fn watch_pods(
    client: kube::Client,
    node: String,
    pending: Arc<AtomicUsize>,
    agent: Arc<Agent>,
) -> Result<()> {
    let api: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher(api, wc).default_backoff().boxed();
    let mut waiting: BTreeMap<String, bool> = BTreeMap::new();
    let mut init: BTreeMap<String, bool> = BTreeMap::new();
    let is_waiting = |p: &Pod| {
        let host_net = p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let st = p.status.as_ref();
        let no_ip = st.and_then(|s| s.pod_ip.as_ref()).is_none();
        let pending_phase = st.and_then(|s| s.phase.as_deref()).is_none_or(|ph| ph == "Pending");
        !host_net && no_ip && pending_phase
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
        let n = waiting.values().filter(|w| **w).count();
        if pending.swap(n, Ordering::SeqCst) < n {
            agent.urgent.notify_one();
        } else {
            agent.changed.notify_one();
        }
    }
    Err(Error::InvalidRequest("pod watch stream ended".into()))
}

/// The `status.agent` block for a report.
pub fn agent_status(r: &Report, pending_pods: usize) -> AgentStatus {
    AgentStatus {
        boot_id: r.boot_id.clone(),
        epoch: r.epoch as i64,
        observed_revision: r.observed_revision,
        ready_enis: r.ready_enis.clone(),
        in_use: r.in_use as i32,
        pending_pods: pending_pods.max(r.refused_adds) as i32,
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

/// Publish `status.agent` with server-side apply: at once when woken urgently (demand, offer),
/// otherwise at most once per debounce, and at least every 30 s as a heartbeat. No force: the
/// agent is the only manager of `status.agent`, so a conflict is a bug to surface, not override.
pub async fn publish(
    client: kube::Client,
    agent: Arc<Agent>,
    node: String,
    pending: Arc<AtomicUsize>,
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
        let a = agent.clone();
        let report = tokio::task::spawn_blocking(move || a.report()).await.unwrap_or_default();
        let mut st = agent_status(&report, pending.load(Ordering::SeqCst));
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
