//! What the real scenarios run against: a Kubernetes client, an EC2 client and the cluster name,
//! taken from the platform's cluster or from a real cluster (`--kubeconfig`, the standard AWS
//! settings or `--ec2-endpoint`, and `--cluster-name` or the installed operator's Deployment).

use super::RealEnv;
use anyhow::{bail, Context, Result};
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use cluster::{kube::client_for, Cluster, Target, AWS_SETTINGS, REGION};
use enipool_crds::{tags, ENIPool};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};
use std::collections::BTreeSet;
use std::time::Duration;

/// Labels the chart puts on the operator's Deployment.
const OPERATOR_SELECTOR: &str =
    "app.kubernetes.io/part-of=enipool,app.kubernetes.io/component=operator";
/// The operator's defaults (`--leak-grace-seconds`, `--gc-interval-seconds`), used when its
/// Deployment cannot be read.
const DEFAULT_LEAK_GRACE: u64 = 600;
const DEFAULT_GC_INTERVAL: u64 = 300;
/// The platform's operators run with `--leak-grace-seconds=20 --gc-interval-seconds=10`
/// (cluster/node.rs).
const PLATFORM_LEAK_ALLOWANCE: Duration = Duration::from_secs(30);

/// Where a scenario runs.
pub enum Mode {
    /// Bring up a platform cluster (on the platform's API, or registered in `--kubeconfig`'s).
    Platform,
    /// An existing cluster with enipool installed, and real EC2.
    Real,
}

/// The mode the flags ask for ([`Target::real_ec2`]): an existing cluster needs `--kubeconfig`
/// and real EC2; `--ec2-endpoint` alone names no cluster whose pools could be checked.
pub fn mode(t: &Target, scenario: &str) -> Result<Mode> {
    match (&t.kubeconfig, t.real_ec2()) {
        (Some(_), Some(_)) => Ok(Mode::Real),
        (_, None) => Ok(Mode::Platform),
        (None, Some(_)) => bail!(
            "{scenario} checks an existing cluster against the EC2 its operator uses: with \
             --ec2-endpoint it also needs that cluster's --kubeconfig (or neither flag, to run on \
             the test platform)"
        ),
    }
}

/// An SDK client for the real EC2: the standard AWS settings (AWS_PROFILE, AWS_REGION, ...), with
/// the endpoint replaced when `endpoint` is a URL (`aws` means the standard endpoint).
pub async fn ec2_client(endpoint: Option<&str>) -> aws_sdk_ec2::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = endpoint.filter(|e| *e != "aws") {
        loader = loader.endpoint_url(url);
    }
    aws_sdk_ec2::Client::new(&loader.load().await)
}

/// The platform cluster's clients: its API, its simulator with the dummy credentials the operator
/// gets, its name.
pub async fn platform(c: &Cluster) -> RealEnv {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(c.sim().endpoint_url())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "enipool-e2e"))
        .load()
        .await;
    RealEnv {
        kube: c.client().clone(),
        ec2: aws_sdk_ec2::Client::new(&conf),
        cluster: c.name.clone(),
        leak_allowance: PLATFORM_LEAK_ALLOWANCE,
        nodes: Some(c.nodes().into_iter().map(|n| n.name).collect()),
    }
}

