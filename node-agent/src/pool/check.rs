//! The validated parse of an ENIPool status. The agent allocates from and programs the host by
//! whatever this status says, and more than the operator can write it (anyone allowed to update
//! ENIPool status), so every value is checked before use and a status with one bad value is
//! refused whole: a prefix of the wrong length would make the allocator enumerate billions of
//! addresses, an address outside its ENI's subnet or on two ENIs would be handed to a pod that
//! cannot use it, and a device index picks the route table the ENI is programmed into.
//!
//! Address checks are written on `IpNet`/`IpAddr` with the per-family rules in
//! [`delegated_len`]. ENIs' own addresses are IPv4; an IPv6 cluster adds /80 prefixes, which
//! must be global unicast (EC2 has no other kind) and are claimed like the rest, so one prefix on
//! two ENIs is refused.

use super::{EniView, PoolView};
use enipool_crds::{ENIPoolStatus, EniState, EniStatus};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

pub use enipool_crds::addr::MAX_DEVICE_INDEX;

/// What is wrong with a value (the stable part of [`Invalid`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not an IP address.
    #[error("not an IP address")]
    NotAnAddress,
    /// Not a CIDR (`address/length`).
    #[error("not a CIDR (address/length)")]
    NotACidr,
    /// A single-address entry written with a prefix length shorter than the family's maximum.
    #[error("a single address is written without a length or as /{max}")]
    NotAHost {
        /// The family's full length (32 for IPv4).
        max: u8,
    },
    /// An address family the agent does not handle (or has no delegated prefix length for).
    #[error("address family not supported here (this agent handles IPv4)")]
    Family,
    /// A delegated prefix of another length than the family's.
    #[error("prefix length /{got}, but delegated prefixes are /{want}")]
    PrefixLength {
        got: u8,
        /// The family's delegated prefix length.
        want: u8,
    },
    /// A prefix with host bits set.
    #[error("not the network address of its prefix ({network} would be)")]
    Unaligned {
        /// The prefix with the host bits cleared.
        network: String,
    },
    /// An address or prefix outside the ENI's subnet.
    #[error("outside the ENI's subnet {subnet}")]
    OutsideSubnet {
        /// The ENI's subnet CIDR.
        subnet: String,
    },
    /// An ENI listing addresses without a subnet CIDR to check them against.
    #[error("the ENI lists addresses but has no subnetCIDR")]
    NoSubnet,
    /// An address listed twice (on two ENIs, or twice on one).
    #[error("already listed on ENI {other}")]
    ListedTwice {
        /// The ENI that listed it first.
        other: String,
    },
    /// Two ENIs with one id.
    #[error("ENI listed twice")]
    DuplicateEni,
    /// Two ENIs with one device index.
    #[error("device index also used by ENI {other}")]
    DeviceIndexTaken {
        /// The ENI that has it too.
        other: String,
    },
    /// A device index outside what EC2 hands out (or -1, "not attached", on an attached ENI).
    #[error("device index out of range (0..={MAX_DEVICE_INDEX}; -1 only for an ENI not attached)")]
    DeviceIndexRange,
    /// Not a MAC address.
    #[error("not a MAC address (six hex pairs separated by colons)")]
    BadMac,
    /// An IPv6 prefix outside the global unicast range (2000::/3) EC2 hands out.
    #[error("not a global unicast IPv6 prefix (2000::/3)")]
    NotGlobal,
}

/// A refused status: which value, where, and why. Renders as one line for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{field} {value:?}: {problem}", eni.as_ref().map(|e| format!("ENI {e}: ")).unwrap_or_default())]
pub struct Invalid {
    /// The ENI the value belongs to (`None` for pool-wide fields).
    pub eni: Option<String>,
    /// The status field as the ENIPool names it (`prefixes`, `releasing.ips`, ...).
    pub field: &'static str,
    /// The value as written.
    pub value: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// Length of the prefixes EC2 delegates to an ENI, per address family; `None`: the agent takes
/// no delegated prefixes of that family (IPv6 adds its /80 here).
pub fn delegated_len(net: &IpNet) -> Option<u8> {
    match net {
        IpNet::V4(_) => Some(28),
        IpNet::V6(_) => Some(80),
    }
}

/// Where an error is raised: the ENI (if any) and the field being read.
#[derive(Clone, Copy)]
struct At<'a> {
    eni: Option<&'a str>,
    field: &'static str,
}

