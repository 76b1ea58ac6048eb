//! An in-memory [`Ec2Api`](crate::ec2::Ec2Api) for unit tests (a stateful fake with fault
//! injection). It enforces the limits the operator must respect — ENIs per
//! instance, addresses per ENI, free addresses per subnet — honours ClientToken idempotency on
//! create, counts calls by action, and lets a test inject errors (`Throttled`, `NoCidrBlocks`,
//! `SubnetFull`, …) per action.
//!
//! This file holds the state and the rules EC2 enforces on it; `control.rs` is what a test does
//! to the fake besides calling it (seed, terminate, inject faults, read the call log), `api.rs`
//! the `Ec2Api` calls themselves.

use crate::ec2::{
    Ec2Error, Ec2ErrorKind, Ec2Result, Eni, Instance, InstanceTypeInfo, SecurityGroup, Subnet, Vpc,
};
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Mutex;

mod api;
mod control;

/// Mutable state of the fake.
#[derive(Debug, Default)]
pub struct FakeState {
    pub instances: BTreeMap<String, Instance>,
    /// Limits per instance type.
    pub types: BTreeMap<String, InstanceTypeInfo>,
    pub enis: BTreeMap<String, Eni>,
    pub subnets: BTreeMap<String, Subnet>,
    pub vpcs: BTreeMap<String, Vpc>,
    pub security_groups: Vec<SecurityGroup>,
    /// ClientToken → ENI id.
    pub tokens: BTreeMap<String, String>,
    /// Addresses in use per subnet (as u32).
    pub used: BTreeMap<String, BTreeSet<u32>>,
    /// Injected failures: (action, kind), consumed first-match in order.
    pub faults: VecDeque<(&'static str, Ec2ErrorKind)>,
    /// Actions called, in order.
    pub calls: Vec<&'static str>,
    /// Subnets with no aligned /28 left (prefix requests fail with NoCidrBlocks).
    pub no_cidr: BTreeSet<String>,
    /// The ENIs as ENI describes answer while they lag (`None`: as they are).
    pub described_enis: Option<BTreeMap<String, Eni>>,
    /// IPv6 blocks of subnets (/64), and how many /80s of each were handed out.
    pub ipv6_subnets: BTreeMap<String, (Ipv6Net, u32)>,
    next_id: u64,
}

/// The fake EC2.
#[derive(Debug, Default)]
pub struct FakeEc2 {
    /// State; tests may inspect and edit it directly.
    pub state: Mutex<FakeState>,
}

fn err(kind: Ec2ErrorKind, action: &'static str, message: impl Into<String>) -> Ec2Error {
    Ec2Error { kind, action, code: kind.as_str().into(), message: message.into() }
}

impl FakeState {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:08x}", self.next_id)
    }

    /// Record the call and fail it when a fault was injected for the action.
    fn enter(&mut self, action: &'static str) -> Ec2Result<()> {
        self.calls.push(action);
        if let Some(pos) = self.faults.iter().position(|(a, _)| *a == action || *a == "*") {
            let (_, kind) = self.faults.remove(pos).expect("position is valid");
            return Err(err(kind, action, "injected"));
        }
        Ok(())
    }

    fn limits_of(&self, instance_id: &str) -> InstanceTypeInfo {
        let t =
            self.instances.get(instance_id).map(|i| i.instance_type.clone()).unwrap_or_default();
        self.types.get(&t).copied().unwrap_or(InstanceTypeInfo { max_enis: 3, ipv4_per_eni: 10 })
    }

    /// Take `n` free addresses (or `n` aligned /28s when `prefix`) from a subnet.
    fn take(
        &mut self,
        subnet_id: &str,
        n: i32,
        prefix: bool,
        action: &'static str,
    ) -> Ec2Result<Vec<Ipv4Net>> {
        let subnet = self
            .subnets
            .get(subnet_id)
            .cloned()
            .ok_or_else(|| err(Ec2ErrorKind::NotFound, action, "subnet"))?;
        let size = if prefix { 16 } else { 1 };
        if subnet.available_ips < n * size {
            return Err(err(Ec2ErrorKind::SubnetFull, action, "InsufficientFreeAddressesInSubnet"));
        }
        if prefix && self.no_cidr.contains(subnet_id) {
            return Err(err(Ec2ErrorKind::NoCidrBlocks, action, "InsufficientCidrBlocks"));
        }
        let base = u32::from(subnet.cidr.network());
        let hosts = 1u32 << (32 - subnet.cidr.prefix_len());
        let used = self.used.entry(subnet_id.to_string()).or_default();
        let mut out = Vec::new();
        // Addresses from the bottom (skipping the 4 AWS reserves), prefixes from the top, aligned.
        if prefix {
            // A subnet under /27 has no /28 outside its reserved first block.
            let mut start = hosts.saturating_sub(32);
            while out.len() < n as usize && start >= 16 {
                if (start..start + 16).all(|o| !used.contains(&(base + o))) {
                    (start..start + 16).for_each(|o| {
                        used.insert(base + o);
                    });
                    out.push(Ipv4Net::new(Ipv4Addr::from(base + start), 28).expect("valid"));
                }
                start -= 16;
            }
            if out.len() < n as usize {
                return Err(err(Ec2ErrorKind::NoCidrBlocks, action, "InsufficientCidrBlocks"));
            }
        } else {
            let mut o = 4;
            while out.len() < n as usize && o < hosts - 1 {
                if used.insert(base + o) {
                    out.push(Ipv4Net::new(Ipv4Addr::from(base + o), 32).expect("valid"));
                }
                o += 1;
            }
        }
        let s = self.subnets.get_mut(subnet_id).expect("checked");
        s.available_ips -= n * size;
        Ok(out)
    }

    fn give_back(&mut self, subnet_id: &str, net: Ipv4Net) {
        let base = u32::from(net.network());
        let count = 1u32 << (32 - net.prefix_len());
        if let Some(used) = self.used.get_mut(subnet_id) {
            (base..base + count).for_each(|a| {
                used.remove(&a);
            });
        }
        if let Some(s) = self.subnets.get_mut(subnet_id) {
            s.available_ips += count as i32;
        }
    }

    /// The ENIs an ENI describe sees.
    fn described_enis(&self) -> &BTreeMap<String, Eni> {
        self.described_enis.as_ref().unwrap_or(&self.enis)
    }

    fn eni_mut(&mut self, id: &str, action: &'static str) -> Ec2Result<&mut Eni> {
        self.enis
            .get_mut(id)
            .ok_or_else(|| err(Ec2ErrorKind::NotFound, action, format!("{id} not found")))
    }
}
