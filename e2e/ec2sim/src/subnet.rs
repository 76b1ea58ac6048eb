//! A subnet's address accounting: EC2's reserved addresses, subnet-wide unique addresses and
//! /28 prefix carving. Split from `state.rs` because it is the one part of the model with real
//! rules of its own (all-or-nothing takes, alignment); `state` re-exports it.

use super::{Error, Tags};
use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// A subnet with EC2's address accounting.
#[derive(Debug, Clone, Serialize)]
pub struct Subnet {
    /// `subnet-…`.
    pub id: String,
    pub vpc_id: String,
    /// IPv4 CIDR.
    pub cidr: Ipv4Net,
    pub az: String,
    pub tags: Tags,
    /// Addresses held by ENIs (secondary IPs, primaries and every address of /28 prefixes); the 5
    /// reserved addresses are not in here, they are excluded by [`Subnet::is_reserved`].
    pub used: BTreeSet<Ipv4Addr>,
    /// Its IPv6 /64 and what of it ENIs hold, when it has one.
    pub ipv6: Option<super::ipv6::SubnetIpv6>,
}

impl Subnet {
    /// EC2 reserves the network address, .1 (router), .2 (DNS), .3 (future use) and broadcast.
    pub fn is_reserved(&self, a: Ipv4Addr) -> bool {
        let off = u32::from(a) - u32::from(self.cidr.network());
        off <= 3 || a == self.cidr.broadcast()
    }

    /// Free addresses as EC2 reports them in `AvailableIpAddressCount`.
    pub fn available(&self) -> u32 {
        let size = 1u32 << (32 - self.cidr.prefix_len());
        size.saturating_sub(5).saturating_sub(self.used.len() as u32)
    }

    fn is_free(&self, a: Ipv4Addr) -> bool {
        self.cidr.contains(&a) && !self.is_reserved(a) && !self.used.contains(&a)
    }

    /// Takes `n` free addresses (lowest first, deterministic) or none at all.
    pub fn take_ips(&mut self, n: u32) -> Result<Vec<Ipv4Addr>, Error> {
        if n > self.available() {
            return Err(Error::api(
                "InsufficientFreeAddressesInSubnet",
                format!(
                    "The specified subnet {} has insufficient free addresses to satisfy the request.",
                    self.id
                ),
            ));
        }
        let picked: Vec<Ipv4Addr> =
            self.cidr.hosts().filter(|a| self.is_free(*a)).take(n as usize).collect();
        self.used.extend(picked.iter().copied());
        Ok(picked)
    }

    /// Takes specific addresses (all or none).
    pub fn take_exact(&mut self, ips: &[Ipv4Addr]) -> Result<(), Error> {
        for (i, a) in ips.iter().enumerate() {
            if !self.cidr.contains(a) || self.is_reserved(*a) {
                return Err(Error::api(
                    "InvalidParameterValue",
                    format!("Address {a} does not fall within the subnet's address range or is reserved"),
                ));
            }
            if self.used.contains(a) || ips[..i].contains(a) {
                return Err(Error::api(
                    "InvalidIPAddress.InUse",
                    format!("The specified address {a} is already in use."),
                ));
            }
        }
        self.used.extend(ips.iter().copied());
        Ok(())
    }

    /// Carves `n` /28 prefixes whose 16 addresses are all free, aligned on /28 boundaries.
    pub fn take_prefixes(&mut self, n: u32) -> Result<Vec<Ipv4Net>, Error> {
        let mut picked = Vec::new();
        if n > 0 && self.cidr.prefix_len() <= 28 {
            for block in self.cidr.subnets(28).expect("prefix <= 28") {
                if picked.len() == n as usize {
                    break;
                }
                if block_addrs(block).all(|a| self.is_free(a)) {
                    picked.push(block);
                }
            }
        }
        if picked.len() < n as usize {
            return Err(Error::api(
                "InsufficientCidrBlocks",
                format!(
                    "The specified subnet {} does not have enough free cidr blocks to satisfy the request.",
                    self.id
                ),
            ));
        }
        for p in &picked {
            self.used.extend(block_addrs(*p));
        }
        Ok(picked)
    }

    /// Takes specific prefixes (each must be a free, aligned /28 of this subnet).
    pub fn take_exact_prefixes(&mut self, prefixes: &[Ipv4Net]) -> Result<(), Error> {
        for (i, p) in prefixes.iter().enumerate() {
            if p.prefix_len() != 28 || p.network() != p.addr() || !self.cidr.contains(p) {
                return Err(Error::api(
                    "InvalidParameterValue",
                    format!("Invalid value '{p}' for Ipv4Prefix: must be an aligned /28 inside the subnet"),
                ));
            }
            if !block_addrs(*p).all(|a| self.is_free(a)) || prefixes[..i].contains(p) {
                return Err(Error::api(
                    "InvalidParameterValue",
                    format!("The prefix {p} overlaps addresses already in use."),
                ));
            }
        }
        for p in prefixes {
            self.used.extend(block_addrs(*p));
        }
        Ok(())
    }

    /// Returns addresses to the free pool.
    pub fn release(&mut self, ips: impl IntoIterator<Item = Ipv4Addr>) {
        for a in ips {
            self.used.remove(&a);
        }
    }
}

/// Every address of a prefix.
pub fn block_addrs(p: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let base = u32::from(p.network());
    let n = 1u32 << (32 - p.prefix_len());
    (0..n).map(move |i| Ipv4Addr::from(base + i))
}
