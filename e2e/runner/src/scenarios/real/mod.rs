//! Scenarios that run unchanged against a real cluster with real EC2, and on the test platform:
//! `pools-match-ec2` (read-only audit of every pool against EC2) and `pod-gets-vpc-ip` (one
//! short-lived Pod gets an address EC2 assigned to its node). Against a real cluster they use the
//! clients of the user's kubeconfig and AWS chain; on the platform each brings up a cluster like
//! the other scenarios and runs the same checks, only the kubelet that runs the Pod differs
//! ([`cluster::Cluster::run_existing_pod`]). How to run them, the options and the permissions:
//! docs/operations.md, "Auditing an installation".

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
