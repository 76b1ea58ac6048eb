//! Effective settings: policy + per-node overrides + built-in defaults + instance limits, resolved
//! into the numbers the operator sizes with and publishes on the pool.

use crate::common::{IpFamily, IpMode, PoolOverrides, ReleaseSettings, Sizing};
use crate::policy::ENIPoolPolicySpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Built-in defaults, documented on the API fields they fill.
pub mod defaults {
    /// `sizing.warmIPs`.
    pub const WARM_IPS: i32 = 8;
    /// `sizing.warmPrefixes`.
    pub const WARM_PREFIXES: i32 = 1;
    /// `sizing.batch` in SecondaryIP mode.
    pub const BATCH_IPS: i32 = 1;
    /// `sizing.batch` in prefix modes (one /28).
    pub const BATCH_PREFIX: i32 = 16;
    /// `sizing.surge.maxExtra`.
    pub const SURGE_MAX_EXTRA: i32 = 64;
    /// `release.delaySeconds`.
    pub const RELEASE_DELAY_SECONDS: i32 = 180;
    /// `cooldownSeconds`.
    pub const COOLDOWN_SECONDS: i32 = 30;
}

/// Addresses in one /28 prefix.
pub const PREFIX_SIZE: i32 = 16;

/// The most pods an IPv6 node runs besides its host-network pods: a /80 holds far more addresses
/// than any node runs pods, so the kubelet's pod limit is the bound, and 250 is the largest EKS
/// sets for nodes with prefixes (the two host-network pods are in it).
pub const IPV6_MAX_POD_IPS: i32 = 248;

/// Per-instance-type network limits (from DescribeInstanceTypes or the static table).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceLimits {
    /// Maximum ENIs attachable (all network cards).
    #[serde(rename = "maxENIs")]
    pub max_enis: i32,
    /// Private IPv4 addresses per ENI, the ENI's own primary address included.
    #[serde(rename = "ipsPerENI")]
    pub ips_per_eni: i32,
}

/// Where the limits came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CapacitySource {
    /// DescribeInstanceTypes.
    #[default]
    EC2API,
    /// The operator's built-in table (EC2 unavailable or type unknown to it).
    Static,
}

/// What the node can hold, derived from its limits and the policy's ENI placement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// ENIs enipool may use on this node, primary included (limit ∧ `maxENIs`).
    #[serde(rename = "maxENIs")]
    pub max_enis: i32,
    /// Addresses per ENI including its primary.
    #[serde(rename = "ipsPerENI")]
    pub ips_per_eni: i32,
    /// Prefix slots per ENI (every slot but the ENI's primary address can hold a /28).
    #[serde(rename = "prefixesPerENI")]
    pub prefixes_per_eni: i32,
    /// Pod addresses the node can hold in the effective mode.
    #[serde(rename = "maxPodIPs")]
    pub max_pod_ips: i32,
    /// Value for kubelet's `maxPods`: pod addresses + 2 host-network pods (the VPC CNI formula).
    pub max_pods: i32,
    /// Where the limits came from.
    pub source: CapacitySource,
}

