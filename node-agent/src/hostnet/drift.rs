//! What the host should hold, compared with what it holds: the rules, routes and nftables table
//! that [`super::HostNet`]'s setup verbs add, as keys, and the ones a snapshot of the host lacks.
//! Something else on the node (a network manager, `ip rule flush`, `nft flush ruleset`) can remove
//! them at any time; the agent's periodic repair re-adds exactly what is listed missing here.
//! Pure: the snapshot is read by the host implementation.

use super::{EniConfig, NodeConfig, PodConfig};
use super::{CONNMARK, MAIN_TABLE, PRIO_FROM_ENI, PRIO_FROM_POD, PRIO_FWMARK, PRIO_TO_POD};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 policy rule, as far as enipool's rules differ from each other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    pub prio: u32,
    pub table: u32,
    /// Source selector (`from`).
    pub src: Option<Ipv4Net>,
    /// Destination selector (`to`).
    pub dst: Option<Ipv4Net>,
    pub fwmark: Option<u32>,
}

/// An IPv4 route, as far as enipool's routes differ from each other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub table: u32,
    pub dst: Ipv4Net,
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
}

/// A link of the host netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    /// MAC, lower case.
    pub mac: String,
}

/// The host's rules, routes, links and enipool nftables table at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSnapshot {
    /// Every IPv4 rule.
    pub rules: BTreeSet<RuleKey>,
    /// Every IPv4 route of every table.
    pub routes: BTreeSet<RouteKey>,
    /// Live links (not torn down) by name.
    pub links: BTreeMap<String, LinkInfo>,
    /// `nft list table ip enipool`, or `None` when the table does not exist.
    pub nft_table: Option<String>,
}

/// One missing piece of host state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Rule(RuleKey),
    /// A route (of a link that exists).
    Route(RouteKey),
    /// The nftables table is gone.
    NftTable,
    /// The nftables table differs from what the agent applied (a flushed chain, an edited set).
    NftChanged,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = |n: &Option<Ipv4Net>| n.map_or("all".to_string(), |n| n.to_string());
        match self {
            Missing::Rule(r) => {
                write!(f, "rule {}: from {} to {}", r.prio, net(&r.src), net(&r.dst))?;
                if let Some(m) = r.fwmark {
                    write!(f, " fwmark {m:#x}")?;
                }
                write!(f, " lookup {}", r.table)
            }
            Missing::Route(r) => {
                write!(f, "route {} table {}", r.dst, r.table)?;
                if let Some(g) = r.gateway {
                    write!(f, " via {g}")?;
                }
                if let Some(i) = r.oif {
                    write!(f, " dev #{i}")?;
                }
                Ok(())
            }
            Missing::NftTable => f.write_str("nftables table ip enipool"),
            Missing::NftChanged => f.write_str("nftables table ip enipool changed"),
        }
    }
}

fn host(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 32).expect("/32 is a valid prefix")
}

fn lacking<T: Ord + Clone>(
    have: &BTreeSet<T>,
    want: Vec<T>,
    wrap: fn(T) -> Missing,
) -> Vec<Missing> {
    want.into_iter().filter(|k| !have.contains(k)).map(wrap).collect()
}

/// The node-wide state missing: the fwmark rule, and the nftables table as it was right after
/// the agent applied it (`applied`; `None` = not known, only its existence is checked).
pub fn node_missing(_cfg: &NodeConfig, applied: Option<&str>, snap: &HostSnapshot) -> Vec<Missing> {
    let fwmark = RuleKey {
        prio: PRIO_FWMARK,
        table: MAIN_TABLE,
        src: None,
        dst: None,
        fwmark: Some(CONNMARK),
    };
    let mut m = lacking(&snap.rules, vec![fwmark], Missing::Rule);
    match (&snap.nft_table, applied) {
        (None, _) => m.push(Missing::NftTable),
        (Some(now), Some(then)) if now != then => m.push(Missing::NftChanged),
        _ => {}
    }
    m
}

/// The secondary ENI's missing state: its from-ENI rule, and its table's gateway and default
/// routes through its link. Nothing when its link is not there (detached: not a repair).
pub fn eni_missing(eni: &EniConfig, snap: &HostSnapshot) -> Vec<Missing> {
    let Some(link) = snap.links.values().find(|l| l.mac.eq_ignore_ascii_case(&eni.mac)) else {
        return Vec::new();
    };
    let mut rules = Vec::new();
    if let Some(ip) = eni.primary_ip {
        rules.push(RuleKey {
            prio: PRIO_FROM_ENI,
            table: eni.table,
            src: Some(host(ip)),
            dst: None,
            fwmark: None,
        });
    }
    let routes = vec![
        RouteKey { table: eni.table, dst: host(eni.gateway), oif: Some(link.index), gateway: None },
        RouteKey {
            table: eni.table,
            dst: Ipv4Net::default(),
            oif: Some(link.index),
            gateway: Some(eni.gateway),
        },
    ];
    let mut m = lacking(&snap.rules, rules, Missing::Rule);
    m.extend(lacking(&snap.routes, routes, Missing::Route));
    m
}

/// The pod's missing host state: the /32 route to its host veth, the to-pod rule and its
/// from-pod rules. Nothing when its host veth is gone (a leak candidate, not a repair).
pub fn pod_missing(pod: &PodConfig, snap: &HostSnapshot) -> Vec<Missing> {
    let Some(link) = snap.links.get(&pod.host_if) else { return Vec::new() };
    let route =
        RouteKey { table: MAIN_TABLE, dst: host(pod.ip), oif: Some(link.index), gateway: None };
    let mut rules = vec![RuleKey {
        prio: PRIO_TO_POD,
        table: MAIN_TABLE,
        src: None,
        dst: Some(host(pod.ip)),
        fwmark: None,
    }];
    if pod.table != MAIN_TABLE {
        let from = |dst| RuleKey {
            prio: PRIO_FROM_POD,
            table: pod.table,
            src: Some(host(pod.ip)),
            dst,
            fwmark: None,
        };
        if pod.from_rule_dsts.is_empty() {
            rules.push(from(None));
        }
        rules.extend(pod.from_rule_dsts.iter().map(|d| from(Some(d.trunc()))));
    }
    let mut m = lacking(&snap.routes, vec![route], Missing::Route);
    m.extend(lacking(&snap.rules, rules, Missing::Rule));
    m
}

#[cfg(test)]
mod tests;
