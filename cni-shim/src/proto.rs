//! The wire protocol between the CNI shim and the node agent.
//!
//! One request per connection on the agent's Unix socket: the shim writes one JSON object followed by
//! a newline, the agent answers with one JSON object followed by a newline and closes. Both sides bound
//! what they read ([`MAX_MESSAGE_BYTES`]). The protocol is versioned by [`PROTOCOL_VERSION`] so an
//! agent can refuse a shim from an incompatible release with a clear error instead of misreading it.
//!
//! The agent owns all state; the shim only translates between the CNI contract (env + stdin + stdout)
//! and these messages.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 1;

/// Upper bound on one message in either direction. A request carries at most a prevResult and a GC
/// list; 1 MiB leaves room for thousands of attachments while keeping a hostile peer from making the
/// agent buffer without limit.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Default path of the agent's socket (the chart mounts `/run/enipool` from the host).
pub const DEFAULT_AGENT_SOCKET: &str = "/run/enipool/cni.sock";

/// Default directory of the on-host DEL journal the shim writes when the agent is down.
pub const DEFAULT_DEL_JOURNAL_DIR: &str = "/var/lib/enipool/del-journal";

/// The CNI verb being forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    /// Allocate an address and wire the sandbox.
    Add,
    /// Release the sandbox's address and remove its wiring. Unknown containers succeed.
    Del,
    /// Verify the sandbox's wiring matches the recorded allocation.
    Check,
    /// Is the plugin ready to serve ADD (CNI 1.1)?
    Status,
    /// Release every allocation of the request's network not in `valid_attachments` (CNI 1.1).
    Gc,
}

/// One attachment: the key of an allocation in the agent's store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
}

/// A request from the shim to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol: u32,
    pub command: Command,
    /// The attachment; empty for STATUS and GC.
    #[serde(default)]
    pub container_id: String,
    /// `CNI_IFNAME`; empty for STATUS and GC.
    #[serde(default)]
    pub if_name: String,
    /// `CNI_NETNS` (a path). Empty for DEL when the runtime no longer knows it.
    #[serde(default)]
    pub netns: String,
    /// Pod identity from `CNI_ARGS` (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID, ...).
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// MTU for the pod interface from the network config, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The network config's `name`: recorded with each allocation at ADD, and the scope of a GC
    /// (a GC releases only allocations of its own network). Empty from a shim that predates it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// For GC: every attachment the runtime still considers valid. `None` when the runtime gave
    /// no list, which is not the same as an empty one: a GC without it releases nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// What the agent did for an ADD (or found for a repeated ADD / CHECK).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddResult {
    /// The pod's address without prefix length, e.g. `10.0.1.23`; always a /32 on the pod side.
    pub ip: std::net::Ipv4Addr,
    /// The pod's default gateway (the link-local `169.254.1.1` of the VPC CNI layout).
    pub gateway: std::net::Ipv4Addr,
    /// Host side of the veth pair.
    pub host_if_name: String,
    /// MAC of the host side (also the permanent neighbour of the gateway inside the pod).
    pub host_mac: String,
    /// Interface name inside the sandbox (`CNI_IFNAME`).
    pub pod_if_name: String,
    /// MAC of the sandbox side.
    pub pod_mac: String,
    /// ENI the address belongs to, for logs and results' debugging.
    pub eni_id: String,
    /// MTU set on the pod interface.
    pub mtu: u32,
    /// IPv6 clusters: the pod's address (a /128 of the node's /80), its address to Kubernetes.
    /// `ip` is then the node-local IPv4 it reaches IPv4 destinations from, not reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<std::net::Ipv6Addr>,
}

/// The pod's IPv6 gateway: the host end of the veth answers it (a permanent neighbour entry in
/// the pod), as `169.254.1.1` does for IPv4.
pub const POD_GATEWAY_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

impl AddResult {
    /// The address the runtime reports for the pod: its IPv6 one in an IPv6 cluster.
    pub fn pod_ip(&self) -> std::net::IpAddr {
        self.ipv6.map_or(std::net::IpAddr::V4(self.ip), std::net::IpAddr::V6)
    }
}

/// The agent's readiness, answered to STATUS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResult {
    /// Whether an ADD would get an address right now.
    pub ready: bool,
    pub available: u32,
    /// Why not ready, when not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Response {
    /// ADD/CHECK succeeded with this wiring.
    Added(AddResult),
    /// DEL, CHECK without result, or GC succeeded.
    Done {
        /// How many allocations GC released (0 for other verbs).
        #[serde(default)]
        released: u32,
    },
    Status(StatusResult),
    /// A failure the shim turns into a CNI error object.
    Error(ErrorReply),
}

/// A failure, already classified into a CNI error code by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReply {
    /// CNI spec error code (see [`crate::error::codes`]).
    pub code: u32,
    /// Short message saying what went wrong.
    pub msg: String,
    /// Longer details: what to check or do.
    #[serde(default)]
    pub details: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_scope_survives_the_wire() {
        let gc = Request {
            protocol: PROTOCOL_VERSION,
            command: Command::Gc,
            container_id: String::new(),
            if_name: String::new(),
            netns: String::new(),
            args: BTreeMap::new(),
            mtu: None,
            network: "enipool".into(),
            valid_attachments: Some(Vec::new()),
        };
        let line = serde_json::to_string(&gc).unwrap();
        assert!(line.contains(r#""validAttachments":[]"#), "an empty list is sent: {line}");
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), gc);
        let no_list = Request { valid_attachments: None, ..gc };
        let line = serde_json::to_string(&no_list).unwrap();
        assert!(!line.contains("validAttachments"), "{line}");
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), no_list);
        // A request of a shim that predates both fields.
        let old: Request =
            serde_json::from_str(r#"{"protocol":1,"command":"GC","containerId":"","ifName":""}"#)
                .unwrap();
        assert_eq!((old.network.as_str(), old.valid_attachments), ("", None));
    }
}
