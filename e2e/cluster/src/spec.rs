//! What a platform cluster is built from ([`Spec`]) and with ([`Bins`]).

use anyhow::{bail, Context, Result};
use ec2sim::{FaultConfig, Timing};
use enipool_crds::ENIPoolPolicySpec;
use std::path::PathBuf;
use std::time::Duration;

/// The container runtime of the platform's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// The platform's own libcni driver: a netns per pod and CNI calls through libcni.
    #[default]
    Libcni,
    /// Debian's containerd per node: sandboxes through the CRI API, CNI run by containerd.
    Containerd,
}

impl std::str::FromStr for Runtime {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Runtime> {
        match s {
            "libcni" => Ok(Runtime::Libcni),
            "containerd" => Ok(Runtime::Containerd),
            _ => bail!("unknown runtime {s:?}: libcni or containerd"),
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Runtime::Libcni => "libcni",
            Runtime::Containerd => "containerd",
        })
    }
}

/// A subnet of the simulated VPC.
#[derive(Debug, Clone)]
pub struct SubnetSpec {
    pub cidr: &'static str,
    pub az: &'static str,
    /// Value of [`super::ROLE_TAG`] (`nodes`, `pods`, ...).
    pub role: &'static str,
}

#[derive(Debug, Clone)]
pub struct Spec {
    /// Used in log lines and the cluster name.
    pub name: String,
    /// Nodes joined at start.
    pub nodes: usize,
    /// Instance type of the nodes.
    pub instance_type: String,
    /// IPv4 blocks of the VPC: the primary first, then secondary blocks associated with it.
    pub vpc_blocks: Vec<&'static str>,
    /// Subnets; node k is launched in the k-th subnet of role `nodes` (wrapping around).
    pub subnets: Vec<SubnetSpec>,
    /// The `default` ENIPoolPolicy.
    pub policy: ENIPoolPolicySpec,
    pub operator_replicas: usize,
    /// Attach/detach/terminate durations in the simulator.
    pub timing: Timing,
    /// Faults from the start.
    pub faults: FaultConfig,
    /// Extra operator flags (appended).
    pub operator_args: Vec<String>,
    /// Nodes the operator manages besides the run's own (the chart's
    /// `operator.managedNodeSelector`), e.g. `enipool.io/enabled=true`.
    pub managed_node_selector: Option<String>,
    /// Extra agent flags (appended).
    pub agent_args: Vec<String>,
    /// Agents annotate the pods they wire (`--annotate-pod-ip`), with the chart's RBAC and
    /// admission policy for it (`agent.annotatePodIP`).
    pub annotate_pod_ip: bool,
    /// What runs the nodes' pod sandboxes.
    pub runtime: Runtime,
    /// The cluster's pod address family. IPv6 also gives the VPC and its subnets IPv6 blocks.
    pub ip_family: enipool_crds::IpFamily,
    /// Print each bring-up step (the demo).
    pub progress: bool,
    /// Print diagnostics when dropped unfinished (off for the demo's Ctrl-C).
    pub report_on_drop: bool,
}

