//! Command-line flags (every one also an `ENIPOOL_OPERATOR_*` environment variable), defined once:
//! the chart and the test platform render their command lines from [`Args`] ([`Args::to_args`]).

pub use crate::logging::LogFormat;
use clap::{CommandFactory, Parser};
use enipool_crds::IpFamily;
use serde_json::Value;
use std::net::SocketAddr;

/// enipool-operator: keeps one ENIPool per Node provisioned with ENIs and addresses.
#[derive(Debug, Clone, PartialEq, Parser, serde::Serialize)]
#[command(
    name = "enipool-operator",
    version,
    after_help = "Subcommands:\n  cleanup  After uninstalling: wait until no operator holds the Lease, then remove the \
                  enipool.io/release finalizer from the ENIPools and delete them (no EC2 call). \
                  See `enipool-operator cleanup --help`."
)]
pub struct Args {
    /// Cluster name: tagged on every ENI enipool creates; scopes garbage collection.
    #[arg(long, env = "ENIPOOL_OPERATOR_CLUSTER_NAME")]
    pub cluster_name: String,
    /// EC2 endpoint override (the EC2 simulator, moto).
    #[arg(long, env = "ENIPOOL_OPERATOR_EC2_ENDPOINT")]
    pub ec2_endpoint: Option<String>,
    /// AWS region (default: the standard AWS configuration chain).
    #[arg(long, env = "ENIPOOL_OPERATOR_REGION")]
    pub region: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "ENIPOOL_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "ENIPOOL_OPERATOR_LEASE_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "ENIPOOL_OPERATOR_LEASE_NAME", default_value = "enipool-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease (default: POD_NAME, else the hostname).
    #[arg(long, env = "ENIPOOL_OPERATOR_IDENTITY")]
    pub identity: Option<String>,
    /// Lease duration in seconds.
    #[arg(long, env = "ENIPOOL_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Mutating EC2 calls per second (account bucket before --budget-share; default: EC2's).
    #[arg(long, env = "ENIPOOL_OPERATOR_MUTATE_QPS")]
    pub mutate_qps: Option<f64>,
    /// Mutating EC2 call burst.
    #[arg(long, env = "ENIPOOL_OPERATOR_MUTATE_BURST")]
    pub mutate_burst: Option<u32>,
    /// Describe EC2 calls per second.
    #[arg(long, env = "ENIPOOL_OPERATOR_DESCRIBE_QPS")]
    pub describe_qps: Option<f64>,
    /// Describe EC2 call burst.
    #[arg(long, env = "ENIPOOL_OPERATOR_DESCRIBE_BURST")]
    pub describe_burst: Option<u32>,
    /// Fraction of the account's EC2 budget enipool may use (0 < share <= 1).
    #[arg(long, env = "ENIPOOL_OPERATOR_BUDGET_SHARE", default_value_t = 0.5)]
    pub budget_share: f64,
    /// Seconds between leaked-ENI garbage collections.
    #[arg(long, env = "ENIPOOL_OPERATOR_GC_INTERVAL_SECONDS", default_value_t = 300)]
    pub gc_interval_seconds: u64,
    /// An unattached tagged ENI older than this is leaked.
    #[arg(long, env = "ENIPOOL_OPERATOR_LEAK_GRACE_SECONDS", default_value_t = 600)]
    pub leak_grace_seconds: i64,
    /// Minimum seconds between two periodic EC2 resyncs of a node (drift detection; changes to a
    /// pool, pending pods and pending EC2 work are acted on at once regardless). The period grows
    /// with the number of nodes so that resyncs (2 describe calls each) use at most a quarter of
    /// the operator's describe rate (--describe-qps × --budget-share): with the defaults, above
    /// 75 nodes; about 13 minutes at 1,000 nodes, about an hour at 5,000. The period in force
    /// is the metric enipool_operator_resync_period_seconds.
    #[arg(long, env = "ENIPOOL_OPERATOR_RESYNC_SECONDS", default_value_t = 60)]
    pub resync_seconds: u64,
    /// An agent report older than this sets AgentStale.
    #[arg(long, env = "ENIPOOL_OPERATOR_AGENT_STALE_SECONDS", default_value_t = 120)]
    pub agent_stale_seconds: i64,
    /// How long the finalizer of a deleted Node's pool waits for the instance to terminate before
    /// it deletes the ENIs left behind and lets the pool go anyway (leftovers then go to GC).
    /// Default: 3600.
    #[arg(long, env = "ENIPOOL_OPERATOR_TERMINATION_WAIT_SECONDS")]
    pub termination_wait_seconds: Option<u64>,
    /// Pools reconciled in parallel.
    #[arg(long, env = "ENIPOOL_OPERATOR_WORKERS", default_value_t = 8)]
    pub workers: u16,
    /// VPC CIDRs published to agents (comma-separated); default: the VPC's CIDR blocks as
    /// DescribeVpcs reports them.
    #[arg(long, env = "ENIPOOL_OPERATOR_VPC_CIDRS", value_delimiter = ',')]
    pub vpc_cidrs: Vec<String>,
    /// Only Nodes matching this label selector get an ENIPool (Kubernetes selector syntax, e.g.
    /// `enipool.io/managed=true` or `pool in (a,b)`); empty: every Node with an AWS providerID.
    /// For moving node groups from another CNI one at a time, or for two installations sharing a
    /// cluster. Pools of other Nodes are left alone (no EC2 call, no status write, no deletion),
    /// also a pool whose Node stops matching: it keeps its ENIs and addresses, unmanaged, until the
    /// Node matches again or the pool is deleted by hand (its finalizer then releases it without
    /// touching EC2 while the Node lives). Policies get status only when a selected Node uses them.
    #[arg(long, env = "ENIPOOL_OPERATOR_NODE_SELECTOR")]
    pub node_selector: Option<String>,
    /// The cluster's pod address family, IPv4 or IPv6: fixed at install (the chart's `ipFamily`).
    /// In IPv6 each node's primary ENI gets one /80 prefix; policies naming the other family are
    /// reported as not Valid.
    #[arg(long, env = "ENIPOOL_OPERATOR_IP_FAMILY", default_value = "IPv4")]
    pub ip_family: IpFamily,
    /// Log format.
    #[arg(long, env = "ENIPOOL_OPERATOR_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Args {
    /// The binary's defaults for `cluster_name` (what it parses from `--cluster-name` alone).
    pub fn defaults(cluster_name: &str) -> Args {
        let flag = format!("--cluster-name={cluster_name}");
        Args::try_parse_from(["enipool-operator", flag.as_str()]).expect("the defaults parse")
    }

