//! Host networking behind one trait with domain verbs. The rest of the agent never sees netlink.

/// A host networking failure.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A netlink request failed.
    #[error("netlink {op}: {msg}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// The kernel's or the library's message.
        msg: String,
    },
    /// Something that must exist does not (a link by MAC, a netns).
    #[error("not found: {0}")]
    NotFound(String),
    #[error("nft: {0}")]
    Nft(String),
    /// A host-wide sysctl differs from what enipool needs and writing it failed.
    #[error(
        "sysctl {name} is {current} but enipool needs {want}, and writing it failed ({source}): {}",
        sysctl::hint(source)
    )]
    Sysctl {
        /// Dotted name (`net.ipv4.ip_forward`).
        name: String,
        /// The value enipool needs.
        want: &'static str,
        /// The value found (or `unreadable`).
        current: String,
        /// Why the write failed.
        #[source]
        source: std::io::Error,
    },
    /// Local I/O.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Host side veth name: `eni` + the first 11 hex characters of sha256(netns path + ifname), 14
/// characters (Linux allows 15). Deterministic, so DEL and restart find the link without state.
pub fn host_veth_name(netns: &str, if_name: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(netns.as_bytes());
    h.update(if_name.as_bytes());
    let hex = hex::encode(h.finalize());
    format!("eni{}", &hex[..11])
}

pub mod devconf;
pub mod drift;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod netlink;
pub mod nft;
pub mod sysctl;
pub mod wiring;

pub use wiring::{is_pod_veth_name, HostPod};

use ipnet::Ipv4Net;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The pod gateway of the VPC CNI layout: link-local, answered by a permanent neighbour entry.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The node-local range of IPv6 pods' IPv4 addresses unless `--ipv4-egress-cidr` says otherwise:
/// the Amazon VPC CNI's, link-local, so no VPC or on-premises network overlaps it.
pub const IPV4_EGRESS_DEFAULT: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(169, 254, 172, 0), 22) {
    Ok(n) => n,
    Err(_) => panic!("a /22 is a valid IPv4 prefix"),
};
/// The IPv6 pod gateway, likewise.
pub use enipool_cni::proto::POD_GATEWAY_V6;
/// Rule priority: traffic to a pod uses the main table.
pub const PRIO_TO_POD: u32 = 512;
/// Rule priority: connmarked (NodePort / SNAT) traffic uses the main table.
pub const PRIO_FWMARK: u32 = 1024;
/// Rule priority: traffic from a secondary-ENI pod uses its ENI's table.
pub const PRIO_FROM_POD: u32 = 1536;
/// Rule priority: traffic from a secondary ENI's own address uses its table.
pub const PRIO_FROM_ENI: u32 = 32765;
/// The connmark / fwmark bit (VPC CNI's 0x80).
pub const CONNMARK: u32 = 0x80;
pub const MAIN_TABLE: u32 = 254;

/// The Linux capabilities the agent needs once `sysctl-init` has set the host-wide sysctls:
/// NET_ADMIN for links, addresses, routes, rules, neighbours, per-link devconf and nftables;
/// SYS_ADMIN for `setns` into pod network namespaces. Not NET_RAW (no raw or packet socket, only
/// netlink and `nft`), nor SYS_PTRACE (pod netns paths are the runtime's bind mounts under
/// /run/netns, opened without the ptrace check of `/proc/<pid>/ns`). The chart grants exactly
/// these (e2e/runner/tests/chart.rs compares) and tests/unprivileged_root.rs runs the agent with only
/// these and a read-only `/proc/sys`.
pub const CAPABILITIES: &[&str] = &["NET_ADMIN", "SYS_ADMIN"];

/// Node-wide settings: SNAT, CONNMARK, the fwmark rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// MAC of the primary ENI (device index 0), if the pool lists it.
    pub primary_mac: Option<String>,
    /// The node's primary IP (SNAT source; also finds the primary link if the MAC is unknown).
    pub primary_ip: Ipv4Addr,
    /// VPC CIDRs (never SNATed).
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// Extra destinations never SNATed.
    pub snat_exclude: Vec<Ipv4Net>,
    /// SNAT is done elsewhere (NAT gateway): no SNAT rule.
    pub external_snat: bool,
    /// How the SNAT rule picks source ports.
    pub snat_ports: SnatPorts,
    /// IPv6 clusters: the node-local range of the pods' IPv4 egress addresses. All IPv4 traffic
    /// from it is SNATed to `primary_ip` (nothing outside the node routes it back), VPC
    /// destinations included, and new connections into it from elsewhere are refused.
    pub ipv4_egress: Option<Ipv4Net>,
}

/// Source-port selection of the SNAT rule (nftables' `snat` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnatPorts {
    /// A random port for every connection (`fully-random`): no two nodes' pods collide on a
    /// NAT gateway or a busy destination.
    #[default]
    FullyRandom,
    /// A random offset into the port range (`random`).
    Random,
    /// The original port where free (no flag), as the kernel does by default.
    Sequential,
}

