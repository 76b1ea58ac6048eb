//! Command line (every flag also from `ENIPOOL_AGENT_<NAME>`).

use clap::{Parser, Subcommand, ValueEnum};
use ipnet::Ipv4Net;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The enipool node agent.
#[derive(Debug, Parser)]
// A subcommand runs without the agent's required flags (`sysctl-init` needs no node name).
#[command(name = "enipool-agent", version, about, subcommand_negates_reqs = true)]
pub struct Args {
    /// Name of this node (and of its ENIPool); from the downward API. Required to run the agent.
    #[arg(long, env = "ENIPOOL_AGENT_NODE_NAME", required = true)]
    pub node_name: Option<String>,
    /// Unix socket the CNI shim connects to (created mode 0600).
    #[arg(long, env = "ENIPOOL_AGENT_SOCKET", default_value = enipool_cni::proto::DEFAULT_AGENT_SOCKET)]
    pub socket: PathBuf,
    /// Directory of the durable allocation store.
    #[arg(long, env = "ENIPOOL_AGENT_STATE_DIR", default_value = "/var/lib/enipool")]
    pub state_dir: PathBuf,
    /// Directory of the shim's DEL journal, drained at start.
    #[arg(long, env = "ENIPOOL_AGENT_DEL_JOURNAL_DIR", default_value = enipool_cni::proto::DEFAULT_DEL_JOURNAL_DIR)]
    pub del_journal_dir: PathBuf,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, env = "ENIPOOL_AGENT_METRICS_ADDR", default_value = "0.0.0.0:61688")]
    pub metrics_addr: SocketAddr,
    /// Address of the introspection endpoint (keep it on loopback).
    #[arg(long, env = "ENIPOOL_AGENT_INTROSPECTION_ADDR", default_value = "127.0.0.1:61689")]
    pub introspection_addr: SocketAddr,
    /// MTU of secondary ENIs and pod interfaces.
    #[arg(long, env = "ENIPOOL_AGENT_MTU", default_value_t = 9001)]
    pub mtu: u32,
    /// SNAT is done outside the node (NAT gateway): no SNAT rule; secondary-ENI pods send all
    /// traffic by their ENI.
    #[arg(long, env = "ENIPOOL_AGENT_EXTERNAL_SNAT")]
    pub external_snat: bool,
    /// How SNAT picks source ports: `fully-random` (a random port per connection), `random` (a
    /// random offset) or `sequential` (the kernel's default).
    #[arg(long, env = "ENIPOOL_AGENT_SNAT_PORT_RANDOMIZATION", default_value = "fully-random")]
    pub snat_port_randomization: crate::hostnet::SnatPorts,
    /// Destinations never SNATed besides the VPC CIDRs (comma separated).
    #[arg(long, env = "ENIPOOL_AGENT_SNAT_EXCLUDE_CIDRS", value_delimiter = ',')]
    pub snat_exclude_cidrs: Vec<Ipv4Net>,
    /// Seconds an allocation without a host veth survives a restart before it is freed (after a
    /// reboot it is freed at once: no pod survives one).
    #[arg(long, env = "ENIPOOL_AGENT_LEAK_GRACE_SECONDS", default_value_t = 600)]
    pub leak_grace_seconds: u64,
    /// How long an ADD that finds the pool empty waits for the operator to grow it before it
    /// fails (milliseconds; 0 = fail at once). It does not wait when the pool's conditions say
    /// the subnet or the node is exhausted. Keep it well under the CNI plugin's `timeoutMs`.
    #[arg(long, env = "ENIPOOL_AGENT_ADD_WAIT_MS", default_value_t = 5000)]
    pub add_wait_ms: u64,
    /// Debounce of `status.agent` publications, in milliseconds.
    #[arg(long, env = "ENIPOOL_AGENT_PUBLISH_DEBOUNCE_MS", default_value_t = 1000)]
    pub publish_debounce_ms: u64,
    /// How often (seconds) the node's rules, routes and nftables table are compared with what
    /// the agent programmed and anything missing is put back; a removal of a rule or route also
    /// triggers the check at once. 0 checks only on removals.
    #[arg(long, env = "ENIPOOL_AGENT_HOST_REPAIR_INTERVAL_SECONDS", default_value_t = 30)]
    pub host_repair_interval_seconds: u64,
    /// Rebuild the allocation store from the pods wired on the host when the start-up check finds
    /// that it does not match the node (missing, empty, or behind the epoch this node's agent
    /// published; or pods wired that it does not hold). Without it the agent refuses to serve.
    /// Does nothing when the store matches: unset it once the rebuild is done.
    #[arg(long, env = "ENIPOOL_AGENT_REBUILD_STORE_FROM_HOST")]
    pub rebuild_store_from_host: bool,
    /// The rendered CNI network config (the chart mounts it from a ConfigMap). With
    /// `--cni-conf-dir`, the agent writes it into that dir once it can serve, and puts it back
    /// when it goes missing or is changed there.
    #[arg(long, env = "ENIPOOL_AGENT_CNI_CONF_SOURCE", requires = "cni_conf_dir")]
    pub cni_conf_source: Option<PathBuf>,
    /// The container runtime's CNI config dir (`/etc/cni/net.d` on the host).
    #[arg(long, env = "ENIPOOL_AGENT_CNI_CONF_DIR", requires = "cni_conf_source")]
    pub cni_conf_dir: Option<PathBuf>,
    /// File name of the config in `--cni-conf-dir`.
    #[arg(long, env = "ENIPOOL_AGENT_CNI_CONF_NAME", default_value = "05-enipool.conflist")]
    pub cni_conf_name: String,
    /// When the agent is stopped (SIGTERM, SIGINT), remove the CNI config it writes and, with
    /// `--cni-bin-dir`, the enipool-cni binary: for uninstalling enipool from a node. Pods still
    /// running keep their networking; new pods cannot start on the node until a CNI is installed
    /// again (also between an agent's stop and its replacement's start during an upgrade).
    #[arg(long, env = "ENIPOOL_AGENT_CNI_UNINSTALL", requires = "cni_conf_dir")]
    pub cni_uninstall: bool,
    /// The container runtime's CNI plugin binary dir (`/opt/cni/bin` on the host): where
    /// `--cni-uninstall` removes the shim from, and where `support` reads the shim's digest
    /// (default there: `/opt/cni/bin`).
    #[arg(long, env = "ENIPOOL_AGENT_CNI_BIN_DIR")]
    pub cni_bin_dir: Option<PathBuf>,
    /// Move every other network config in `--cni-conf-dir` aside (renamed `*.enipool-bak`), now
    /// and whenever one appears, so no other CNI can take the node's pods.
    #[arg(long, env = "ENIPOOL_AGENT_CNI_EXCLUSIVE")]
    pub cni_exclusive: bool,
    /// A taint the node is registered with (by its node group) to keep pods away until the agent
    /// can serve; the agent removes it from its own Node once it can. Nothing happens when the
    /// Node does not carry it.
    #[arg(long, env = "ENIPOOL_AGENT_STARTUP_TAINT")]
    pub startup_taint: Option<String>,
    /// Annotate each pod the agent wires with its address (`enipool.io/pod-ips`). Needs `patch`
    /// on pods (the chart grants it with `agent.annotatePodIP`).
    #[arg(long, env = "ENIPOOL_AGENT_ANNOTATE_POD_IP")]
    pub annotate_pod_ip: bool,
    /// The cluster's pod address family, IPv4 or IPv6 (the chart's `ipFamily`, as the operator's
    /// `--ip-family`): which host-wide sysctls `sysctl-init` sets and the agent checks at start.
    /// What pods get follows the ENIPool's `status.effective.ipFamily`.
    #[arg(long, env = "ENIPOOL_AGENT_IP_FAMILY", default_value = "IPv4")]
    pub ip_family: enipool_crds::IpFamily,
    /// IPv6 clusters: the node-local IPv4 range pods reach IPv4 destinations from (SNATed to the
    /// node's address). Each pod holds one address of it; a /22 serves 1,022 pods.
    #[arg(long, env = "ENIPOOL_AGENT_IPV4_EGRESS_CIDR", default_value = "169.254.172.0/22")]
    pub ipv4_egress_cidr: Ipv4Net,
    /// Network namespace to program as "the host" (default: the agent's own).
    #[arg(long, env = "ENIPOOL_AGENT_NETNS")]
    pub netns: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "ENIPOOL_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Subcommand (default: run the agent).
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Remove enipool's node-wide host state (nftables table `ip enipool`, fwmark rule) and exit.
    Uninstall,
    /// Set the host-wide sysctls the agent needs (`net.ipv4.ip_forward=1`) where they differ,
    /// and exit. Writes `/proc/sys`: run it privileged (the chart's init container), so that the
    /// agent itself runs with capabilities only.
    SysctlInit,
    /// Write a support bundle (one .tar.gz): the agent's allocations and pool view, the host's
    /// rules, routes, links, neighbours and enipool nftables table, CNI configs, the shim's log
    /// and DEL journal, sysctls and versions. Reads the agent's other flags for where each is;
    /// never includes credentials.
    Support {
        /// Where to write the archive; `-` is standard output (never a terminal).
        #[arg(long, short = 'o', default_value = "-")]
        output: PathBuf,
        /// The shim's log file, when not named by the enipool conflist's `logFile`.
        #[arg(long)]
        shim_log: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }

    #[test]
    fn node_name_is_required_only_to_run_the_agent() {
        use super::{Args, Cmd};
        use clap::Parser;
        assert!(Args::try_parse_from(["enipool-agent"]).is_err());
        let a = Args::try_parse_from(["enipool-agent", "--node-name=n"]).unwrap();
        assert_eq!(a.node_name.as_deref(), Some("n"));
        assert!(a.command.is_none());
        let a =
            Args::try_parse_from(["enipool-agent", "--log-format=json", "sysctl-init"]).unwrap();
        assert!(matches!(a.command, Some(Cmd::SysctlInit)));
        let a = Args::try_parse_from(["enipool-agent", "support", "--output", "b.tgz"]).unwrap();
        assert!(
            matches!(a.command, Some(Cmd::Support { ref output, .. }) if output.to_str() == Some("b.tgz"))
        );
        let a = Args::try_parse_from(["enipool-agent", "--ip-family=IPv6", "sysctl-init"]).unwrap();
        assert_eq!(a.ip_family, enipool_crds::IpFamily::IPv6);
        assert_eq!(a.ipv4_egress_cidr.to_string(), "169.254.172.0/22");
        let a = Args::try_parse_from(["enipool-agent", "uninstall"]).unwrap();
        assert!(matches!(a.command, Some(Cmd::Uninstall)));
        let a = Args::try_parse_from(["enipool-agent", "--node-name=n"]).unwrap();
        assert!(!a.rebuild_store_from_host, "a rebuild is never the default");
        let a =
            Args::try_parse_from(["enipool-agent", "--node-name=n", "--rebuild-store-from-host"])
                .unwrap();
        assert!(a.rebuild_store_from_host);
        assert!(
            Args::try_parse_from(["enipool-agent", "--node-name=n", "--cni-conf-dir=/x"]).is_err(),
            "a config dir without the config to write is refused"
        );
    }
}