    /// The command line (without the program name) that parses back into these flags: every
    /// flag in its declaration order as `--flag=value`, lists comma-joined, switches bare, and
    /// unset optional flags and empty lists left out. The chart renders the same order.
    pub fn to_args(&self) -> Vec<String> {
        let values = serde_json::to_value(self).expect("flags serialize");
        let mut out = Vec::new();
        for arg in Args::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let text = match &values[arg.get_id().as_str()] {
                Value::Null | Value::Bool(false) => continue,
                Value::Bool(true) => {
                    out.push(format!("--{long}"));
                    continue;
                }
                Value::Array(items) if items.is_empty() => continue,
                Value::Array(items) => items.iter().map(flag_value).collect::<Vec<_>>().join(","),
                v => flag_value(v),
            };
            out.push(format!("--{long}={text}"));
        }
        out
    }
}

/// A flag's value as a command line spells it (`10`, not `10.0`; strings unquoted).
fn flag_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => n.as_f64().map(|f| f.to_string()).unwrap_or_default(),
        v => v.to_string(),
    }
}

/// What a command line asks for: the operator (no subcommand) or `cleanup`.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// `enipool-operator [FLAGS]`: run the operator.
    Operator(Box<Args>),
    /// `enipool-operator cleanup [FLAGS]`: see [`crate::cleanup`].
    Cleanup(crate::cleanup::CleanupArgs),
}

/// Parse a whole command line (program name first). The operator's own flags stay top-level (a
/// Deployment runs `enipool-operator --cluster-name=…`); `cleanup` as the first argument selects
/// the subcommand and its own flags.
pub fn parse_invocation<I, T>(argv: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    if argv.get(1).is_some_and(|a| a == "cleanup") {
        let rest = argv.into_iter().skip(2);
        let args = crate::cleanup::CleanupArgs::try_parse_from(
            std::iter::once(std::ffi::OsString::from("enipool-operator cleanup")).chain(rest),
        )?;
        return Ok(Invocation::Cleanup(args));
    }
    Ok(Invocation::Operator(Box::new(Args::try_parse_from(argv)?)))
}

