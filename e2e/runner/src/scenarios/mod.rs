//! The scenario registry. Each scenario is a named async function over a [`Target`]; it builds its
//! own cluster on the test platform (or fails saying what it needs when the target is real), runs,
//! and tears everything down, also on failure ([`Cluster::finish`], and `Drop` on timeout).

mod basic;
mod chaos;
mod chaos_combined;
mod custom;
mod forgery;
mod ipv6;
mod kubectl;
mod migration;
mod real;
mod sizing;
mod startup;

use super::Target;
use anyhow::{bail, Context, Result};
use cluster::{wait, Cluster, Spec};
use enipool_crds::{ENIPool, EniStatus};
use futures::future::BoxFuture;
use std::net::Ipv4Addr;
use std::time::Duration;

pub struct Scenario {
    /// Name used by `run NAME`.
    pub name: &'static str,
    /// One line saying what it proves.
    pub about: &'static str,
    /// Runs against real EC2 too (the others need the simulator's network-namespace nodes).
    pub real_ec2: bool,
    /// Runs with `--runtime containerd` too (creates its pods only through the kubelet's
    /// sandbox calls, never the libcni driver directly).
    pub containerd: bool,
    pub run: fn(Target) -> BoxFuture<'static, anyhow::Result<()>>,
}

macro_rules! scenario {
    ($name:literal, $about:literal, $f:path) => {
        Scenario {
            name: $name,
            about: $about,
            real_ec2: false,
            containerd: false,
            run: |t| Box::pin($f(t)),
        }
    };
    (real $name:literal, $about:literal, $f:path) => {
        Scenario {
            name: $name,
            about: $about,
            real_ec2: true,
            containerd: false,
            run: |t| Box::pin($f(t)),
        }
    };
    (containerd $name:literal, $about:literal, $f:path) => {
        Scenario {
            name: $name,
            about: $about,
            real_ec2: false,
            containerd: true,
            run: |t| Box::pin($f(t)),
        }
    };
}

/// Every scenario, in the order `run` executes them.
pub static SCENARIOS: &[Scenario] = &[
    scenario!(
        real "crds-served",
        "the CRDs from crds/ install and serve both kinds with their printer columns (real clusters too)",
        kubectl::crds_served
    ),
    scenario!(
        containerd "pods-one-node",
        "pods on one node get VPC addresses, reach each other, show their IP in Pod status and in their enipool.io/pod-ips annotation",
        basic::pods_one_node
    ),
    scenario!(
        containerd "pods-across-nodes",
        "pods on two nodes reach each other through the VPC",
        basic::pods_across_nodes
    ),
    scenario!(
        "primary-and-secondary-eni",
        "pods on the primary ENI and on a secondary ENI, on both nodes, all reach each other",
        basic::primary_and_secondary_eni
    ),
    scenario!(
        "cross-subnet",
        "pods on nodes in different subnets, zones and VPC blocks see each other's own addresses (no SNAT inside the VPC); the internet sees the node's",
        basic::cross_subnet
    ),
    scenario!(
        "custom-networking",
        "a policy puts pods in the per-zone pod subnets of the VPC's secondary block (custom networking): each pod's address is from its node's zone, off the primary ENI, unSNATed between zones and SNATed to the internet",
        custom::custom_networking
    ),
    scenario!(
        "egress-snat",
        "pod traffic to the internet leaves SNATed to the node's primary IP and the reply comes back",
        basic::egress_snat
    ),
    scenario!(
        "ipv6-pods",
        "IPv6 cluster: pods get /128s of their node's one /80, reach each other on one node and across nodes, the IPv6 internet with their own address and the IPv4 internet as their node; kubectl shows the prefix",
        ipv6::ipv6_pods
    ),
    scenario!(
        "ipv6-agent-restart",
        "IPv6 cluster: the agent killed with kill -9 and restarted: every pod keeps its IPv6 address and traffic, and a new pod gets none of theirs",
        ipv6::ipv6_agent_restart
    ),
    scenario!(
        "node-startup",
        "a joining node shows the runtime no CNI config and keeps its startup taint until its agent can serve; pods created before wait, then start on their first ADD",
        startup::pods_wait_for_the_agent
    ),
    scenario!(
        "cni-migration",
        "a node on another CNI (bridge) moves to enipool in place as docs/migrate-from-aws-vpc-cni.md says and back: old pods keep working and go through their own plugin, new pods get VPC addresses, then bridge ones again; EC2 keeps what the pool held (platform nodes only: it edits the node's CNI dirs; runs with --kubeconfig, not real EC2)",
        migration::bridge_to_enipool_and_back
    ),
    scenario!(
        "kubectl-get-enipools",
        "real kubectl shows the ENIPool columns (and -o wide) with the right numbers",
        kubectl::get_enipools
    ),
    scenario!(
        "scale-up-new-eni",
        "demand beyond one ENI creates, attaches and wires a new ENI that pods use",
        sizing::scale_up
    ),
    scenario!("warm-pool-churn", "the warm pool stays at target while pods churn", sizing::churn),
    scenario!(
        "scale-down-after-delay",
        "excess addresses and empty ENIs are released only after the release delay",
        sizing::scale_down
    ),
    scenario!("prefix-mode", "prefix mode: /28 prefixes on ENIs, pods take addresses from them", sizing::prefix_mode),
    scenario!(
        "subnet-exhaustion",
        "a full subnet is reported on pool and policy, pods fail clearly and recover when room appears",
        sizing::exhaustion
    ),
    scenario!(
        "gitops-policy-apply",
        "a policy changed with kubectl apply moves the pools' targets",
        kubectl::gitops_apply
    ),
    scenario!(
        containerd "agent-kill9-under-load",
        "agent killed with kill -9 and restarted under load: no pod loses its address, none is assigned twice",
        chaos::agent_kill9
    ),
    scenario!(
        "operator-leader-kill",
        "the operator leader killed mid-operation: the standby takes over, no leaked or duplicate ENI",
        chaos::leader_kill
    ),
    scenario!(
        "node-terminated",
        "a terminated node's ENIs and pool are cleaned up",
        chaos::node_terminated
    ),
    scenario!(
        "ec2-throttling-storm",
        "under an EC2 throttling storm the pools converge within the call budget",
        chaos::throttling_storm
    ),
    scenario!(
        "chaos-combined",
        "API stalls (agents, then the leader), failing EC2 Describes and agent restarts amid deletes and a release, with pods churning: no address held twice, no ENI leaked",
        chaos_combined::combined
    ),
    scenario!(
        "compromised-agent",
        "an agent's own bound token, under the chart's RBAC and admission policy, cannot forge the operator's journal, ENIs or spec, nor touch another node's pool",
        forgery::compromised_agent
    ),
    scenario!(
        real "pools-match-ec2",
        "every pool's ENIs and addresses are in EC2 where it says, none held twice, no leaked ENI, pod IPs from their node's pool (real clusters too)",
        real::pools_match_ec2
    ),
    scenario!(
        real "pod-gets-vpc-ip",
        "a Pod pinned to a node gets an address EC2 assigned to the node's ENIs, and gives it back when deleted (real clusters too)",
        real::pod_gets_vpc_ip
    ),
];

