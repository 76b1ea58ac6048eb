//! The pods wired on the host, read back from the kernel: one dump each of links, IPv4 routes and
//! IPv4 rules, assembled by [`crate::hostnet::wiring::assemble`].

use super::errors::nl;
use super::links::{is_doomed, links, name_of};
use super::rules::rules;
use crate::hostnet::wiring::{assemble, is_pod_veth_name};
use crate::hostnet::{HostError, HostPod, MAIN_TABLE, PRIO_FROM_POD};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::rule::{RuleAttribute, RuleMessage};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

fn is_veth(l: &LinkMessage) -> bool {
    l.attributes.iter().any(|a| {
        matches!(a, LinkAttribute::LinkInfo(infos)
            if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
    })
}

/// A /32 route of the main table: (output link, destination).
fn pod_route(r: &RouteMessage) -> Option<(u32, Ipv4Addr)> {
    if r.header.destination_prefix_length != 32 {
        return None;
    }
    let table = r
        .attributes
        .iter()
        .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
        .unwrap_or(u32::from(r.header.table));
    if table != MAIN_TABLE {
        return None;
    }
    let oif = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })?;
    let dst = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    Some((oif, dst))
}

/// A from-pod rule (priority 1536, from one address): (source, table).
fn from_pod_rule(r: &RuleMessage) -> Option<(Ipv4Addr, u32)> {
    if r.header.src_len != 32 || !r.attributes.contains(&RuleAttribute::Priority(PRIO_FROM_POD)) {
        return None;
    }
    let src = r.attributes.iter().find_map(|a| match a {
        RuleAttribute::Source(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    })?;
    let table = r
        .attributes
        .iter()
        .find_map(|a| if let RuleAttribute::Table(t) = a { Some(*t) } else { None })
        .unwrap_or(u32::from(r.header.table));
    Some((src, table))
}

/// Every IPv4 route of every table: without strict checking the kernel ignores the builder's
/// table and dumps them all.
pub(super) async fn routes(h: &Handle) -> Result<Vec<RouteMessage>, HostError> {
    h.route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl("list routes"))
}

pub(super) async fn pod_wiring(h: &Handle) -> Result<Vec<HostPod>, HostError> {
    let veths: BTreeMap<u32, String> = links(h)
        .await?
        .iter()
        .filter(|l| !is_doomed(l) && is_veth(l))
        .filter_map(|l| name_of(l).filter(|n| is_pod_veth_name(n)).map(|n| (l.header.index, n)))
        .collect();
    let routes = routes(h).await?;
    let routes: Vec<(u32, Ipv4Addr)> = routes.iter().filter_map(pod_route).collect();
    let from_rules: Vec<(Ipv4Addr, u32)> =
        rules(h).await?.iter().filter_map(from_pod_rule).collect();
    Ok(assemble(&veths, &routes, &from_rules))
}
