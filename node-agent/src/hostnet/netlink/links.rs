//! Link lookups (by name, by MAC, the whole list), the attributes read from them, and bringing
//! a link up.

use super::errors::{errno, nl};
use super::REAP_GROUP;
use crate::hostnet::HostError;
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

pub(super) fn is_doomed(l: &LinkMessage) -> bool {
    l.attributes.contains(&LinkAttribute::Group(REAP_GROUP))
}

pub(super) async fn links(h: &Handle) -> Result<Vec<LinkMessage>, HostError> {
    h.link().get().execute().try_collect().await.map_err(nl("list links"))
}

pub(super) fn name_of(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| {
        if let LinkAttribute::IfName(n) = a {
            Some(n.clone())
        } else {
            None
        }
    })
}

pub(super) fn mac_bytes(l: &LinkMessage) -> Vec<u8> {
    l.attributes
        .iter()
        .find_map(|a| if let LinkAttribute::Address(m) = a { Some(m.clone()) } else { None })
        .unwrap_or_default()
}

pub(super) fn mac_of(l: &LinkMessage) -> String {
    mac_bytes(l).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub(super) async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, HostError> {
    match h.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(nl("get link")(e)),
    }
}

pub(super) async fn link_by_mac(h: &Handle, mac: &str) -> Result<Option<LinkMessage>, HostError> {
    Ok(links(h).await?.into_iter().find(|l| mac_of(l).eq_ignore_ascii_case(mac)))
}

pub(super) async fn set_up(h: &Handle, index: u32, mtu: u32) -> Result<(), HostError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(nl("link up"))
}
