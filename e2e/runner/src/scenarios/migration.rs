//! Moving a node from another CNI to enipool in place and back, step by step as
//! docs/migrate-from-aws-vpc-cni.md says. The node first runs Debian's `bridge` plugin with
//! `host-local` IPAM (the stand-in for aws-node: another plugin, its own config in the runtime's
//! dir), and its runtime picks configs as containerd and CRI-O do: the first by file name for a new
//! pod, the one of its ADD for a pod's DEL. It needs the platform's network-namespace nodes (it
//! installs plugins and edits the node's CNI config dir), so it runs with `--kubeconfig` too (the
//! nodes are still the platform's), never against real EC2.

use super::basic::pods_on;
use super::{eni_of, pool_ready, with_cluster, SETTLE};
use crate::Target;
use anyhow::{ensure, Context, Result};
use cluster::bridge::{self, CONFLIST as BRIDGE_CONFLIST, SUBNET as BRIDGE_SUBNET};
use cluster::node::{Join, NodeInfo, CONFLIST_NAME};
use cluster::{wait, Cluster, Spec};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use std::collections::BTreeSet;
use std::path::Path;

/// The label that selects the nodes moved to enipool (doc: "Moving nodes one by one").
const ENABLED: &str = "enipool.io/enabled";

/// The configs in the node's CNI config dir, by file name.
fn configs(n: &NodeInfo) -> BTreeSet<String> {
    let dir = std::fs::read_dir(&n.driver.conf_dir).into_iter().flatten().flatten();
    dir.map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn patch_node(c: &Cluster, node: &str, patch: serde_json::Value) -> Result<()> {
    let api: Api<Node> = Api::all(c.client().clone());
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching Node {node} with {patch}"))?;
    Ok(())
}

/// `kubectl cordon` / `uncordon`.
async fn cordon(c: &Cluster, node: &str, on: bool) -> Result<()> {
    patch_node(c, node, serde_json::json!({"spec": {"unschedulable": on}})).await
}

/// `kubectl label node NODE enipool.io/enabled=true` / `enipool.io/enabled-`.
async fn label(c: &Cluster, node: &str, on: bool) -> Result<()> {
    let value = on.then_some("true");
    patch_node(c, node, serde_json::json!({"metadata": {"labels": {ENABLED: value}}})).await
}

/// The pod's address, which must come from the bridge's range.
fn bridge_ip(c: &Cluster, pod: &str) -> Result<std::net::Ipv4Addr> {
    let ip = c.pod(pod)?.ip()?;
    let range: Ipv4Net = BRIDGE_SUBNET.parse()?;
    ensure!(range.contains(&ip), "pod {pod} got {ip}, not an address of the bridge ({range})");
    Ok(ip)
}

/// host-local still holds `ip` (a reservation file named after it).
fn reserved(ipam: &Path, ip: std::net::Ipv4Addr) -> bool {
    ipam.join(ip.to_string()).exists()
}

/// Node and pod reach each other both ways.
async fn reachable(c: &Cluster, n: &NodeInfo, pod: &str) -> Result<()> {
    let ip = c.pod(pod)?.ip()?;
    let ns = n.netns.clone();
    ensure!(wait::blocking(move || fabric::ping(&ns, ip)).await, "node cannot ping {pod} ({ip})");
    c.ping_from_pod(pod, n.primary_ip).await
}

/// What EC2 holds for the node against what its pool listed last: every ENI of the pool with the
/// same secondary addresses, and no ENI enipool tagged for the instance that the pool did not
/// list, or that is no longer attached (a leak).
fn ec2_holds_what_the_pool_held(
    c: &Cluster,
    n: &NodeInfo,
    last: &enipool_crds::ENIPool,
) -> Result<()> {
    let st = last.status.as_ref().context("the pool had no status")?;
    let ec2 = c.sim().snapshot();
    for e in &st.enis {
        let have =
            ec2.enis.get(&e.id).with_context(|| format!("ENI {} of the pool is gone", e.id))?;
        let have: BTreeSet<String> = have.secondary.iter().map(|a| a.to_string()).collect();
        let want: BTreeSet<String> = e.ips.iter().cloned().collect();
        ensure!(have == want, "ENI {}: EC2 holds {have:?}, the pool listed {want:?}", e.id);
    }
    for e in ec2.enis.values() {
        let tag = e.tags.get(enipool_crds::tags::INSTANCE_ID).map(String::as_str);
        if tag != Some(n.instance_id.as_str()) {
            continue;
        }
        ensure!(st.enis.iter().any(|p| p.id == e.id), "ENI {} in EC2 was not in the pool", e.id);
        ensure!(e.attachment.is_some(), "ENI {} left detached (leaked)", e.id);
    }
    Ok(())
}

pub async fn bridge_to_enipool_and_back(t: Target) -> Result<()> {
    let mut spec = Spec::new("cni-migration", 0);
    // Doc step 1: the operator manages labelled nodes only; the agent runs exclusive.
    spec.managed_node_selector = Some(format!("{ENABLED}=true"));
    spec.agent_args = vec!["--cni-exclusive".into()];
    with_cluster(&t, spec, |c| {
        Box::pin(async move {
            let how = Join { start_agent: false, startup_taint: false, runtime_choice: true };
            let n = c.join_node_with(how).await?;
            let node = n.name.clone();
            let ipam = bridge::install(&n)?;
            c.step("a node on the bridge CNI runs pods");
            c.add_pod("old-0", &node).await?;
            c.add_pod("old-1", &node).await?;
            c.add_pod("old-2", &node).await?;
            let (old0, old1) = (bridge_ip(c, "old-0")?, bridge_ip(c, "old-1")?);
            let old2 = bridge_ip(c, "old-2")?;
            reachable(c, &n, "old-0").await?;
            ensure!(c.pool(&node).await.is_err(), "an ENIPool for a node not labelled");

            c.step("moving it: cordon, drain, label");
            cordon(c, &node, true).await?;
            // The drain evicts old-1; old-0 and old-2 stay, as DaemonSet pods do.
            c.delete_pod("old-1").await?;
            ensure!(!reserved(&ipam, old1), "old-1's bridge address was not released");
            label(c, &node, true).await?;
            // The agent DaemonSet's pod lands on the labelled node.
            c.start_agent(&n).await?;
            wait::poll("the ENIPool of the labelled node", SETTLE, || c.pool(&node)).await?;
            pool_ready(c, &node).await?;
            let want = set(&[CONFLIST_NAME, &format!("{BRIDGE_CONFLIST}.enipool-bak")]);
            wait::poll("enipool's config in place, the bridge's moved aside", SETTLE, || async {
                let have = configs(&n);
                ensure!(have == want, "config dir holds {have:?}, want {want:?}");
                Ok(())
            })
            .await?;
            cordon(c, &node, false).await?;

            c.step("new pods get VPC addresses; the old pod keeps working");
            let new = pods_on(c, "new", &node, 2).await?;
            let pool = c.pool(&node).await?;
            for p in &new {
                let ip = c.pod(p)?.ip()?;
                ensure!(eni_of(&pool, ip).is_some(), "pod {p}'s {ip} is not in the node's pool");
                reachable(c, &n, p).await?;
            }
            reachable(c, &n, "old-0").await?;
            c.ping_from_pod("old-0", c.pod(&new[0])?.ip()?).await?;
            c.delete_pod("old-0").await?;
            ensure!(!reserved(&ipam, old0), "old-0 was not deleted through the bridge plugin");
            // A runtime that tears down with the config in force (containerd) sends enipool the
            // DEL of a pod it never wired: it succeeds, and the bridge keeps its reservation.
            containerd_del(c, &n, "old-2").await?;
            ensure!(reserved(&ipam, old2), "enipool's DEL released the bridge's address");
            c.delete_pod("old-2").await?;
            ensure!(!reserved(&ipam, old2), "old-2 was not deleted through the bridge plugin");
            wait::poll("the agent to report the 2 new pods in use", SETTLE, || async {
                let st = c.pool(&node).await?.status.and_then(|s| s.agent);
                let in_use = st.map(|a| a.in_use);
                ensure!(in_use == Some(2), "inUse {in_use:?}: the old pod's DEL touched the pool");
                Ok(())
            })
            .await?;
            let env = super::real::env::platform(c).await;
            super::real::pools_match_ec2_check(&env).await?;

            c.step("going back: cordon, drain, unlabel, clean the node, delete the pool");
            cordon(c, &node, true).await?;
            for p in &new {
                c.delete_pod(p).await?;
            }
            // What the pool lists trails EC2 by the describes' lag, and stops changing once the
            // node is unlabelled: the listing compared at the end is one that caught up.
            let last = wait::poll("the pool's listing to match EC2", SETTLE, || async {
                let pool = c.pool(&node).await?;
                ec2_holds_what_the_pool_held(c, &n, &pool)?;
                Ok(pool)
            })
            .await?;
            label(c, &node, false).await?;
            c.stop_agent(&n).await?; // the DaemonSet's pod leaves the node
            uninstall_agent_state(c, &n).await?;
            std::fs::remove_file(n.driver.conf_dir.join(CONFLIST_NAME))?;
            for f in configs(&n) {
                if let Some(orig) = f.strip_suffix(".enipool-bak") {
                    let dir = &n.driver.conf_dir;
                    std::fs::rename(dir.join(&f), dir.join(orig))?;
                }
            }
            let pools: Api<enipool_crds::ENIPool> = Api::all(c.client().clone());
            pools.delete(&node, &DeleteParams::default()).await?;
            wait::poll("the ENIPool gone", SETTLE, || async {
                ensure!(pools.get_opt(&node).await?.is_none(), "ENIPool {node} still there");
                Ok(())
            })
            .await?;
            cordon(c, &node, false).await?;

            c.step("new pods get bridge addresses again; EC2 holds what the pool held");
            c.add_pod("back-0", &node).await?;
            bridge_ip(c, "back-0")?;
            reachable(c, &n, "back-0").await?;
            ensure!(configs(&n) == set(&[BRIDGE_CONFLIST]), "config dir {:?}", configs(&n));
            ec2_holds_what_the_pool_held(c, &n, &last)?;
            c.delete_pod("back-0").await
        })
    })
    .await
}

/// CNI DEL of `pod` with enipool's config, as containerd sends it after the move.
async fn containerd_del(c: &Cluster, n: &NodeInfo, pod: &str) -> Result<()> {
    let p = c.pod(pod)?;
    let mut driver = n.driver.clone();
    driver.network = cluster::node::NETWORK_NAME.into();
    let (ns, uid) = (c.pod_namespace().to_string(), p.uid.clone());
    let (cid, path, name) = (p.container_id.clone(), p.netns_path(), p.name.clone());
    wait::blocking(move || {
        let args = [
            ("K8S_POD_NAMESPACE", ns.as_str()),
            ("K8S_POD_NAME", name.as_str()),
            ("K8S_POD_UID", uid.as_str()),
        ];
        driver.del(&cid, &path, "eth0", &args, None)
    })
    .await
    .with_context(|| format!("enipool's DEL of {pod}, a pod of the bridge"))?;
    Ok(())
}

/// The doc's rollback runs `enipool-agent uninstall` on the node ("Clean up a node").
async fn uninstall_agent_state(c: &Cluster, n: &NodeInfo) -> Result<()> {
    let agent = c.bins.agent.clone();
    let netns = n.netns_path();
    let out = wait::blocking(move || {
        std::process::Command::new(&agent)
            .arg(format!("--netns={}", netns.display()))
            .arg("uninstall")
            .output()
            .map_err(anyhow::Error::from)
    })
    .await?;
    ensure!(
        out.status.success(),
        "enipool-agent uninstall failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
