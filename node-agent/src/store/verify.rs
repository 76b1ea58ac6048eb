//! The start-up check of the store against the node, and the plan that rebuilds a store from the
//! host. Pure: every decision is a function of what the store held, what the agent last published
//! in its ENIPool, what the host shows and the boot id.
//!
//! A store that is missing, empty or older than the one the agent last ran with has forgotten
//! allocations that running pods may hold; serving from it would hand their addresses out again.
//! Two witnesses outlive the file. The epoch the agent published in `status.agent` only grows
//! (every start bumps the store's epoch before anything is published), so a store whose epoch is
//! below the published one is behind. And every running pod has a host veth with a /32 route to
//! its address, which the store must hold. The published allocation count is reported but decides
//! nothing: DELs after the last publication lower the store's count legitimately.

use super::{AllocKey, Allocation, Offer, Origin, State};
use crate::hostnet::HostPod;
use crate::pool::PoolView;
use enipool_crds::AgentStatus;
use ipnet::Ipv4Net;
use std::fmt;
use std::net::Ipv4Addr;

/// What the store held when it was opened, before this start bumped its epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    /// The file was missing or empty: a new store was initialised in it.
    pub created: bool,
    /// Its epoch (0: no agent ever started on it).
    pub epoch: u64,
    /// The boot id the last start recorded (empty when unknown).
    pub boot_id: String,
}

/// What the agent last published in its ENIPool's `status.agent`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Epoch of the agent that published.
    pub epoch: u64,
    pub boot_id: String,
    /// Addresses in use then.
    pub in_use: u64,
    /// The offer it made: revision and items. The operator may be releasing them.
    pub offer: Option<(i64, Vec<Ipv4Net>)>,
}

impl Published {
    /// From the status block. Items of the offer that do not parse are left out (the CRD's
    /// schema refuses them already).
    pub fn from_status(a: &AgentStatus) -> Published {
        Published {
            epoch: a.epoch.max(0) as u64,
            boot_id: a.boot_id.clone(),
            in_use: a.in_use.max(0) as u64,
            offer: a.releasable.as_ref().map(|r| {
                let ips =
                    r.ips.iter().filter_map(|s| s.parse::<Ipv4Addr>().ok()).map(Ipv4Net::from);
                let prefixes = r.prefixes.iter().filter_map(|s| s.parse::<Ipv4Net>().ok());
                (r.revision, ips.chain(prefixes).collect())
            }),
        }
    }
}

/// The outcome of the start-up check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The store agrees with the host and the published status: serve.
    Consistent,
    /// The store is behind the published status, but the node rebooted since it was published
    /// (no pod survives a reboot) and no pod is wired: nothing it forgot is running. Serve after
    /// raising the epoch above the published one and keeping the published offer out of use.
    Reseed,
    /// The store has forgotten allocations: refuse to serve unless a rebuild is allowed.
    Mismatch(Mismatch),
}

/// Why the store cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The file was missing or empty.
    pub created: bool,
    /// The store's epoch before this start.
    pub store_epoch: u64,
    /// The published epoch and in-use count, when the store is behind them.
    pub behind: Option<(u64, u64)>,
    /// Pods wired on the host whose address the store does not hold for their veth.
    pub untracked: Vec<HostPod>,
}

/// How many untracked pods a message names.
const NAMED: usize = 5;

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the allocation store does not match this node")?;
        let file = if self.created { " (the store file was missing or empty)" } else { "" };
        if let Some((epoch, in_use)) = self.behind {
            write!(
                f,
                ": store epoch {}{file} is behind epoch {epoch} that this node's agent published \
                 ({in_use} addresses in use then)",
                self.store_epoch
            )?;
        }
        if !self.untracked.is_empty() {
            let sep = if self.behind.is_some() { ";" } else { ":" };
            let named: Vec<String> = self
                .untracked
                .iter()
                .take(NAMED)
                .map(|p| format!("{} on {}", p.ip, p.host_if))
                .collect();
            let more = self.untracked.len().saturating_sub(NAMED);
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            write!(
                f,
                "{sep} {} pods wired on the host hold addresses the store does not ({}{more}){}",
                self.untracked.len(),
                named.join(", "),
                if self.behind.is_none() { file } else { "" }
            )?;
        }
        write!(
            f,
            ". The agent refuses to serve rather than hand out addresses running pods hold; \
             restart it with --rebuild-store-from-host to rebuild the store from the host"
        )
    }
}

/// Whether the store holds `p`'s address for `p`'s veth.
fn holds(st: &State, p: &HostPod) -> bool {
    st.by_ip.get(&p.ip).and_then(|k| st.allocations.get(k)).is_some_and(|a| a.host_if == p.host_if)
}