impl At<'_> {
    fn err(&self, value: impl ToString, problem: Problem) -> Invalid {
        Invalid {
            eni: self.eni.map(str::to_string),
            field: self.field,
            value: value.to_string(),
            problem,
        }
    }

    fn addr(&self, s: &str) -> Result<IpAddr, Invalid> {
        s.parse().map_err(|_| self.err(s, Problem::NotAnAddress))
    }

    /// A single address, plain or with the family's full length (`/32`).
    fn host(&self, s: &str) -> Result<IpAddr, Invalid> {
        if !s.contains('/') {
            return self.addr(s);
        }
        let net = self.cidr(s)?;
        if net.prefix_len() != net.max_prefix_len() {
            return Err(self.err(s, Problem::NotAHost { max: net.max_prefix_len() }));
        }
        Ok(net.addr())
    }

    fn cidr(&self, s: &str) -> Result<IpNet, Invalid> {
        s.parse().map_err(|_| self.err(s, Problem::NotACidr))
    }

    /// A prefix delegated to an ENI: the family's length, host bits clear.
    fn delegated(&self, s: &str) -> Result<IpNet, Invalid> {
        let net = self.cidr(s)?;
        let want = delegated_len(&net).ok_or_else(|| self.err(s, Problem::Family))?;
        if net.prefix_len() != want {
            return Err(self.err(s, Problem::PrefixLength { got: net.prefix_len(), want }));
        }
        if net.trunc() != net {
            return Err(self.err(s, Problem::Unaligned { network: net.trunc().to_string() }));
        }
        Ok(net)
    }

    fn v4_addr(&self, s: &str, a: IpAddr) -> Result<Ipv4Addr, Invalid> {
        match a {
            IpAddr::V4(a) => Ok(a),
            IpAddr::V6(_) => Err(self.err(s, Problem::Family)),
        }
    }

    /// A delegated IPv6 prefix EC2 could have assigned.
    fn v6_prefix(&self, s: &str, n: IpNet) -> Result<Ipv6Net, Invalid> {
        let global: Ipv6Net = "2000::/3".parse().expect("literal");
        match n {
            IpNet::V6(n) if global.contains(&n) => Ok(n),
            IpNet::V6(_) => Err(self.err(s, Problem::NotGlobal)),
            IpNet::V4(_) => Err(self.err(s, Problem::Family)),
        }
    }

    fn v4_net(&self, s: &str, n: IpNet) -> Result<Ipv4Net, Invalid> {
        match n {
            IpNet::V4(n) => Ok(n),
            IpNet::V6(_) => Err(self.err(s, Problem::Family)),
        }
    }

    /// `n` must lie inside `subnet` (present: checked by the caller).
    fn inside(&self, s: &str, n: IpNet, subnet: Option<IpNet>) -> Result<(), Invalid> {
        match subnet {
            None => Err(self.err(s, Problem::NoSubnet)),
            Some(sub) if sub.contains(&n) => Ok(()),
            Some(sub) => Err(self.err(s, Problem::OutsideSubnet { subnet: sub.to_string() })),
        }
    }
}

/// Every address and delegated prefix listed so far, with the ENI listing it. Entries are single
/// addresses or aligned delegated prefixes, so two overlap only when equal, when a prefix holds
/// an address, or when an address falls in a prefix.
#[derive(Default)]
struct Claims<'a> {
    by: BTreeMap<IpNet, &'a str>,
}

