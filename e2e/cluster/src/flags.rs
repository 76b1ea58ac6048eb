//! The operator's and the agent's command lines, in one place: the runner starts the processes
//! with [`operator_args`] and [`agent_args`], and the Helm chart renders the same flags, in the same
//! order and spelling, into the operator Deployment and the agent DaemonSet (`e2e/runner/tests/chart.rs`
//! renders the chart with equivalent values and compares). Every value is passed as
//! `--flag=value`; `--external-snat` is a switch; optional flags are left out when unset.

/// Operator flags (`enipool-operator --help`). Fields mirror the binary's flags one to one.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorFlags {
    /// `--cluster-name`.
    pub cluster_name: String,
    /// `--ec2-endpoint`.
    pub ec2_endpoint: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--metrics-addr` (`host:port`).
    pub metrics_addr: String,
    /// `--lease-namespace` (the chart passes its release namespace).
    pub lease_namespace: String,
    /// `--lease-name`.
    pub lease_name: String,
    /// `--identity` (the chart passes `$(POD_NAME)`, expanded by the kubelet).
    pub identity: String,
    /// `--lease-duration-seconds`.
    pub lease_duration_seconds: u64,
    /// `--mutate-qps`.
    pub mutate_qps: Option<f64>,
    /// `--mutate-burst`.
    pub mutate_burst: Option<u32>,
    /// `--describe-qps`.
    pub describe_qps: Option<f64>,
    /// `--describe-burst`.
    pub describe_burst: Option<u32>,
    /// `--budget-share`.
    pub budget_share: f64,
    /// `--gc-interval-seconds`.
    pub gc_interval_seconds: u64,
    /// `--leak-grace-seconds`.
    pub leak_grace_seconds: i64,
    /// `--resync-seconds`.
    pub resync_seconds: u64,
    /// `--agent-stale-seconds`.
    pub agent_stale_seconds: i64,
    /// `--workers`.
    pub workers: u16,
    /// `--vpc-cidrs` (comma-joined; left out when empty).
    pub vpc_cidrs: Vec<String>,
    /// `--node-selector` (a label selector; left out when unset: every Node).
    pub node_selector: Option<String>,
    /// `--log-format` (`text` or `json`).
    pub log_format: String,
}

impl OperatorFlags {
    /// The binary's defaults for `cluster_name`, with `identity` as given (the binary's own default,
    /// POD_NAME or the hostname, is never relied on: the runner and the chart both pass it).
    pub fn new(cluster_name: &str, identity: &str) -> OperatorFlags {
        OperatorFlags {
            cluster_name: cluster_name.to_string(),
            ec2_endpoint: None,
            region: None,
            metrics_addr: "0.0.0.0:8080".into(),
            lease_namespace: "kube-system".into(),
            lease_name: "enipool-operator".into(),
            identity: identity.to_string(),
            lease_duration_seconds: 15,
            mutate_qps: None,
            mutate_burst: None,
            describe_qps: None,
            describe_burst: None,
            budget_share: 0.5,
            gc_interval_seconds: 300,
            leak_grace_seconds: 600,
            resync_seconds: 60,
            agent_stale_seconds: 120,
            workers: 8,
            vpc_cidrs: Vec::new(),
            node_selector: None,
            log_format: "text".into(),
        }
    }
}

/// Agent flags (`enipool-agent --help`). Fields mirror the binary's flags one to one.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentFlags {
    /// `--node-name` (the chart passes `$(NODE_NAME)`, from the downward API's `spec.nodeName`).
    pub node_name: String,
    /// `--socket`.
    pub socket: String,
    /// `--state-dir`.
    pub state_dir: String,
    /// `--del-journal-dir`.
    pub del_journal_dir: String,
    /// `--metrics-addr` (`host:port`).
    pub metrics_addr: String,
    /// `--introspection-addr`.
    pub introspection_addr: String,
    /// `--mtu`.
    pub mtu: u32,
    /// `--external-snat` (a switch).
    pub external_snat: bool,
    /// `--snat-exclude-cidrs` (comma-joined; left out when empty).
    pub snat_exclude_cidrs: Vec<String>,
    /// `--leak-grace-seconds`.
    pub leak_grace_seconds: u64,
    /// `--publish-debounce-ms`.
    pub publish_debounce_ms: u64,
    /// `--host-repair-interval-seconds`.
    pub host_repair_interval_seconds: u64,
    /// `--netns`: the test platform's node namespace. Never set by the chart.
    pub netns: Option<String>,
    /// `--log-format` (`text` or `json`).
    pub log_format: String,
}

impl AgentFlags {
    /// The binary's defaults for `node_name`.
    pub fn new(node_name: &str) -> AgentFlags {
        AgentFlags {
            node_name: node_name.to_string(),
            socket: "/run/enipool/cni.sock".into(),
            state_dir: "/var/lib/enipool".into(),
            del_journal_dir: "/var/lib/enipool/del-journal".into(),
            metrics_addr: "0.0.0.0:61678".into(),
            introspection_addr: "127.0.0.1:61679".into(),
            mtu: 9001,
            external_snat: false,
            snat_exclude_cidrs: Vec::new(),
            leak_grace_seconds: 600,
            publish_debounce_ms: 1000,
            host_repair_interval_seconds: 30,
            netns: None,
            log_format: "text".into(),
        }
    }
}

fn flag(out: &mut Vec<String>, name: &str, value: impl std::fmt::Display) {
    out.push(format!("--{name}={value}"));
}

/// The operator's command line (without the program name).
pub fn operator_args(cfg: &OperatorFlags) -> Vec<String> {
    let mut a = Vec::new();
    flag(&mut a, "cluster-name", &cfg.cluster_name);
    if let Some(v) = &cfg.ec2_endpoint {
        flag(&mut a, "ec2-endpoint", v);
    }
    if let Some(v) = &cfg.region {
        flag(&mut a, "region", v);
    }
    flag(&mut a, "metrics-addr", &cfg.metrics_addr);
    flag(&mut a, "lease-namespace", &cfg.lease_namespace);
    flag(&mut a, "lease-name", &cfg.lease_name);
    flag(&mut a, "identity", &cfg.identity);
    flag(&mut a, "lease-duration-seconds", cfg.lease_duration_seconds);
    if let Some(v) = cfg.mutate_qps {
        flag(&mut a, "mutate-qps", v);
    }
    if let Some(v) = cfg.mutate_burst {
        flag(&mut a, "mutate-burst", v);
    }
    if let Some(v) = cfg.describe_qps {
        flag(&mut a, "describe-qps", v);
    }
    if let Some(v) = cfg.describe_burst {
        flag(&mut a, "describe-burst", v);
    }
    flag(&mut a, "budget-share", cfg.budget_share);
    flag(&mut a, "gc-interval-seconds", cfg.gc_interval_seconds);
    flag(&mut a, "leak-grace-seconds", cfg.leak_grace_seconds);
    flag(&mut a, "resync-seconds", cfg.resync_seconds);
    flag(&mut a, "agent-stale-seconds", cfg.agent_stale_seconds);
    flag(&mut a, "workers", cfg.workers);
    if !cfg.vpc_cidrs.is_empty() {
        flag(&mut a, "vpc-cidrs", cfg.vpc_cidrs.join(","));
    }
    if let Some(v) = &cfg.node_selector {
        flag(&mut a, "node-selector", v);
    }
    flag(&mut a, "log-format", &cfg.log_format);
    a
}

/// The agent's command line (without the program name).
pub fn agent_args(cfg: &AgentFlags) -> Vec<String> {
    let mut a = Vec::new();
    flag(&mut a, "node-name", &cfg.node_name);
    flag(&mut a, "socket", &cfg.socket);
    flag(&mut a, "state-dir", &cfg.state_dir);
    flag(&mut a, "del-journal-dir", &cfg.del_journal_dir);
    flag(&mut a, "metrics-addr", &cfg.metrics_addr);
    flag(&mut a, "introspection-addr", &cfg.introspection_addr);
    flag(&mut a, "mtu", cfg.mtu);
    if cfg.external_snat {
        a.push("--external-snat".into());
    }
    if !cfg.snat_exclude_cidrs.is_empty() {
        flag(&mut a, "snat-exclude-cidrs", cfg.snat_exclude_cidrs.join(","));
    }
    flag(&mut a, "leak-grace-seconds", cfg.leak_grace_seconds);
    flag(&mut a, "publish-debounce-ms", cfg.publish_debounce_ms);
    flag(&mut a, "host-repair-interval-seconds", cfg.host_repair_interval_seconds);
    if let Some(v) = &cfg.netns {
        flag(&mut a, "netns", v);
    }
    flag(&mut a, "log-format", &cfg.log_format);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_flags_are_left_out_and_switches_have_no_value() {
        let a = agent_args(&AgentFlags::new("n1"));
        assert!(!a.iter().any(|s| s.starts_with("--external-snat")
            || s.starts_with("--snat-exclude-cidrs")
            || s.starts_with("--netns")));
        let mut cfg = AgentFlags::new("n1");
        cfg.external_snat = true;
        cfg.snat_exclude_cidrs = vec!["10.1.0.0/16".into(), "10.2.0.0/16".into()];
        let a = agent_args(&cfg);
        assert!(a.contains(&"--external-snat".to_string()));
        assert!(a.contains(&"--snat-exclude-cidrs=10.1.0.0/16,10.2.0.0/16".to_string()));
        let o = operator_args(&OperatorFlags::new("c", "op-0"));
        assert_eq!(o[0], "--cluster-name=c");
        assert!(o.contains(&"--budget-share=0.5".to_string()));
        assert!(!o.iter().any(|s| s.starts_with("--region")
            || s.starts_with("--mutate-qps")
            || s.starts_with("--node-selector")));
        let mut cfg = OperatorFlags::new("c", "op-0");
        cfg.node_selector = Some("enipool-e2e/run=e2e-ep0000-abcd".into());
        let o = operator_args(&cfg);
        assert!(o.contains(&"--node-selector=enipool-e2e/run=e2e-ep0000-abcd".to_string()));
        assert_eq!(o.last().map(String::as_str), Some("--log-format=text"));
    }
}
