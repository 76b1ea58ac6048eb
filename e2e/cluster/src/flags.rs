//! The operator's and the agent's command lines, in one place: the runner starts the processes
//! with [`operator_args`] and [`agent_args`], and the Helm chart renders the same flags, in the
//! same order and spelling, into the operator Deployment and the agent DaemonSet
//! (`e2e/runner/tests/chart.rs` renders the chart with equivalent values and compares). Every
//! value is passed as `--flag=value`; `--external-snat` is a switch; optional flags are left out
//! when unset.

/// Operator flags: the operator's own [`Args`](enipool_operator::args::Args), so a flag added to
/// the operator is one the runner and the chart test know.
pub use enipool_operator::args::{Args as OperatorFlags, LogFormat};

/// The operator binary's defaults for `cluster_name`, with `identity` as given (the binary's own
/// default, POD_NAME or the hostname, is never relied on: the runner and the chart both pass it).
pub fn operator_flags(cluster_name: &str, identity: &str) -> OperatorFlags {
    let mut f = OperatorFlags::defaults(cluster_name);
    f.identity = Some(identity.to_string());
    f
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
    /// `--snat-port-randomization`.
    pub snat_port_randomization: String,
    /// `--snat-exclude-cidrs` (comma-joined; left out when empty).
    pub snat_exclude_cidrs: Vec<String>,
    /// `--leak-grace-seconds`.
    pub leak_grace_seconds: u64,
    /// `--publish-debounce-ms`.
    pub publish_debounce_ms: u64,
    /// `--host-repair-interval-seconds`.
    pub host_repair_interval_seconds: u64,
    /// `--cni-conf-source` (left out when unset; the chart passes [`CHART_CNI_CONF_SOURCE`]).
    pub cni_conf_source: Option<String>,
    /// `--cni-conf-dir` (left out when unset; the chart passes [`CHART_CNI_CONF_DIR`]).
    pub cni_conf_dir: Option<String>,
    /// `--cni-conf-name`.
    pub cni_conf_name: String,
    /// `--cni-exclusive` (a switch).
    pub cni_exclusive: bool,
    /// `--cni-uninstall` (a switch).
    pub cni_uninstall: bool,
    /// `--cni-bin-dir` (left out when unset; the chart passes [`CHART_CNI_BIN_DIR`] with
    /// `--cni-uninstall`).
    pub cni_bin_dir: Option<String>,
    /// `--startup-taint` (left out when unset).
    pub startup_taint: Option<String>,
    /// `--annotate-pod-ip` (a switch).
    pub annotate_pod_ip: bool,
    /// `--ip-family` (`IPv4` or `IPv6`; the chart's `ipFamily`, as the operator's).
    pub ip_family: String,
    /// `--ipv4-egress-cidr`.
    pub ipv4_egress_cidr: String,
    /// `--netns`: the test platform's node namespace. Never set by the chart.
    pub netns: Option<String>,
    /// `--log-format` (`text` or `json`).
    pub log_format: String,
}

/// The environment the chart gives the agent besides `NODE_NAME`: glibc's arena cap (see the
/// DaemonSet template for why).
pub const MALLOC_ARENA_MAX: (&str, &str) = ("MALLOC_ARENA_MAX", "1");

/// Where the chart mounts the rendered conflist in the agent container.
pub const CHART_CNI_CONF_SOURCE: &str = "/etc/enipool/install/conflist.json";
/// Where the chart mounts the host's CNI config dir in the agent container.
pub const CHART_CNI_CONF_DIR: &str = "/host/cni/net.d";
/// Where the chart mounts the host's CNI bin dir in the agent container (with `cni.uninstall`).
pub const CHART_CNI_BIN_DIR: &str = "/host/cni/bin";

impl AgentFlags {
    /// The binary's defaults for `node_name`.
    pub fn new(node_name: &str) -> AgentFlags {
        AgentFlags {
            node_name: node_name.to_string(),
            socket: "/run/enipool/cni.sock".into(),
            state_dir: "/var/lib/enipool".into(),
            del_journal_dir: "/var/lib/enipool/del-journal".into(),
            metrics_addr: "0.0.0.0:61688".into(),
            introspection_addr: "127.0.0.1:61689".into(),
            mtu: 9001,
            external_snat: false,
            snat_port_randomization: "fully-random".into(),
            snat_exclude_cidrs: Vec::new(),
            leak_grace_seconds: 600,
            publish_debounce_ms: 1000,
            host_repair_interval_seconds: 30,
            cni_conf_source: None,
            cni_conf_dir: None,
            cni_conf_name: "05-enipool.conflist".into(),
            cni_exclusive: false,
            cni_uninstall: false,
            cni_bin_dir: None,
            startup_taint: None,
            annotate_pod_ip: false,
            ip_family: "IPv4".into(),
            ipv4_egress_cidr: "169.254.172.0/22".into(),
            netns: None,
            log_format: "text".into(),
        }
    }
}

fn flag(out: &mut Vec<String>, name: &str, value: impl std::fmt::Display) {
    out.push(format!("--{name}={value}"));
}

/// The operator's command line (without the program name), as the operator renders it.
pub fn operator_args(cfg: &OperatorFlags) -> Vec<String> {
    cfg.to_args()
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
    flag(&mut a, "snat-port-randomization", &cfg.snat_port_randomization);
    if !cfg.snat_exclude_cidrs.is_empty() {
        flag(&mut a, "snat-exclude-cidrs", cfg.snat_exclude_cidrs.join(","));
    }
    flag(&mut a, "leak-grace-seconds", cfg.leak_grace_seconds);
    flag(&mut a, "publish-debounce-ms", cfg.publish_debounce_ms);
    flag(&mut a, "host-repair-interval-seconds", cfg.host_repair_interval_seconds);
    if let Some(v) = &cfg.cni_conf_source {
        flag(&mut a, "cni-conf-source", v);
    }
    if let Some(v) = &cfg.cni_conf_dir {
        flag(&mut a, "cni-conf-dir", v);
    }
    flag(&mut a, "cni-conf-name", &cfg.cni_conf_name);
    if cfg.cni_exclusive {
        a.push("--cni-exclusive".into());
    }
    if cfg.cni_uninstall {
        a.push("--cni-uninstall".into());
    }
    if let Some(v) = &cfg.cni_bin_dir {
        flag(&mut a, "cni-bin-dir", v);
    }
    if let Some(v) = &cfg.startup_taint {
        flag(&mut a, "startup-taint", v);
    }
    if cfg.annotate_pod_ip {
        a.push("--annotate-pod-ip".into());
    }
    flag(&mut a, "ip-family", &cfg.ip_family);
    flag(&mut a, "ipv4-egress-cidr", &cfg.ipv4_egress_cidr);
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
        let o = operator_args(&operator_flags("c", "op-0"));
        assert_eq!(o[0], "--cluster-name=c");
        assert!(o.contains(&"--budget-share=0.5".to_string()));
        assert!(!o.iter().any(|s| s.starts_with("--region")
            || s.starts_with("--mutate-qps")
            || s.starts_with("--node-selector")));
        let mut cfg = operator_flags("c", "op-0");
        cfg.node_selector = Some("enipool-e2e/run=e2e-ep0000-abcd".into());
        let o = operator_args(&cfg);
        assert!(o.contains(&"--node-selector=enipool-e2e/run=e2e-ep0000-abcd".to_string()));
        assert_eq!(o.last().map(String::as_str), Some("--log-format=text"));
    }
}
