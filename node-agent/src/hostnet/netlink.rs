//! [`HostNet`] over rtnetlink. All netlink sockets live on a few dedicated OS threads
//! ([`WORKERS`]) that entered the host netns (`--netns`) once; jobs go to an idle one and run on
//! its current-thread runtime. A pod's netns is entered only long enough to open a socket there
//! ([`podside`]), then the thread returns to the host netns. Never on a tokio worker:
//! `setns` changes the calling thread. Veth deletion (the slow part of DEL) is batched on a
//! separate reaper thread ([`REAP_GROUP`]).
//!
//! The [`HostNet`] verbs are here; the worker and reaper threads in `workers`, link lookups in
//! `links`, the listing of wired pods in `wiring`, and the errno mapping in `errors`.

use super::{EniConfig, HostError, HostNet, HostPod, NodeConfig, PodConfig, PodWired};
use super::{CONNMARK, MAIN_TABLE, PRIO_FROM_ENI, PRIO_FROM_POD, PRIO_FWMARK, PRIO_TO_POD};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo};
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::packet_route::rule::RuleAttribute;
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

mod errors;
mod links;
pub mod podside;
mod rules;
mod snapshot;
mod wiring;
mod workers;

use errors::errno;
use errors::{exist_ok, gone_ok, nl};
use links::{is_doomed, link_by_mac, link_by_name, links, mac_bytes, mac_of, name_of, set_up};
use nix::errno::Errno;
use podside::{PodSide, PodSocket};
use rules::{delete_pod_rules, ensure_rule, rule_has, rules};
use workers::setns;
use workers::{open_ns, reap};

type Job = Box<dyn FnOnce(&Ctx) + Send>;

/// State of the netlink thread.
pub struct Ctx {
    rt: tokio::runtime::Runtime,
    h: Handle,
    host_ns: File,
}

pub struct NetlinkHost {
    tx: mpsc::Sender<Job>,
    reap_tx: mpsc::Sender<()>,
    netns: Option<PathBuf>,
}

/// Netlink worker threads. Requests run on any idle one (the agent serializes per container), so
/// an ADD does not queue behind another pod's slower DEL.
pub const WORKERS: usize = 4;

/// Link group that marks a host veth as torn down: DEL moves the veth into it (one cheap request)
/// and the reaper deletes the whole group in ONE `RTM_DELLINK` (`ip link del group`). Deleting a
/// veth costs ~20 ms of RCU waits in the kernel, paid once per batch instead of once per pod.
/// The mark lives in the kernel, so after a crash the next start still finds and deletes it.
pub const REAP_GROUP: u32 = 0x656e_6970; // "enip"

async fn pod_host_side(h: &Handle, pod: &PodConfig, index: u32) -> Result<(), HostError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(pod.ip, 32)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    h.route().add(route).replace().execute().await.map_err(nl("pod /32 route"))?;
    if let Some(v6) = pod.ipv6 {
        let route = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(v6, 128)
            .output_interface(index)
            .build();
        h.route().add(route).replace().execute().await.map_err(nl("pod /128 route"))?;
    }
    ensure_rule(h, PRIO_TO_POD, MAIN_TABLE, None, Some((pod.ip, 32)), None).await?;
    if pod.table != MAIN_TABLE {
        if pod.from_rule_dsts.is_empty() {
            ensure_rule(h, PRIO_FROM_POD, pod.table, Some((pod.ip, 32)), None, None).await?;
        }
        for d in &pod.from_rule_dsts {
            ensure_rule(
                h,
                PRIO_FROM_POD,
                pod.table,
                Some((pod.ip, 32)),
                Some((d.network(), d.prefix_len())),
                None,
            )
            .await?;
        }
    }
    Ok(())
}

