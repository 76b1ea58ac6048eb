//! Types shared by the policy spec and the per-node overrides on an ENIPool.
//!
//! Every tunable is an `Option`: `None` means "inherit" (from the policy, then from the built-in
//! default documented on the field), so the same shapes serve as policy settings and as overrides.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How pod addresses are carved from ENIs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum IpMode {
    /// One secondary private IPv4 address per pod (the VPC CNI default).
    #[default]
    SecondaryIP,
    /// /28 IPv4 prefixes (16 addresses each) assigned to ENIs; pods take addresses from them.
    Prefix,
    /// Prefixes, falling back to secondary IPs when a subnet has no aligned /28 left
    /// (`InsufficientCidrBlocks`).
    PrefixWithFallback,
}

impl IpMode {
    /// The name as it appears in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            IpMode::SecondaryIP => "SecondaryIP",
            IpMode::Prefix => "Prefix",
            IpMode::PrefixWithFallback => "PrefixWithFallback",
        }
    }

    /// Whether addresses are requested as /28 prefixes first.
    pub fn uses_prefixes(self) -> bool {
        !matches!(self, IpMode::SecondaryIP)
    }
}

/// The address family of pod addresses, fixed for a cluster when enipool is installed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum IpFamily {
    /// Pods get private IPv4 addresses of the node's ENIs.
    #[default]
    IPv4,
    /// Pods get IPv6 addresses from one /80 prefix on the node's primary ENI, and reach IPv4
    /// destinations through a node-local IPv4 address SNATed to the node's.
    IPv6,
}

impl IpFamily {
    /// The name as it appears in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "IPv4",
            IpFamily::IPv6 => "IPv6",
        }
    }
}

impl std::str::FromStr for IpFamily {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "IPv4" | "ipv4" => Ok(IpFamily::IPv4),
            "IPv6" | "ipv6" => Ok(IpFamily::IPv6),
            other => Err(format!("unknown IP family {other:?} (IPv4 or IPv6)")),
        }
    }
}

/// How many addresses a node holds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.minAllocate) || !has(self.maxAllocate) || self.maxAllocate == 0 || self.minAllocate <= self.maxAllocate"
).message("minAllocate must be <= maxAllocate (or maxAllocate 0 = instance capacity)"))]
pub struct Sizing {
    /// Floor of addresses held on the node, whatever the demand. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65536))]
    pub min_allocate: Option<i32>,
    /// Free addresses kept ready beyond demand, so pod starts never wait for EC2. Default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "warmIPs")]
    #[schemars(range(min = 0, max = 4096))]
    pub warm_ips: Option<i32>,
    /// Free ENIs' worth of addresses kept ready (the Amazon VPC CNI's `WARM_ENI_TARGET`): the
    /// warm pool is at least this many times one ENI's addresses (its prefixes' in prefix modes).
    /// The larger of this and `warmIPs` applies. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "warmENIs")]
    #[schemars(range(min = 0, max = 16))]
    pub warm_enis: Option<i32>,
    /// Prefix modes: whole free /28 prefixes kept ready (each is 16 addresses). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 256))]
    pub warm_prefixes: Option<i32>,
    /// Allocation granularity in addresses: the target is rounded up to a multiple of it.
    /// Default 1 in SecondaryIP mode and 16 (one prefix) in prefix modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub batch: Option<i32>,
    /// Ceiling of addresses held on the node. Default 0 = the instance type's capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65536))]
    pub max_allocate: Option<i32>,
    /// Count pods bound to the node that have no address yet as demand, so a burst is met in one
    /// round of EC2 calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge: Option<Surge>,
}

/// Pending-pod surge: how much scheduled-but-unnetworked demand counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Surge {
    /// Count pending pods as demand. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// At most this many pending pods are counted. Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4096))]
    pub max_extra: Option<i32>,
}

/// When and how addresses go back to EC2.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSettings {
    /// Give excess addresses back to EC2. Default true (Cilium defaults to never, which strands
    /// addresses on nodes until they die).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Excess must persist this long before a release is requested. Default 180.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub delay_seconds: Option<i32>,
    /// Dead band above the target inside which nothing is released. Default warmIPs / 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "hysteresisIPs")]
    #[schemars(range(min = 0, max = 4096))]
    pub hysteresis_ips: Option<i32>,
    /// Detach and delete secondary ENIs whose addresses were all released. Never the primary ENI.
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "releaseEmptyENIs")]
    pub release_empty_enis: Option<bool>,
}

/// Chooses EC2 objects by explicit ids or by tags. Ids win when both are given.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdsOrTags {
    /// Explicit ids (e.g. `subnet-0abc…`, `sg-0abc…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Tags every chosen object must carry (key → value; an empty value matches any value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl IdsOrTags {
    /// True when neither ids nor tags are set (the caller's fallback applies).
    pub fn is_unset(&self) -> bool {
        self.ids.is_empty() && self.tags.is_empty()
    }
}

/// Where new ENIs go and which existing ones are used.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EniPlacement {
    /// Subnets for new ENIs; only those in the node's AZ and VPC are used, the one with the most
    /// free addresses first, never one tagged `kubernetes.io/role/cni: "0"`. Default: the node's
    /// own subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<IdsOrTags>,
    /// Security groups for new ENIs. Default: copied from the node's primary ENI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<IdsOrTags>,
    /// Lowest device index whose ENI hands out pod addresses. 0 uses the primary ENI (density);
    /// 1 keeps pods off the primary ENI (pods in other subnets than nodes). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub first_interface_index: Option<i32>,
    /// ENIs carrying any of these tags (key → value; empty value = any) are never used or touched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exclude_interface_tags: BTreeMap<String, String>,
    /// At most this many ENIs on the node, primary included. Default 0 = instance limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "maxENIs")]
    #[schemars(range(min = 0, max = 64))]
    pub max_enis: Option<i32>,
    /// Extra tags written on ENIs enipool creates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_tags: BTreeMap<String, String>,
}

/// Per-node overrides on an ENIPool; any field set here wins over the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolOverrides {
    /// Overrides the policy's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<IpMode>,
    /// Overrides individual sizing fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing: Option<Sizing>,
    /// Overrides individual release fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseSettings>,
    /// Overrides the cooldown before a freed address is reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub cooldown_seconds: Option<i32>,
}
