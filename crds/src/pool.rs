//! `ENIPool`: one per Node, the record of that node's ENIs and addresses.
//!
//! Status has two writers with disjoint fields, each using server-side apply under its own field
//! manager: the operator ([`crate::OPERATOR_FIELD_MANAGER`]) owns everything except
//! `status.agent`, which the node agent ([`crate::AGENT_FIELD_MANAGER`]) owns.

use crate::addr::{self, MAX_ENIS, MAX_PER_ENI, MAX_PER_NODE};
use crate::common::{IpMode, PoolOverrides};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The ENIs and addresses of one node. Created by the operator for every Node with an AWS
/// providerID, owned by that Node (deleted with it), and finalized so its ENIs are cleaned up.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "enipool.io",
    version = "v1alpha1",
    kind = "ENIPool",
    plural = "enipools",
    singular = "enipool",
    shortname = "enip",
    status = "ENIPoolStatus",
    derive = "PartialEq",
    derive = "Default",
    category = "enipool-all",
    doc = "The ENIs and addresses of one node; created by the operator, one per Node.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Instance", type_ = "string", json_path = ".spec.instanceID"),
    printcolumn(name = "Type", type_ = "string", json_path = ".status.instance.type"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.effective.mode"),
    printcolumn(name = "ENIs", type_ = "string", json_path = ".status.summary.enis"),
    printcolumn(name = "Prefixes", type_ = "integer", json_path = ".status.summary.prefixes"),
    printcolumn(name = "Allocated", type_ = "integer", json_path = ".status.summary.allocated"),
    printcolumn(name = "In-Use", type_ = "integer", json_path = ".status.summary.inUse"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.summary.available"),
    printcolumn(name = "Target", type_ = "integer", json_path = ".status.target.ips"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Zone",
        type_ = "string",
        json_path = ".status.instance.zone",
        priority = 1
    ),
    printcolumn(name = "Policy", type_ = "string", json_path = ".status.policy", priority = 1),
    printcolumn(
        name = "Family",
        type_ = "string",
        json_path = ".status.effective.ipFamily",
        priority = 1
    ),
    printcolumn(
        name = "Pending-Pods",
        type_ = "integer",
        json_path = ".status.agent.pendingPods",
        priority = 1
    ),
    printcolumn(
        name = "Releasing",
        type_ = "integer",
        json_path = ".status.summary.releasing",
        priority = 1
    ),
    printcolumn(
        name = "Last-Sync",
        type_ = "date",
        json_path = ".status.lastEC2Sync",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ENIPoolSpec {
    /// Name of the Node this pool belongs to (equal to the pool's name). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("nodeName is immutable"))]
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
    /// EC2 instance id of the node, from its providerID. Immutable: a new instance behind the same
    /// Node name gets a new pool.
    #[serde(rename = "instanceID")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("instanceID is immutable"))]
    #[schemars(regex(pattern = r"^i-[0-9a-f]{8,17}$"))]
    pub instance_id: String,
    /// Pin this node to a policy by name instead of resolving it from selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<PolicyRef>,
    /// Per-node tuning that wins over the policy (debugging, special nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<PoolOverrides>,
    /// Stop EC2 changes for this node. Pods keep getting addresses from what the pool already
    /// holds. Default false.
    #[serde(default)]
    pub paused: bool,
}

/// A reference to an ENIPoolPolicy by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PolicyRef {
    /// Name of the ENIPoolPolicy.
    pub name: String,
}

/// Observed state of a node's pool. See the module docs for which component writes which field.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ENIPoolStatus {
    /// Operator: the spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Operator: facts about the instance from EC2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceInfo>,
    /// Operator: name of the ENIPoolPolicy in force ("" when none matched and defaults apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Operator: policy + overrides + instance limits, resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<crate::settings::EffectiveSettings>,
    /// Operator: bumped on every change to `enis` or `releasing`; the agent echoes the revision it
    /// has applied in `agent.observedRevision`.
    #[serde(default)]
    pub revision: i64,
    /// Operator: the node's ENIs as EC2 reports them (excluded ENIs are not listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    #[schemars(length(max = MAX_ENIS))]
    pub enis: Vec<EniStatus>,
    /// Operator: the number of addresses the node should hold, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Operator: asks the agent to offer this many addresses for release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_request: Option<ReleaseRequest>,
    /// Operator: addresses being unassigned in EC2 right now. Published before the EC2 call; the
    /// agent never hands these out, whatever its own store says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releasing: Option<Releasing>,
    /// Operator: the last agent offer revision that was fully released.
    #[serde(default)]
    pub released_revision: i64,
    /// Operator: bounded journal of EC2 mutations, each written before the call is made. Its id is
    /// the call's ClientToken, so a restarted or new leader can finish or abandon it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    #[schemars(length(max = 16))]
    pub operations: Vec<Operation>,
    /// Operator: counts for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Operator: when EC2 was last read for this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "lastEC2Sync")]
    pub last_ec2_sync: Option<Time>,
    /// Operator: Ready, EC2Synced, Throttled, SubnetExhausted, CapacityExhausted, AgentStale,
    /// InconsistentState.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Agent: what the node agent reports. Written only by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentStatus>,
}

/// Facts about the instance behind the node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    /// EC2 instance type, e.g. `m5.large`.
    #[serde(rename = "type")]
    pub instance_type: String,
    /// Availability zone.
    pub zone: String,
    /// VPC id.
    #[serde(rename = "vpcID")]
    pub vpc_id: String,
    /// Subnet of the primary ENI.
    #[serde(rename = "subnetID")]
    pub subnet_id: String,
    /// Primary ENI id.
    #[serde(rename = "primaryENI")]
    pub primary_eni: String,
    /// Primary private IPv4 address (the node's address; SNAT source for egress).
    #[serde(rename = "primaryIP")]
    pub primary_ip: String,
    /// CIDR blocks of the VPC (traffic to them is not SNATed).
    #[serde(default, rename = "vpcCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub vpc_cidrs: Vec<String>,
    /// EC2 instance state: pending, running, stopping, stopped, shutting-down, terminated.
    pub state: String,
}