/// Everything the operator sizes with, resolved. Published in `status.effective`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSettings {
    /// Family of pod addresses (the cluster's).
    #[serde(default)]
    pub ip_family: IpFamily,
    /// Address mode (Prefix in an IPv6 cluster: one /80).
    pub mode: IpMode,
    /// Floor of addresses.
    pub min_allocate: i32,
    /// Free addresses kept beyond demand.
    #[serde(rename = "warmIPs")]
    pub warm_ips: i32,
    /// Free prefixes kept beyond demand (prefix modes).
    pub warm_prefixes: i32,
    /// Free ENIs' worth of addresses kept beyond demand.
    #[serde(default, rename = "warmENIs")]
    pub warm_enis: i32,
    /// Allocation granularity in addresses.
    pub batch: i32,
    /// Ceiling of addresses (already clamped to capacity).
    pub max_allocate: i32,
    /// Pending pods counted as demand (0 when surge is off).
    pub surge_max_extra: i32,
    /// Whether excess is released.
    pub release_enabled: bool,
    /// Seconds excess must persist before release.
    pub release_delay_seconds: i32,
    /// Dead band above target.
    #[serde(rename = "hysteresisIPs")]
    pub hysteresis_ips: i32,
    /// Delete secondary ENIs emptied by release.
    #[serde(rename = "releaseEmptyENIs")]
    pub release_empty_enis: bool,
    /// Seconds a freed address rests before reuse.
    pub cooldown_seconds: i32,
    /// Lowest device index handing out pod addresses.
    pub first_interface_index: i32,
    /// No ENI or address changes while the node is cordoned.
    #[serde(default)]
    pub freeze_when_cordoned: bool,
    /// What the node can hold.
    pub capacity: Capacity,
}

/// First `Some` of the override and the policy value.
fn pick<T: Clone>(over: Option<&T>, policy: Option<&T>) -> Option<T> {
    over.or(policy).cloned()
}

/// Resolve the settings of one node.
///
/// `family` is the cluster's address family, `policy` the selected ENIPoolPolicy's spec (or `None`
/// for built-in defaults), `overrides` the pool's per-node overrides. Never fails: out-of-range combinations are clamped (e.g. a
/// `minAllocate` above capacity becomes capacity) because the apiserver already refused the values a
/// person could fix, and a node must keep working with what it has.
pub fn resolve(
    family: IpFamily,
    policy: Option<&ENIPoolPolicySpec>,
    overrides: Option<&PoolOverrides>,
    limits: InstanceLimits,
    source: CapacitySource,
) -> EffectiveSettings {
    let empty_sizing = Sizing::default();
    let empty_release = ReleaseSettings::default();
    let ps = policy.map(|p| &p.sizing).unwrap_or(&empty_sizing);
    let pr = policy.map(|p| &p.release).unwrap_or(&empty_release);
    let os = overrides.and_then(|o| o.sizing.as_ref()).unwrap_or(&empty_sizing);
    let or = overrides.and_then(|o| o.release.as_ref()).unwrap_or(&empty_release);

    let ipv6 = family == IpFamily::IPv6;
    let mode = match ipv6 {
        true => IpMode::Prefix,
        false => overrides.and_then(|o| o.mode).or(policy.map(|p| p.mode)).unwrap_or_default(),
    };
    let placement = policy.map(|p| p.eni.clone()).unwrap_or_default();
    // IPv6 pods take their addresses from the primary ENI's prefix: ENIs in other subnets
    // (custom networking) have no place there, as in the Amazon VPC CNI.
    let first_interface_index =
        if ipv6 { 0 } else { placement.first_interface_index.unwrap_or(0).clamp(0, 1) };
    let max_enis_setting = placement.max_enis.unwrap_or(0);
    let capacity = match ipv6 {
        true => ipv6_capacity(limits, max_enis_setting, source),
        false => capacity(mode, limits, max_enis_setting, first_interface_index, source),
    };

    let warm_ips = pick(os.warm_ips.as_ref(), ps.warm_ips.as_ref()).unwrap_or(defaults::WARM_IPS);
    let warm_prefixes = pick(os.warm_prefixes.as_ref(), ps.warm_prefixes.as_ref())
        .unwrap_or(defaults::WARM_PREFIXES);
    let warm_enis = pick(os.warm_enis.as_ref(), ps.warm_enis.as_ref()).unwrap_or(0).max(0);
    let default_batch =
        if mode.uses_prefixes() { defaults::BATCH_PREFIX } else { defaults::BATCH_IPS };
    let batch = pick(os.batch.as_ref(), ps.batch.as_ref()).unwrap_or(default_batch).max(1);
    let max_allocate = match pick(os.max_allocate.as_ref(), ps.max_allocate.as_ref()).unwrap_or(0) {
        0 => capacity.max_pod_ips,
        n => n.min(capacity.max_pod_ips),
    };
    let min_allocate = pick(os.min_allocate.as_ref(), ps.min_allocate.as_ref())
        .unwrap_or(0)
        .clamp(0, max_allocate);
    let surge = os.surge.as_ref().or(ps.surge.as_ref());
    let surge_enabled = surge.and_then(|s| s.enabled).unwrap_or(true);
    let surge_max_extra = if surge_enabled {
        surge.and_then(|s| s.max_extra).unwrap_or(defaults::SURGE_MAX_EXTRA)
    } else {
        0
    };
    let cooldown_seconds = overrides
        .and_then(|o| o.cooldown_seconds)
        .or(policy.and_then(|p| p.cooldown_seconds))
        .unwrap_or(defaults::COOLDOWN_SECONDS);

    EffectiveSettings {
        ip_family: family,
        mode,
        min_allocate,
        warm_ips,
        warm_prefixes,
        warm_enis,
        batch,
        max_allocate,
        surge_max_extra,
        // A node's one /80 is never given back while the node lives.
        release_enabled: !ipv6 && pick(or.enabled.as_ref(), pr.enabled.as_ref()).unwrap_or(true),
        release_delay_seconds: pick(or.delay_seconds.as_ref(), pr.delay_seconds.as_ref())
            .unwrap_or(defaults::RELEASE_DELAY_SECONDS),
        hysteresis_ips: pick(or.hysteresis_ips.as_ref(), pr.hysteresis_ips.as_ref())
            .unwrap_or(warm_ips / 2),
        release_empty_enis: pick(or.release_empty_enis.as_ref(), pr.release_empty_enis.as_ref())
            .unwrap_or(true),
        cooldown_seconds,
        first_interface_index,
        freeze_when_cordoned: policy.is_some_and(|p| p.freeze_when_cordoned),
        capacity,
    }
}

