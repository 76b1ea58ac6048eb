//! IPv6 in the VPC model, as EC2 has it: a VPC gets an Amazon-provided /56, a subnet a /64 of it,
//! and an ENI in such a subnet holds single /128 addresses or delegated /80 prefixes (prefix
//! delegation: what IPv6 pod networking takes one of per node). Each address and each prefix is
//! one of the ENI's IPv6 slots, whose limit per instance type is the IPv4 one.
//!
//! The subnet's /64 is split so the two kinds never meet: single addresses come from its first
//! /80, prefixes from the rest, lowest first (deterministic where EC2 picks at random).
//!
//! An instance launched into a subnet with an IPv6 block gets one address on its primary ENI, as
//! an EKS IPv6 node does (the subnet auto-assigns it). Every change is reported to the fabric hook
//! as `Ipv6Assigned`/`Ipv6Unassigned`.

use super::hooks::HookEvent;
use super::limits::UNATTACHED_IPV4_SLOTS;
use super::state::{not_found, Eni, State, VpcIpv6};
use super::Error;
use ipnet::Ipv6Net;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::Ipv6Addr;

/// The length of a delegated prefix.
pub const PREFIX_LEN: u8 = 80;
/// The length of a subnet's block.
pub const SUBNET_LEN: u8 = 64;
/// The length of a VPC's Amazon-provided block.
pub const VPC_LEN: u8 = 56;

fn bad(code: &str, msg: impl Into<String>) -> Error {
    Error::api(code, msg)
}

/// A subnet's IPv6 block and what of it ENIs hold.
#[derive(Debug, Clone, Serialize)]
pub struct SubnetIpv6 {
    /// `subnet-cidr-assoc-…`.
    pub association_id: String,
    /// The /64.
    pub cidr: Ipv6Net,
    pub addrs: BTreeSet<Ipv6Addr>,
    pub prefixes: BTreeSet<Ipv6Net>,
}

impl SubnetIpv6 {
    /// The /80 single addresses come from.
    fn address_block(&self) -> Ipv6Net {
        Ipv6Net::new(self.cidr.network(), PREFIX_LEN).expect("80 <= 128")
    }

    /// EC2 reserves the first four addresses and the last of a subnet's IPv6 block.
    fn is_reserved(&self, a: Ipv6Addr) -> bool {
        let off = u128::from(a) - u128::from(self.cidr.network());
        off <= 3 || a == self.cidr.broadcast()
    }

    fn take_addrs(&mut self, n: u32, subnet_id: &str) -> Result<Vec<Ipv6Addr>, Error> {
        let base = u128::from(self.address_block().network());
        let size = 1u128 << (128 - PREFIX_LEN);
        let picked: Vec<Ipv6Addr> = (0..size)
            .map(|i| Ipv6Addr::from(base + i))
            .filter(|a| !self.is_reserved(*a) && !self.addrs.contains(a))
            .take(n as usize)
            .collect();
        if picked.len() < n as usize {
            return Err(insufficient(subnet_id));
        }
        self.addrs.extend(picked.iter().copied());
        Ok(picked)
    }

    fn take_exact_addrs(&mut self, addrs: &[Ipv6Addr]) -> Result<(), Error> {
        for (i, a) in addrs.iter().enumerate() {
            if !self.address_block().contains(a) || self.is_reserved(*a) {
                return Err(bad(
                    "InvalidParameterValue",
                    format!("Address {a} does not fall within the subnet's address range or is reserved"),
                ));
            }
            if self.addrs.contains(a) || addrs[..i].contains(a) {
                return Err(bad(
                    "InvalidIPAddress.InUse",
                    format!("The specified address {a} is already in use."),
                ));
            }
        }
        self.addrs.extend(addrs.iter().copied());
        Ok(())
    }

    fn take_prefixes(&mut self, n: u32, subnet_id: &str) -> Result<Vec<Ipv6Net>, Error> {
        let first = self.address_block();
        let picked: Vec<Ipv6Net> = (self.cidr.subnets(PREFIX_LEN).expect("80 >= 64"))
            .filter(|p| *p != first && !self.prefixes.contains(p))
            .take(n as usize)
            .collect();
        if picked.len() < n as usize {
            return Err(bad(
                "InsufficientCidrBlocks",
                format!(
                    "The specified subnet {subnet_id} does not have enough free cidr blocks to satisfy the request."
                ),
            ));
        }
        self.prefixes.extend(picked.iter().copied());
        Ok(picked)
    }

