//! The pure allocator: which address a pod gets, and which addresses are offered back.
//! No I/O; every decision is a function of the pool view, the store state and the time.
//!
//! Invariant "allocate only programmed, free addresses" (docs/design.md): an address is allocatable
//! only if its ENI is programmed (ready) and at or above `firstInterfaceIndex`, and it is not in
//! use, not cooling, not offered and not listed by the operator as releasing. Picks go to the
//! fullest prefix first (so whole prefixes stay free for release), then the lowest device index (so
//! high ENIs empty out), then the lowest address.

use crate::pool::{EniView, PoolView};
use crate::store::State;
use ipnet::Ipv4Net;
use std::cmp::Reverse;
use std::net::Ipv4Addr;

/// The address chosen for a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub ip: Ipv4Addr,
    pub eni_id: String,
    /// The ENI's route table.
    pub table: u32,
}

/// Whether `ip` is blocked by use, cooldown, an offer or an operator release.
fn blocked(view: &PoolView, st: &State, ip: Ipv4Addr, now: u64) -> bool {
    st.by_ip.contains_key(&ip)
        || st.cooling.get(&ip).is_some_and(|t| *t > now)
        || st.offered.keys().any(|n| n.contains(&ip))
        || view.releasing.iter().any(|n| n.contains(&ip))
        || view.node_primary_ip == Some(ip)
}

/// A group of candidate addresses: one prefix, or the loose secondary IPs of one ENI.
struct Group<'a> {
    eni: &'a EniView,
    prefix: Option<Ipv4Net>,
    addrs: Vec<Ipv4Addr>,
}

fn groups<'a>(view: &'a PoolView) -> Box<dyn Iterator<Item = Group<'a>> + 'a> {
    if let Some(egress) = view.ipv4_egress {
        // IPv6 cluster: a pod holds a node-local IPv4 of the egress range, and its IPv6 address
        // follows from it, once the primary ENI has its /80 and is programmed.
        let eni = view.ipv6_eni().filter(|e| e.ready && e.attached);
        return Box::new(
            eni.map(|eni| Group { eni, prefix: None, addrs: egress_addrs(egress) }).into_iter(),
        );
    }
    Box::new(
        view.enis
            .iter()
            .filter(move |e| e.ready && e.attached && e.device_index >= view.first_interface_index)
            .flat_map(|e| {
                let loose = Group { eni: e, prefix: None, addrs: e.ips.clone() };
                let prefixes = e.prefixes.iter().map(move |p| Group {
                    eni: e,
                    prefix: Some(*p),
                    addrs: p_addrs(p),
                });
                std::iter::once(loose).chain(prefixes)
            }),
    )
}

/// The egress range's addresses a pod may hold: all but its network and broadcast addresses
/// (the first would also map to the /80's network address, which EC2 does not route to a pod).
fn egress_addrs(range: Ipv4Net) -> Vec<Ipv4Addr> {
    range.hosts().collect()
}

/// Every address of a /28 is usable for pods (EC2 prefix delegation reserves none inside it).
fn p_addrs(p: &Ipv4Net) -> Vec<Ipv4Addr> {
    let base = u32::from(p.network());
    let n = 1u64 << (32 - p.prefix_len() as u32);
    (0..n as u32).map(|i| Ipv4Addr::from(base + i)).collect()
}

/// Sort key of a candidate: fullest prefix, lowest device index, loose before prefix, lowest address.
type RankKey = (Reverse<usize>, i32, u8, Ipv4Addr);

/// Choose the address for the next pod, or `None` when nothing is allocatable.
pub fn pick(view: &PoolView, st: &State, now: u64) -> Option<Pick> {
    let mut best: Option<(RankKey, Pick)> = None;
    for g in groups(view) {
        let Some(ip) = g.addrs.iter().copied().find(|ip| !blocked(view, st, *ip, now)) else {
            continue;
        };
        // Fullness counts only prefixes: packing them keeps other prefixes whole for release.
        // Loose IPs rank like an empty prefix but before one, so a prefix is broken into last.
        let fullness =
            g.prefix.map(|p| st.by_ip.keys().filter(|a| p.contains(*a)).count()).unwrap_or(0);
        let kind = u8::from(g.prefix.is_some());
        let key = (Reverse(fullness), g.eni.device_index, kind, ip);
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, Pick { ip, eni_id: g.eni.id.clone(), table: g.eni.table() }));
        }
    }
    best.map(|(_, p)| p)
}

/// How many addresses are allocatable now (STATUS, readiness, metrics).
pub fn available(view: &PoolView, st: &State, now: u64) -> usize {
    groups(view).map(|g| g.addrs.iter().filter(|ip| !blocked(view, st, **ip, now)).count()).sum()
}

/// Choose what to offer for a release request of `count` addresses.
///
/// Items already offered (by an earlier epoch or revision) that the pool still lists are re-offered
/// first: they can never be handed out again, so giving them back is free. Then free items from the
/// preferred ENIs, then from the highest device index down. A prefix is offered only whole (every
/// address free and not cooling) and only while at least 16 addresses remain to offer. Cooling
/// addresses are never offered (their old flows may still be draining). Never the primary ENI's own
/// address (it is not in `ips`) and never anything in use.
pub fn plan_offer(
    view: &PoolView,
    st: &State,
    count: usize,
    prefer: &[String],
    now: u64,
) -> Vec<Ipv4Net> {
    let mut out: Vec<Ipv4Net> = Vec::new();
    if view.ipv4_egress.is_some() {
        // A node's /80 is never given back, so an IPv6 node has nothing to offer.
        return out;
    }
    let mut left = count;
    for (n, _) in st.offered.iter() {
        let size = 1usize << (32 - n.prefix_len() as u32);
        if size <= left && view.lists(n) && !view.releasing.contains(n) {
            out.push(*n);
            left -= size;
        }
    }
    let mut enis: Vec<&EniView> = view.enis.iter().filter(|e| e.attached).collect();
    enis.sort_by_key(|e| {
        let rank = prefer.iter().position(|p| *p == e.id).unwrap_or(usize::MAX);
        (rank, Reverse(e.device_index))
    });
    let free = |ip: Ipv4Addr| !blocked(view, st, ip, now) && !st.cooling.contains_key(&ip);
    for e in enis {
        for p in e.prefixes.iter().rev() {
            if left >= 16 && !out.contains(p) && p_addrs(p).into_iter().all(free) {
                out.push(*p);
                left -= 16;
            }
        }
        for ip in e.ips.iter().rev() {
            let n = Ipv4Net::from(*ip);
            if left >= 1 && !out.contains(&n) && free(*ip) {
                out.push(n);
                left -= 1;
            }
        }
    }
    out
}

/// Offered items the operator has finished with: absent from the ENIs and not releasing any more,
/// once `releasedRevision` covers their offer. They can be forgotten.
pub fn offers_done(view: &PoolView, st: &State) -> Vec<Ipv4Net> {
    st.offered
        .iter()
        .filter(|(n, o)| {
            !view.lists(n) && !view.releasing.contains(n) && o.revision <= view.released_revision
        })
        .map(|(n, _)| *n)
        .collect()
}

#[cfg(test)]
mod tests;
