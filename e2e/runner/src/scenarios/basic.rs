//! Pod networking: one node, across nodes, primary vs secondary ENIs, egress SNAT.

use super::{all_pools_ready, check_pod_status_ips, eni_of, mesh_ping, pool_ready, with_cluster};
use crate::Target;
use anyhow::{bail, ensure, Context, Result};
use cluster::{wait, Cluster, Spec};
use ipnet::Ipv4Net;

/// Creates `count` pods named `<prefix>-<i>` on `node`, one after the other, each sandbox retried
/// like the kubelet does until it gets an address (the pool grows only after EC2's describes show
/// the addresses the operator added).
pub(crate) async fn pods_on(
    c: &Cluster,
    prefix: &str,
    node: &str,
    count: usize,
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        c.create_pod(&name, node).await?;
        let what = format!("pod {name} to get an address");
        wait::poll(&what, super::SETTLE, || c.start_sandbox(&name)).await?;
        names.push(name);
    }
    Ok(names)
}

/// The address the agent wrote into a pod's `enipool.io/pod-ips` annotation.
async fn pod_ip_annotation(c: &Cluster, pod: &str) -> Result<Option<String>> {
    use k8s_openapi::api::core::v1::Pod;
    let api: kube::Api<Pod> = kube::Api::namespaced(c.client().clone(), c.pod_namespace());
    let p = api.get(pod).await?;
    Ok(p.metadata.annotations.and_then(|a| a.get("enipool.io/pod-ips").cloned()))
}

pub async fn pods_one_node(t: Target) -> Result<()> {
    let mut spec = Spec::new("pods-one-node", 1);
    spec.annotate_pod_ip = true;
    with_cluster(&t, spec, |c| {
        Box::pin(async move {
            // The agent's annotation writes must pass the chart's RBAC, not only its policy.
            c.kube.enforce_rbac();
            let node = c.nodes()[0].name.clone();
            pool_ready(c, &node).await?;
            let pods = pods_on(c, "web", &node, 3).await?;
            let vpc: Ipv4Net = "10.0.0.0/16".parse()?;
            for p in &pods {
                let ip = c.pod(p)?.ip()?;
                ensure!(vpc.contains(&ip), "pod {p} got {ip}, outside the VPC");
                let pool = c.pool(&node).await?;
                ensure!(eni_of(&pool, ip).is_some(), "pod {p}'s {ip} is not in the ENIPool's ENIs");
            }
            check_pod_status_ips(c).await?;
            // The agent annotated each pod it wired with its address (under the chart's RBAC and
            // admission policy for it, on the platform's API).
            for p in &pods {
                let ip = c.pod(p)?.ip()?.to_string();
                wait::poll(&format!("pod {p} annotated with {ip}"), super::SETTLE, || async {
                    let got = pod_ip_annotation(c, p).await?;
                    ensure!(got.as_deref() == Some(ip.as_str()), "annotation {got:?}");
                    Ok(())
                })
                .await?;
            }
            mesh_ping(c, &pods).await?;
            // The node reaches its pods (kubelet probes) and pods reach the node.
            let n = c.node(&node)?;
            for p in &pods {
                let ip = c.pod(p)?.ip()?;
                let ns = n.netns.clone();
                ensure!(
                    wait::blocking(move || fabric::ping(&ns, ip)).await,
                    "node cannot ping {p}"
                );
                c.ping_from_pod(p, n.primary_ip).await?;
            }
            // In use follows the pods, down to zero after they are deleted.
            wait::poll("the agent to report 3 addresses in use", super::SETTLE, || async {
                let inuse = c.pool(&node).await?.status.and_then(|s| s.agent).map(|a| a.in_use);
                ensure!(inuse == Some(3), "inUse {inuse:?}");
                Ok(())
            })
            .await?;
            support_bundle_shows_the_pods(c, &node, &pods).await?;
            for p in &pods {
                c.delete_pod(p).await?;
            }
            wait::poll("inUse back to 0", super::SETTLE, || async {
                let inuse = c.pool(&node).await?.status.and_then(|s| s.agent).map(|a| a.in_use);
                ensure!(inuse == Some(0), "inUse {inuse:?}");
                Ok(())
            })
            .await
        })
    })
    .await
}

