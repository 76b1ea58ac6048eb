//! The target: how many pod addresses a node should hold (docs/design.md), and how far the node is
//! from it (held, in flight, deficit). Idempotent: the same demand always gives the same target, so
//! a burst is met in one round, never batch by batch.

use super::EniView;
use enipool_crds::settings::{EffectiveSettings, PREFIX_SIZE};
use enipool_crds::{AgentStatus, ENIPoolStatus, Releasing};

/// What the agent reports as demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    /// Addresses assigned to sandboxes.
    pub in_use: i32,
    /// Freed addresses resting before reuse: held, but no pod can get them, so they count as
    /// demand. Otherwise a node that churned pods would meet its target with addresses it cannot
    /// hand out, and a burst would wait for the cooldown instead of for one growth round.
    pub cooling: i32,
    /// Pods bound to the node without an address yet.
    pub pending_pods: i32,
}

impl Demand {
    /// The demand in the agent's report (none before it reports).
    pub fn reported(agent: Option<&AgentStatus>) -> Demand {
        agent.map_or_else(Demand::default, |a| Demand {
            in_use: a.in_use,
            cooling: a.cooling,
            pending_pods: a.pending_pods,
        })
    }
}

/// A target and the term that decided it (published in `status.target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sized {
    /// Addresses the node should hold.
    pub ips: i32,
    /// `demand`, `minAllocate`, `maxAllocate` or `capacity`.
    pub reason: &'static str,
}

/// Ceiling division for non-negative numerators and positive divisors.
fn div_ceil(a: i32, b: i32) -> i32 {
    if a <= 0 {
        0
    } else {
        (a + b - 1) / b
    }
}

/// `target = clamp(batch × ceil((demand + warm) / batch), minAllocate, min(maxAllocate, capacity))`
/// with `demand = inUse + cooling + min(pendingPods, surge)`.
///
/// Prefix modes count in whole /28s: the warm term is the larger of `warmIPs` free addresses and
/// `warmPrefixes` whole free prefixes on top of the prefixes demand fills (pods packed), and the
/// result is a multiple of 16. `max_allocate` is already clamped to capacity by `settings::resolve`.
pub fn compute_target(eff: &EffectiveSettings, demand: Demand) -> Sized {
    let surge = demand.pending_pods.clamp(0, eff.surge_max_extra.max(0));
    let need = demand.in_use.max(0) + demand.cooling.max(0) + surge;
    let batch = eff.batch.max(1);
    // A warm ENI is one ENI's addresses: its slots, or its slots' prefixes in prefix modes.
    let per_eni = slots_per_eni(eff) * if eff.mode.uses_prefixes() { PREFIX_SIZE } else { 1 };
    let warm = eff.warm_ips.max(0).max(eff.warm_enis.max(0) * per_eni);
    let raw = if eff.mode.uses_prefixes() {
        let by_ips = div_ceil(need + warm, PREFIX_SIZE);
        let by_prefixes = div_ceil(need, PREFIX_SIZE) + eff.warm_prefixes.max(0);
        by_ips.max(by_prefixes) * PREFIX_SIZE
    } else {
        need + warm
    };
    let mut ips = div_ceil(raw, batch) * batch;
    let mut reason = "demand";
    let round =
        |n: i32| if eff.mode.uses_prefixes() { div_ceil(n, PREFIX_SIZE) * PREFIX_SIZE } else { n };
    let min = round(eff.min_allocate.max(0));
    // The ceiling is rounded down to whole prefixes in prefix modes.
    let max = if eff.mode.uses_prefixes() {
        eff.max_allocate.max(0) / PREFIX_SIZE * PREFIX_SIZE
    } else {
        eff.max_allocate.max(0)
    };
    if ips < min {
        ips = min;
        reason = "minAllocate";
    }
    if ips > max {
        ips = max;
        reason = if max >= eff.capacity.max_pod_ips { "capacity" } else { "maxAllocate" };
    }
    Sized { ips, reason }
}

/// Pod addresses held on the ENIs that hand them out (device index ≥ `first_interface_index`, not
/// excluded): secondary addresses + 16 × prefixes.
pub fn allocated(enis: &[EniView], first_interface_index: i32) -> i32 {
    enis.iter()
        .filter(|e| !e.excluded && e.device_index >= first_interface_index)
        .map(|e| e.ips + e.prefixes * PREFIX_SIZE)
        .sum()
}

/// Addresses in a release the operator committed to (its /32s and 16 per prefix).
pub fn releasing_addresses(r: &Releasing) -> i32 {
    r.ips.len() as i32 + r.prefixes.len() as i32 * PREFIX_SIZE
}

/// Addresses held in EC2 but unusable by the agent: those releasing, and those the agent offered
/// for the outstanding release request (until the operator commits to them). They do not count as
/// held.
pub fn in_flight(st: &ENIPoolStatus, agent: Option<&AgentStatus>) -> i32 {
    // Releasing items EC2 no longer shows are gone, not in flight.
    let releasing = st
        .releasing
        .as_ref()
        .map(|r| super::release::group_present(&st.enis, &r.ips, &r.prefixes))
        .unwrap_or_default()
        .iter()
        .map(|g| g.ips.len() as i32 + g.prefixes.len() as i32 * PREFIX_SIZE)
        .sum::<i32>();
    let outstanding = st.release_request.as_ref().filter(|r| r.revision > st.released_revision);
    let offered = match (outstanding, agent.and_then(|a| a.releasable.as_ref())) {
        (Some(req), Some(o)) if o.revision == req.revision && st.releasing.is_none() => {
            o.ips.len() as i32 + o.prefixes.len() as i32 * PREFIX_SIZE
        }
        _ => 0,
    };
    releasing + offered
}

/// Addresses that count toward the target: allocated on the node's ENIs, less those in flight.
pub fn held(enis: &[EniView], first_interface_index: i32, in_flight: i32) -> i32 {
    allocated(enis, first_interface_index) - in_flight
}

/// Addresses missing to reach `target` (0 at or above it).
pub fn deficit(target: i32, held: i32) -> i32 {
    (target - held).max(0)
}

/// Secondary address slots of one ENI: its addresses less the ENI's own primary.
pub fn slots_per_eni(eff: &EffectiveSettings) -> i32 {
    (eff.capacity.ips_per_eni - 1).max(0)
}