impl<'a> Claims<'a> {
    /// Record `net` for `eni`; the ENI of an overlapping entry already recorded, if any.
    fn claim(&mut self, net: IpNet, eni: &'a str) -> Option<&'a str> {
        let inside = IpNet::new(net.network(), 0)
            .and_then(|lo| Ok(lo..=IpNet::new(net.broadcast(), net.max_prefix_len())?))
            .ok()
            .and_then(|r| self.by.range(r).next().map(|(_, e)| *e));
        let holding = delegated_len(&net)
            .filter(|l| *l < net.prefix_len())
            .and_then(|l| IpNet::new(net.addr(), l).ok())
            .and_then(|p| self.by.get(&p.trunc()).copied());
        let other = inside.or(holding);
        if other.is_none() {
            self.by.insert(net, eni);
        }
        other
    }
}

fn well_formed_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// One ENI, checked field by field; `claims` and `indexes` carry what earlier ENIs listed.
fn eni<'a>(
    e: &'a EniStatus,
    claims: &mut Claims<'a>,
    indexes: &mut BTreeMap<i32, &'a str>,
) -> Result<EniView, Invalid> {
    let id = e.id.as_str();
    let at = |field| At { eni: Some(id), field };
    if !well_formed_mac(&e.mac) {
        return Err(at("mac").err(&e.mac, Problem::BadMac));
    }
    let attached = e.state == EniState::Attached;
    let index_ok = match e.device_index {
        -1 => !attached,
        i => (0..=MAX_DEVICE_INDEX).contains(&i),
    };
    if !index_ok {
        return Err(at("deviceIndex").err(e.device_index, Problem::DeviceIndexRange));
    }
    if e.device_index >= 0 {
        if let Some(other) = indexes.insert(e.device_index, id) {
            let other = other.to_string();
            return Err(at("deviceIndex").err(e.device_index, Problem::DeviceIndexTaken { other }));
        }
    }
    let subnet = match e.subnet_cidr.as_str() {
        "" => None,
        s => Some(at("subnetCIDR").cidr(s)?),
    };
    let mut take = |at: At<'_>, s: &str, net: IpNet| -> Result<(), Invalid> {
        at.inside(s, net, subnet)?;
        match claims.claim(net, id) {
            Some(other) => Err(at.err(s, Problem::ListedTwice { other: other.to_string() })),
            None => Ok(()),
        }
    };
    let primary_ip = match e.primary_ip.as_str() {
        "" => None,
        s => {
            let a = at("primaryIP").addr(s)?;
            take(at("primaryIP"), s, IpNet::from(a))?;
            Some(at("primaryIP").v4_addr(s, a)?)
        }
    };
    let mut ips = Vec::with_capacity(e.ips.len());
    for s in &e.ips {
        let a = at("ips").host(s)?;
        take(at("ips"), s, IpNet::from(a))?;
        ips.push(at("ips").v4_addr(s, a)?);
    }
    let mut prefixes = Vec::with_capacity(e.prefixes.len());
    for s in &e.prefixes {
        let p = at("prefixes").delegated(s)?;
        let v4 = at("prefixes").v4_net(s, p)?;
        take(at("prefixes"), s, p)?;
        prefixes.push(v4);
    }
    let mut ipv6_prefixes = Vec::with_capacity(e.ipv6_prefixes.len());
    for s in &e.ipv6_prefixes {
        let p = at("ipv6Prefixes").delegated(s)?;
        let v6 = at("ipv6Prefixes").v6_prefix(s, p)?;
        // The IPv4 subnet says nothing about it; overlaps between ENIs are still refused.
        if let Some(other) = claims.claim(p, id) {
            let other = other.to_string();
            return Err(at("ipv6Prefixes").err(s, Problem::ListedTwice { other }));
        }
        ipv6_prefixes.push(v6);
    }
    let subnet = match subnet {
        Some(n) => Some(at("subnetCIDR").v4_net(&e.subnet_cidr, n)?),
        None => None,
    };
    Ok(EniView {
        id: e.id.clone(),
        device_index: e.device_index,
        mac: e.mac.to_ascii_lowercase(),
        subnet,
        primary_ip,
        ips,
        prefixes,
        ipv6_prefixes,
        attached,
        ready: false,
    })
}

/// Parse and check the whole status; the first bad value refuses it.
pub fn parse(status: &ENIPoolStatus, ready: &BTreeSet<String>) -> Result<PoolView, Invalid> {
    let mut claims = Claims::default();
    let mut indexes = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let mut enis = Vec::with_capacity(status.enis.len());
    for e in &status.enis {
        if !ids.insert(e.id.as_str()) {
            return Err(At { eni: Some(&e.id), field: "id" }.err(&e.id, Problem::DuplicateEni));
        }
        let mut v = eni(e, &mut claims, &mut indexes)?;
        v.ready = ready.contains(&v.id);
        enis.push(v);
    }
    enis.sort_by(|a, b| (a.device_index, &a.id).cmp(&(b.device_index, &b.id)));
    let mut releasing = Vec::new();
    if let Some(r) = status.releasing.as_ref() {
        let at = At { eni: None, field: "releasing.ips" };
        for s in &r.ips {
            let a = at.host(s)?;
            releasing.push(Ipv4Net::from(at.v4_addr(s, a)?));
        }
        let at = At { eni: None, field: "releasing.prefixes" };
        for s in &r.prefixes {
            let p = at.delegated(s)?;
            releasing.push(at.v4_net(s, p)?);
        }
    }
    let inst = status.instance.as_ref();
    let node_primary_ip = match inst.map(|i| i.primary_ip.as_str()).unwrap_or("") {
        "" => None,
        s => {
            let at = At { eni: None, field: "instance.primaryIP" };
            Some(at.v4_addr(s, at.addr(s)?)?)
        }
    };
    let mut vpc_cidrs = Vec::new();
    for s in inst.map(|i| i.vpc_cidrs.as_slice()).unwrap_or_default() {
        let at = At { eni: None, field: "instance.vpcCIDRs" };
        vpc_cidrs.push(at.v4_net(s, at.cidr(s)?)?);
    }
    let eff = status.effective.as_ref();
    Ok(PoolView {
        enis,
        releasing,
        first_interface_index: eff.map(|e| e.first_interface_index).unwrap_or(0),
        node_primary_ip,
        vpc_cidrs,
        cooldown_seconds: eff
            .map(|e| e.cooldown_seconds.max(0) as u64)
            .unwrap_or(enipool_crds::settings::defaults::COOLDOWN_SECONDS as u64),
        revision: status.revision,
        released_revision: status.released_revision,
        release_request: status
            .release_request
            .as_ref()
            .map(|r| (r.revision, r.count, r.prefer_enis.clone())),
        ip_family: eff.map(|e| e.ip_family).unwrap_or_default(),
        ipv4_egress: None,
        growth_blocked: status.conditions.iter().any(|c| {
            matches!(c.type_.as_str(), "SubnetExhausted" | "CapacityExhausted")
                && c.status == "True"
        }),
    })
}
