//! Pool sizing: scale-up beyond one ENI, warm pool under churn, scale-down after the delay, prefix
//! mode, subnet exhaustion.

use super::{check_pod_status_ips, eni_of, mesh_ping, pool_ready, with_cluster, SETTLE};
use crate::Target;
use anyhow::{bail, ensure, Context, Result};
use cluster::{wait, Cluster, Spec, SubnetSpec};
use std::time::{Duration, Instant};

/// How long a pool may go on listing an ENI EC2 deleted: the describes' lag plus one requeue.
const RELEASED_SHOWN: Duration = Duration::from_secs(15);

/// EC2's view of an instance: (attached ENIs, secondary addresses incl. prefix addresses, prefixes).
pub(crate) fn ec2_view(c: &Cluster, instance: &str) -> (usize, usize, usize) {
    let st = c.sim().snapshot();
    let enis: Vec<_> = st
        .enis
        .values()
        .filter(|e| e.attachment.as_ref().is_some_and(|a| a.instance_id == instance))
        .collect();
    let addrs = enis.iter().map(|e| e.secondary.len() + e.prefixes.len() * 16).sum();
    let prefixes = enis.iter().map(|e| e.prefixes.len()).sum();
    (enis.len(), addrs, prefixes)
}

/// Calls of one EC2 action so far.
pub(crate) fn calls(c: &Cluster, action: &str) -> u64 {
    c.sim().counters().get(action).map_or(0, |a| a.ok)
}

/// Creates pods `<prefix>-0..n` on `node` as Pending objects at once (a burst the scheduler bound),
/// then runs their sandboxes, retrying like the kubelet until each gets an address.
pub(crate) async fn burst(c: &Cluster, prefix: &str, node: &str, n: usize) -> Result<Vec<String>> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for p in &names {
        c.create_pod(p, node).await?;
    }
    for p in &names {
        wait::poll(&format!("pod {p} to get an address"), SETTLE, || c.start_sandbox(p)).await?;
    }
    Ok(names)
}

/// Real pods get addresses on the new ENI and reach everything; the EC2 calls per step and the
/// offer protocol are the in-process `scale_up_then_down_through_the_offer_protocol`'s.
pub async fn scale_up(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("scale-up-new-eni", 1), |c| {
        Box::pin(async move {
            let n = c.nodes()[0].clone();
            pool_ready(c, &n.name).await?;
            ensure!(ec2_view(c, &n.instance_id).0 == 1, "expected only the primary ENI at start");
            let creates = calls(c, "CreateNetworkInterface");
            // 14 pods: more than the primary ENI's 9 secondary addresses.
            let pods = burst(c, "burst", &n.name, 14).await?;
            let pool = pool_ready(c, &n.name).await?;
            let (enis, addrs, _) = ec2_view(c, &n.instance_id);
            ensure!(enis == 2, "{enis} ENIs attached for 14 pods + 2 warm, want 2");
            ensure!(addrs >= 14, "EC2 holds {addrs} addresses for 14 pods");
            let made = calls(c, "CreateNetworkInterface") - creates;
            ensure!(made == 1, "{made} CreateNetworkInterface calls for one burst, want 1");
            // The new ENI carries the cluster's tags and is wired: its pods reach everything.
            let st = c.sim().snapshot();
            let new =
                pool.status.as_ref().context("status")?.enis.iter().find(|e| e.device_index == 1);
            let new = new.context("no ENI at device index 1 in the pool")?;
            let tags = &st.enis.get(&new.id).context("new ENI unknown to EC2")?.tags;
            ensure!(
                tags.get(enipool_crds::tags::CLUSTER) == Some(&c.name),
                "new ENI tags {tags:?} lack the cluster tag"
            );
            let mut on_new = Vec::new();
            let mut on_primary = Vec::new();
            for p in &pods {
                let ip = c.pod(p)?.ip()?;
                match eni_of(&pool, ip).map(|e| e.device_index) {
                    Some(0) => on_primary.push(p.clone()),
                    Some(_) => on_new.push(p.clone()),
                    None => bail!("pod {p}'s {ip} is on no ENI of the pool"),
                }
            }
            ensure!(!on_new.is_empty(), "no pod uses the new ENI");
            check_pod_status_ips(c).await?;
            mesh_ping(
                c,
                &[on_primary[0].clone(), on_new[0].clone(), on_new[on_new.len() - 1].clone()],
            )
            .await?;
            c.ping_from_pod(&on_new[0], c.fabric().internet_host_ip()).await
        })
    })
    .await
}