/// A real cluster's clients. The cluster name comes from `--cluster-name`, else from the
/// operator's Deployment (`--cluster-name=` in its args), else from the cluster tag on the ENIs
/// the pools record as created by enipool. The leak allowance is the Deployment's leak grace plus
/// its GC interval (the operator's defaults when it cannot be read).
pub async fn connect(t: &Target) -> Result<RealEnv> {
    let kubeconfig = t.kubeconfig.as_ref().context("--kubeconfig is required")?;
    let kube = client_for(kubeconfig).await?;
    let ec2 = ec2_client(t.ec2_endpoint.as_deref()).await;
    let set: Vec<&str> =
        AWS_SETTINGS.iter().copied().filter(|k| std::env::var_os(k).is_some()).collect();
    let via = match t.ec2_endpoint.as_deref() {
        Some(url) if url != "aws" => format!("EC2 at {url}"),
        _ => format!("EC2 of the AWS settings ({})", set.join(", ")),
    };
    // Said first: with AWS settings in the environment, --kubeconfig alone means this mode.
    println!("    existing cluster of {}, {via}", kubeconfig.display());
    let args = operator_args(&kube).await?;
    let arg = |name: &str| -> Option<String> {
        let flag = format!("--{name}");
        args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix(&flag) {
            Some(v) if v.starts_with('=') => Some(v[1..].to_string()),
            Some("") => args.get(i + 1).cloned(),
            _ => None,
        })
    };
    let secs = |name: &str, default: u64| arg(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let leak_allowance = Duration::from_secs(
        secs("leak-grace-seconds", DEFAULT_LEAK_GRACE)
            + secs("gc-interval-seconds", DEFAULT_GC_INTERVAL),
    );
    let (cluster, source) = match (&t.cluster_name, arg("cluster-name")) {
        (Some(c), _) => (c.clone(), "--cluster-name"),
        (None, Some(c)) => (c, "the operator's Deployment"),
        (None, None) => (cluster_from_tags(&kube, &ec2).await?, "the pools' ENI tags"),
    };
    println!("    cluster {cluster} (from {source}), leak allowance {}s", leak_allowance.as_secs());
    Ok(RealEnv { kube, ec2, cluster, leak_allowance, nodes: None })
}

/// The container args of the enipool operator's Deployment, empty when there is none (or it may
/// not be read); two Deployments for different clusters are an error.
async fn operator_args(kube: &kube::Client) -> Result<Vec<String>> {
    let api: Api<Deployment> = Api::all(kube.clone());
    let list = match api.list(&ListParams::default().labels(OPERATOR_SELECTOR)).await {
        Ok(l) => l.items,
        Err(error) => {
            tracing::info!(%error, "cannot list the operator's Deployment; using defaults");
            return Ok(vec![]);
        }
    };
    let all: Vec<Vec<String>> = list
        .iter()
        .filter_map(|d| d.spec.as_ref()?.template.spec.as_ref())
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.args.clone())
        .filter(|a| a.iter().any(|x| x.starts_with("--cluster-name")))
        .collect();
    let distinct: BTreeSet<&Vec<String>> = all.iter().collect();
    if distinct.len() > 1 {
        bail!(
            "{} enipool operator Deployments with different flags: pass --cluster-name",
            distinct.len()
        );
    }
    Ok(all.into_iter().next().unwrap_or_default())
}

/// The one cluster name on the ENIs the pools record as enipool's.
async fn cluster_from_tags(kube: &kube::Client, ec2: &aws_sdk_ec2::Client) -> Result<String> {
    let pools = Api::<ENIPool>::all(kube.clone()).list(&ListParams::default()).await?.items;
    let managed: Vec<String> = pools
        .iter()
        .flat_map(|p| p.status.iter().flat_map(|s| &s.enis))
        .filter(|e| e.managed)
        .map(|e| e.id.clone())
        .collect();
    let mut names = BTreeSet::new();
    for chunk in managed.chunks(200) {
        let f = super::observe::filter("network-interface-id", chunk.to_vec());
        for e in super::observe::describe_enis(ec2, vec![f]).await?.into_values() {
            names.extend(e.tags.get(tags::CLUSTER).cloned());
        }
    }
    match names.len() {
        1 => Ok(names.into_iter().next().unwrap_or_default()),
        0 => bail!(
            "cannot tell the cluster name: no enipool operator Deployment was readable and no ENI \
             the pools record carries the {} tag; pass --cluster-name",
            tags::CLUSTER
        ),
        _ => bail!("the pools' ENIs carry several cluster names {names:?}; pass --cluster-name"),
    }
}
