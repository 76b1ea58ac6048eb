//! CNI result types: what ADD prints and what CHECK/DEL receive as `prevResult`.
//!
//! Hand-written rather than taken from a CNI types crate: the shim needs only the result shape shared
//! by 0.3.0-1.1.0 (with the pre-1.0 per-IP `version` field), tolerant parsing of a prevResult that
//! earlier/later plugins may have extended, and nothing else. That is ~100 lines here against a
//! dependency whose version coverage and unknown-field handling we would have to track.

use crate::error::Error;
use crate::proto::{AddResult, POD_GATEWAY_V6};
use crate::version;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A CNI result (spec 1.0.0 "Success"; same layout for 0.3.x-1.1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The version of this result's layout.
    pub cni_version: String,
    /// Interfaces created or touched.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes added in the sandbox.
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

/// One interface in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Netns path of the sandbox; empty (omitted) for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// One address in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` or `"6"`; present only in 0.3.x/0.4.0 results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix length.
    pub address: IpNet,
    /// Default gateway for this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface holding the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    /// Next hop; absent means the address's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings (also the shape of the network config's `dns` key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Index of the pod interface in [`CniResult::interfaces`] built by [`from_add`].
pub const POD_IF_INDEX: usize = 1;

/// Builds the ADD result in `cni_version`'s layout: `[host veth, pod iface]`, the pod `/32` (or,
/// in an IPv6 cluster, its `/128`) on the pod iface, and a default route via the agent's gateway.
/// An IPv6 pod's node-local IPv4 address is not reported: to Kubernetes the pod is IPv6 only.
pub fn from_add(cni_version: &str, add: &AddResult, netns: &str, dns: Option<&Dns>) -> CniResult {
    let v6 = add.ipv6.is_some();
    let family = if v6 { "6" } else { "4" };
    let version = version::ips_have_version_field(cni_version).then(|| family.to_string());
    let (address, gateway, default) = match add.ipv6 {
        Some(ip) => (
            IpNet::V6(Ipv6Net::new(ip, 128).expect("128 is a valid IPv6 prefix length")),
            IpAddr::V6(POD_GATEWAY_V6),
            "::/0",
        ),
        None => (
            IpNet::V4(Ipv4Net::new(add.ip, 32).expect("32 is a valid IPv4 prefix length")),
            IpAddr::V4(add.gateway),
            "0.0.0.0/0",
        ),
    };
    CniResult {
        cni_version: cni_version.to_string(),
        interfaces: vec![
            Interface {
                name: add.host_if_name.clone(),
                mac: add.host_mac.clone(),
                sandbox: String::new(),
            },
            Interface {
                name: add.pod_if_name.clone(),
                mac: add.pod_mac.clone(),
                sandbox: netns.to_string(),
            },
        ],
        ips: vec![IpConfig {
            version,
            address,
            gateway: Some(gateway),
            interface: Some(POD_IF_INDEX),
        }],
        routes: vec![Route { dst: default.parse().expect("literal"), gw: Some(gateway) }],
        dns: dns.cloned().unwrap_or_default(),
    }
}

/// Parses a `prevResult` (as found in the network config) strictly enough for CHECK.
pub fn parse_prev(value: &serde_json::Value) -> Result<CniResult, Error> {
    let mut value = value.clone();
    // Older runtimes omit cniVersion inside prevResult; the outer config carries it.
    if let Some(obj) = value.as_object_mut() {
        obj.entry("cniVersion").or_insert_with(|| serde_json::Value::String(String::new()));
    }
    let prev: CniResult =
        serde_json::from_value(value).map_err(|e| Error::decode("prevResult", e))?;
    for ip in &prev.ips {
        if let Some(i) = ip.interface {
            if i >= prev.interfaces.len() {
                return Err(Error::InvalidConfig(format!(
                    "prevResult ip {} names interface index {i} but there are only {} interfaces",
                    ip.address,
                    prev.interfaces.len()
                )));
            }
        }
    }
    Ok(prev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn add() -> AddResult {
        AddResult {
            ip: "10.0.1.23".parse().unwrap(),
            gateway: "169.254.1.1".parse().unwrap(),
            host_if_name: "eni0123456789a".into(),
            host_mac: "02:00:00:00:00:01".into(),
            pod_if_name: "eth0".into(),
            pod_mac: "02:00:00:00:00:02".into(),
            eni_id: "eni-1".into(),
            mtu: 9001,
            ipv6: None,
        }
    }

    #[test]
    fn v1_layout() {
        let r = from_add("1.0.0", &add(), "/var/run/netns/x", None);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "eni0123456789a", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/var/run/netns/x"}
                ],
                "ips": [{"address": "10.0.1.23/32", "gateway": "169.254.1.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
                "dns": {}
            })
        );
    }

    #[test]
    fn an_ipv6_pod_is_reported_by_its_ipv6_address_alone() {
        let v6 = AddResult { ipv6: Some("2600:1f14:0:100:1::5".parse().unwrap()), ..add() };
        let r = serde_json::to_value(from_add("1.0.0", &v6, "/n", None)).unwrap();
        assert_eq!(
            r["ips"],
            json!([{"address": "2600:1f14:0:100:1::5/128", "gateway": "fe80::1", "interface": 1}])
        );
        assert_eq!(r["routes"], json!([{"dst": "::/0", "gw": "fe80::1"}]));
        let old = serde_json::to_value(from_add("0.4.0", &v6, "/n", None)).unwrap();
        assert_eq!(old["ips"][0]["version"], "6");
        // CHECK finds the pod by the address the result reported.
        let prev = parse_prev(&r).unwrap();
        assert_eq!(prev.ips[0].address.addr(), v6.pod_ip());
    }

    #[test]
    fn pre_v1_layout_has_ip_version() {
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let r = serde_json::to_value(from_add(v, &add(), "/n", None)).unwrap();
            assert_eq!(r["ips"][0]["version"], "4", "{v}");
        }
        let r = serde_json::to_value(from_add("1.1.0", &add(), "/n", None)).unwrap();
        assert!(r["ips"][0].get("version").is_none());
    }

    #[test]
    fn prev_result_roundtrip_and_tolerance() {
        let mut v = serde_json::to_value(from_add("1.0.0", &add(), "/n", None)).unwrap();
        // Later plugins may add fields we do not know; they must not break CHECK.
        v["interfaces"][1]["mtu"] = json!(1500);
        v["extra"] = json!(true);
        let prev = parse_prev(&v).unwrap();
        assert_eq!(prev.ips[0].address.to_string(), "10.0.1.23/32");
        v["ips"][0]["interface"] = json!(7);
        assert_eq!(parse_prev(&v).unwrap_err().code(), 7);
        assert_eq!(parse_prev(&json!({"ips": "x"})).unwrap_err().code(), 6);
    }
}