pub async fn churn(t: Target) -> Result<()> {
    let spec = Spec::new("warm-pool-churn", 1).policy(serde_json::json!({
        "mode": "SecondaryIP", "sizing": {"warmIPs": 3, "batch": 1},
        "release": {"enabled": true, "delaySeconds": 120}, "cooldownSeconds": 1,
    }));
    with_cluster(&t, spec, |c| {
        Box::pin(async move {
            let n = c.nodes()[0].clone();
            pool_ready(c, &n.name).await?;
            let unassign0 = calls(c, "UnassignPrivateIpAddresses");
            // 6 rounds: 4 pods up, 4 down, overlapping; every ADD must be served from the warm
            // pool promptly (no pod waits for EC2 more than a few seconds).
            for round in 0..6 {
                for i in 0..4 {
                    let name = format!("churn-{round}-{i}");
                    let started = Instant::now();
                    wait::poll(
                        &format!("pod {name} to get an address"),
                        Duration::from_secs(20),
                        || async {
                            if c.pod(&name).is_err() {
                                c.create_pod(&name, &n.name).await?;
                            }
                            c.start_sandbox(&name).await.map(drop)
                        },
                    )
                    .await?;
                    ensure!(
                        started.elapsed() < Duration::from_secs(15),
                        "pod {name} waited {:?}",
                        started.elapsed()
                    );
                }
                if round > 0 {
                    for i in 0..4 {
                        c.delete_pod(&format!("churn-{}-{i}", round - 1)).await?;
                    }
                }
                check_pod_status_ips(c).await?;
            }
            // Settled: 4 pods in use, target 4 + 3 warm, EC2 holds exactly the target.
            wait::poll("the warm pool back at target (4 in use + 3 warm)", SETTLE, || async {
                let pool = c.pool(&n.name).await?;
                let st = pool.status.context("status")?;
                let in_use = st.agent.as_ref().map(|a| a.in_use);
                let target = st.target.as_ref().map(|t| t.ips);
                let (_, addrs, _) = ec2_view(c, &n.instance_id);
                ensure!(in_use == Some(4), "inUse {in_use:?}");
                // Addresses are only released after the 120 s delay, so EC2 may hold more than
                // the target, never less.
                ensure!(target == Some(7), "target {target:?}, want 7");
                ensure!(addrs >= 7, "EC2 holds {addrs} < target 7");
                Ok(())
            })
            .await?;
            let unassigns = calls(c, "UnassignPrivateIpAddresses") - unassign0;
            ensure!(
                unassigns == 0,
                "{unassigns} UnassignPrivateIpAddresses during churn inside the release delay"
            );
            Ok(())
        })
    })
    .await
}