impl Spec {
    /// `nodes` nodes of type m5.large (3 ENIs × 10 addresses), two operator replicas, and a policy
    /// sized for quick tests: 2 warm IPs, batch 1, release after 10 s, 1 s cooldown. EC2 is timed
    /// like AWS ([`aws_like_faults`], attaches taking 1 s). The VPC has a
    /// primary block 10.0.0.0/16 and a secondary block 100.64.0.0/16, and three node subnets in
    /// three zones, one of them in the secondary block: the first node is in 10.0.0.0/24
    /// (us-west-2a), a second in 10.0.16.0/24 (us-west-2b), a third in 100.64.0.0/24 (us-west-2c).
    /// Each zone also has a pod subnet (role `pods`) in the secondary block, 100.64.16.0/20 and up,
    /// for policies that place pods apart from nodes (custom networking).
    pub fn new(name: &str, nodes: usize) -> Spec {
        Spec {
            name: name.to_string(),
            nodes,
            instance_type: "m5.large".into(),
            vpc_blocks: vec!["10.0.0.0/16", "100.64.0.0/16"],
            subnets: vec![
                SubnetSpec { cidr: "10.0.0.0/24", az: "us-west-2a", role: "nodes" },
                SubnetSpec { cidr: "10.0.16.0/24", az: "us-west-2b", role: "nodes" },
                SubnetSpec { cidr: "100.64.0.0/24", az: "us-west-2c", role: "nodes" },
                SubnetSpec { cidr: "100.64.16.0/20", az: "us-west-2a", role: "pods" },
                SubnetSpec { cidr: "100.64.32.0/20", az: "us-west-2b", role: "pods" },
                SubnetSpec { cidr: "100.64.48.0/20", az: "us-west-2c", role: "pods" },
            ],
            policy: serde_json::from_value(serde_json::json!({
                "mode": "SecondaryIP",
                "sizing": {"warmIPs": 2, "batch": 1},
                "release": {"enabled": true, "delaySeconds": 10},
                "cooldownSeconds": 1,
            }))
            .expect("default policy"),
            operator_replicas: 2,
            timing: Timing {
                attach: Duration::from_secs(1),
                detach: Duration::from_secs(1),
                terminate: Duration::from_secs(1),
            },
            faults: aws_like_faults(),
            operator_args: Vec::new(),
            managed_node_selector: None,
            agent_args: Vec::new(),
            annotate_pod_ip: false,
            runtime: Runtime::Libcni,
            ip_family: enipool_crds::IpFamily::IPv4,
            progress: false,
            report_on_drop: true,
        }
    }

    /// Replaces the policy spec with the given JSON (an `ENIPoolPolicySpec`).
    pub fn policy(mut self, spec: serde_json::Value) -> Spec {
        self.policy = serde_json::from_value(spec).expect("policy spec");
        self
    }
}

/// EC2's timing as AWS shows it, which an instantly consistent EC2 hides: Describe* answer from
/// the state as it was [`DESCRIBE_LAG`] ago (describes are eventually consistent), and mutations
/// take a while, creating and attaching an ENI longest.
pub fn aws_like_faults() -> FaultConfig {
    let mut faults =
        FaultConfig { describe_lag_ms: DESCRIBE_LAG.as_millis() as u64, ..Default::default() };
    faults.latency_ms.insert("Mutate*".into(), 100);
    for action in ["CreateNetworkInterface", "AttachNetworkInterface"] {
        faults.latency_ms.insert(action.into(), 250);
    }
    faults
}

/// How old the state a Describe answers from is in [`aws_like_faults`]: longer than the 1 s
/// cooldown, so the rounds an agent's report starts run on answers without the last changes.
pub const DESCRIBE_LAG: Duration = Duration::from_millis(1500);

/// Where the platform's binaries are: next to this executable (the workspace's target dir), or
/// `ENIPOOL_E2E_BIN_DIR`.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `enipool-operator`.
    pub operator: PathBuf,
    /// `enipool-agent`.
    pub agent: PathBuf,
    /// `enipool-cni`.
    pub cni: PathBuf,
}

impl Bins {
    /// Finds the three binaries or says how to build them.
    pub fn locate() -> Result<Bins> {
        let dir = match std::env::var_os("ENIPOOL_E2E_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => std::env::current_exe()?.parent().context("exe dir")?.to_path_buf(),
        };
        let find = |n: &str| -> Result<PathBuf> {
            let p = dir.join(n);
            if !p.is_file() {
                bail!(
                    "{} not found; build it first: cargo build -p enipool-operator -p enipool-agent \
                     -p enipool-cni (or set ENIPOOL_E2E_BIN_DIR)",
                    p.display()
                );
            }
            Ok(p)
        };
        Ok(Bins {
            operator: find("enipool-operator")?,
            agent: find("enipool-agent")?,
            cni: find("enipool-cni")?,
        })
    }
}
