//! The libcni driver tests' helpers: a driver running a conflist on a node, Debian's `bridge`
//! plugin as the stand-in for enipool's, and the pod's address from an ADD result.

use enipool_fabric::cnidriver::{self, CniDriver};
use enipool_fabric::Fabric;
use std::net::Ipv4Addr;

/// A libcni "runtime" on `node` running `conflist` (written to the node's CNI config dir).
pub(super) fn driver(f: &Fabric, node: &str, conflist: serde_json::Value) -> CniDriver {
    let bin = cnidriver::build(&cnidriver::default_build_dir()).expect("building the driver");
    let conf_dir = f.run_dir().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let name = conflist["name"].as_str().unwrap().to_string();
    std::fs::write(conf_dir.join(format!("10-{name}.conflist")), conflist.to_string()).unwrap();
    CniDriver {
        bin,
        conf_dir,
        cni_bin_dirs: vec!["/usr/lib/cni".into()],
        cache_dir: f.run_dir().join("cni-cache"),
        network: name,
        host_netns: Some(node.to_string()),
    }
}

/// Debian's `bridge` plugin with `host-local` IPAM: the stand-in for enipool's plugin.
pub(super) fn bridge_plugin(f: &Fabric, bridge: &str, subnet: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "bridge", "bridge": bridge, "isGateway": true,
        "ipam": {
            "type": "host-local", "dataDir": f.run_dir().join("ipam"),
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}]
        }
    })
}

pub(super) fn pod_ip(result: &serde_json::Value) -> Ipv4Addr {
    let ip = result["ips"][0]["address"].as_str().expect("an IP in the result");
    ip.split('/').next().unwrap().parse().unwrap()
}

pub(super) const POD_ARGS: [(&str, &str); 2] =
    [("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", "web-0")];
