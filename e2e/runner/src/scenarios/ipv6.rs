//! An IPv6 cluster (`--ip-family IPv6`, the VPC and its subnets with IPv6 blocks): pods get /128s
//! of their node's one /80 and reach each other, within a node and across nodes, with them; the
//! IPv6 internet sees a pod's own address and the IPv4 internet its node's; `kubectl get
//! enipools` shows the prefix; an agent restart keeps every pod's address.

use super::basic::{internet_sees_node_address, pods_on};
use super::kubectl::{table, Row};
use super::{pool_ready, with_cluster, SETTLE};
use crate::Target;
use anyhow::{bail, ensure, Context, Result};
use cluster::{wait, Cluster, Spec};
use enipool_crds::{ENIPool, IpFamily};
use ipnet::Ipv6Net;
use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::time::Duration;

fn spec(name: &str, nodes: usize) -> Spec {
    let mut s = Spec::new(name, nodes);
    s.ip_family = IpFamily::IPv6;
    s
}

/// The node's /80 once its pool is Ready (an IPv6 node is Ready once it holds it) with its ENIs
/// programmed.
async fn node_prefix(c: &Cluster, node: &str) -> Result<Ipv6Net> {
    let pool = pool_ready(c, node).await?;
    match pool_ipv6(&pool).as_slice() {
        [one] => Ok(one.parse()?),
        other => bail!("{node}'s pool lists the IPv6 prefixes {other:?}, not one"),
    }
}

/// Every pair of pods pings each other over IPv6.
async fn mesh_ping6(c: &Cluster, pods: &[String]) -> Result<()> {
    for a in pods {
        for b in pods.iter().filter(|b| *b != a) {
            let ip = c.pod(b)?.ipv6()?;
            c.ping_from_pod(a, ip).await.with_context(|| format!("{a} -> {b}"))?;
        }
    }
    Ok(())
}

/// The IPv6 internet sees each pod's own address (no NAT on IPv6).
async fn internet_sees_pod_address(c: &Cluster, pods: &[String]) -> Result<()> {
    let internet = c.fabric().internet_host_ipv6();
    for p in pods {
        let (ns, own) = (c.pod(p)?.netns, c.pod(p)?.ipv6()?);
        let seen = wait::blocking(move || fabric::udp_echo6(&ns, None, internet))
            .await?
            .with_context(|| format!("no IPv6 UDP echo reply from the internet to pod {p}"))?;
        ensure!(*seen.ip() == own, "the IPv6 internet saw {seen} from pod {p}, not {own}");
    }
    Ok(())
}

fn pool_ipv6(pool: &ENIPool) -> Vec<String> {
    let st = pool.status.as_ref();
    st.map(|s| s.enis.iter().flat_map(|e| e.ipv6_prefixes.clone()).collect()).unwrap_or_default()
}

pub async fn ipv6_pods(t: Target) -> Result<()> {
    with_cluster(&t, spec("ipv6-pods", 2), |c| {
        Box::pin(async move {
            let (a, b) = (c.nodes()[0].name.clone(), c.nodes()[1].name.clone());
            let (pa, pb) = (node_prefix(c, &a).await?, node_prefix(c, &b).await?);
            ensure!(pa != pb, "two nodes with one /80 {pa}");
            let mut pods = pods_on(c, "v6a", &a, 2).await?;
            pods.extend(pods_on(c, "v6b", &b, 1).await?);
            let mut seen = BTreeSet::new();
            for p in &pods {
                let info = c.pod(p)?;
                let ip = info.ipv6()?;
                let prefix = if info.node == a { pa } else { pb };
                ensure!(prefix.contains(&ip), "pod {p} got {ip}, outside its node's {prefix}");
                ensure!(seen.insert(ip), "{ip} given twice");
            }
            // One node, and across nodes through the VPC router.
            mesh_ping6(c, &pods).await?;
            internet_sees_pod_address(c, &pods).await?;
            // IPv4-only destinations: through the node's IPv4, which the IGW translates.
            let internet4 = c.fabric().internet_host_ip();
            for p in &pods {
                c.ping_from_pod(p, internet4).await?;
            }
            internet_sees_node_address(c, &pods).await?;
            kubectl_shows_the_prefix(c, &[(a.as_str(), 2), (b.as_str(), 1)]).await?;
            // A deleted pod's address leaves the node: nothing answers it any more.
            let gone = c.pod(&pods[0])?.ipv6()?;
            c.delete_pod(&pods[0]).await?;
            let from = pods[2].clone();
            ensure!(
                c.ping_from_pod(&from, gone).await.is_err(),
                "{gone} still answers after its pod was deleted"
            );
            Ok(())
        })
    })
    .await
}

/// `kubectl get enipools` in an IPv6 cluster: one prefix per node, the pod limit allocated, and
/// each node's pods in use.
async fn kubectl_shows_the_prefix(c: &Cluster, in_use: &[(&str, i64)]) -> Result<()> {
    wait::poll("kubectl get enipools to show the IPv6 pools", SETTLE, || async {
        let out = c.kubectl(&["get", "enipools", "-o", "wide"])?;
        let (_, rows) = table(&out)?;
        for (node, want) in in_use {
            let row: &Row = rows
                .iter()
                .find(|r| r.get("NAME").map(String::as_str) == Some(*node))
                .with_context(|| format!("no row for {node}:\n{out}"))?;
            let num = |k: &str| -> Result<i64> {
                row.get(k).with_context(|| format!("no {k}"))?.parse().context(k.to_string())
            };
            ensure!(row.get("FAMILY").map(String::as_str) == Some("IPv6"), "{row:?}");
            ensure!(num("PREFIXES")? == 1, "{node}: {row:?}");
            ensure!(num("ALLOCATED")? == 248, "{node}: the pod limit of an m5.large: {row:?}");
            ensure!(num("IN-USE")? == *want, "{node}: {want} pods: {row:?}");
        }
        Ok(())
    })
    .await
}

pub async fn ipv6_agent_restart(t: Target) -> Result<()> {
    with_cluster(&t, spec("ipv6-agent-restart", 1), |c| {
        Box::pin(async move {
            let n = c.nodes()[0].clone();
            let prefix = node_prefix(c, &n.name).await?;
            let pods = pods_on(c, "keep", &n.name, 3).await?;
            let before: Vec<Ipv6Addr> =
                pods.iter().map(|p| c.pod(p)?.ipv6()).collect::<Result<_>>()?;
            mesh_ping6(c, &pods).await?;
            c.kill9_agent(&n).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.start_agent(&n).await?;
            node_prefix(c, &n.name).await?;
            // Every pod keeps its address and its traffic; a new pod gets none of theirs.
            mesh_ping6(c, &pods).await?;
            internet_sees_pod_address(c, &pods).await?;
            let new = pods_on(c, "after", &n.name, 1).await?;
            let ip = c.pod(&new[0])?.ipv6()?;
            ensure!(prefix.contains(&ip) && !before.contains(&ip), "new pod got {ip}: {before:?}");
            let all: Vec<String> = pods.iter().chain(&new).cloned().collect();
            mesh_ping6(c, &all).await?;
            ensure!(pool_ipv6(&c.pool(&n.name).await?) == [prefix.to_string()], "prefix changed");
            Ok(())
        })
    })
    .await
}
