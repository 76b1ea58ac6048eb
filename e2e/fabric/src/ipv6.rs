//! IPv6 in the fabric, the way an AWS VPC carries it: no NAT anywhere, and an address reaches (and
//! may send) only while EC2 assigns it to the ENI, as for IPv4.
//!
//! * The VPC's /56 ([`Fabric::add_vpc_ipv6`]) is routed from the internet back to the vpc netns;
//!   in the vpc netns the parts of it no subnet has are unreachable rather than sent back out.
//! * A subnet's /64 ([`Fabric::add_subnet_ipv6`]) is a connected route on its bridge. The router's
//!   only address there is [`VPC_ROUTER_V6`] (`fe80:ec2::1`, AWS's IPv6 VPC router): bridges and
//!   ENI ports in the vpc netns generate no link-local address of their own.
//! * Nodes forward IPv6 and ignore router advertisements; the fabric configures what EC2's
//!   DHCPv6 and RA would. ENI links skip DAD (EC2 hands out no duplicates, and a tentative address
//!   would drop the first packets). The primary ENI's `eth0` gets its first IPv6 address as a
//!   /128 and `default via fe80:ec2::1`. The subnet's /64 is not on-link for nodes: they cannot
//!   reach each other at layer 2, and the router cannot answer NDP for a whole prefix.
//! * Delivery: an assigned /128 is a permanent neighbour `<addr> lladdr <ENI MAC>` on the subnet
//!   bridge; an assigned /80 is a route `<prefix> via <ENI link-local>` with a permanent neighbour
//!   for that link-local (EUI-64 of the MAC, which is what the node's kernel gives the ENI link;
//!   only the neighbour's MAC matters for delivery). The router never solicits towards ENIs and
//!   never redirects (nft), so nothing else is reachable. Nodes resolve `fe80:ec2::1` as usual;
//!   their solicitations tell the router their MAC.
//! * Source check: frames from an ENI must carry an (address or prefix, MAC) pair EC2 assigned
//!   (interval set `owned6`), or a link-local or unspecified source (NDP).
//! * The IGW forwards only sources EC2 assigned somewhere in the VPC (set `assigned` of the `ip6`
//!   table), untranslated. The internet host is [`INTERNET_HOST_V6`] (documentation range).

use super::nft::{elements, pairs, NFT_BRIDGE, NFT_IP6};
use super::{sh, Eni, Fabric, State, UPLINK_INET, UPLINK_VPC};
use crate::EchoServer;
use anyhow::{bail, Context, Result};
use ipnet::Ipv6Net;
use std::collections::BTreeSet;
use std::net::Ipv6Addr;

/// IPv6 address of the internet host (echo server), on the internet link 2001:db8::/64.
pub const INTERNET_HOST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The vpc netns' IPv6 address on the internet link.
const VPC_UPLINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xffff);
/// The VPC router on every IPv6 subnet, as in AWS: `fe80:ec2::1`.
pub const VPC_ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0xec2, 0, 0, 0, 0, 0, 1);

/// The vpc netns' IPv6 settings; before any link is made there, so none gets a link-local.
pub(super) fn router_sysctls(vpc: &str) -> Result<()> {
    sh::sysctl(vpc, "ipv6/conf/default/addr_gen_mode", "1")?;
    common_sysctls(vpc)
}

/// A node's IPv6 settings, before its ENI links appear.
pub(super) fn node_sysctls(node: &str) -> Result<()> {
    common_sysctls(node)
}

fn common_sysctls(ns: &str) -> Result<()> {
    for key in ["all", "default"] {
        sh::sysctl(ns, &format!("ipv6/conf/{key}/disable_ipv6"), "0")?;
        // The fabric configures routes itself; nothing may arrive by RA.
        sh::sysctl(ns, &format!("ipv6/conf/{key}/accept_ra"), "0")?;
    }
    sh::sysctl(ns, "ipv6/conf/all/forwarding", "1")
}

/// An ENI's link in its node: no DAD, so its link-local is usable at once.
pub(super) fn eni_link_sysctls(node: &str, ifname: &str) -> Result<()> {
    sh::sysctl(node, &format!("ipv6/conf/{ifname}/accept_dad"), "0")
}

