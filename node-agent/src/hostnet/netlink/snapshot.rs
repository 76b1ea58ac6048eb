//! The host read back for the repair: one dump each of links, IPv4 routes (every table) and IPv4
//! rules, turned into the keys of [`crate::hostnet::drift`], and a thread that reports rule and
//! route removals as they happen (the kernel's `RTNLGRP_IPV4_RULE` / `RTNLGRP_IPV4_ROUTE`
//! multicast groups), so a repair need not wait for the next period.

use super::links::{is_doomed, links, mac_of, name_of};
use super::rules::rules;
use crate::hostnet::drift::{HostSnapshot, LinkInfo, RouteKey, RuleKey};
use crate::hostnet::HostError;
use futures::StreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::rule::{RuleAttribute, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, MulticastGroup};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

fn prefix(ip: Option<Ipv4Addr>, len: u8) -> Option<Ipv4Net> {
    ip.and_then(|ip| Ipv4Net::new(ip, len).ok())
}

pub(super) fn rule_key(r: &RuleMessage) -> Option<RuleKey> {
    if r.header.family != AddressFamily::Inet {
        return None;
    }
    let mut k =
        RuleKey { prio: 0, table: u32::from(r.header.table), src: None, dst: None, fwmark: None };
    let (mut src, mut dst) = (None, None);
    for a in &r.attributes {
        match a {
            RuleAttribute::Priority(p) => k.prio = *p,
            RuleAttribute::Table(t) => k.table = *t,
            RuleAttribute::FwMark(m) => k.fwmark = Some(*m),
            RuleAttribute::Source(IpAddr::V4(ip)) => src = Some(*ip),
            RuleAttribute::Destination(IpAddr::V4(ip)) => dst = Some(*ip),
            _ => {}
        }
    }
    k.src = prefix(src, r.header.src_len);
    k.dst = prefix(dst, r.header.dst_len);
    Some(k)
}

pub(super) fn route_key(r: &RouteMessage) -> Option<RouteKey> {
    if r.header.address_family != AddressFamily::Inet {
        return None;
    }
    let (mut table, mut dst, mut oif, mut gateway) = (u32::from(r.header.table), None, None, None);
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            _ => {}
        }
    }
    let dst =
        Ipv4Net::new(dst.unwrap_or(Ipv4Addr::UNSPECIFIED), r.header.destination_prefix_length)
            .ok()?;
    Some(RouteKey { table, dst, oif, gateway })
}

pub(super) async fn snapshot(h: &Handle) -> Result<HostSnapshot, HostError> {
    let links = links(h)
        .await?
        .iter()
        .filter(|l| !is_doomed(l))
        .filter_map(|l| Some((name_of(l)?, LinkInfo { index: l.header.index, mac: mac_of(l) })))
        .collect();
    let routes = super::wiring::routes(h).await?;
    let routes = routes.iter().filter_map(route_key).collect();
    let rules = rules(h).await?.iter().filter_map(rule_key).collect();
    Ok(HostSnapshot { rules, routes, links, nft_table: None })
}

/// Start the thread that bumps the returned counter on every IPv4 rule or route removal in the
/// host netns. The counter stops moving if the thread cannot subscribe (logged): the periodic
/// repair still runs.
pub(super) fn watch_removals(netns: Option<PathBuf>) -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let spawned =
        std::thread::Builder::new().name("enipool-netlink-events".into()).spawn(move || {
            let run = || -> Result<(), HostError> {
                if let Some(p) = &netns {
                    super::setns(&super::open_ns(p)?)?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| HostError::Io { op: "netlink events runtime", source: e })?;
                rt.block_on(async {
                    let (conn, _h, mut msgs) = rtnetlink::new_multicast_connection(&[
                        MulticastGroup::Ipv4Rule,
                        MulticastGroup::Ipv4Route,
                    ])
                    .map_err(|e| HostError::Io { op: "netlink events socket", source: e })?;
                    tokio::spawn(conn);
                    while let Some((m, _)) = msgs.next().await {
                        if let NetlinkPayload::InnerMessage(
                            RouteNetlinkMessage::DelRule(_) | RouteNetlinkMessage::DelRoute(_),
                        ) = m.payload
                        {
                            tx.send_modify(|n| *n += 1);
                        }
                    }
                    Ok(())
                })
            };
            if let Err(e) = run() {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "not watching rule and route removals; host repair runs on its period only"
                );
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the netlink events thread; host repair runs on its period only");
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_back_as_keys() {
        let mut r = RuleMessage::default();
        r.header.family = AddressFamily::Inet;
        r.header.table = 254;
        r.header.src_len = 32;
        r.attributes.push(RuleAttribute::Priority(1536));
        r.attributes.push(RuleAttribute::Table(3));
        r.attributes.push(RuleAttribute::Source(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 20))));
        let k = rule_key(&r).unwrap();
        assert_eq!(
            k,
            RuleKey {
                prio: 1536,
                table: 3,
                src: Some("10.0.1.20/32".parse().unwrap()),
                dst: None,
                fwmark: None
            }
        );
    }

    #[test]
    fn a_default_route_has_no_destination_attribute() {
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.header.table = 2;
        r.attributes.push(RouteAttribute::Oif(5));
        r.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 0, 1, 1))));
        let k = route_key(&r).unwrap();
        assert_eq!(k.dst, Ipv4Net::default());
        assert_eq!((k.table, k.oif, k.gateway), (2, Some(5), Some(Ipv4Addr::new(10, 0, 1, 1))));
    }
}