    fn take_exact_prefixes(&mut self, prefixes: &[Ipv6Net]) -> Result<(), Error> {
        for (i, p) in prefixes.iter().enumerate() {
            let aligned = p.prefix_len() == PREFIX_LEN && p.network() == p.addr();
            if !aligned || !self.cidr.contains(p) || *p == self.address_block() {
                return Err(bad(
                    "InvalidParameterValue",
                    format!("Invalid value '{p}' for Ipv6Prefix: must be an aligned /80 inside the subnet"),
                ));
            }
            if self.prefixes.contains(p) || prefixes[..i].contains(p) {
                return Err(bad(
                    "InvalidParameterValue",
                    format!("The prefix {p} overlaps addresses already in use."),
                ));
            }
        }
        self.prefixes.extend(prefixes.iter().copied());
        Ok(())
    }

    /// Gives an ENI's IPv6 addresses and prefixes back.
    pub fn release(&mut self, addrs: &[Ipv6Addr], prefixes: &[Ipv6Net]) {
        for a in addrs {
            self.addrs.remove(a);
        }
        for p in prefixes {
            self.prefixes.remove(p);
        }
    }
}

fn insufficient(subnet_id: &str) -> Error {
    bad(
        "InsufficientFreeAddressesInSubnet",
        format!("The specified subnet {subnet_id} has insufficient free addresses to satisfy the request."),
    )
}

/// An AssignIpv6Addresses request, parsed: addresses by count or by value, or prefixes by count
/// or by value.
#[derive(Debug, Clone, Default)]
pub struct Ipv6AssignReq {
    pub addr_count: Option<u32>,
    pub addrs: Vec<Ipv6Addr>,
    pub prefix_count: Option<u32>,
    pub prefixes: Vec<Ipv6Net>,
}

impl Eni {
    /// IPv6 slots in use: each address and each /80 prefix.
    pub fn ipv6_slots(&self) -> u32 {
        (self.ipv6_addrs.len() + self.ipv6_prefixes.len()) as u32
    }
}

impl State {
    /// Gives a VPC its Amazon-provided /56 (AssociateVpcCidrBlock with
    /// AmazonProvidedIpv6CidrBlock, as seeding); returns it. One per VPC.
    pub fn associate_vpc_ipv6(&mut self, vpc_id: &str) -> Result<Ipv6Net, Error> {
        let n = self.vpcs.values().filter(|v| v.ipv6.is_some()).count() as u128;
        let association_id = self.new_id("vpc-cidr-assoc");
        let vpc = self
            .vpcs
            .get_mut(vpc_id)
            .ok_or_else(|| not_found("InvalidVpcID.NotFound", "vpc ID", vpc_id))?;
        if vpc.ipv6.is_some() {
            return Err(bad(
                "CidrLimitExceeded",
                format!("The VPC {vpc_id} already has an Amazon-provided IPv6 CIDR block."),
            ));
        }
        // 2600:1f14:0:NN00::/56, one per VPC: Amazon's pool, distinct per VPC.
        let base: u128 = 0x2600_1f14_0000_0000 << 64;
        let cidr = Ipv6Net::new(Ipv6Addr::from(base | (n << (128 - VPC_LEN))), VPC_LEN)
            .expect("56 <= 128");
        vpc.ipv6 = Some(VpcIpv6 { association_id, cidr });
        Ok(cidr)
    }

    /// Gives a subnet the `index`-th /64 of its VPC's /56 (AssociateSubnetCidrBlock, as seeding).
    pub fn associate_subnet_ipv6(&mut self, subnet_id: &str, index: u8) -> Result<Ipv6Net, Error> {
        let subnet = self.subnet_mut(subnet_id)?;
        let vpc_id = subnet.vpc_id.clone();
        let had = subnet.ipv6.is_some();
        let block = self
            .vpcs
            .get(&vpc_id)
            .and_then(|v| v.ipv6.as_ref())
            .map(|b| b.cidr)
            .ok_or_else(|| {
                bad("InvalidParameterValue", format!("The VPC {vpc_id} has no IPv6 CIDR block."))
            })?;
        if had {
            return Err(bad(
                "InvalidParameterValue",
                format!("The subnet {subnet_id} already has an IPv6 CIDR block."),
            ));
        }
        let cidr = block.subnets(SUBNET_LEN).expect("64 >= 56").nth(index.into()).expect("256");
        if self.subnets.values().any(|s| s.ipv6.as_ref().is_some_and(|b| b.cidr == cidr)) {
            return Err(bad(
                "InvalidSubnet.Conflict",
                format!("The CIDR '{cidr}' conflicts with another subnet"),
            ));
        }
        let association_id = self.new_id("subnet-cidr-assoc");
        let v6 =
            SubnetIpv6 { association_id, cidr, addrs: BTreeSet::new(), prefixes: BTreeSet::new() };
        self.subnet_mut(subnet_id)?.ipv6 = Some(v6);
        Ok(cidr)
    }

    fn ipv6_slot_limit(&self, eni: &Eni) -> u32 {
        self.attached_type(eni).map_or(UNATTACHED_IPV4_SLOTS, |l| l.ipv6_per_eni)
    }

