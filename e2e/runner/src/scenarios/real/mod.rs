//! Scenarios that run unchanged against a real cluster with real EC2, and on the test platform.
//!
//! - `pools-match-ec2` (read-only): every ENIPool's ENIs exist in EC2, attached to the pool's
//!   instance at the recorded device index, with every recorded address and prefix assigned; no
//!   address is held twice; every ENI carrying the cluster tag is recorded, journaled, or an
//!   `available` one younger than the leak grace (plus one GC interval); every pod's IP (pods on
//!   nodes with pools, hostNetwork excluded) is unique and one of its node's pool addresses.
//! - `pod-gets-vpc-ip`: a short-lived `pause` Pod pinned to a node with a Ready pool gets an
//!   address of that pool which EC2 has assigned to one of the node's ENIs; it is deleted (on
//!   failure too) and the agent's in-use count drops back.
//!
//! Against a real cluster where enipool is installed with Helm (they create nothing but that Pod):
//!
//! ```sh
//! AWS_PROFILE=... AWS_REGION=us-west-2 \
//!   enipool-e2e run pools-match-ec2 pod-gets-vpc-ip --kubeconfig ~/.kube/config
//! ```
//!
//! Real mode is `--kubeconfig` plus real EC2: `--ec2-endpoint URL` (or `aws`), or AWS_PROFILE,
//! AWS_REGION or AWS_DEFAULT_REGION set (credentials come from the standard AWS chain). The
//! kubeconfig's user needs to list ENIPools, Pods and Nodes (Deployments too, optionally) and to
//! create and delete Pods in the Pod's namespace; the AWS identity needs
//! `ec2:DescribeNetworkInterfaces`. The cluster name is `--cluster-name`, else the
//! `--cluster-name=` of the operator Deployment (labels
//! `app.kubernetes.io/part-of=enipool,app.kubernetes.io/component=operator`), else the cluster
//! tag of the pools' ENIs. `ENIPOOL_E2E_POD_NAMESPACE` (default `default`, must exist) and
//! `ENIPOOL_E2E_POD_IMAGE` (default `registry.k8s.io/pause:3.10`) place the Pod; leftovers of an
//! interrupted run carry the label `enipool-e2e/run`.
//!
//! Otherwise (no flags, or `--kubeconfig` without real EC2) each scenario brings up a platform
//! cluster like the other scenarios (two nodes, a policy that needs a second ENI, three pods per
//! node) and runs the same checks with the platform's clients, on the platform's nodes only. Only
//! who runs the Pod differs: on a real cluster its kubelet, on the platform the runner's kubelet
//! ([`cluster::Cluster::run_existing_pod`]).

pub mod audit;
pub mod env;
pub mod observe;
pub mod pod;

use super::{all_pools_ready, basic::pods_on, with_cluster};
use crate::Target;
use anyhow::{bail, Context, Result};
use cluster::{Cluster, Spec};
use enipool_crds::ENIPool;
use env::Mode;
use kube::api::{Api, ListParams};
use std::collections::BTreeSet;
use std::time::Duration;

/// Clients and facts the checks need, on either target.
#[derive(Clone)]
pub struct RealEnv {
    /// The cluster's API.
    pub kube: kube::Client,
    /// EC2 as the cluster's operator sees it.
    pub ec2: aws_sdk_ec2::Client,
    /// The operator's `--cluster-name`.
    pub cluster: String,
    /// See [`audit::Rules::leak_allowance`].
    pub leak_allowance: Duration,
    /// Only these nodes' pools (the platform's own, when its nodes are registered in a shared
    /// API); all when `None`.
    pub nodes: Option<BTreeSet<String>>,
}

impl RealEnv {
    /// Every ENIPool in scope.
    pub async fn pools(&self) -> Result<Vec<ENIPool>> {
        let all = Api::<ENIPool>::all(self.kube.clone())
            .list(&ListParams::default())
            .await
            .context("listing ENIPools")?
            .items;
        Ok(all
            .into_iter()
            .filter(|p| {
                self.nodes
                    .as_ref()
                    .is_none_or(|n| n.contains(p.metadata.name.as_deref().unwrap_or("")))
            })
            .collect())
    }
}

/// The pools-match-ec2 check: fails listing every lasting finding.
pub async fn pools_match_ec2_check(env: &RealEnv) -> Result<()> {
    let rules = audit::Rules { cluster: env.cluster.clone(), leak_allowance: env.leak_allowance };
    let (findings, n) = observe::audit_lasting(env, &rules).await?;
    if n.pools == 0 {
        bail!("no ENIPools to audit: is enipool installed in this cluster (and its operator running)?");
    }
    if !findings.is_empty() {
        let list: Vec<String> = findings.iter().map(|f| format!("  - {f}")).collect();
        bail!("{} finding(s) in cluster {}:\n{}", findings.len(), env.cluster, list.join("\n"));
    }
    println!(
        "    {} pools, {} ENIs, {} addresses/prefixes, {} pod IPs: consistent with EC2",
        n.pools, n.enis, n.addresses, n.pods
    );
    Ok(())
}

/// A platform cluster for these scenarios: two nodes, 12 warm IPs (the primary ENI of an
/// m5.large holds 9, so each pool also has an ENI enipool created and tagged), 3 pods per node.
async fn platform_cluster_with_pods(c: &Cluster) -> Result<()> {
    all_pools_ready(c).await?;
    for (i, n) in c.nodes().iter().enumerate() {
        pods_on(c, &format!("w{i}"), &n.name, 3).await?;
    }
    Ok(())
}

fn platform_spec(name: &str) -> Spec {
    Spec::new(name, 2).policy(serde_json::json!({
        "mode": "SecondaryIP",
        "sizing": {"warmIPs": 12, "batch": 1},
        "release": {"enabled": true, "delaySeconds": 10},
        "cooldownSeconds": 1,
    }))
}

/// `pools-match-ec2`.
pub async fn pools_match_ec2(t: Target) -> Result<()> {
    match env::mode(&t, "pools-match-ec2")? {
        Mode::Real => pools_match_ec2_check(&env::connect(&t).await?).await,
        Mode::Platform => {
            with_cluster(&t, platform_spec("pools-match-ec2"), |c| {
                Box::pin(async move {
                    platform_cluster_with_pods(c).await?;
                    pools_match_ec2_check(&env::platform(c).await).await
                })
            })
            .await
        }
    }
}

/// `pod-gets-vpc-ip`.
pub async fn pod_gets_vpc_ip(t: Target) -> Result<()> {
    match env::mode(&t, "pod-gets-vpc-ip")? {
        Mode::Real => {
            let env = env::connect(&t).await?;
            pod::check(&env, &pod::PodOpts::from_env(), pod::Kubelet::Cluster).await
        }
        Mode::Platform => {
            with_cluster(&t, platform_spec("pod-gets-vpc-ip"), |c| {
                Box::pin(async move {
                    platform_cluster_with_pods(c).await?;
                    // The platform's kubelet runs pods of its run's namespace only.
                    let opts = pod::PodOpts {
                        namespace: c.pod_namespace().into(),
                        ..pod::PodOpts::from_env()
                    };
                    pod::check(&env::platform(c).await, &opts, pod::Kubelet::Platform(c)).await
                })
            })
            .await
        }
    }
}
