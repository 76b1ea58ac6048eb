//! Fixtures for unit tests.

use crate::pool::{EniView, PoolView};
use crate::store::{Allocation, State};
use enipool_cni::proto::{Command, Request, PROTOCOL_VERSION};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// An ENI with `ips` secondary addresses and `prefixes` /28s, ready and attached.
pub fn eni(id: &str, device_index: i32, ips: &[&str], prefixes: &[&str]) -> EniView {
    EniView {
        id: id.to_string(),
        device_index,
        mac: format!("02:00:00:00:00:{device_index:02x}"),
        subnet: Some("10.0.0.0/16".parse().unwrap()),
        primary_ip: Some(Ipv4Addr::new(10, 0, 0, 10 + device_index as u8)),
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        prefixes: prefixes.iter().map(|s| s.parse().unwrap()).collect(),
        ipv6_prefixes: vec![],
        attached: true,
        ready: true,
    }
}

/// A view over `enis`.
pub fn view(enis: Vec<EniView>) -> PoolView {
    PoolView {
        enis,
        cooldown_seconds: 30,
        node_primary_ip: Some(Ipv4Addr::new(10, 0, 0, 10)),
        ..Default::default()
    }
}

/// An allocation of `ip` to container `cid`.
pub fn allocation(cid: &str, ip: Ipv4Addr, eni: &str) -> Allocation {
    Allocation {
        container_id: cid.to_string(),
        if_name: "eth0".into(),
        ip,
        eni_id: eni.into(),
        table: 254,
        netns: format!("/var/run/netns/{cid}"),
        host_if: crate::hostnet::host_veth_name(&format!("/var/run/netns/{cid}"), "eth0"),
        pod_namespace: String::new(),
        pod_name: String::new(),
        created_at: 0,
        epoch: 1,
        network: "enipool".into(),
        origin: crate::store::Origin::Cni,
        ipv6: None,
    }
}

/// Mark `ip` in use in a bare state (no store).
pub fn use_ip(st: &mut State, cid: &str, ip: &str) {
    let a = allocation(cid, ip.parse().unwrap(), "eni-x");
    st.by_ip.insert(a.ip, a.key());
    st.allocations.insert(a.key(), a);
}

pub fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

/// A CNI request for `cid` on `eth0`, its netns named after it.
pub fn req(cmd: Command, cid: &str) -> Request {
    Request {
        protocol: PROTOCOL_VERSION,
        command: cmd,
        container_id: cid.into(),
        if_name: "eth0".into(),
        netns: format!("/var/run/netns/{cid}"),
        args: Default::default(),
        mtu: None,
        network: "enipool".into(),
        valid_attachments: None,
    }
}