impl Invocation {
    /// Run what was asked for.
    pub async fn run(self) -> crate::Result<()> {
        match self {
            Invocation::Operator(a) => a.run().await,
            Invocation::Cleanup(c) => c.run().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cleanup_is_a_subcommand_with_its_own_flags() {
        let Ok(Invocation::Cleanup(c)) = parse_invocation([
            "enipool-operator",
            "cleanup",
            "--lease-namespace=ns",
            "--lease-name=l",
            "--node-selector=a=b",
            "--timeout-seconds=7",
        ]) else {
            panic!("cleanup not parsed as the subcommand")
        };
        assert_eq!(c.lease_name, "l");
        assert_eq!(c.config().node_selector.as_deref(), Some("a=b"));
        assert_eq!(c.timeout_seconds, 7);
        // It needs no cluster name and makes no EC2 client: it has no EC2 flags at all.
        assert!(parse_invocation(["enipool-operator", "cleanup", "--cluster-name=c"]).is_err());
        // Without the subcommand: the operator, as before.
        let Ok(Invocation::Operator(a)) =
            parse_invocation(["enipool-operator", "--cluster-name=c"])
        else {
            panic!("operator flags not parsed")
        };
        assert_eq!(a.cluster_name, "c");
        assert!(parse_invocation(["enipool-operator"]).is_err(), "--cluster-name is required");
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("cleanup"), "{help}");
    }

    #[test]
    fn to_args_renders_every_flag_and_parses_back() {
        let mut a = Args::defaults("c");
        a.ec2_endpoint = Some("http://127.0.0.1:5000".into());
        a.region = Some("us-west-2".into());
        a.identity = Some("op-0".into());
        a.mutate_qps = Some(2.5);
        a.mutate_burst = Some(20);
        a.describe_qps = Some(10.0);
        a.describe_burst = Some(40);
        a.termination_wait_seconds = Some(900);
        a.vpc_cidrs = vec!["10.0.0.0/16".into(), "100.64.0.0/16".into()];
        a.node_selector = Some("pool in (a,b)".into());
        a.log_format = LogFormat::Json;
        let argv = a.to_args();
        // Every flag the parser knows is rendered (a flag added to `Args` needs nothing else).
        let longs: Vec<_> = Args::command()
            .get_arguments()
            .filter_map(|x| x.get_long().map(String::from))
            .filter(|l| l != "help" && l != "version")
            .collect();
        let named: Vec<_> =
            argv.iter().map(|f| f[2..].split('=').next().unwrap().to_string()).collect();
        assert_eq!(named, longs, "{argv:?}");
        assert!(argv.contains(&"--describe-qps=10".to_string()), "{argv:?}");
        assert!(argv.contains(&"--vpc-cidrs=10.0.0.0/16,100.64.0.0/16".to_string()));
        assert!(argv.contains(&"--log-format=json".to_string()));
        let back = Args::try_parse_from(std::iter::once("enipool-operator".into()).chain(argv));
        assert_eq!(back.unwrap(), a);
        // Unset optional flags and empty lists are left out.
        let d = Args::defaults("c").to_args();
        assert!(!d.iter().any(|f| f.starts_with("--region")
            || f.starts_with("--vpc-cidrs")
            || f.starts_with("--termination-wait-seconds")));
        assert_eq!(d[0], "--cluster-name=c");
    }

    #[test]
    fn verify_cli() {
        Args::command().debug_assert();
        let a = Args::try_parse_from(["enipool-operator", "--cluster-name", "c"]).unwrap();
        assert_eq!(a.metrics_addr.to_string(), "0.0.0.0:8080");
        assert_eq!((a.lease_duration_seconds, a.workers, a.resync_seconds), (15, 8, 60));
        assert_eq!(a.node_selector, None);
        assert_eq!(a.termination_wait_seconds, None);
        assert_eq!(a.operator_config().termination_wait, std::time::Duration::from_secs(3600));
    }

    #[test]
    fn termination_wait_flag_and_env() {
        let a = Args::try_parse_from([
            "enipool-operator",
            "--cluster-name=c",
            "--termination-wait-seconds=900",
        ])
        .unwrap();
        assert_eq!(a.operator_config().termination_wait, std::time::Duration::from_secs(900));
        // The environment spelling (clap reads it when the flag is absent).
        let arg = Args::command()
            .get_arguments()
            .find(|a| a.get_id() == "termination_wait_seconds")
            .cloned()
            .unwrap();
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some("ENIPOOL_OPERATOR_TERMINATION_WAIT_SECONDS")
        );
    }

    #[test]
    fn node_selector_flag_and_empty_means_every_node() {
        let a = Args::try_parse_from([
            "enipool-operator",
            "--cluster-name=c",
            "--node-selector=enipool.io/managed=true,pool in (a,b)",
        ])
        .unwrap();
        assert_eq!(
            a.operator_config().node_selector.as_deref(),
            Some("enipool.io/managed=true,pool in (a,b)")
        );
        // A chart that renders the flag with an empty value selects every Node.
        let a = Args::try_parse_from(["enipool-operator", "--cluster-name=c", "--node-selector="])
            .unwrap();
        assert_eq!(a.operator_config().node_selector, None);
    }
}
