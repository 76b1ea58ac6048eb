//! Netlink inside a pod's netns in ONE batch. A socket belongs to the netns it was opened in, so
//! every ADD needs one there; this one is a plain blocking rtnetlink socket (no async connection
//! task per pod) and all of the pod side's requests go in one `sendmsg`. The kernel handles
//! rtnetlink requests in order inside that `sendmsg` and queues every answer before it returns,
//! so the answers are read without waiting (`MSG_DONTWAIT`: a missing answer is an error, never
//! a hang). Before, the pod side was six round trips through a fresh async connection.

use super::setns;
use crate::hostnet::{HostError, POD_GATEWAY, POD_GATEWAY_V6};
use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};
use rtnetlink::{AddressMessageBuilder, LinkUnspec, RouteMessageBuilder};
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};

/// One request of a batch.
struct Req {
    /// What it does (error messages).
    op: &'static str,
    msg: RouteNetlinkMessage,
    /// Answered by an ACK (requests that change something) rather than by a reply (a get).
    ack: bool,
    /// `EEXIST` is success (idempotent add without replace).
    exist_ok: bool,
}

impl Req {
    fn change(op: &'static str, msg: RouteNetlinkMessage) -> Req {
        Req { op, msg, ack: true, exist_ok: false }
    }

    fn get_link(name: &str) -> Req {
        let mut l = LinkMessage::default();
        l.attributes.push(LinkAttribute::IfName(name.to_string()));
        Req {
            op: "get pod link",
            msg: RouteNetlinkMessage::GetLink(l),
            ack: false,
            exist_ok: false,
        }
    }
}

/// What the pod side of an ADD needs to know.
pub struct PodSide<'a> {
    /// Index of the pod end in the pod's netns.
    pub index: u32,
    pub if_name: &'a str,
    /// The pod address (/32).
    pub ip: Ipv4Addr,
    /// IPv6 clusters: the pod's /128.
    pub ipv6: Option<Ipv6Addr>,
    /// MAC of the host end (the permanent neighbour entry of the gateway).
    pub host_mac: Vec<u8>,
}

/// The IPv6 half of the pod side: the /128 (no duplicate address detection: the address is the
/// pod's alone, and DAD would hold it unusable for a second or more), the permanent neighbour of
/// the link-local gateway (the host end's MAC) and the default route through it.
fn ipv6_reqs(i: u32, ip: Ipv6Addr, host_mac: &[u8]) -> Vec<Req> {
    let mut addr = AddressMessageBuilder::<Ipv6Addr>::new().index(i).address(ip, 128).build();
    addr.header.flags = AddressHeaderFlags::Nodad;
    let mut neigh = NeighbourMessage::default();
    neigh.header.family = AddressFamily::Inet6;
    neigh.header.ifindex = i;
    neigh.header.state = NeighbourState::Permanent;
    neigh.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(POD_GATEWAY_V6)));
    neigh.attributes.push(NeighbourAttribute::LinkLayerAddress(host_mac.to_vec()));
    let def = RouteMessageBuilder::<Ipv6Addr>::new()
        .gateway(POD_GATEWAY_V6)
        .output_interface(i)
        .onlink()
        .build();
    vec![
        Req {
            exist_ok: true,
            ..Req::change("pod IPv6 address", RouteNetlinkMessage::NewAddress(addr))
        },
        Req::change("pod IPv6 gateway neighbour", RouteNetlinkMessage::NewNeighbour(neigh)),
        Req::change("pod IPv6 default route", RouteNetlinkMessage::NewRoute(def)),
    ]
}

/// An rtnetlink socket in a pod's netns.
pub struct PodSocket(Socket);

impl PodSocket {
    /// Open a socket inside `pod_ns`; the calling thread is back in `host_ns` when it returns.
    pub fn open(pod_ns: &File, host_ns: &File) -> Result<PodSocket, HostError> {
        setns(pod_ns)?;
        let s = Socket::new(NETLINK_ROUTE);
        setns(host_ns)?;
        s.map(PodSocket).map_err(|e| HostError::Io { op: "pod netlink socket", source: e })
    }

    /// The pod's link by name, `None` if there is no such link.
    pub fn link(&self, name: &str) -> Result<Option<LinkMessage>, HostError> {
        match self.batch(vec![Req::get_link(name)]) {
            Err(HostError::NotFound(_)) => Ok(None),
            r => r,
        }
    }

