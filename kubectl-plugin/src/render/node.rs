//! `kubectl enipool node NAME`: one pool explained.

use super::{table, NodeView};
use enipool_crds::summary::summarize;
use enipool_crds::ENIPool;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// The annotation the agent writes with a pod's address (`--annotate-pod-ip`).
const POD_IP_ANNOTATION: &str = "enipool.io/pod-ips";

pub fn render(view: &NodeView) -> String {
    let pool = &view.pool;
    let mut out = header(pool);
    let Some(st) = &pool.status else {
        out.push_str("\nThe operator has not written a status for this pool yet.\n");
        return out;
    };
    let holders = holders(&view.pods);
    let ready: Vec<&String> = st.agent.iter().flat_map(|a| &a.ready_enis).collect();
    let releasing: Vec<&String> =
        st.releasing.iter().flat_map(|r| r.ips.iter().chain(&r.prefixes)).collect();

    out.push_str("\nENIS\n");
    if st.enis.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut enis: Vec<_> = st.enis.iter().collect();
        enis.sort_by_key(|e| e.device_index);
        let rows: Vec<Vec<String>> = enis
            .iter()
            .map(|e| {
                vec![
                    e.device_index.to_string(),
                    e.id.clone(),
                    format!("{:?}", e.state),
                    e.subnet_id.clone(),
                    if e.subnet_cidr.is_empty() { "-".into() } else { e.subnet_cidr.clone() },
                    e.ips.len().to_string(),
                    e.prefixes.len().to_string(),
                    if ready.contains(&&e.id) { "yes" } else { "no" }.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["DEVICE", "ENI", "STATE", "SUBNET", "CIDR", "IPS", "PREFIXES", "AGENT-READY"],
            &rows,
        ));
        out.push_str("\nADDRESSES\n");
        let mut rows = Vec::new();
        for e in &enis {
            for ip in e.ips.iter().chain(&e.prefixes) {
                let holder = match holders.get(ip.as_str()) {
                    Some(pod) => pod.clone(),
                    None if releasing.contains(&ip) => "(being released)".to_string(),
                    None => "-".to_string(),
                };
                rows.push(vec![ip.clone(), e.id.clone(), holder]);
            }
        }
        if rows.is_empty() {
            out.push_str("  none\n");
        } else {
            out.push_str(&table(&["ADDRESS", "ENI", "POD"], &rows));
        }
    }
    if let Some(a) = &st.agent {
        if !a.orphaned_in_use.is_empty() {
            out.push_str(&format!(
                "\nIn use by pods but missing from the ENIs (InconsistentState): {}\n",
                a.orphaned_in_use.join(", ")
            ));
        }
    }

    out.push_str("\nWAITING FOR (EC2 calls journaled and not finished)\n");
    if st.operations.is_empty() {
        out.push_str("  nothing\n");
    } else {
        let rows: Vec<Vec<String>> = st
            .operations
            .iter()
            .map(|o| {
                let on = if o.eni_id.is_empty() { o.items.join(",") } else { o.eni_id.clone() };
                vec![
                    format!("{:?}", o.kind),
                    if on.is_empty() { "-".into() } else { on },
                    o.count.to_string(),
                    o.started_at.0.to_string(),
                    o.attempts.to_string(),
                    if o.last_error.is_empty() { "-".into() } else { o.last_error.clone() },
                ]
            })
            .collect();
        out.push_str(&table(&["CALL", "ON", "COUNT", "STARTED", "ATTEMPTS", "LAST-ERROR"], &rows));
    }
    if let Some(r) = &st.release_request {
        let offered = st.agent.as_ref().and_then(|a| a.releasable.as_ref());
        if offered.is_none_or(|o| o.revision < r.revision) {
            out.push_str(&format!(
                "  the agent to offer {} addresses for release (request revision {})\n",
                r.count, r.revision
            ));
        }
    }
    if let Some(a) = &st.agent {
        if a.observed_revision < st.revision {
            out.push_str(&format!(
                "  the agent to apply revision {} (it has applied {})\n",
                st.revision, a.observed_revision
            ));
        }
    }

    out.push_str("\nCONDITIONS\n");
    if st.conditions.is_empty() {
        out.push_str("  none yet\n");
    } else {
        let rows: Vec<Vec<String>> = st
            .conditions
            .iter()
            .map(|c| vec![c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone()])
            .collect();
        out.push_str(&table(&["TYPE", "STATUS", "REASON", "MESSAGE"], &rows));
    }
    out
}

fn header(pool: &ENIPool) -> String {
    let mut out = format!("Node:      {}\nInstance:  {}\n", pool.name_any(), pool.spec.instance_id);
    let Some(st) = &pool.status else { return out };
    if let Some(i) = &st.instance {
        out.push_str(&format!("Type:      {} in {}\n", i.instance_type, i.zone));
    }
    let policy = st.policy.as_deref().filter(|p| !p.is_empty()).unwrap_or("(defaults)");
    out.push_str(&format!("Policy:    {policy}\nMode:      {}\n", pool.mode().as_str()));
    let s = summarize(st);
    let target =
        st.target.as_ref().map_or("-".to_string(), |t| format!("{} ({})", t.ips, t.reason));
    out.push_str(&format!(
        "Addresses: {} allocated, {} in use, {} available, {} cooling, {} releasing; target {}\n",
        s.allocated, s.in_use, s.available, s.cooling, s.releasing, target
    ));
    if let Some(a) = &st.agent {
        out.push_str(&format!("Pending:   {} pods waiting for an address\n", a.pending_pods));
    }
    if pool.spec.paused {
        out.push_str("Paused:    yes (no EC2 changes for this node)\n");
    }
    out
}

/// Address → `namespace/name` of the pod holding it, from the pod's status or the agent's
/// annotation (host-network pods share the node's address and are skipped).
fn holders(pods: &[Pod]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pod in pods {
        if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
            continue;
        }
        let who = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        let from_status =
            pod.status.iter().flat_map(|s| s.pod_ips.iter().flatten()).map(|p| p.ip.clone());
        let from_annotation = pod.annotations().get(POD_IP_ANNOTATION).cloned();
        for ip in from_status.chain(from_annotation) {
            out.insert(ip, who.clone());
        }
    }
    out
}
