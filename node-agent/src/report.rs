//! The agent's report: what the publisher writes into `status.agent` and the pool gauges show.
//! Plain data, apart from the agent that fills it, the Kubernetes side that publishes it and the
//! metrics that count it.

use ipnet::Ipv4Net;
use std::collections::BTreeSet;

/// What the publisher reports in `status.agent`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub epoch: u64,
    pub boot_id: String,
    pub observed_revision: i64,
    pub ready_enis: Vec<String>,
    pub in_use: usize,
    pub cooling: usize,
    pub available: usize,
    /// Refused ADDs in the demand window.
    pub refused_adds: usize,
    /// Pods holding an address, as `namespace/name` (when the runtime named them).
    pub served_pods: BTreeSet<String>,
    /// The current offer: revision and items.
    pub offer: Option<(i64, Vec<Ipv4Net>)>,
    /// Addresses in use that the pool no longer lists (alarm).
    pub orphaned: Vec<String>,
}