/// Lifecycle of an ENI as enipool sees it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EniState {
    /// Being created (journaled, not yet seen in EC2).
    Creating,
    /// Created, attach in progress.
    Attaching,
    /// Attached and usable.
    #[default]
    Attached,
    /// Detach in progress (release of an empty ENI or node cleanup).
    Detaching,
    /// Being deleted.
    Deleting,
}

/// One ENI of the node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EniStatus {
    /// ENI id (`eni-…`).
    pub id: String,
    /// Device index on the instance; 0 is the primary ENI, -1 not attached. Route table of a
    /// secondary ENI is device index + 1.
    #[schemars(range(min = -1, max = addr::MAX_DEVICE_INDEX))]
    pub device_index: i32,
    /// MAC address; the agent finds the link by it.
    #[schemars(regex(pattern = addr::MAC))]
    pub mac: String,
    /// Subnet id.
    #[serde(rename = "subnetID")]
    pub subnet_id: String,
    /// Subnet CIDR, e.g. `10.0.16.0/20` (empty while unknown).
    #[serde(rename = "subnetCIDR")]
    #[schemars(regex(pattern = addr::IPV4_CIDR_OR_EMPTY))]
    pub subnet_cidr: String,
    /// Security group ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// The ENI's own primary address (never given to pods; empty while unknown).
    #[serde(rename = "primaryIP")]
    #[schemars(regex(pattern = addr::IPV4_OR_EMPTY))]
    pub primary_ip: String,
    /// Secondary addresses available to pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "ips")]
    #[schemars(length(max = MAX_PER_ENI), inner(regex(pattern = addr::IPV4)))]
    pub ips: Vec<String>,
    /// /28 prefixes available to pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PER_ENI), inner(regex(pattern = addr::IPV4_PREFIX_28)))]
    pub prefixes: Vec<String>,
    /// /80 IPv6 prefixes available to pods (IPv6 clusters: one, on the primary ENI).
    #[serde(default, rename = "ipv6Prefixes", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PER_ENI), inner(regex(pattern = addr::IPV6_PREFIX_80)))]
    pub ipv6_prefixes: Vec<String>,
    /// EC2 attachment id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attachment_id: String,
    /// Lifecycle state.
    #[serde(default)]
    pub state: EniState,
    /// Whether enipool created this ENI (and may therefore delete it).
    #[serde(default)]
    pub managed: bool,
}

/// The target and its reason.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Addresses the node should hold.
    pub ips: i32,
    /// Which term decided it: demand, minAllocate, maxAllocate, capacity.
    #[serde(default)]
    pub reason: String,
}

/// The operator's request for the agent to offer addresses back.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRequest {
    /// Increases with every new request; the agent's offer answers one revision.
    pub revision: i64,
    /// How many addresses to offer (in prefix modes: a multiple of 16, whole prefixes).
    pub count: i32,
    /// ENIs to take addresses from first (highest device index first, so ENIs empty out).
    #[serde(default, rename = "preferENIs", skip_serializing_if = "Vec::is_empty")]
    pub prefer_enis: Vec<String>,
}

/// Items being released in EC2 now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Releasing {
    /// The agent offer revision these came from.
    pub revision: i64,
    /// The agent epoch that made the offer.
    pub epoch: i64,
    /// Secondary addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PER_NODE), inner(regex(pattern = addr::IPV4_HOST)))]
    pub ips: Vec<String>,
    /// /28 prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PER_NODE), inner(regex(pattern = addr::IPV4_PREFIX_28)))]
    pub prefixes: Vec<String>,
}