/// Nothing goes back before the delay, then the excess and the empty ENI do, with a real agent
/// offering; the offer protocol itself is `scale_up_then_down_through_the_offer_protocol`'s.
pub async fn scale_down(t: Target) -> Result<()> {
    let delay = 15;
    let spec = Spec::new("scale-down-after-delay", 1).policy(serde_json::json!({
        "mode": "SecondaryIP", "sizing": {"warmIPs": 2, "batch": 1},
        "release": {"enabled": true, "delaySeconds": delay, "releaseEmptyENIs": true},
        "cooldownSeconds": 1,
    }));
    with_cluster(&t, spec, |c| {
        Box::pin(async move {
            let n = c.nodes()[0].clone();
            pool_ready(c, &n.name).await?;
            let pods = burst(c, "big", &n.name, 14).await?;
            pool_ready(c, &n.name).await?;
            let (enis, high, _) = ec2_view(c, &n.instance_id);
            // (How many ENIs the burst took is scale-up-new-eni's business; here: more than one.)
            ensure!(enis >= 2 && high >= 14, "before scale-down: {enis} ENIs, {high} addresses");
            let t0 = Instant::now();
            for p in &pods {
                c.delete_pod(p).await?;
            }
            // Nothing goes back before the delay.
            while t0.elapsed() < Duration::from_secs(delay - 3) {
                let (e, a, _) = ec2_view(c, &n.instance_id);
                ensure!(
                    e >= enis && a >= high,
                    "released early ({:?} after the pods went): {e} ENIs, {a} addresses",
                    t0.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // Then the excess and the empty ENI go: back to the primary ENI with 2 warm.
            wait::poll(
                "addresses and the empty ENI released",
                Duration::from_secs(delay + 60),
                || async {
                    let (e, a, _) = ec2_view(c, &n.instance_id);
                    ensure!(e == 1 && a == 2, "{e} ENIs, {a} addresses (want 1 ENI, 2 addresses)");
                    Ok(())
                },
            )
            .await?;
            ensure!(t0.elapsed() >= Duration::from_secs(delay), "released before the delay");
            // The detached ENI is deleted, not left available.
            let st = c.sim().snapshot();
            let left: Vec<_> = st
                .enis
                .values()
                .filter(|e| {
                    e.attachment.is_none()
                        && e.tags.get(enipool_crds::tags::CLUSTER) == Some(&c.name)
                })
                .map(|e| e.id.clone())
                .collect();
            wait::poll("released ENIs deleted from EC2", SETTLE, || async {
                let st = c.sim().snapshot();
                let still: Vec<_> = left.iter().filter(|id| st.enis.contains_key(*id)).collect();
                ensure!(still.is_empty(), "still in EC2: {still:?}");
                Ok(())
            })
            .await?;
            // The pool shows what EC2's describes show, which trail the delete by their lag; the
            // round the delete finished in looks again once they caught up.
            wait::poll("the pool no longer lists the released ENI", RELEASED_SHOWN, || async {
                let pool = pool_ready(c, &n.name).await?;
                let enis = pool.status.map(|s| s.enis.len());
                ensure!(enis == Some(1), "pool lists {enis:?} ENIs");
                Ok(())
            })
            .await?;
            // The pool still serves pods after shrinking.
            c.add_pod("after", &n.name).await?;
            c.ping_from_pod("after", n.primary_ip).await
        })
    })
    .await
}

pub async fn prefix_mode(t: Target) -> Result<()> {
    let spec = Spec::new("prefix-mode", 2).policy(serde_json::json!({
        "mode": "Prefix", "sizing": {"warmPrefixes": 1, "batch": 16},
        "release": {"enabled": true, "delaySeconds": 30}, "cooldownSeconds": 1,
    }));
    with_cluster(&t, spec, |c| {
        Box::pin(async move {
            let nodes = c.nodes();
            for n in &nodes {
                pool_ready(c, &n.name).await?;
                let (_, _, prefixes) = ec2_view(c, &n.instance_id);
                ensure!(prefixes >= 1, "{}: no /28 prefix in EC2", n.name);
            }
            // 20 pods on the first node: more than one prefix holds.
            let pods = burst(c, "px", &nodes[0].name, 20).await?;
            burst(c, "py", &nodes[1].name, 2).await?;
            let pool = pool_ready(c, &nodes[0].name).await?;
            let (_, _, prefixes) = ec2_view(c, &nodes[0].instance_id);
            ensure!(prefixes >= 2, "20 pods but {prefixes} prefixes");
            for p in &pods {
                let ip = c.pod(p)?.ip()?;
                let eni = eni_of(&pool, ip).with_context(|| format!("{ip} in no ENI"))?;
                let in_prefix = eni
                    .prefixes
                    .iter()
                    .any(|x| x.parse::<ipnet::Ipv4Net>().is_ok_and(|n| n.contains(&ip)));
                ensure!(in_prefix, "pod {p}'s {ip} is not inside a /28 prefix of {}", eni.id);
            }
            // The summary shows what EC2's describes show, which trails EC2 by their lag.
            wait::poll("the pool's summary to show EC2's prefixes", SETTLE, || async {
                let pool = c.pool(&nodes[0].name).await?;
                let summary =
                    pool.status.as_ref().and_then(|s| s.summary.clone()).context("summary")?;
                let (_, _, prefixes) = ec2_view(c, &nodes[0].instance_id);
                ensure!(
                    summary.prefixes as usize == prefixes,
                    "summary prefixes {} vs EC2 {prefixes}",
                    summary.prefixes
                );
                Ok(())
            })
            .await?;
            check_pod_status_ips(c).await?;
            mesh_ping(c, &["px-0".into(), "px-19".into(), "py-0".into()]).await?;
            c.ping_from_pod("px-19", c.fabric().internet_host_ip()).await
        })
    })
    .await
}

/// Fills a subnet with ENIs created outside enipool (another tenant), returning their ids. The
/// operator may take addresses between the count and the request: the request then fails with
/// InsufficientFreeAddressesInSubnet and is made again from a new count.
async fn squat(c: &Cluster, subnet: &str) -> Result<Vec<String>> {
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    let ec2 = ec2_client(c).await;
    let mut ids = Vec::new();
    let mut raced = 0;
    loop {
        let avail = c.sim().snapshot().subnets.get(subnet).map_or(0, |s| s.available());
        if avail == 0 {
            return Ok(ids);
        }
        let extra = (avail - 1).min(40) as i32;
        let mut req = ec2.create_network_interface().subnet_id(subnet).description("squatter");
        if extra > 0 {
            req = req.secondary_private_ip_address_count(extra);
        }
        let out = match req.send().await {
            Err(e) if e.code() == Some("InsufficientFreeAddressesInSubnet") && raced < 10 => {
                raced += 1;
                continue;
            }
            r => r.context("creating a squatter ENI")?,
        };
        ids.push(
            out.network_interface()
                .and_then(|e| e.network_interface_id())
                .context("eni id")?
                .to_string(),
        );
    }
}

/// An EC2 client on the simulator (the runner plays "someone else in the account").
pub(crate) async fn ec2_client(c: &Cluster) -> aws_sdk_ec2::Client {
    use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(c.sim().endpoint_url())
        .region(Region::new(cluster::REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .load()
        .await;
    aws_sdk_ec2::Client::new(&conf)
}

pub async fn exhaustion(t: Target) -> Result<()> {
    let mut spec = Spec::new("subnet-exhaustion", 1).policy(serde_json::json!({
        "mode": "SecondaryIP", "sizing": {"warmIPs": 1, "batch": 1},
        "release": {"enabled": true, "delaySeconds": 30}, "cooldownSeconds": 1,
        "eni": {"firstInterfaceIndex": 1, "subnets": {"tags": {cluster::ROLE_TAG: "small-pods"}}},
    }));
    spec.subnets.push(SubnetSpec { cidr: "10.0.1.0/27", az: "us-west-2a", role: "small-pods" });
    with_cluster(&t, spec, |c| {
        Box::pin(async move {
            let n = c.nodes()[0].clone();
            pool_ready(c, &n.name).await?;
            c.add_pod("ok-0", &n.name).await?;
            // Another tenant takes every free address of the pod subnet.
            let pods = c.spec.subnets.iter().position(|s| s.role == "small-pods");
            let pods_subnet = c.subnet_ids[pods.context("no pods subnet")?].clone();
            let squatters = squat(c, &pods_subnet).await?;
            // Demand beyond what the node holds now cannot be met.
            let mut failures = Vec::new();
            for i in 0..12 {
                let name = format!("want-{i}");
                c.create_pod(&name, &n.name).await?;
                if let Err(e) = c.start_sandbox(&name).await {
                    failures.push((name, format!("{e:#}")));
                }
            }
            ensure!(!failures.is_empty(), "12 more pods all got addresses in a full subnet");
            let (_, msg) = &failures[0];
            ensure!(
                ["exhaust", "no free", "no address", "available"]
                    .iter()
                    .any(|w| msg.to_lowercase().contains(w)),
                "the pod's failure does not say addresses ran out: {msg}"
            );
            wait::poll("SubnetExhausted on the pool and the policy", SETTLE, || async {
                let pool = c.pool(&n.name).await?;
                let conds = pool.status.map(|s| s.conditions).unwrap_or_default();
                let ex =
                    conds.iter().find(|c| c.type_ == enipool_crds::conditions::SUBNET_EXHAUSTED);
                ensure!(ex.is_some_and(|c| c.status == "True"), "pool conditions {conds:?}");
                let api: kube::Api<enipool_crds::ENIPoolPolicy> =
                    kube::Api::all(c.client().clone());
                let pol = api.get(&c.names.policy).await?;
                let subnets = pol.status.map(|s| s.subnets).unwrap_or_default();
                ensure!(
                    subnets.iter().any(|s| s.id == pods_subnet && s.exhausted),
                    "policy status subnets {subnets:?}"
                );
                Ok(())
            })
            .await?;
            // Room appears: the tenant goes away. Every waiting pod gets an address.
            let ec2 = ec2_client(c).await;
            for id in &squatters {
                ec2.delete_network_interface().network_interface_id(id).send().await?;
            }
            for (name, _) in &failures {
                wait::poll(&format!("pod {name} to recover"), SETTLE, || c.start_sandbox(name))
                    .await?;
            }
            wait::poll("SubnetExhausted cleared", SETTLE, || async {
                let pool = c.pool(&n.name).await?;
                let conds = pool.status.map(|s| s.conditions).unwrap_or_default();
                let ex =
                    conds.iter().find(|c| c.type_ == enipool_crds::conditions::SUBNET_EXHAUSTED);
                ensure!(ex.is_none_or(|c| c.status != "True"), "pool conditions {conds:?}");
                Ok(())
            })
            .await?;
            check_pod_status_ips(c).await?;
            mesh_ping(c, &["ok-0".into(), failures[0].0.clone()]).await
        })
    })
    .await
}