/// The EUI-64 link-local address of a MAC (`02:00:0a:00:01:0a` → `fe80::aff:fe00:10a`).
pub(super) fn link_local(mac: &str) -> Result<Ipv6Addr> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC {mac}"))?;
    let [m0, m1, m2, m3, m4, m5] = bytes[..] else { bail!("MAC {mac} is not 6 bytes") };
    Ok(Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m0 ^ 2, m1, m2, 0xff, 0xfe, m3, m4, m5]))
}

/// `add`s or `delete`s (`verb`) the source-check pairs (with `mac`) and the IGW's entries of
/// these addresses and prefixes, in one nft transaction.
fn owned6<A: ToString, P: ToString>(
    vpc: &str,
    verb: &str,
    mac: &str,
    addrs: impl IntoIterator<Item = A>,
    prefixes: impl IntoIterator<Item = P>,
) -> Result<()> {
    let owned: Vec<String> = addrs
        .into_iter()
        .map(|a| a.to_string())
        .chain(prefixes.into_iter().map(|p| p.to_string()))
        .collect();
    if owned.is_empty() {
        return Ok(());
    }
    let script = format!(
        "{verb} element {NFT_BRIDGE} owned6 {{ {} }}\n{verb} element {NFT_IP6} assigned {{ {} }}\n",
        pairs(mac, &owned),
        elements(&owned)
    );
    sh::nft(vpc, &script).map(drop)
}

impl Fabric {
    /// The uplink's IPv6 addresses, the vpc netns' default route and the echo server over IPv6.
    pub(super) fn build_core_ipv6(&self) -> Result<()> {
        let (vpc, inet) = (self.vpc_netns(), self.internet_netns());
        let uplink = |a: Ipv6Addr| format!("{a}/64");
        sh::ip(&vpc, &["-6", "addr", "add", &uplink(VPC_UPLINK_V6), "dev", UPLINK_VPC, "nodad"])?;
        // The kernel solicits a neighbour for forwarded packets only from a link-local address,
        // and the vpc netns' links get none of their own.
        sh::ip(&vpc, &["-6", "addr", "add", "fe80::ffff/64", "dev", UPLINK_VPC, "nodad"])?;
        sh::ip(
            &inet,
            &["-6", "addr", "add", &uplink(INTERNET_HOST_V6), "dev", UPLINK_INET, "nodad"],
        )?;
        let host = INTERNET_HOST_V6.to_string();
        sh::ip(&vpc, &["-6", "route", "replace", "default", "via", &host, "dev", UPLINK_VPC])?;
        let echo = EchoServer::start(&inet, INTERNET_HOST_V6)?;
        self.lock().echo.push(echo);
        Ok(())
    }

    /// Declares an IPv6 block of the VPC (its Amazon-provided /56): the internet routes it to the
    /// VPC. Declare it before its subnets' /64s. Idempotent.
    pub fn add_vpc_ipv6(&self, cidr: Ipv6Net) -> Result<()> {
        let cidr = cidr.trunc();
        let mut st = self.lock();
        if st.vpc_ipv6.contains(&cidr) {
            return Ok(());
        }
        if let Some(b) = st.vpc_ipv6.iter().find(|b| b.contains(&cidr) || cidr.contains(*b)) {
            bail!("{cidr} overlaps the VPC's IPv6 block {b}");
        }
        let block = cidr.to_string();
        let via = VPC_UPLINK_V6.to_string();
        sh::ip(&self.internet_netns(), &["-6", "route", "replace", &block, "via", &via])?;
        // Subnets' /64s are more specific; the rest of the block must not bounce off the internet.
        sh::ip(&self.vpc_netns(), &["-6", "route", "replace", "unreachable", &block])?;
        st.vpc_ipv6.insert(cidr);
        Ok(())
    }