/// Default time for the system to react (pool ready, ENI attached, ...).
pub(crate) const SETTLE: Duration = Duration::from_secs(60);

/// Builds the cluster, runs `body`, tears down (with diagnostics on failure).
pub(crate) async fn with_cluster<F>(t: &Target, spec: Spec, body: F) -> Result<()>
where
    F: for<'c> FnOnce(&'c Cluster) -> BoxFuture<'c, Result<()>>,
{
    let c = Cluster::up(t, spec).await?;
    let r = body(&c).await;
    c.finish(r).await
}

/// Waits until the pool of `node` has condition Ready=True and the agent has programmed every
/// attached ENI the operator lists.
pub(crate) async fn pool_ready(c: &Cluster, node: &str) -> Result<ENIPool> {
    wait::poll(&format!("ENIPool {node} Ready with its ENIs programmed"), SETTLE, || async {
        let p = c.pool(node).await?;
        let st = p.status.as_ref().context("no status yet")?;
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
        match ready {
            Some(r) if r.status == "True" => {}
            Some(r) => bail!("Ready={} reason {} ({})", r.status, r.reason, r.message),
            None => bail!("no Ready condition"),
        }
        let agent = st.agent.as_ref().context("the agent has not reported")?;
        for e in &st.enis {
            if !agent.ready_enis.contains(&e.id) {
                bail!(
                    "ENI {} not programmed by the agent yet (ready: {:?})",
                    e.id,
                    agent.ready_enis
                );
            }
        }
        Ok(p)
    })
    .await
}

/// Every joined node's pool Ready.
pub(crate) async fn all_pools_ready(c: &Cluster) -> Result<()> {
    for n in c.nodes() {
        pool_ready(c, &n.name).await?;
    }
    Ok(())
}

/// The ENI of a pool holding `ip` (as a secondary IP or inside a prefix).
pub(crate) fn eni_of(pool: &ENIPool, ip: Ipv4Addr) -> Option<EniStatus> {
    let st = pool.status.as_ref()?;
    st.enis
        .iter()
        .find(|e| {
            e.ips.iter().any(|a| a.parse::<Ipv4Addr>().ok() == Some(ip))
                || e.prefixes
                    .iter()
                    .any(|p| p.parse::<ipnet::Ipv4Net>().is_ok_and(|n| n.contains(&ip)))
        })
        .cloned()
}

/// Pings between every pair of pods (both directions).
pub(crate) async fn mesh_ping(c: &Cluster, pods: &[String]) -> Result<()> {
    for a in pods {
        for b in pods {
            if a != b {
                let ip = c.pod(b)?.ip()?;
                c.ping_from_pod(a, ip).await.with_context(|| format!("{a} -> {b}"))?;
            }
        }
    }
    Ok(())
}

/// The pod IPs as the Pod objects record them must match what CNI returned, and be unique.
pub(crate) async fn check_pod_status_ips(c: &Cluster) -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let api: kube::Api<Pod> = kube::Api::namespaced(c.client().clone(), c.pod_namespace());
    let mut seen = std::collections::BTreeMap::new();
    for p in c.pods() {
        let Some(ip) = p.ip else { continue };
        let obj = api.get(&p.name).await?;
        let recorded = obj.status.and_then(|s| s.pod_ip).unwrap_or_default();
        if recorded != ip.to_string() {
            bail!("Pod {} status.podIP {recorded:?}, CNI returned {ip}", p.name);
        }
        if let Some(other) = seen.insert(ip, p.name.clone()) {
            bail!("address {ip} assigned to both {other} and {}", p.name);
        }
    }
    Ok(())
}