/// What a node can hold.
///
/// Secondary-IP mode: every ENI from `first_interface_index` on contributes its addresses minus its
/// own primary. Prefix modes: each of those slots holds a /28 instead. `maxPods` follows the VPC CNI
/// formula, computed over all ENIs the node may have (kubelet counts every pod on the node).
pub fn capacity(
    mode: IpMode,
    limits: InstanceLimits,
    max_enis_setting: i32,
    first_interface_index: i32,
    source: CapacitySource,
) -> Capacity {
    let max_enis = match max_enis_setting {
        n if n > 0 => n.min(limits.max_enis),
        _ => limits.max_enis,
    }
    .max(0);
    let slots_per_eni = (limits.ips_per_eni - 1).max(0);
    let pod_enis = (max_enis - first_interface_index).max(0);
    let per_slot = if mode.uses_prefixes() { PREFIX_SIZE } else { 1 };
    let max_pod_ips = pod_enis * slots_per_eni * per_slot;
    Capacity {
        max_enis,
        ips_per_eni: limits.ips_per_eni,
        prefixes_per_eni: slots_per_eni,
        max_pod_ips,
        max_pods: max_pod_ips + 2,
        source,
    }
}

/// What an IPv6 node can hold: pods are bounded by the kubelet's limit, not by addresses. The
/// limit follows EKS's calculation for nodes with prefixes (every slot of every ENI a /28's
/// worth), capped at [`IPV6_MAX_POD_IPS`]; a policy's `maxAllocate` lowers it further.
pub fn ipv6_capacity(
    limits: InstanceLimits,
    max_enis_setting: i32,
    source: CapacitySource,
) -> Capacity {
    let prefix = capacity(IpMode::Prefix, limits, max_enis_setting, 0, source);
    let max_pod_ips = prefix.max_pod_ips.min(IPV6_MAX_POD_IPS);
    Capacity { max_pod_ips, max_pods: max_pod_ips + 2, ..prefix }
}

#[cfg(test)]
mod tests;