    /// Gives a subnet declared with [`Fabric::add_subnet`] its IPv6 /64 (inside a block declared
    /// with [`Fabric::add_vpc_ipv6`]): the VPC router appears on its bridge at [`VPC_ROUTER_V6`].
    /// Declare it before the simulator reports IPv6 in the subnet. Idempotent for the same /64.
    pub fn add_subnet_ipv6(&self, subnet_id: &str, cidr: Ipv6Net) -> Result<()> {
        let cidr = cidr.trunc();
        let mut st = self.lock();
        if !st.vpc_ipv6.iter().any(|b| b.contains(&cidr)) {
            bail!("{cidr} is in no IPv6 block declared with add_vpc_ipv6");
        }
        let subnet = st
            .subnets
            .get_mut(subnet_id)
            .with_context(|| format!("subnet {subnet_id} was not declared with add_subnet"))?;
        match subnet.ipv6 {
            Some(c) if c == cidr => return Ok(()),
            Some(c) => bail!("subnet {subnet_id} already has the IPv6 block {c}"),
            None => {}
        }
        let (vpc, br) = (self.vpc_netns(), subnet.bridge.as_str());
        // Nodes' solicitations for the router are multicast; snooping would hide them from it.
        sh::ip(&vpc, &["link", "set", br, "type", "bridge", "mcast_snooping", "0"])?;
        let router = format!("{VPC_ROUTER_V6}/64");
        sh::ip(&vpc, &["-6", "addr", "add", &router, "dev", br, "nodad"])?;
        sh::ip(&vpc, &["-6", "route", "replace", &cidr.to_string(), "dev", br])?;
        subnet.ipv6 = Some(cidr);
        Ok(())
    }

    /// The IPv6 address configured on an instance's `eth0` (its primary ENI's first one).
    pub fn primary_ipv6(&self, instance_id: &str) -> Option<Ipv6Addr> {
        self.lock().instances.get(instance_id).and_then(|i| i.primary_ip6)
    }

    /// The IPv6 addresses and prefixes EC2 currently routes to an ENI (as reported to the hook).
    pub fn eni_ipv6(&self, eni_id: &str) -> (Vec<Ipv6Addr>, Vec<Ipv6Net>) {
        let st = self.lock();
        let Some(e) = st.enis.get(eni_id) else { return (Vec::new(), Vec::new()) };
        (e.addrs6.iter().copied().collect(), e.prefixes6.iter().copied().collect())
    }

    /// Once a primary ENI is attached in a subnet with IPv6, gives `eth0` the default route via
    /// the VPC router and the ENI's first IPv6 address, as DHCPv6 and RA would. Idempotent.
    pub(super) fn configure_primary6(&self, st: &mut State, eni_id: &str) -> Result<()> {
        let Some(eni) = st.enis.get(eni_id) else { return Ok(()) };
        let Some(att) = eni.attachment.as_ref().filter(|a| a.device_index == 0) else {
            return Ok(());
        };
        if st.subnets.get(&eni.subnet_id).is_none_or(|s| s.ipv6.is_none()) {
            return Ok(());
        }
        let primary = eni.primary_ip6;
        let inst = st.instances.get_mut(&att.instance_id).context("instance of the ENI")?;
        let ns = inst.netns.clone();
        if !inst.ipv6_route {
            sh::ip(&ns, &["link", "set", "eth0", "up"])?;
            let router = VPC_ROUTER_V6.to_string();
            sh::ip(&ns, &["-6", "route", "replace", "default", "via", &router, "dev", "eth0"])?;
            inst.ipv6_route = true;
        }
        if let Some(a) = primary.filter(|a| inst.primary_ip6 != Some(*a)) {
            sh::ip(&ns, &["-6", "addr", "replace", &format!("{a}/128"), "dev", "eth0", "nodad"])?;
            inst.primary_ip6 = Some(a);
        }
        Ok(())
    }

