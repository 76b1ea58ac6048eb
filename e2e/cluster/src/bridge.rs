//! Debian's `bridge` plugin with `host-local` IPAM on a node: the stand-in for another CNI (the
//! one a node migrates from) and the baseline enipool's pod start is measured against.

use crate::node::NodeInfo;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

/// Its config: sorts after enipool's `05-enipool.conflist`, as aws-node's does.
pub const CONFLIST: &str = "10-bridge.conflist";
/// Its network (host-local keeps its reservations under this name).
pub const NETWORK: &str = "bridge-net";
/// Its pod addresses: outside the VPC, so nobody takes them for enipool's.
pub const SUBNET: &str = "10.250.0.0/24";

/// Links Debian's plugins into the node's CNI bin dir and writes the bridge config into its
/// config dir, as the node image and the other CNI's installer would have; returns host-local's
/// reservation dir for the network.
pub fn install(n: &NodeInfo) -> Result<PathBuf> {
    let bin = n.driver.cni_bin_dirs.first().context("the node has no CNI bin dir")?;
    for p in ["bridge", "host-local"] {
        let src = Path::new("/usr/lib/cni").join(p);
        ensure!(
            src.exists(),
            "{} missing: install Debian's containernetworking-plugins",
            src.display()
        );
        std::os::unix::fs::symlink(&src, bin.join(p))?;
    }
    let ipam_dir = n.dir.join("host-local");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0", "name": NETWORK,
        "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "dataDir": ipam_dir,
                     "ranges": [[{"subnet": SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}]},
        }],
    });
    std::fs::write(n.driver.conf_dir.join(CONFLIST), conflist.to_string())?;
    Ok(ipam_dir.join(NETWORK))
}