impl HostNet for NetlinkHost {
    fn setup_node(&self, cfg: &NodeConfig) -> Result<(), HostError> {
        let cfg2 = cfg.clone();
        let primary = self.run(move |c| {
            c.block(async {
                ensure_rule(&c.h, PRIO_FWMARK, MAIN_TABLE, None, None, Some(CONNMARK)).await?;
                let link = match &cfg2.primary_mac {
                    Some(m) => link_by_mac(&c.h, m).await?,
                    None => None,
                };
                let link = match link {
                    Some(l) => Some(l),
                    None => {
                        // Fall back to the link carrying the node's primary IP.
                        let addrs: Vec<_> = c.h.address().get().execute().try_collect().await.map_err(nl("list addresses"))?;
                        let idx = addrs.iter().find(|a| {
                            a.attributes.iter().any(|x| matches!(x, rtnetlink::packet_route::address::AddressAttribute::Address(IpAddr::V4(ip)) if *ip == cfg2.primary_ip))
                        }).map(|a| a.header.index);
                        match idx {
                            Some(i) => links(&c.h).await?.into_iter().find(|l| l.header.index == i),
                            None => None,
                        }
                    }
                };
                let (index, name) = link
                    .and_then(|l| Some((l.header.index, name_of(&l)?)))
                    .ok_or_else(|| HostError::NotFound(format!("primary link ({})", cfg2.primary_ip)))?;
                // Read first, write only what differs (sysctl-init normally did it already).
                let family = match cfg2.ipv4_egress {
                    Some(_) => enipool_crds::IpFamily::IPv6,
                    None => enipool_crds::IpFamily::IPv4,
                };
                super::sysctl::ensure(&super::sysctl::wanted(family))?;
                super::devconf::set_rp_filter_loose(&c.h, index).await?;
                Ok::<_, HostError>(name)
            })
        })?;
        let script = super::nft::render(cfg, &primary);
        let s2 = script.clone();
        self.run(move |_| super::nft::apply(&s2))
    }