/// What on-call attaches to a ticket (`enipool-agent support`, run as `kubectl exec` into the
/// node's agent pod would): the node's allocations, its ip rules and the agent's log name each
/// pod, and no member holds the agent's token.
async fn support_bundle_shows_the_pods(c: &Cluster, node: &str, pods: &[String]) -> Result<()> {
    let dir = c.support_bundle(node).await?.join("enipool-support");
    let read = |m: &str| {
        std::fs::read_to_string(dir.join(m)).with_context(|| format!("{m} in the support bundle"))
    };
    let (allocations, rules, log) =
        (read("agent/allocations.json")?, read("host/ip-rule.txt")?, read("agent/recent.log")?);
    for p in pods {
        let ip = c.pod(p)?.ip()?.to_string();
        ensure!(allocations.contains(&format!("\"{ip}\"")), "{p}'s {ip} not in allocations");
        ensure!(rules.contains(&ip), "no ip rule for {p}'s {ip} in the bundle:\n{rules}");
        ensure!(log.contains(&format!("ip={ip}")), "the agent's log in the bundle lacks {p}");
    }
    if let Some(token) = c.agent_token(node)? {
        let mut files = vec![dir.clone()];
        while let Some(f) = files.pop() {
            if f.is_dir() {
                files.extend(std::fs::read_dir(&f)?.filter_map(|e| e.ok().map(|e| e.path())));
            } else {
                let bytes = std::fs::read(&f)?;
                let found = bytes.windows(token.len()).any(|w| w == token.as_bytes());
                ensure!(!found, "{} holds the agent's token", f.display());
            }
        }
    }
    Ok(())
}

pub async fn pods_across_nodes(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("pods-across-nodes", 2), |c| {
        Box::pin(async move {
            all_pools_ready(c).await?;
            let nodes = c.nodes();
            let mut pods = pods_on(c, "a", &nodes[0].name, 2).await?;
            pods.extend(pods_on(c, "b", &nodes[1].name, 2).await?);
            check_pod_status_ips(c).await?;
            mesh_ping(c, &pods).await
        })
    })
    .await
}

/// Fills the primary ENI of a node until a pod lands on a secondary ENI; returns (primary pod,
/// secondary pod).
async fn pods_on_both_enis(c: &Cluster, prefix: &str, node: &str) -> Result<(String, String)> {
    let mut primary = None;
    for i in 0..20 {
        let name = format!("{prefix}-{i}");
        // The pool grows as pods arrive; a pod may wait for the operator like under a real
        // kubelet, which retries the sandbox.
        wait::poll(&format!("pod {name} to get an address"), super::SETTLE, || async {
            if c.pod(&name).is_err() {
                c.create_pod(&name, node).await?;
            }
            c.start_sandbox(&name).await.map(drop)
        })
        .await?;
        let ip = c.pod(&name)?.ip()?;
        let pool = c.pool(node).await?;
        let eni =
            eni_of(&pool, ip).with_context(|| format!("{ip} of {name} in no ENI of the pool"))?;
        if eni.device_index == 0 {
            primary.get_or_insert(name);
        } else {
            let primary = primary.context("the first pods should use the primary ENI")?;
            return Ok((primary, name));
        }
    }
    bail!("20 pods on {node} and none on a secondary ENI")
}

pub async fn primary_and_secondary_eni(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("primary-and-secondary-eni", 2), |c| {
        Box::pin(async move {
            all_pools_ready(c).await?;
            let nodes = c.nodes();
            let (a1, a2) = pods_on_both_enis(c, "a", &nodes[0].name).await?;
            let (b1, b2) = pods_on_both_enis(c, "b", &nodes[1].name).await?;
            pool_ready(c, &nodes[0].name).await?;
            pool_ready(c, &nodes[1].name).await?;
            check_pod_status_ips(c).await?;
            // The interface-type matrix: primary/secondary × same/other node.
            mesh_ping(c, &[a1, a2.clone(), b1, b2.clone()]).await?;
            // A secondary-ENI pod's traffic must leave by its own ENI: the fabric's source check
            // drops it otherwise, so a reply proves the per-ENI route table is right.
            let internet = c.fabric().internet_host_ip();
            c.ping_from_pod(&a2, internet).await?;
            c.ping_from_pod(&b2, internet).await
        })
    })
    .await
}