/// Kind of a journaled EC2 mutation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum OperationKind {
    /// CreateNetworkInterface (with its addresses and tags).
    CreateENI,
    /// AttachNetworkInterface (+ DeleteOnTermination).
    AttachENI,
    /// AssignPrivateIpAddresses with a count of addresses.
    AssignIPs,
    /// AssignPrivateIpAddresses with a count of prefixes.
    AssignPrefixes,
    /// AssignIpv6Addresses with a count of /80 prefixes.
    AssignIPv6Prefixes,
    /// UnassignPrivateIpAddresses for addresses.
    UnassignIPs,
    /// UnassignPrivateIpAddresses for prefixes.
    UnassignPrefixes,
    /// DetachNetworkInterface.
    DetachENI,
    /// DeleteNetworkInterface.
    DeleteENI,
}

/// One journaled EC2 mutation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Unique id; also the EC2 ClientToken where the action takes one.
    pub id: String,
    /// What is being done.
    #[serde(rename = "type")]
    pub kind: OperationKind,
    /// The ENI acted on (empty for CreateENI until EC2 returns it).
    #[serde(default, rename = "eniID", skip_serializing_if = "String::is_empty")]
    pub eni_id: String,
    /// Addresses or prefixes requested (count-based calls).
    #[serde(default)]
    pub count: i32,
    /// Addresses or prefixes named (unassign calls), or the subnet for CreateENI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
    /// Device index for CreateENI/AttachENI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_index: Option<i32>,
    /// When the operation was journaled.
    pub started_at: Time,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: i32,
    /// Last error, if any attempt failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
}

/// What the node agent reports. Written only by the agent's field manager.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Identifies the host boot; a new boot means every host rule was lost.
    #[serde(default, rename = "bootID", skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    /// Incremented on every agent start; offers are only honoured for the epoch that made them.
    pub epoch: i64,
    /// The operator revision the agent has applied on the host.
    #[serde(default)]
    pub observed_revision: i64,
    /// ENIs whose link was found by MAC and programmed (only these hand out addresses).
    #[serde(default, rename = "readyENIs", skip_serializing_if = "Vec::is_empty")]
    pub ready_enis: Vec<String>,
    /// Addresses assigned to sandboxes (in-flight ADDs included).
    #[serde(default)]
    pub in_use: i32,
    /// Pods bound to the node that have no address yet.
    #[serde(default)]
    pub pending_pods: i32,
    /// Freed addresses resting before reuse.
    #[serde(default)]
    pub cooling: i32,
    /// Addresses and prefixes the agent offers for release, answering `releaseRequest`. Once
    /// offered, an item is never handed out again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releasable: Option<Releasable>,
    /// Last time the agent published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// Addresses in use by pods that the operator's `enis` no longer lists (alarm; see
    /// InconsistentState).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PER_NODE), inner(regex(pattern = addr::IPV4)))]
    pub orphaned_in_use: Vec<String>,
}

/// The agent's offer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Releasable {
    /// The `releaseRequest.revision` this answers.
    pub revision: i64,
    /// Offered secondary addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PER_NODE), inner(regex(pattern = addr::IPV4)))]
    pub ips: Vec<String>,
    /// Offered /28 prefixes (every address in them free).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PER_NODE), inner(regex(pattern = addr::IPV4_PREFIX_28)))]
    pub prefixes: Vec<String>,
}

impl ENIPool {
    /// The mode in force, defaulting to SecondaryIP before the operator resolved settings.
    pub fn mode(&self) -> IpMode {
        self.status.as_ref().and_then(|s| s.effective.as_ref()).map(|e| e.mode).unwrap_or_default()
    }
}

/// Counts for `kubectl get enipools`. Derived by the operator from `enis`, `releasing` and the
/// agent's report; never an input to decisions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Attached ENIs / ENIs the node may have, e.g. "2/3".
    #[serde(rename = "enis")]
    pub enis: String,
    /// Pod addresses held (secondary IPs + 16 × prefixes on ENIs that hand out addresses).
    pub allocated: i32,
    /// Addresses assigned to pods (agent report).
    pub in_use: i32,
    /// Addresses a new pod could get now.
    pub available: i32,
    /// Addresses being released in EC2.
    pub releasing: i32,
    /// Addresses offered by the agent and not yet released.
    pub offered: i32,
    /// Freed addresses resting before reuse (agent report).
    pub cooling: i32,
    /// Prefixes held: /28s, or /80s in an IPv6 cluster.
    pub prefixes: i32,
}
