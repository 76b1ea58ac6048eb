//! The agent's view of its ENIPool: the operator-written facts the allocator and the host wiring
//! need, parsed once per change of the object (never on the hot path).

pub mod check;

use enipool_crds::ENIPoolStatus;
use enipool_crds::IpFamily;
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

pub use check::{Invalid, Problem};

/// One ENI as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniView {
    pub id: String,
    /// Device index (0 = primary ENI).
    pub device_index: i32,
    /// MAC, lower case `aa:bb:..`.
    pub mac: String,
    pub subnet: Option<Ipv4Net>,
    /// The ENI's own primary address (never a pod's).
    pub primary_ip: Option<Ipv4Addr>,
    pub ips: Vec<Ipv4Addr>,
    /// /28 prefixes.
    pub prefixes: Vec<Ipv4Net>,
    /// /80 IPv6 prefixes (IPv6 clusters: one, on the primary ENI).
    pub ipv6_prefixes: Vec<Ipv6Net>,
    /// Attached in EC2 (operator) — only attached ENIs are programmed.
    pub attached: bool,
    /// Link found by MAC and programmed on this host (agent).
    pub ready: bool,
}

impl EniView {
    /// Route table of this ENI: main (254) for the primary, device index + 1 otherwise (VPC CNI).
    pub fn table(&self) -> u32 {
        if self.device_index <= 0 {
            254
        } else {
            self.device_index as u32 + 1
        }
    }

    /// Subnet gateway: the subnet's first host (`.1` of a /N), the VPC router.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.subnet.map(|s| Ipv4Addr::from(u32::from(s.network()) + 1))
    }
}

/// The pool as the allocator sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolView {
    /// ENIs, sorted by device index.
    pub enis: Vec<EniView>,
    /// Addresses the operator lists in `status.releasing` (never allocatable, whatever the store says).
    pub releasing: Vec<Ipv4Net>,
    /// Lowest device index handing out pod addresses.
    pub first_interface_index: i32,
    /// Node primary IP (SNAT source).
    pub node_primary_ip: Option<Ipv4Addr>,
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// Cooldown before a freed address is reused.
    pub cooldown_seconds: u64,
    /// `status.revision`.
    pub revision: i64,
    /// `status.releasedRevision`.
    pub released_revision: i64,
    /// `status.releaseRequest` (revision, count, prefer).
    pub release_request: Option<(i64, i32, Vec<String>)>,
    /// The operator says the pool cannot grow (subnet or node capacity exhausted): an ADD that
    /// finds it empty fails at once instead of waiting for growth.
    pub growth_blocked: bool,
    /// The cluster's family (`status.effective.ipFamily`).
    pub ip_family: IpFamily,
    /// IPv6 clusters: the node-local IPv4 range pods reach IPv4 destinations from (the agent's
    /// `--ipv4-egress-cidr`, set by the programmer). Each IPv6 pod holds one of its addresses,
    /// and its IPv6 address is derived from that one ([`PoolView::ipv6_of`]), so one allocator,
    /// one store and one set of crash guarantees serve both.
    pub ipv4_egress: Option<Ipv4Net>,
}

impl PoolView {
    /// Build the view from the operator's status; `ready` names the ENIs programmed on the host.
    /// A status with any malformed, misplaced or duplicate value is refused whole (see
    /// [`check`]): the caller keeps the view it had.
    pub fn from_status(
        status: &ENIPoolStatus,
        ready: &BTreeSet<String>,
    ) -> std::result::Result<PoolView, Invalid> {
        check::parse(status, ready)
    }

    /// The ENI whose addresses contain `ip` (in an IPv6 cluster: the ENI whose /80 the pod
    /// holding egress address `ip` has its address from).
    pub fn eni_of(&self, ip: Ipv4Addr) -> Option<&EniView> {
        if let Some(egress) = self.ipv4_egress {
            return self.ipv6_eni().filter(|_| egress.contains(&ip));
        }
        self.enis.iter().find(|e| e.ips.contains(&ip) || e.prefixes.iter().any(|p| p.contains(&ip)))
    }

    /// IPv6 clusters: the primary ENI, once it holds its /80.
    pub fn ipv6_eni(&self) -> Option<&EniView> {
        self.enis.iter().find(|e| e.device_index == 0 && !e.ipv6_prefixes.is_empty())
    }

    /// The IPv6 address of the pod holding node-local IPv4 address `egress_ip`: the same offset
    /// into the primary ENI's /80 as into the egress range. `None` outside an IPv6 cluster, or
    /// before the /80 is there.
    pub fn ipv6_of(&self, egress_ip: Ipv4Addr) -> Option<Ipv6Addr> {
        let range = self.ipv4_egress?;
        let prefix = *self.ipv6_eni()?.ipv6_prefixes.first()?;
        let offset = u32::from(egress_ip).checked_sub(u32::from(range.network()))?;
        range
            .contains(&egress_ip)
            .then(|| Ipv6Addr::from(u128::from(prefix.network()) + u128::from(offset)))
    }

    /// Whether the pool (ENIs' ips/prefixes) still lists an offered item.
    pub fn lists(&self, item: &Ipv4Net) -> bool {
        self.enis.iter().any(|e| {
            e.prefixes.contains(item) || (item.prefix_len() == 32 && e.ips.contains(&item.addr()))
        })
    }
}

#[cfg(test)]
mod tests;
