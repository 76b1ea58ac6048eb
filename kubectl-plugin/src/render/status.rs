//! `kubectl enipool status`: the cluster at a glance.

use super::{condition, table, why, ClusterView, Thresholds};
use enipool_crds::conditions::{CAPACITY_EXHAUSTED, READY, THROTTLED};
use enipool_crds::summary::{is_true, summarize};
use enipool_crds::ENIPool;
use kube::ResourceExt;
use std::collections::BTreeMap;

pub fn render(view: &ClusterView, t: &Thresholds) -> String {
    let mut pools: Vec<&ENIPool> = view.pools.iter().collect();
    pools.sort_by_key(|p| p.name_any());
    let mut out = String::new();
    out.push_str(&subnets(view));
    out.push_str(&near_capacity(&pools, t));
    out.push_str(&not_ready(&pools));
    out.push_str(&growth(&pools));
    out.push_str(&throttled(&pools));
    out
}

/// Per zone and subnet: free addresses in EC2 (policy status) and what the pools hold there.
fn subnets(view: &ClusterView) -> String {
    // (zone, subnet) → (free in EC2, exhausted, policies, allocated by pools, pools)
    #[derive(Default)]
    struct Row {
        free: Option<i32>,
        exhausted: bool,
        allocated: i32,
        nodes: usize,
    }
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for policy in &view.policies {
        for s in policy.status.iter().flat_map(|st| &st.subnets) {
            let row = rows.entry((s.zone.clone(), s.id.clone())).or_default();
            // Several policies may list one subnet; the smallest count is the most recent fear.
            row.free = Some(row.free.map_or(s.available_ips, |f| f.min(s.available_ips)));
            row.exhausted |= s.exhausted;
        }
    }
    for pool in &view.pools {
        let Some(st) = &pool.status else { continue };
        let zone = st.instance.as_ref().map(|i| i.zone.clone()).unwrap_or_default();
        let mut seen = Vec::new();
        for eni in &st.enis {
            let row = rows.entry((zone.clone(), eni.subnet_id.clone())).or_default();
            row.allocated += eni.ips.len() as i32 + 16 * eni.prefixes.len() as i32;
            if !seen.contains(&eni.subnet_id) {
                seen.push(eni.subnet_id.clone());
                row.nodes += 1;
            }
        }
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|((zone, subnet), r)| {
            vec![
                or_dash(zone),
                subnet,
                r.free.map_or("-".to_string(), |f| f.to_string()),
                if r.exhausted { "yes" } else { "no" }.to_string(),
                r.nodes.to_string(),
                r.allocated.to_string(),
            ]
        })
        .collect();
    let mut out = String::from("SUBNETS (free addresses as the operator last saw them in EC2)\n");
    if rows.is_empty() {
        out.push_str("  none known\n");
    } else {
        out.push_str(&table(
            &["ZONE", "SUBNET", "FREE", "EXHAUSTED", "NODES", "POOL-ADDRESSES"],
            &rows,
        ));
    }
    out
}

fn near_capacity(pools: &[&ENIPool], t: &Thresholds) -> String {
    let mut rows = Vec::new();
    for pool in pools {
        let Some(st) = &pool.status else { continue };
        let max = st.effective.as_ref().map(|e| e.capacity.max_pod_ips).unwrap_or(0);
        let s = summarize(st);
        let exhausted = is_true(&st.conditions, CAPACITY_EXHAUSTED);
        let near = max > 0 && s.in_use * 100 >= max * t.near_capacity_percent;
        if near || exhausted {
            rows.push(vec![
                pool.name_any(),
                s.in_use.to_string(),
                s.allocated.to_string(),
                max.to_string(),
                s.enis,
                if exhausted {
                    why(condition(&st.conditions, CAPACITY_EXHAUSTED))
                } else {
                    "-".into()
                },
            ]);
        }
    }
    section(
        &format!(
            "NODES NEAR CAPACITY (in use >= {}% of the node's maximum)",
            t.near_capacity_percent
        ),
        &["NODE", "IN-USE", "ALLOCATED", "MAX", "ENIS", "CAPACITY-EXHAUSTED"],
        rows,
    )
}

fn not_ready(pools: &[&ENIPool]) -> String {
    let mut rows = Vec::new();
    for pool in pools {
        let conditions = pool.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or(&[]);
        let ready = condition(conditions, READY);
        if ready.is_some_and(|c| c.status == "True") {
            continue;
        }
        let status = ready.map_or("Unknown".to_string(), |c| c.status.clone());
        rows.push(vec![pool.name_any(), status, why(ready)]);
    }
    section("POOLS NOT READY", &["NODE", "READY", "WHY"], rows)
}

fn growth(pools: &[&ENIPool]) -> String {
    let mut rows = Vec::new();
    for pool in pools {
        let Some(st) = &pool.status else { continue };
        let target = st.target.as_ref().map(|t| t.ips).unwrap_or(0);
        let allocated = summarize(st).allocated;
        let pending = st.agent.as_ref().map(|a| a.pending_pods).unwrap_or(0);
        if target > allocated || pending > 0 {
            let reason = st.target.as_ref().map(|t| t.reason.clone()).unwrap_or_default();
            rows.push(vec![
                pool.name_any(),
                allocated.to_string(),
                target.to_string(),
                or_dash(reason),
                pending.to_string(),
                st.operations.len().to_string(),
            ]);
        }
    }
    section(
        "PENDING GROWTH (target above allocated, or pods waiting for an address)",
        &["NODE", "ALLOCATED", "TARGET", "TARGET-REASON", "PENDING-PODS", "EC2-CALLS-IN-FLIGHT"],
        rows,
    )
}

fn throttled(pools: &[&ENIPool]) -> String {
    let mut rows = Vec::new();
    for pool in pools {
        let conditions = pool.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or(&[]);
        if is_true(conditions, THROTTLED) {
            rows.push(vec![pool.name_any(), why(condition(conditions, THROTTLED))]);
        }
    }
    section("THROTTLED BY EC2", &["NODE", "WHY"], rows)
}

fn section(title: &str, header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut out = format!("\n{title}\n");
    if rows.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&table(header, &rows));
    }
    out
}

fn or_dash(s: String) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s
    }
}