    /// AssignIpv6Addresses: addresses or prefixes, all or nothing.
    pub fn assign_ipv6(
        &mut self,
        eni_id: &str,
        req: &Ipv6AssignReq,
        ev: &mut Vec<HookEvent>,
    ) -> Result<(Vec<Ipv6Addr>, Vec<Ipv6Net>), Error> {
        let want_addrs = req.addr_count.is_some() || !req.addrs.is_empty();
        let want_pfx = req.prefix_count.is_some() || !req.prefixes.is_empty();
        if (want_addrs && want_pfx)
            || (req.addr_count.is_some() && !req.addrs.is_empty())
            || (req.prefix_count.is_some() && !req.prefixes.is_empty())
        {
            return Err(bad(
                "InvalidParameterCombination",
                "Specify either a count or explicit values, and either addresses or prefixes.",
            ));
        }
        if !want_addrs && !want_pfx {
            return Err(bad(
                "MissingParameter",
                "Either Ipv6AddressCount, Ipv6Addresses, Ipv6PrefixCount or Ipv6Prefix must be specified.",
            ));
        }
        if req.addr_count == Some(0) || req.prefix_count == Some(0) {
            return Err(bad("InvalidParameterValue", "The count must be greater than 0."));
        }
        let eni = self.eni(eni_id)?;
        let extra = req.addr_count.unwrap_or(0)
            + req.addrs.len() as u32
            + req.prefix_count.unwrap_or(0)
            + req.prefixes.len() as u32;
        if eni.ipv6_slots() + extra > self.ipv6_slot_limit(eni) {
            return Err(bad(
                "PrivateIpAddressLimitExceeded",
                "Number of IPv6 addresses and prefixes will exceed the interface's limit.",
            ));
        }
        let subnet_id = eni.subnet_id.clone();
        let subnet = self.subnets.get(&subnet_id).expect("ENI subnet exists");
        // Work on a copy so a failure part-way leaves nothing taken.
        let mut v6 = subnet.ipv6.clone().ok_or_else(|| {
            bad(
                "InvalidParameterValue",
                format!("The subnet {subnet_id} of {eni_id} has no IPv6 CIDR block."),
            )
        })?;
        v6.take_exact_addrs(&req.addrs)?;
        let mut addrs = req.addrs.clone();
        addrs.extend(v6.take_addrs(req.addr_count.unwrap_or(0), &subnet_id)?);
        v6.take_exact_prefixes(&req.prefixes)?;
        let mut prefixes = req.prefixes.clone();
        prefixes.extend(v6.take_prefixes(req.prefix_count.unwrap_or(0), &subnet_id)?);
        self.subnet_mut(&subnet_id)?.ipv6 = Some(v6);
        let eni = self.enis.get_mut(eni_id).expect("checked");
        eni.ipv6_addrs.extend(addrs.iter().copied());
        eni.ipv6_prefixes.extend(prefixes.iter().copied());
        ev.push(eni.ipv6_assigned_event(addrs.clone(), prefixes.clone()));
        Ok((addrs, prefixes))
    }

    /// UnassignIpv6Addresses: each address and prefix must be this ENI's.
    pub fn unassign_ipv6(
        &mut self,
        eni_id: &str,
        addrs: &[Ipv6Addr],
        prefixes: &[Ipv6Net],
        ev: &mut Vec<HookEvent>,
    ) -> Result<(), Error> {
        if addrs.is_empty() && prefixes.is_empty() {
            return Err(bad(
                "MissingParameter",
                "Either Ipv6Addresses or Ipv6Prefix must be specified.",
            ));
        }
        let eni = self.eni(eni_id)?;
        if let Some(a) = addrs.iter().find(|a| !eni.ipv6_addrs.contains(a)) {
            return Err(bad(
                "InvalidParameterValue",
                format!("The address {a} is not assigned to interface {eni_id}"),
            ));
        }
        if let Some(p) = prefixes.iter().find(|p| !eni.ipv6_prefixes.contains(p)) {
            return Err(bad(
                "InvalidParameterValue",
                format!("The prefix {p} is not assigned to interface {eni_id}"),
            ));
        }
        let subnet_id = eni.subnet_id.clone();
        let eni = self.enis.get_mut(eni_id).expect("checked");
        eni.ipv6_addrs.retain(|a| !addrs.contains(a));
        eni.ipv6_prefixes.retain(|p| !prefixes.contains(p));
        ev.push(eni.ipv6_unassigned_event(addrs.to_vec(), prefixes.to_vec()));
        if let Some(v6) = self.subnet_mut(&subnet_id)?.ipv6.as_mut() {
            v6.release(addrs, prefixes);
        }
        Ok(())
    }
}