    /// Configure the pod end, in this order: up (the routes need it), the /32 address, the
    /// gateway route, the default route via the gateway, the gateway's permanent neighbour entry
    /// (the host end's MAC); then read the link back by name. Returns it (its MAC goes into the
    /// CNI result); fails if the name is not the link at `index` (nothing else is configured
    /// but the pod's own end).
    pub fn configure(&self, p: &PodSide<'_>) -> Result<LinkMessage, HostError> {
        let i = p.index;
        let up = LinkUnspec::new_with_index(i).up().build();
        let addr = AddressMessageBuilder::<Ipv4Addr>::new().index(i).address(p.ip, 32).build();
        let gw = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(POD_GATEWAY, 32)
            .output_interface(i)
            .scope(RouteScope::Link)
            .build();
        let def = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(POD_GATEWAY)
            .output_interface(i)
            .onlink()
            .build();
        let mut neigh = NeighbourMessage::default();
        neigh.header.family = AddressFamily::Inet;
        neigh.header.ifindex = i;
        neigh.header.state = NeighbourState::Permanent;
        neigh.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(POD_GATEWAY)));
        neigh.attributes.push(NeighbourAttribute::LinkLayerAddress(p.host_mac.clone()));
        let mut reqs = vec![
            Req::change("pod link up", RouteNetlinkMessage::SetLink(up)),
            Req {
                exist_ok: true,
                ..Req::change("pod address", RouteNetlinkMessage::NewAddress(addr))
            },
            Req::change("pod gateway route", RouteNetlinkMessage::NewRoute(gw)),
            Req::change("pod default route", RouteNetlinkMessage::NewRoute(def)),
            Req::change("pod gateway neighbour", RouteNetlinkMessage::NewNeighbour(neigh)),
        ];
        if let Some(v6) = p.ipv6 {
            reqs.extend(ipv6_reqs(i, v6, &p.host_mac));
        }
        reqs.push(Req::get_link(p.if_name));
        let l = self.batch(reqs)?;
        let l = l.ok_or_else(|| HostError::NotFound(format!("{} in pod", p.if_name)))?;
        if l.header.index != i {
            return Err(HostError::NotFound(format!(
                "{} in pod is index {}, the host veth's peer is {i}",
                p.if_name, l.header.index
            )));
        }
        Ok(l)
    }

    /// Send `reqs` in one message and collect one answer per request. The first failure in
    /// request order is the error; the link of the last get, if any, is the result. A link that
    /// does not exist is [`HostError::NotFound`].
    fn batch(&self, reqs: Vec<Req>) -> Result<Option<LinkMessage>, HostError> {
        let mut buf = Vec::new();
        let mut ops = Vec::with_capacity(reqs.len());
        for (seq, r) in (1u32..).zip(reqs) {
            let mut m = NetlinkMessage::from(r.msg);
            m.header.flags = NLM_F_REQUEST;
            if r.ack {
                // Adds replace what is there (idempotent), except the address (EEXIST is fine).
                let how = if r.exist_ok { NLM_F_EXCL } else { NLM_F_REPLACE };
                m.header.flags |= NLM_F_ACK | NLM_F_CREATE | how;
            }
            m.header.sequence_number = seq;
            m.finalize();
            let start = buf.len();
            buf.resize(start + m.buffer_len(), 0);
            m.serialize(&mut buf[start..]);
            buf.resize(buf.len().next_multiple_of(4), 0);
            ops.push((r.op, r.ack, r.exist_ok));
        }
        self.0.send(&buf, 0).map_err(|e| HostError::Io { op: "pod netlink send", source: e })?;
        let mut answers: Vec<Option<Result<Option<LinkMessage>, HostError>>> =
            ops.iter().map(|_| None).collect();
        let mut left = answers.len();
        let mut rbuf = Vec::with_capacity(64 * 1024);
        while left > 0 {
            rbuf.clear();
            self.0.recv(&mut rbuf, nix::libc::MSG_DONTWAIT).map_err(|e| HostError::Io {
                op: "pod netlink answers (all queued when the send returned)",
                source: e,
            })?;
            let mut off = 0;
            while off < rbuf.len() {
                let bad = |e: String| HostError::Netlink { op: "pod netlink answer", msg: e };
                let len = NetlinkBuffer::new_checked(&rbuf[off..])
                    .map_err(|e| bad(e.to_string()))?
                    .length() as usize;
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf[off..off + len])
                    .map_err(|e| bad(e.to_string()))?;
                off += len.next_multiple_of(4);
                let Some(k) = (m.header.sequence_number as usize).checked_sub(1) else { continue };
                let Some(&(op, ack, exist_ok)) = ops.get(k) else { continue };
                let answer = match m.payload {
                    NetlinkPayload::Error(e) => match e.code.map(|c| -c.get()) {
                        None => Ok(None),
                        Some(17) if exist_ok => Ok(None),
                        Some(19) if !ack => Err(HostError::NotFound("pod link".into())),
                        Some(code) => Err(HostError::Netlink {
                            op,
                            msg: std::io::Error::from_raw_os_error(code).to_string(),
                        }),
                    },
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => Ok(Some(l)),
                    _ => continue,
                };
                if answers[k].is_none() {
                    left -= 1;
                }
                answers[k] = Some(answer);
            }
        }
        let mut link = None;
        for a in answers.into_iter().flatten() {
            if let Some(l) = a? {
                link = Some(l);
            }
        }
        Ok(link)
    }
}