impl std::str::FromStr for SnatPorts {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fully-random" => Ok(SnatPorts::FullyRandom),
            "random" => Ok(SnatPorts::Random),
            "sequential" => Ok(SnatPorts::Sequential),
            other => Err(format!("{other:?}: expected fully-random, random or sequential")),
        }
    }
}

/// One secondary ENI to program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniConfig {
    /// ENI id (logs).
    pub id: String,
    /// MAC, lower case.
    pub mac: String,
    /// Route table (device index + 1).
    pub table: u32,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The ENI's own address.
    pub primary_ip: Option<Ipv4Addr>,
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodConfig {
    /// Path of the pod's netns (may be empty on DEL).
    pub netns: String,
    /// Interface name in the pod.
    pub if_name: String,
    /// Host side veth name.
    pub host_if: String,
    /// The pod's IPv4 address: its VPC address, or in an IPv6 cluster its node-local egress one.
    pub ip: Ipv4Addr,
    /// IPv6 clusters: the pod's /128, routed to its veth like `ip`.
    pub ipv6: Option<Ipv6Addr>,
    /// The ENI's table (254 for the primary ENI: no from-pod rule).
    pub table: u32,
    /// Destinations that use the ENI table (VPC CIDRs); empty = everything (external SNAT).
    pub from_rule_dsts: Vec<Ipv4Net>,
    /// MTU of both veth ends.
    pub mtu: u32,
}

/// What the wiring produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodWired {
    /// MAC of the host side.
    pub host_mac: String,
    /// MAC of the pod side.
    pub pod_mac: String,
}

/// Domain verbs the agent needs from the host. Implementations are synchronous; the agent calls
/// them from blocking threads.
pub trait HostNet: Send + Sync {
    /// Host-wide sysctls (checked, written only if they differ), rp_filter of the primary link,
    /// fwmark rule and the enipool nftables table. Idempotent.
    fn setup_node(&self, cfg: &NodeConfig) -> Result<(), HostError>;
    /// Find the ENI's link by MAC (retrying while it appears), MTU, up, table, rules. Idempotent.
    fn setup_eni(&self, eni: &EniConfig) -> Result<(), HostError>;
    /// Remove what [`HostNet::setup_eni`] added for an ENI that left the pool: its from-ENI rule
    /// and its table's routes. Best effort; "already gone" is success.
    fn teardown_eni(&self, eni: &EniConfig) -> Vec<HostError>;
    /// Create the veth pair and program pod and host sides. Replaces a stale host veth.
    fn setup_pod(&self, pod: &PodConfig) -> Result<PodWired, HostError>;
    /// Re-program only the host side of an existing pod (restart): /32 route and rules.
    fn ensure_pod_host(&self, pod: &PodConfig) -> Result<(), HostError>;
    /// Remove everything for the pod. Best effort: collects errors, "already gone" is success.
    /// Routes and rules are gone when it returns; the host veth may only be marked for deletion
    /// (no longer listed by [`HostNet::host_links`], deleted soon after, or by the next
    /// `setup_pod` of the same name, or by [`HostNet::reap_links`]).
    fn teardown_pod(&self, pod: &PodConfig) -> Vec<HostError>;
    /// Delete every veth a teardown marked and not deleted yet (restart reconcile: a crash
    /// between a DEL's reply and the deletion). Synchronous.
    fn reap_links(&self) -> Result<(), HostError>;
    /// Whether the pod's host side is in place; returns its MACs.
    fn check_pod(&self, pod: &PodConfig) -> Result<PodWired, HostError>;
    /// Names of all links in the host netns.
    fn host_links(&self) -> Result<Vec<String>, HostError>;
    /// The pods wired on the host, found from the host alone (no store): every live host veth
    /// named by [`host_veth_name`] with its /32 route and, for a secondary-ENI pod, the table of
    /// its from-pod rule. What the start-up store check and the store rebuild compare with.
    fn pod_wiring(&self) -> Result<Vec<HostPod>, HostError>;
    /// Remove node-wide state (nft table, fwmark rule).
    fn uninstall(&self) -> Vec<HostError>;
    /// The host's rules, routes, links and enipool nftables table now: what the repair compares
    /// with what the setup verbs add ([`drift`]).
    fn snapshot(&self) -> Result<drift::HostSnapshot, HostError>;
    /// The enipool nftables table as listed now (`None`: absent): what the repair compares a
    /// later snapshot's listing with, taken right after the table is applied.
    fn nft_table(&self) -> Result<Option<String>, HostError>;
    /// A counter that moves whenever a rule or route is removed from the host netns, so the
    /// repair can run at once; `None` when the host cannot tell (the repair runs on its period).
    fn removals(&self) -> Option<tokio::sync::watch::Receiver<u64>>;
}