    fn setup_eni(&self, eni: &EniConfig) -> Result<(), HostError> {
        let eni = eni.clone();
        self.run(move |c| {
            c.block(async {
                // The link can appear seconds after attach: retry for ~15 s.
                let mut link = None;
                for _ in 0..30 {
                    link = link_by_mac(&c.h, &eni.mac).await?;
                    if link.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                let link = link.ok_or_else(|| {
                    HostError::NotFound(format!("link with MAC {} ({})", eni.mac, eni.id))
                })?;
                let idx = link.header.index;
                set_up(&c.h, idx, eni.mtu).await?;
                super::devconf::set_rp_filter_loose(&c.h, idx).await?;
                if let Some(ip) = eni.primary_ip {
                    exist_ok(
                        c.h.address()
                            .add(idx, IpAddr::V4(ip), eni.subnet.prefix_len())
                            .execute()
                            .await,
                        "eni address",
                    )?;
                    // The kernel's connected route would send the whole subnet out this ENI from
                    // main. It is `proto kernel`: the kernel only deletes a route whose protocol
                    // matches (the builder's default, static, never matched).
                    let connected = RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(eni.subnet.network(), eni.subnet.prefix_len())
                        .output_interface(idx)
                        .scope(RouteScope::Link)
                        .protocol(RouteProtocol::Kernel)
                        .build();
                    gone_ok(c.h.route().del(connected).execute().await, "delete connected route")?;
                    ensure_rule(&c.h, PRIO_FROM_ENI, eni.table, Some((ip, 32)), None, None).await?;
                }
                let gw = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(eni.gateway, 32)
                    .output_interface(idx)
                    .scope(RouteScope::Link)
                    .table_id(eni.table)
                    .build();
                c.h.route().add(gw).replace().execute().await.map_err(nl("eni gateway route"))?;
                let def = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(eni.gateway)
                    .output_interface(idx)
                    .table_id(eni.table)
                    .build();
                c.h.route().add(def).replace().execute().await.map_err(nl("eni default route"))
            })
        })
    }

    fn teardown_eni(&self, eni: &EniConfig) -> Vec<HostError> {
        let eni = eni.clone();
        let r = self.run(move |c| {
            Ok(c.block(async {
                let mut errs = Vec::new();
                if let Some(ip) = eni.primary_ip {
                    if let Err(e) = rules::delete_eni_rule(&c.h, ip, eni.table).await {
                        errs.push(e);
                    }
                }
                // The link (and with it these routes) usually went with the detach; when it is
                // still there, its table must not keep routing.
                let routes = [
                    RouteMessageBuilder::<Ipv4Addr>::new().table_id(eni.table).build(),
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(eni.gateway, 32)
                        .table_id(eni.table)
                        .scope(RouteScope::Link)
                        .build(),
                ];
                for r in routes {
                    if let Err(e) = gone_ok(c.h.route().del(r).execute().await, "delete ENI route")
                    {
                        errs.push(e);
                    }
                }
                errs
            }))
        });
        r.unwrap_or_else(|e| vec![e])
    }

    fn setup_pod(&self, pod: &PodConfig) -> Result<PodWired, HostError> {
        let pod = pod.clone();
        self.run(move |c| {
            let pod_ns = open_ns(Path::new(&pod.netns))?;
            let ps = PodSocket::open(&pod_ns, &c.host_ns)?;
            c.block(async {
                let h = &c.h;
                // One request creates the pair (host end up) with the pod end already named
                // and inside the pod's netns: moving a link between namespaces afterwards costs a
                // synchronize_net (~20 ms here) on every ADD (VPC CNI avoids it the same way).
                let mut msg = LinkVeth::new(&pod.host_if, &pod.if_name).mtu(pod.mtu).up().build();
                use std::os::fd::AsRawFd;
                for a in msg.attributes.iter_mut() {
                    if let LinkAttribute::LinkInfo(infos) = a {
                        for i in infos.iter_mut() {
                            if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) = i {
                                peer.attributes.push(LinkAttribute::NetNsFd(pod_ns.as_raw_fd()));
                                peer.attributes.push(LinkAttribute::Mtu(pod.mtu));
                            }
                        }
                    }
                }
                match h.link().add(msg.clone()).execute().await {
                    Err(e) if errno(&e) == Some(Errno::EEXIST) => {
                        // A veth of this name is still there: a stale one, or the previous pod of
                        // this netns + ifname torn down and not reaped yet. Delete it now (wait
                        // for it), then create ours.
                        if let Some(old) = link_by_name(h, &pod.host_if).await? {
                            gone_ok(
                                h.link().del(old.header.index).execute().await,
                                "delete stale veth",
                            )?;
                        }
                        h.link().add(msg).execute().await.map_err(nl("create veth"))?;
                    }
                    r => r.map_err(nl("create veth"))?,
                }
                let host_l = link_by_name(h, &pod.host_if)
                    .await?
                    .ok_or_else(|| HostError::NotFound(pod.host_if.clone()))?;
                // The host end names its peer's index in the pod netns (IFLA_LINK), so the pod
                // side needs no lookup first. The kernel leaves IFLA_LINK out when the peer's
                // index equals the link's own; look the pod end up by name only then.
                let index = match host_l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Link(i) => Some(*i),
                    _ => None,
                }) {
                    Some(i) => i,
                    None => {
                        ps.link(&pod.if_name)?
                            .ok_or_else(|| HostError::NotFound(format!("{} in pod", pod.if_name)))?
                            .header
                            .index
                    }
                };
                let host_mac = mac_bytes(&host_l);
                // Pod side in one batch. Not in the create request: the kernel configures the
                // peer before it is paired, and a veth without its peer refuses to go up
                // (ENOTCONN); address, routes and neighbour can only be set from inside.
                let side =
                    PodSide { index, if_name: &pod.if_name, ip: pod.ip, ipv6: pod.ipv6, host_mac };
                let pl = ps.configure(&side)?;
                pod_host_side(h, &pod, host_l.header.index).await?;
                Ok(PodWired { host_mac: mac_of(&host_l), pod_mac: mac_of(&pl) })
            })
        })
    }

    fn ensure_pod_host(&self, pod: &PodConfig) -> Result<(), HostError> {
        let pod = pod.clone();
        self.run(move |c| {
            c.block(async {
                let l = link_by_name(&c.h, &pod.host_if)
                    .await?
                    .filter(|l| !is_doomed(l))
                    .ok_or_else(|| HostError::NotFound(pod.host_if.clone()))?;
                pod_host_side(&c.h, &pod, l.header.index).await
            })
        })
    }

    fn teardown_pod(&self, pod: &PodConfig) -> Vec<HostError> {
        let pod = pod.clone();
        let reap_tx = self.reap_tx.clone();
        self.run(move |c| {
            c.block(async {
                let mut errs = Vec::new();
                if !pod.ip.is_unspecified() {
                    errs.extend(delete_pod_rules(&c.h, pod.ip).await);
                    let route = RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(pod.ip, 32)
                        .build();
                    // ESRCH/ENOENT: already gone with the veth.
                    if let Err(e) =
                        gone_ok(c.h.route().del(route).execute().await, "delete pod route")
                    {
                        errs.push(e);
                    }
                }
                // Mark the veth for the reaper (cheap) instead of deleting it here (~20 ms of
                // RCU waits): the pod's routes and rules are gone already, so nothing reaches it,
                // and its address is cooling. A re-ADD of the same name deletes it first.
                let mark = LinkUnspec::new_with_name(&pod.host_if).link_group(REAP_GROUP).build();
                match gone_ok(c.h.link().set(mark).execute().await, "mark veth for deletion") {
                    Ok(()) => {
                        let _ = reap_tx.send(());
                    }
                    Err(e) => errs.push(e),
                }
                errs
            })
        })
    }

    fn check_pod(&self, pod: &PodConfig) -> Result<PodWired, HostError> {
        let pod = pod.clone();
        self.run(move |c| {
            let pod_mac = open_ns(Path::new(&pod.netns))
                .and_then(|ns| PodSocket::open(&ns, &c.host_ns))
                .and_then(|ps| ps.link(&pod.if_name))
                .ok()
                .flatten()
                .map(|l| mac_of(&l))
                .ok_or_else(|| HostError::NotFound(format!("{} in {}", pod.if_name, pod.netns)))?;
            c.block(async {
                let l = link_by_name(&c.h, &pod.host_if)
                    .await?
                    .filter(|l| !is_doomed(l))
                    .ok_or_else(|| HostError::NotFound(pod.host_if.clone()))?;
                let rs = rules(&c.h).await?;
                let has_to = rs.iter().any(|r| {
                    rule_has(r, &RuleAttribute::Priority(PRIO_TO_POD))
                        && rule_has(r, &RuleAttribute::Destination(IpAddr::V4(pod.ip)))
                });
                if !has_to {
                    return Err(HostError::NotFound(format!(
                        "rule to {} prio {PRIO_TO_POD}",
                        pod.ip
                    )));
                }
                Ok(PodWired { host_mac: mac_of(&l), pod_mac })
            })
        })
    }

    fn host_links(&self) -> Result<Vec<String>, HostError> {
        self.run(|c| {
            c.block(async {
                Ok(links(&c.h)
                    .await?
                    .iter()
                    .filter(|l| !is_doomed(l))
                    .filter_map(name_of)
                    .collect())
            })
        })
    }

    fn pod_wiring(&self) -> Result<Vec<HostPod>, HostError> {
        self.run(|c| c.block(wiring::pod_wiring(&c.h)))
    }

    fn reap_links(&self) -> Result<(), HostError> {
        self.run(|c| c.block(reap(&c.h)))
    }

    fn snapshot(&self) -> Result<super::drift::HostSnapshot, HostError> {
        self.run(|c| {
            let mut s = c.block(snapshot::snapshot(&c.h))?;
            s.nft_table = super::nft::list()?;
            Ok(s)
        })
    }

    fn nft_table(&self) -> Result<Option<String>, HostError> {
        self.run(|_| super::nft::list())
    }

    fn removals(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(snapshot::watch_removals(self.netns.clone()))
    }

    fn uninstall(&self) -> Vec<HostError> {
        self.run(|c| {
            let mut errs = Vec::new();
            if let Err(e) = super::nft::apply(super::nft::DELETE_SCRIPT) {
                errs.push(e);
            }
            c.block(async {
                if let Ok(rs) = rules(&c.h).await {
                    for r in rs {
                        if rule_has(&r, &RuleAttribute::Priority(PRIO_FWMARK))
                            && rule_has(&r, &RuleAttribute::FwMark(CONNMARK))
                        {
                            if let Err(e) =
                                gone_ok(c.h.rule().del(r).execute().await, "delete fwmark rule")
                            {
                                errs.push(e);
                            }
                        }
                    }
                }
            });
            errs
        })
    }
}