    /// Body of `ipv6_assigned`: neighbours and routes on the subnet bridge, source pairs, IGW.
    pub(super) fn assign6(
        &self,
        st: &mut State,
        eni_id: &str,
        mac: &str,
        subnet_id: &str,
        addrs: &[Ipv6Addr],
        prefixes: &[Ipv6Net],
    ) -> Result<()> {
        let bridge = self.bridge(st, subnet_id)?;
        if st.subnets.get(subnet_id).is_none_or(|s| s.ipv6.is_none()) {
            bail!("subnet {subnet_id} was not given IPv6 with add_subnet_ipv6");
        }
        let vpc = self.vpc_netns();
        let eni = st.enis.entry(eni_id.to_string()).or_insert_with(|| Eni::new(subnet_id));
        if eni.primary_ip6.is_none() {
            eni.primary_ip6 = addrs.first().copied();
        }
        // Only what is new (so a repeated call is a no-op).
        let new_addrs: BTreeSet<Ipv6Addr> =
            addrs.iter().copied().filter(|a| !eni.addrs6.contains(a)).collect();
        let new_pfx: BTreeSet<Ipv6Net> =
            prefixes.iter().map(|p| p.trunc()).filter(|p| !eni.prefixes6.contains(p)).collect();
        for a in &new_addrs {
            sh::permanent_neighbour(&vpc, &a.to_string(), mac, &bridge)?;
            eni.addrs6.insert(*a);
        }
        if !new_pfx.is_empty() {
            let ll = link_local(mac)?.to_string();
            sh::permanent_neighbour(&vpc, &ll, mac, &bridge)?;
            for p in &new_pfx {
                sh::ip(
                    &vpc,
                    &["-6", "route", "replace", &p.to_string(), "via", &ll, "dev", &bridge],
                )?;
                eni.prefixes6.insert(*p);
            }
        }
        owned6(&vpc, "add", mac, &new_addrs, &new_pfx)?;
        self.configure_primary6(st, eni_id)
    }

    /// Body of `ipv6_unassigned`: removes what [`Fabric::assign6`] added for these.
    pub(super) fn unassign6(
        &self,
        st: &mut State,
        eni_id: &str,
        mac: &str,
        subnet_id: &str,
        addrs: &[Ipv6Addr],
        prefixes: &[Ipv6Net],
    ) -> Result<()> {
        let bridge = self.bridge(st, subnet_id)?;
        let vpc = self.vpc_netns();
        let Some(eni) = st.enis.get_mut(eni_id) else { return Ok(()) };
        // Only what this fabric programmed (so a repeated call is a no-op).
        let gone_addrs: Vec<Ipv6Addr> =
            addrs.iter().copied().filter(|a| eni.addrs6.remove(a)).collect();
        let gone_pfx: Vec<Ipv6Net> =
            prefixes.iter().map(|p| p.trunc()).filter(|p| eni.prefixes6.remove(p)).collect();
        for a in &gone_addrs {
            sh::ip(&vpc, &["neigh", "del", &a.to_string(), "dev", &bridge])?;
        }
        for p in &gone_pfx {
            sh::ip(&vpc, &["-6", "route", "del", &p.to_string(), "dev", &bridge])?;
        }
        if !gone_pfx.is_empty() && eni.prefixes6.is_empty() {
            sh::ip(&vpc, &["neigh", "del", &link_local(mac)?.to_string(), "dev", &bridge])?;
        }
        owned6(&vpc, "delete", mac, &gone_addrs, &gone_pfx)?;
        let Some(primary) = eni.primary_ip6.filter(|a| gone_addrs.contains(a)) else {
            return Ok(());
        };
        eni.primary_ip6 = None;
        // The node loses the address as it would when DHCPv6 stops handing it out.
        let Some(att) = eni.attachment.as_ref().filter(|a| a.device_index == 0) else {
            return Ok(());
        };
        let Some(inst) = st.instances.get_mut(&att.instance_id) else { return Ok(()) };
        if inst.primary_ip6 == Some(primary) {
            inst.primary_ip6 = None;
            let addr = format!("{primary}/128");
            sh::ip(&inst.netns, &["-6", "addr", "del", &addr, "dev", "eth0"])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_local_is_the_eui64_of_the_mac() {
        let ll = super::link_local("52:54:00:12:34:56").unwrap();
        assert_eq!(ll, "fe80::5054:ff:fe12:3456".parse::<std::net::Ipv6Addr>().unwrap());
        let ll = super::link_local("02:00:0a:00:01:0a").unwrap();
        assert_eq!(ll, "fe80::aff:fe00:10a".parse::<std::net::Ipv6Addr>().unwrap());
        assert!(super::link_local("02:00:0a").is_err());
        assert!(super::link_local("zz:00:0a:00:01:0a").is_err());
    }
}
