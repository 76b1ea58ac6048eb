//! Pods as the host shows them, without the store: a host veth named by
//! [`super::host_veth_name`], the /32 route in the main table that points the pod's address at it,
//! and the from-pod rule that names its ENI's table. Pure assembly here; the listing is the
//! [`super::HostNet::pod_wiring`] of each host implementation.

use super::MAIN_TABLE;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// One pod's host side.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPod {
    /// Host side veth name.
    pub host_if: String,
    /// The pod address (the /32 route's destination).
    pub ip: Ipv4Addr,
    /// Table of the pod's from-pod rule: its secondary ENI's; [`MAIN_TABLE`] without one.
    pub table: u32,
}

/// Whether `name` has the shape [`super::host_veth_name`] gives: `eni` and 11 lower-case hex
/// digits.
pub fn is_pod_veth_name(name: &str) -> bool {
    name.len() == 14
        && name.starts_with("eni")
        && name[3..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The pods from the host's pod veths (index → name), its /32 main-table routes (output link
/// index, destination) and its from-pod rules (source address, table). A route through another
/// link is not a pod's; a veth without a route carries no address the host routes to, and is
/// left out.
pub fn assemble(
    veths: &BTreeMap<u32, String>,
    routes: &[(u32, Ipv4Addr)],
    from_rules: &[(Ipv4Addr, u32)],
) -> Vec<HostPod> {
    let table_of: BTreeMap<Ipv4Addr, u32> = from_rules.iter().map(|(ip, t)| (*ip, *t)).collect();
    let mut pods: Vec<HostPod> = routes
        .iter()
        .filter_map(|(oif, ip)| {
            let host_if = veths.get(oif)?;
            Some(HostPod {
                host_if: host_if.clone(),
                ip: *ip,
                table: table_of.get(ip).copied().unwrap_or(MAIN_TABLE),
            })
        })
        .collect();
    pods.sort();
    pods.dedup();
    pods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_recognised_by_shape() {
        let name = super::super::host_veth_name("/var/run/netns/x", "eth0");
        assert!(is_pod_veth_name(&name), "{name}");
        for other in
            ["eth0", "eni", "eni0123456789", "eni0123456789abc", "eniABCDEF01234", "enx0123456789a"]
        {
            assert!(!is_pod_veth_name(other), "{other}");
        }
    }

    #[test]
    fn a_pod_is_a_pod_veth_with_its_route_and_rule() {
        let veths =
            BTreeMap::from([(7, "eni0000000000a".to_string()), (8, "eni0000000000b".into())]);
        let routes = [
            (7, Ipv4Addr::new(10, 0, 0, 20)),
            (8, Ipv4Addr::new(10, 0, 2, 3)),
            // Through the primary link (an ENI's own route), not a pod's.
            (2, Ipv4Addr::new(10, 0, 0, 1)),
        ];
        let rules = [(Ipv4Addr::new(10, 0, 2, 3), 3), (Ipv4Addr::new(10, 0, 9, 9), 4)];
        assert_eq!(
            assemble(&veths, &routes, &rules),
            [
                HostPod {
                    host_if: "eni0000000000a".into(),
                    ip: Ipv4Addr::new(10, 0, 0, 20),
                    table: 254
                },
                HostPod {
                    host_if: "eni0000000000b".into(),
                    ip: Ipv4Addr::new(10, 0, 2, 3),
                    table: 3
                },
            ]
        );
    }
}
