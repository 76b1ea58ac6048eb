//! `ENIPoolPolicy`: pool sizing and ENI placement for a set of nodes, kept in Git.

use crate::common::{EniPlacement, IpFamily, IpMode, ReleaseSettings, Sizing};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Sizing, release and ENI placement for the nodes its selector matches. Written by people and
/// GitOps tools (Argo CD, Flux), never by enipool, which only writes its status. When several
/// policies match a node, the highest `priority` wins; a tie is reported as `Overlapping` and
/// resolved by name so the choice is stable.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "enipool.io",
    version = "v1alpha1",
    kind = "ENIPoolPolicy",
    plural = "enipoolpolicies",
    singular = "enipoolpolicy",
    shortname = "enipp",
    status = "ENIPoolPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    category = "enipool-all",
    doc = "Pool sizing and ENI placement for the nodes a selector matches (kept in Git).",
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Warm", type_ = "integer", json_path = ".spec.sizing.warmIPs"),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.sizing.minAllocate"),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.matchedNodes"),
    printcolumn(
        name = "Subnets-Exhausted",
        type_ = "string",
        json_path = ".status.subnets[?(@.exhausted==true)].id"
    ),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.sizing) || !has(self.sizing.batch) || !has(self.mode) || self.mode == 'SecondaryIP' || self.sizing.batch % 16 == 0"
).message("in Prefix and PrefixWithFallback modes sizing.batch must be a multiple of 16 (one /28 prefix)"))]
#[x_kube(validation = Rule::new(
    "!has(self.sizing) || !has(self.sizing.warmPrefixes) || !has(self.mode) || self.mode != 'SecondaryIP'"
).message("sizing.warmPrefixes applies only to Prefix and PrefixWithFallback modes; use warmIPs in SecondaryIP mode"))]
pub struct ENIPoolPolicySpec {
    /// Nodes this policy applies to. Empty or absent selects every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Higher wins when several policies select a node. Default 0.
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,
    /// The family of pod addresses. It must be the cluster's, which is chosen at install (the
    /// chart's `ipFamily`); a policy naming the other family is reported as not Valid. Absent
    /// means the cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family: Option<IpFamily>,
    /// Address mode of IPv4 pods. Default SecondaryIP. IPv6 pods always take /80 prefixes.
    #[serde(default)]
    pub mode: IpMode,
    /// How many addresses each node holds.
    #[serde(default)]
    pub sizing: Sizing,
    /// When excess addresses go back to EC2.
    #[serde(default)]
    pub release: ReleaseSettings,
    /// Seconds a freed address rests before it is given to another pod, so stale conntrack entries
    /// and ARP caches elsewhere in the VPC expire. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub cooldown_seconds: Option<i32>,
    /// Where new ENIs are placed and which existing ENIs are used.
    #[serde(default)]
    pub eni: EniPlacement,
    /// While a node is cordoned (`spec.unschedulable`), make no ENI or address change for it: no
    /// growth and no release. Work already started is still finished or rolled back, and a deleted
    /// node is still cleaned up. Pods keep getting addresses the pool already holds. Default
    /// false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub freeze_when_cordoned: bool,
}

/// What the operator observed about a policy. Written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ENIPoolPolicyStatus {
    /// The policy generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes whose ENIPool resolved to this policy.
    #[serde(default)]
    pub matched_nodes: i32,
    /// Subnets the policy places ENIs in, with their free addresses as last seen in EC2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<SubnetState>,
    /// Ready and Stalled (kstatus: what GitOps tools read), Valid, Overlapping, SubnetsFound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One subnet's free space, as the operator last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubnetState {
    /// Subnet id.
    pub id: String,
    /// Availability zone of the subnet.
    #[serde(default)]
    pub zone: String,
    /// Free addresses reported by EC2.
    #[serde(default)]
    #[serde(rename = "availableIPs")]
    pub available_ips: i32,
    /// An allocation in this subnet failed for lack of addresses or aligned /28 blocks.
    #[serde(default)]
    pub exhausted: bool,
    /// When EC2 was last asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked: Option<Time>,
}
