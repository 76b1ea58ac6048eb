//! Text views of fetched objects. Pure: the same objects give the same text.

pub mod node;
pub mod status;

use enipool_crds::{ENIPool, ENIPoolPolicy};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// What `status` reads: every pool and every policy.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub pools: Vec<ENIPool>,
    pub policies: Vec<ENIPoolPolicy>,
}

/// What `node` reads: one pool and the pods bound to its node.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub pool: ENIPool,
    pub pods: Vec<Pod>,
}

/// When a node counts as near capacity.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// Addresses in use, as a percentage of the addresses the node can ever hold.
    pub near_capacity_percent: i32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { near_capacity_percent: 90 }
    }
}

pub(crate) fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `Reason: message`, or `no condition yet` when the operator never wrote one.
pub(crate) fn why(c: Option<&Condition>) -> String {
    match c {
        None => "no condition yet".to_string(),
        Some(c) if c.message.is_empty() => c.reason.clone(),
        Some(c) => format!("{}: {}", c.reason, c.message),
    }
}

/// Left-aligned columns separated by two spaces, header first.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let parts: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}", w = *w)).collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

#[cfg(test)]
mod tests;
