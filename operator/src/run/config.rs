//! The operator's configuration, resolved from its flags ([`crate::args::Args::operator_config`]) or
//! built by a test platform that starts replicas in process.

use enipool_crds::IpFamily;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the operator needs besides its kube client and EC2 (the flags, resolved).
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Cluster name (ENI tags, GC scope).
    pub cluster: String,
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Lease duration; the renew deadline and retry period follow from it
    /// ([`crate::leader::Timing::new`]).
    pub lease_duration: Duration,
    /// Periodic per-node resync (also the policy status refresh): the minimum; a pool's EC2 resync
    /// period grows with the number of pools to fit the EC2 client's describe rate (`round/resync.rs`).
    pub resync: Duration,
    /// Time between GC runs.
    pub gc_interval: Duration,
    /// An unattached tagged ENI older than this is leaked.
    pub leak_grace_secs: i64,
    /// An agent report older than this sets AgentStale.
    pub agent_stale_secs: i64,
    /// Pools reconciled in parallel.
    pub workers: u16,
    /// VPC CIDRs published to agents (empty = the VPC's blocks, from DescribeVpcs).
    pub vpc_cidrs: Vec<String>,
    /// Address of /metrics, /healthz, /readyz (`None` = not served).
    pub metrics_addr: Option<SocketAddr>,
    /// How long a deleted pool waits for its instance to terminate before its finalizer goes.
    pub termination_wait: Duration,
    /// Label selector of the Nodes that get a pool (`None`: every Node). See
    /// [`crate::args::Args::node_selector`] for what happens to a pool whose Node stops matching.
    pub node_selector: Option<String>,
    /// The cluster's pod address family.
    pub family: IpFamily,
}

impl OperatorConfig {
    /// The flag defaults for `cluster`, with a random identity.
    pub fn new(cluster: &str) -> Self {
        OperatorConfig {
            cluster: cluster.into(),
            lease_namespace: "kube-system".into(),
            lease_name: "enipool-operator".into(),
            identity: format!("enipool-operator-{}", uuid::Uuid::new_v4()),
            lease_duration: Duration::from_secs(15),
            resync: Duration::from_secs(60),
            gc_interval: Duration::from_secs(300),
            leak_grace_secs: 600,
            agent_stale_secs: 120,
            workers: 8,
            vpc_cidrs: vec![],
            metrics_addr: None,
            termination_wait: Duration::from_secs(3600),
            node_selector: None,
            family: IpFamily::IPv4,
        }
    }
}