/// Check the store (`opened`, `st`) against the published status and the host's pods.
/// `boot_id` is this boot's (empty when unknown: then no reboot is assumed).
pub fn check(
    opened: &Opened,
    st: &State,
    published: Option<&Published>,
    host: &[HostPod],
    boot_id: &str,
) -> Verdict {
    let untracked: Vec<HostPod> = host.iter().filter(|p| !holds(st, p)).cloned().collect();
    let behind = published.filter(|p| p.epoch > opened.epoch).map(|p| (p.epoch, p.in_use));
    if untracked.is_empty() && behind.is_none() {
        return Verdict::Consistent;
    }
    let rebooted = published
        .is_some_and(|p| !p.boot_id.is_empty() && !boot_id.is_empty() && p.boot_id != boot_id);
    if untracked.is_empty() && rebooted {
        return Verdict::Reseed;
    }
    Verdict::Mismatch(Mismatch {
        created: opened.created,
        store_epoch: opened.epoch,
        behind,
        untracked,
    })
}

/// The changes that make the store hold what the host shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildPlan {
    /// Records the host contradicts (their address is routed to another veth): dropped.
    pub remove: Vec<AllocKey>,
    /// Records for the pods the store does not hold ([`Origin::Host`]).
    pub add: Vec<Allocation>,
    /// Offered items holding a running pod's address: no longer offered.
    pub unoffer: Vec<Ipv4Net>,
    /// Items of the published offer the store lacks: offered again, so never handed out while
    /// the operator may be releasing them.
    pub offer: Vec<(Ipv4Net, Offer)>,
    /// The store's epoch afterwards: above every epoch published so far.
    pub epoch: u64,
    /// What a person should know (an offered address in use), one line each.
    pub warnings: Vec<String>,
}

/// The record of a pod found on the host.
fn from_host(p: &HostPod, view: &PoolView, now: u64, epoch: u64) -> Allocation {
    Allocation {
        container_id: format!("host:{}", p.host_if),
        if_name: String::new(),
        ip: p.ip,
        eni_id: view.eni_of(p.ip).map(|e| e.id.clone()).unwrap_or_default(),
        table: p.table,
        netns: String::new(),
        host_if: p.host_if.clone(),
        pod_namespace: String::new(),
        pod_name: String::new(),
        created_at: now,
        epoch,
        network: String::new(),
        origin: Origin::Host,
        ipv6: view.ipv6_of(p.ip),
    }
}

/// Plan the rebuild of `st` (as opened, before this start's epoch) from the host's pods: every pod
/// the store does not hold gets a record, whatever contradicts the host goes, and the published
/// offer stays out of use. Records the host does not contradict are kept: the restart reconcile
/// treats those without a veth as it always does (leak grace, or at once after a reboot).
pub fn plan_rebuild(
    st: &State,
    host: &[HostPod],
    published: Option<&Published>,
    view: &PoolView,
    now: u64,
) -> RebuildPlan {
    let epoch = st.epoch.max(published.map_or(0, |p| p.epoch)) + 1;
    let mut plan = RebuildPlan { epoch, ..Default::default() };
    let mut pods: Vec<&HostPod> = host.iter().filter(|p| !holds(st, p)).collect();
    pods.sort_by_key(|p| (p.ip, p.host_if.clone()));
    // One address routed to two veths cannot happen (one /32 route per destination); keep one.
    pods.dedup_by_key(|p| p.ip);
    for p in pods {
        if let Some(k) = st.by_ip.get(&p.ip) {
            plan.remove.push(k.clone());
        }
        for n in st.offered.keys().filter(|n| n.contains(&p.ip)) {
            if !plan.unoffer.contains(n) {
                plan.unoffer.push(*n);
                plan.warnings.push(format!(
                    "{n} was offered for release but {} on {} is in use by a running pod; \
                     withdrawn from the offer (if the operator releases it, that pod loses its address)",
                    p.ip, p.host_if
                ));
            }
        }
        plan.add.push(from_host(p, view, now, epoch));
    }
    if let Some((revision, items)) = published.and_then(|p| p.offer.as_ref()) {
        let offer = Offer { revision: *revision, epoch: published.map_or(0, |p| p.epoch) };
        let in_use = |n: &Ipv4Net| {
            plan.add.iter().any(|a| n.contains(&a.ip))
                || st.by_ip.iter().any(|(ip, k)| n.contains(ip) && !plan.remove.contains(k))
        };
        let mut offer_items = Vec::new();
        for n in items {
            if st.offered.contains_key(n) {
                continue;
            }
            if in_use(n) {
                plan.warnings.push(format!(
                    "{n} of the published offer (revision {revision}) is in use by a running \
                     pod; not offered again"
                ));
                continue;
            }
            offer_items.push((*n, offer));
        }
        plan.offer = offer_items;
    }
    plan
}

#[cfg(test)]
mod tests;