pub async fn egress_snat(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("egress-snat", 1), |c| {
        Box::pin(async move {
            let n = c.nodes()[0].clone();
            pool_ready(c, &n.name).await?;
            let (p1, p2) = pods_on_both_enis(c, "egress", &n.name).await?;
            let internet = c.fabric().internet_host_ip();
            for p in [&p1, &p2] {
                c.ping_from_pod(p, internet).await?;
            }
            internet_sees_node_address(c, &[p1, p2]).await
        })
    })
    .await
}

/// Each pod's UDP datagram to the internet host arrives from its node's public address, and the
/// reply comes back. The IGW translates only a node's primary IP: seeing the node's public IP
/// means the node SNATed the pod to its primary IP.
pub(crate) async fn internet_sees_node_address(c: &Cluster, pods: &[String]) -> Result<()> {
    let internet = c.fabric().internet_host_ip();
    for p in pods {
        let node = c.node(&c.pod(p)?.node)?;
        let public = c.fabric().public_ip(&node.instance_id).context("node public IP")?;
        let ns = c.pod(p)?.netns;
        let seen = wait::blocking(move || fabric::udp_echo(&ns, None, internet))
            .await?
            .with_context(|| format!("no UDP echo reply from the internet to pod {p}"))?;
        ensure!(*seen.ip() == public, "the internet saw {seen} from pod {p}, not {public}");
    }
    Ok(())
}

/// The source address a UDP datagram from pod `from` carries when it reaches pod `to` (an echo
/// server bound to `to`'s address answers with what it saw).
pub(crate) async fn source_seen(c: &Cluster, from: &str, to: &str) -> Result<std::net::Ipv4Addr> {
    let (src, dst) = (c.pod(from)?, c.pod(to)?);
    let dst_ip = dst.ip()?;
    let server = fabric::EchoServer::start(&dst.netns, dst_ip)?;
    let ns = src.netns.clone();
    let seen = wait::blocking(move || fabric::udp_echo(&ns, None, dst_ip)).await;
    drop(server);
    Ok(*seen?
        .with_context(|| format!("no UDP echo reply from pod {to} ({dst_ip}) to {from}"))?
        .ip())
}

pub async fn cross_subnet(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("cross-subnet", 3), |c| {
        Box::pin(async move {
            all_pools_ready(c).await?;
            let nodes = c.nodes();
            let blocks: Vec<Ipv4Net> =
                c.spec.vpc_blocks.iter().map(|b| b.parse()).collect::<Result<_, _>>()?;
            let zones: std::collections::BTreeSet<&str> = nodes.iter().map(|n| n.az.as_str()).collect();
            ensure!(zones.len() == nodes.len(), "nodes share zones: {zones:?}");
            ensure!(
                nodes.iter().any(|n| !blocks[0].contains(&n.primary_ip)),
                "no node in a secondary VPC block"
            );
            // A pod on each node's primary ENI, and one on a secondary ENI of the first node:
            // its replies must leave by its own ENI, whatever subnet they go to.
            let (a1, a2) = pods_on_both_enis(c, "a", &nodes[0].name).await?;
            let mut pods = vec![a1, a2];
            for (i, n) in nodes.iter().enumerate().skip(1) {
                pods.extend(pods_on(c, &format!("p{i}"), &n.name, 1).await?);
            }
            for from in &pods {
                for to in &pods {
                    if from == to || c.pod(from)?.node == c.pod(to)?.node {
                        continue;
                    }
                    let src = c.pod(from)?.ip()?;
                    let seen = source_seen(c, from, to).await?;
                    ensure!(
                        seen == src,
                        "pod {to} saw {seen} from pod {from} ({src}): traffic inside the VPC was SNATed"
                    );
                }
            }
            // Leaving the VPC is still SNATed.
            internet_sees_node_address(c, &pods).await?;
            // What the agents were told the VPC is: all its blocks, not the nodes' subnets.
            let want: Vec<String> = blocks.iter().map(|b| b.to_string()).collect();
            for n in &nodes {
                let pool = pool_ready(c, &n.name).await?;
                let published = pool.status.and_then(|s| s.instance).map(|i| i.vpc_cidrs);
                ensure!(
                    published.as_ref() == Some(&want),
                    "pool {} publishes VPC CIDRs {published:?}, the VPC has {want:?}",
                    n.name
                );
            }
            Ok(())
        })
    })
    .await
}
