//! Custom networking: pods take their addresses from pod subnets in the VPC's secondary block, one
//! per zone, which a policy selects by tag; nodes keep theirs in the node subnets. Every platform
//! VPC carries such pod subnets (see `cluster::Spec::new`).

use super::basic::{internet_sees_node_address, pods_on, source_seen};
use super::{all_pools_ready, eni_of, with_cluster};
use crate::Target;
use anyhow::{ensure, Context, Result};
use cluster::{wait, Spec};
use ipnet::Ipv4Net;

pub async fn custom_networking(t: Target) -> Result<()> {
    let spec = Spec::new("custom-networking", 2).policy(serde_json::json!({
        "mode": "SecondaryIP",
        "sizing": {"warmIPs": 2, "batch": 1},
        "release": {"enabled": true, "delaySeconds": 10},
        "cooldownSeconds": 1,
        "eni": {"firstInterfaceIndex": 1, "subnets": {"tags": {cluster::ROLE_TAG: "pods"}}},
    }));
    with_cluster(&t, spec, |c| {
        Box::pin(async move {
            all_pools_ready(c).await?;
            let nodes = c.nodes();
            let zones: std::collections::BTreeSet<&str> =
                nodes.iter().map(|n| n.az.as_str()).collect();
            ensure!(zones.len() == nodes.len(), "nodes share zones: {zones:?}");
            let secondary: Vec<Ipv4Net> =
                c.spec.vpc_blocks.iter().skip(1).map(|b| b.parse()).collect::<Result<_, _>>()?;
            let pod_subnets: Vec<(Ipv4Net, &str)> = c
                .spec
                .subnets
                .iter()
                .filter(|s| s.role == "pods")
                .map(|s| Ok((s.cidr.parse()?, s.az)))
                .collect::<Result<_>>()?;
            let mut pods = Vec::new();
            for (i, n) in nodes.iter().enumerate() {
                pods.extend(pods_on(c, &format!("n{i}"), &n.name, 2).await?);
            }
            for p in &pods {
                let pod = c.pod(p)?;
                let ip = pod.ip()?;
                let node = c.node(&pod.node)?;
                let (net, az) = pod_subnets
                    .iter()
                    .find(|(net, _)| net.contains(&ip))
                    .with_context(|| format!("pod {p} got {ip}, in no pod subnet"))?;
                ensure!(
                    secondary.iter().any(|b| b.contains(net)),
                    "pod subnet {net} outside the secondary blocks"
                );
                ensure!(
                    *az == node.az,
                    "pod {p} on {} ({}) got {ip} from {net} in {az}",
                    node.name,
                    node.az
                );
                let pool = c.pool(&node.name).await?;
                let eni = eni_of(&pool, ip).with_context(|| format!("{ip} of {p} in no ENI"))?;
                ensure!(
                    eni.device_index >= 1,
                    "pod {p} on the primary ENI with firstInterfaceIndex 1"
                );
                // The node reaches its pods (kubelet probes come from the node).
                let ns = node.netns.clone();
                let ok = wait::blocking(move || (0..3).any(|_| fabric::ping(&ns, ip))).await;
                ensure!(ok, "node {} cannot ping its pod {p} ({ip})", node.name);
            }
            // Across zones, each pod sees the other's own address (no SNAT inside the VPC), and
            // the replies leave by the pod's own ENI.
            for from in &pods {
                for to in &pods {
                    if c.pod(from)?.node == c.pod(to)?.node {
                        continue;
                    }
                    let src = c.pod(from)?.ip()?;
                    let seen = source_seen(c, from, to).await?;
                    ensure!(
                        seen == src,
                        "pod {to} saw {seen} from pod {from} ({src}): SNATed inside the VPC"
                    );
                }
            }
            // Leaving the VPC is SNATed to the node's public address.
            internet_sees_node_address(c, &pods).await
        })
    })
    .await
}
