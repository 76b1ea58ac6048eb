//! The `enipool.io/v1alpha1` API: [`ENIPool`] (one per Node, written by the operator and the node
//! agent) and [`ENIPoolPolicy`] (written by people and GitOps tools), plus the pure helpers both
//! sides need: resolving effective settings, choosing a node's policy, and the summary counts.
//!
//! This crate is the only place the API types are defined. It has no client, no runtime and no AWS
//! dependency, so the agent and the CRD generator stay small.
#![forbid(unsafe_code)]
// kube-derive takes one `printcolumn(...)` attribute per column; the lint misreads them as duplicates.
#![allow(clippy::duplicated_attributes)]

pub mod addr;
mod common;
mod error;
pub mod generate;
mod policy;
mod pool;
pub mod select;
pub mod settings;
pub mod summary;

pub use common::*;
pub use error::Error;
pub use policy::*;
pub use pool::*;

/// API group of both kinds.
pub const GROUP: &str = "enipool.io";
/// API version of both kinds.
pub const VERSION: &str = "v1alpha1";

/// Finalizer the operator puts on every ENIPool so a deleted Node's ENIs are cleaned up in EC2
/// before the pool disappears.
pub const POOL_FINALIZER: &str = "enipool.io/release";

/// Server-side apply field manager of the operator (owns spec identity and operator status fields).
pub const OPERATOR_FIELD_MANAGER: &str = "enipool-operator";
/// Server-side apply field manager of the node agent (owns `status.agent`).
pub const AGENT_FIELD_MANAGER: &str = "enipool-agent";

/// Label on an ENIPool naming the ENIPoolPolicy it resolved to (selectable with `-l`).
pub const POLICY_LABEL: &str = "enipool.io/policy";
/// Label the operator puts on a pool while its Node is cordoned (`spec.unschedulable`).
pub const CORDONED_LABEL: &str = "enipool.io/cordoned";
/// Well-known label copied from the Node: availability zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Well-known label copied from the Node: instance type.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";

/// EC2 tag keys the operator writes on every ENI it creates. Garbage collection only ever deletes
/// ENIs carrying [`tags::CLUSTER`] with this cluster's name and [`tags::OWNER`] = [`tags::OWNER_VALUE`].
pub mod tags {
    /// Cluster name; GC is scoped by it.
    pub const CLUSTER: &str = "enipool.io/cluster";
    /// Node (and ENIPool) name.
    pub const NODE: &str = "enipool.io/node";
    /// Instance the ENI was created for.
    pub const INSTANCE_ID: &str = "enipool.io/instance-id";
    /// Marks ENIs created by enipool.
    pub const OWNER: &str = "enipool.io/owner";
    /// Value of [`OWNER`].
    pub const OWNER_VALUE: &str = "enipool-operator";
    /// RFC 3339 creation time, so GC needs one pass instead of "seen twice" (Cilium, VPC RC).
    pub const CREATED_AT: &str = "enipool.io/created-at";
    /// UID of the ENIPool the ENI was created for.
    pub const POOL_UID: &str = "enipool.io/pool-uid";
    /// Journal operation id (also the EC2 ClientToken) that created the ENI.
    pub const OPERATION: &str = "enipool.io/operation";
}

/// Condition types and reasons, stable strings that users and alerts key on.
pub mod conditions {
    /// Pool has at least one usable address on a programmed ENI and nothing blocks growth.
    pub const READY: &str = "Ready";
    /// The operator's last EC2 sync for this node succeeded.
    pub const EC2_SYNCED: &str = "EC2Synced";
    /// EC2 throttled the operator's calls for this node recently.
    pub const THROTTLED: &str = "Throttled";
    /// No subnet allowed by the policy has room for the addresses the target needs.
    pub const SUBNET_EXHAUSTED: &str = "SubnetExhausted";
    /// The instance cannot hold more ENIs or addresses (instance-type limit or `maxENIs`).
    pub const CAPACITY_EXHAUSTED: &str = "CapacityExhausted";
    /// The agent has not reported for longer than the staleness window.
    pub const AGENT_STALE: &str = "AgentStale";
    /// EC2, the pool and the agent disagree in a way that must be looked at (e.g. an address a pod
    /// uses is missing from the ENIs). An alarm, never a release.
    pub const INCONSISTENT_STATE: &str = "InconsistentState";
    /// The node is cordoned and its policy sets `freezeWhenCordoned`: no ENI or address changes.
    pub const FROZEN: &str = "Frozen";
    /// Policy conditions: the policy's spec is valid.
    pub const VALID: &str = "Valid";
    /// Policy conditions: another policy with the same priority selects some of the same nodes.
    pub const OVERLAPPING: &str = "Overlapping";
    /// Policy conditions: the subnets the policy names exist.
    pub const SUBNETS_FOUND: &str = "SubnetsFound";
    /// Policy conditions (kstatus): the policy cannot take effect until its spec or the VPC
    /// changes. A policy's `Ready` says it is valid and its subnets were found.
    pub const STALLED: &str = "Stalled";
}
