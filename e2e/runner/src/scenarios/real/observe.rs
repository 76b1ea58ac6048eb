//! Reading one snapshot for the audit (I/O): the ENIPools and Pods from the Kubernetes API, the
//! ENIs from EC2 through the plain SDK (not the operator's EC2 layer: the audit must not share the
//! code it checks), and repeating the audit until only lasting findings remain.

use super::audit::{self, Ec2Attachment, Ec2Eni, Finding, Observed, Rules};
use super::RealEnv;
use anyhow::{Context, Result};
use aws_sdk_ec2::types::{Filter, NetworkInterface};
use enipool_crds::{tags, ENIPool};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// EC2 accepts at most 200 values per filter.
const FILTER_VALUES: usize = 200;
/// Snapshots the audit takes at most, and the pause between them: a finding must be seen in
/// every one to count, so in-flight work (an unassign between the pool read and the EC2 read, a
/// pod deleted mid-read) is not reported while a real fault, which stays, is.
const ROUNDS: usize = 3;
const PAUSE: Duration = Duration::from_secs(5);

/// A filter with values.
pub fn filter(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().map(Into::into).collect()))
        .build()
}

/// The ENIs matching `filters`, every page, by id.
pub async fn describe_enis(
    ec2: &aws_sdk_ec2::Client,
    filters: Vec<Filter>,
) -> Result<BTreeMap<String, Ec2Eni>> {
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = ec2
            .describe_network_interfaces()
            .set_filters(Some(filters.clone()))
            .max_results(1000)
            .set_next_token(token.take())
            .send()
            .await
            .context("DescribeNetworkInterfaces")?;
        for n in page.network_interfaces() {
            let e = eni(n);
            out.insert(e.id.clone(), e);
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

fn eni(n: &NetworkInterface) -> Ec2Eni {
    let ip = |v: Option<&str>| v.and_then(|v| v.parse().ok());
    Ec2Eni {
        id: n.network_interface_id().unwrap_or_default().to_string(),
        status: n.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        attachment: n.attachment().filter(|a| a.instance_id().is_some()).map(|a| Ec2Attachment {
            instance_id: a.instance_id().unwrap_or_default().to_string(),
            device_index: a.device_index(),
        }),
        primary_ip: ip(n.private_ip_address()),
        ips: n.private_ip_addresses().iter().filter_map(|a| ip(a.private_ip_address())).collect(),
        prefixes: n
            .ipv4_prefixes()
            .iter()
            .filter_map(|p| p.ipv4_prefix()?.parse::<ipnet::Ipv4Net>().ok())
            .map(|p| p.trunc())
            .collect(),
        tags: n
            .tag_set()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
            .collect(),
    }
}

/// Every pool, and the ENIs of EC2 they record or that carry the cluster tag.
async fn pools_and_enis(env: &RealEnv) -> Result<(Vec<ENIPool>, BTreeMap<String, Ec2Eni>)> {
    let pools = env.pools().await?;
    let recorded: BTreeSet<String> = pools
        .iter()
        .flat_map(|p| p.status.iter().flat_map(|s| &s.enis))
        .map(|e| e.id.clone())
        .collect();
    let ids: Vec<String> = recorded.into_iter().collect();
    let mut enis = BTreeMap::new();
    for chunk in ids.chunks(FILTER_VALUES) {
        enis.extend(
            describe_enis(&env.ec2, vec![filter("network-interface-id", chunk.to_vec())]).await?,
        );
    }
    let tag = format!("tag:{}", tags::CLUSTER);
    enis.extend(describe_enis(&env.ec2, vec![filter(&tag, [env.cluster.clone()])]).await?);
    Ok((pools, enis))
}

/// One snapshot: pools, then EC2, then pods.
pub async fn observe(env: &RealEnv) -> Result<Observed> {
    let (pools, enis) = pools_and_enis(env).await?;
    let now = jiff::Timestamp::now();
    let nodes: BTreeSet<String> = pools.iter().filter_map(|p| p.metadata.name.clone()).collect();
    let pods = Api::<Pod>::all(env.kube.clone())
        .list(&ListParams::default())
        .await
        .context("listing Pods")?
        .items
        .iter()
        .filter_map(|p| audit::pod_ip(p, &nodes))
        .collect();
    Ok(Observed { pools, enis, pods, now })
}

/// What was audited, for the report line.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub pools: usize,
    /// ENIs the pools record.
    pub enis: usize,
    /// Addresses and prefixes the pools record.
    pub addresses: usize,
    /// Pods whose IP was checked.
    pub pods: usize,
}

/// Audits until a snapshot is clean or [`ROUNDS`] snapshots were taken; returns the findings
/// present in every snapshot.
pub async fn audit_lasting(env: &RealEnv, rules: &Rules) -> Result<(Vec<Finding>, Counts)> {
    let mut lasting: Option<BTreeSet<Finding>> = None;
    let mut counts = Counts::default();
    for round in 0..ROUNDS {
        if round > 0 {
            tokio::time::sleep(PAUSE).await;
        }
        let o = observe(env).await?;
        counts = Counts {
            pools: o.pools.len(),
            enis: o.pools.iter().flat_map(|p| p.status.iter().flat_map(|s| &s.enis)).count(),
            addresses: o.pools.iter().map(|p| audit::pool_addresses(p, &mut vec![]).len()).sum(),
            pods: o.pods.len(),
        };
        let found: BTreeSet<Finding> = audit::audit(&o, rules).into_iter().collect();
        let now = match lasting.take() {
            None => found,
            Some(before) => before.intersection(&found).cloned().collect(),
        };
        if now.is_empty() {
            return Ok((vec![], counts));
        }
        tracing::info!(round, findings = now.len(), "audit findings; looking again");
        lasting = Some(now);
    }
    Ok((lasting.unwrap_or_default().into_iter().collect(), counts))
}
