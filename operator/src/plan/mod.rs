//! The pure half of the operator (no I/O): how many addresses a node should hold, where new ones
//! go, and when excess is given back. Everything here takes plain values and returns plain values,
//! so it is table-tested without EC2 or Kubernetes (CONTRIBUTING.md, "Code standards").

pub mod gate;
pub mod placement;
pub mod release;
pub mod sizing;

pub use gate::Gate;
pub use placement::{
    next_device_index, plan_growth, prefix_fallback, Blocked, Growth, GrowthInput, Step,
};
pub use release::{decide_release, ReleaseDecision, ReleaseInput};
pub use sizing::{
    allocated, compute_target, deficit, held, in_flight, releasing_addresses, slots_per_eni,
    Demand, Sized,
};

/// One ENI of the node as the planner sees it, derived from EC2 after the per-node sync.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EniView {
    /// `eni-…`.
    pub id: String,
    /// Device index on the instance (0 = primary).
    pub device_index: i32,
    pub subnet_id: String,
    pub ips: i32,
    /// /28 prefixes held.
    pub prefixes: i32,
    /// /80 IPv6 prefixes held.
    pub ipv6_prefixes: i32,
    /// Carries an excluded tag: occupies a device index and an ENI slot but is never used.
    pub excluded: bool,
    /// Created by enipool (only these may be detached and deleted).
    pub managed: bool,
    /// Attached or attaching to this instance, so it can take addresses (a detaching ENI is on its
    /// way out and never filled).
    pub attached: bool,
}

impl EniView {
    /// Address slots in use (each secondary address or prefix takes one of the ENI's slots).
    pub fn used_slots(&self) -> i32 {
        self.ips + self.prefixes
    }
}

#[cfg(test)]
mod tests;
