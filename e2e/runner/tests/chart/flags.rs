//! Flags: the chart and the runner (`cluster::flags`) use the same command lines,
//! and every flag the chart passes exists in the binaries.

use super::{container, find, render, root, strings, Values, NAMESPACE, RELEASE};
use cluster::flags::{
    agent_args, operator_args, operator_flags, AgentFlags, LogFormat, OperatorFlags,
    CHART_CNI_BIN_DIR, CHART_CNI_CONF_DIR, CHART_CNI_CONF_SOURCE,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Chart values equivalent to the given flags (the inverse of the chart's templates).
fn values_for(op: &OperatorFlags, ag: &AgentFlags) -> Value {
    let split = |addr: &str| -> (String, u16) {
        let (h, p) = addr.rsplit_once(':').expect("host:port");
        (h.to_string(), p.parse().expect("port"))
    };
    let (op_host, op_port) = (op.metrics_addr.ip().to_string(), op.metrics_addr.port());
    let (ag_host, ag_port) = split(&ag.metrics_addr);
    assert_eq!(
        op.identity.as_deref(),
        Some("$(POD_NAME)"),
        "the chart's operator identity is the pod name"
    );
    assert_eq!(ag.node_name, "$(NODE_NAME)", "the chart's agent node name is the downward API's");
    assert_eq!(op.lease_namespace, NAMESPACE, "the chart passes its release namespace");
    assert!(ag.netns.is_none(), "--netns is for the test platform only");
    assert_eq!(
        (ag.cni_conf_source.as_deref(), ag.cni_conf_dir.as_deref()),
        (Some(CHART_CNI_CONF_SOURCE), Some(CHART_CNI_CONF_DIR)),
        "the chart's agent writes the conflist it mounts into the host dir it mounts"
    );
    assert_eq!(
        ag.cni_bin_dir.as_deref(),
        ag.cni_uninstall.then_some(CHART_CNI_BIN_DIR),
        "the chart passes the bin dir it mounts exactly when the agent uninstalls the plugin"
    );
    assert_eq!(op.ip_family.as_str(), ag.ip_family, "one family for the whole cluster");
    json!({
        "clusterName": op.cluster_name,
        "ipFamily": ag.ip_family,
        "operator": {
            "ec2Endpoint": op.ec2_endpoint.clone().unwrap_or_default(),
            "region": op.region.clone().unwrap_or_default(),
            "metrics": {"bindAddress": op_host, "port": op_port},
            "leaseName": op.lease_name,
            "leaseDurationSeconds": op.lease_duration_seconds,
            "ec2": {
                "mutateQPS": op.mutate_qps, "mutateBurst": op.mutate_burst,
                "describeQPS": op.describe_qps, "describeBurst": op.describe_burst,
                "budgetShare": op.budget_share,
            },
            "gcIntervalSeconds": op.gc_interval_seconds,
            "leakGraceSeconds": op.leak_grace_seconds,
            "resyncSeconds": op.resync_seconds,
            "agentStaleSeconds": op.agent_stale_seconds,
            "terminationWaitSeconds": op.termination_wait_seconds,
            "workers": op.workers,
            "vpcCIDRs": op.vpc_cidrs,
            "managedNodeSelector": op.node_selector.clone().unwrap_or_default(),
            "logFormat": op.log_format,
        },
        "agent": {
            "socket": ag.socket,
            "stateDir": ag.state_dir,
            "delJournalDir": ag.del_journal_dir,
            "metrics": {"bindAddress": ag_host, "port": ag_port},
            "introspectionAddr": ag.introspection_addr,
            "mtu": ag.mtu,
            "externalSNAT": ag.external_snat,
            "snatPortRandomization": ag.snat_port_randomization,
            "snatExcludeCIDRs": ag.snat_exclude_cidrs,
            "leakGraceSeconds": ag.leak_grace_seconds,
            "publishDebounceMs": ag.publish_debounce_ms,
            "hostRepairIntervalSeconds": ag.host_repair_interval_seconds,
            "startupTaint": {
                "enabled": ag.startup_taint.is_some(),
                "key": ag.startup_taint.clone().unwrap_or_else(|| "unused".into()),
            },
            "annotatePodIP": ag.annotate_pod_ip,
            "ipv4EgressCIDR": ag.ipv4_egress_cidr,
            "logFormat": ag.log_format,
        },
        "cni": {
            "confFileName": ag.cni_conf_name,
            "exclusive": ag.cni_exclusive,
            "uninstall": ag.cni_uninstall,
        },
    })
}

/// The agent flags the chart renders for these defaults: the binary's, plus the conflist paths
/// it mounts.
fn chart_agent(node: &str) -> AgentFlags {
    let mut ag = AgentFlags::new(node);
    ag.cni_conf_source = Some(CHART_CNI_CONF_SOURCE.into());
    ag.cni_conf_dir = Some(CHART_CNI_CONF_DIR.into());
    ag.startup_taint = Some("enipool.io/agent-not-ready".into());
    ag
}

/// Asserts the rendered operator Deployment, agent DaemonSet and conflist carry exactly these flags.
fn assert_chart_flags(docs: &[Value], op: &OperatorFlags, ag: &AgentFlags) {
    let deploy = find(docs, "Deployment", &format!("{RELEASE}-operator"));
    let c = container(deploy, "operator");
    assert_eq!(strings(&c["args"]), operator_args(op), "operator args: chart vs runner");
    assert!(c["command"].is_null(), "the image's entrypoint is the binary");
    let ds = find(docs, "DaemonSet", &format!("{RELEASE}-agent"));
    let c = container(ds, "agent");
    assert_eq!(strings(&c["args"]), agent_args(ag), "agent args: chart vs runner");
    // Env vars are an alternative spelling of flags: the chart sets none with the binaries' prefix.
    for w in [deploy, ds] {
        for c in w["spec"]["template"]["spec"]["containers"].as_array().unwrap() {
            for e in c["env"].as_array().into_iter().flatten() {
                let n = e["name"].as_str().unwrap();
                assert!(!n.starts_with("ENIPOOL_"), "flag passed by env {n}: use args");
            }
        }
    }
    // The conflist agrees with the agent's flags.
    let cm = find(docs, "ConfigMap", &format!("{RELEASE}-cni"));
    let conflist: Value =
        serde_json::from_str(cm["data"]["conflist.json"].as_str().unwrap()).unwrap();
    assert_eq!(conflist["plugins"][0]["agentSocket"], ag.socket);
    assert_eq!(conflist["plugins"][0]["delJournalDir"], ag.del_journal_dir);
    assert_eq!(conflist["plugins"][0]["mtu"], ag.mtu);
}

#[test]
fn default_chart_flags_are_the_binaries_defaults() {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let mut op = operator_flags("ci-default", "$(POD_NAME)");
    op.lease_namespace = NAMESPACE.into();
    op.log_format = LogFormat::Json; // the one deliberate difference: JSON logs in a cluster
    let mut ag = chart_agent("$(NODE_NAME)");
    ag.log_format = "json".into();
    assert_chart_flags(&docs, &op, &ag);
}

#[test]
fn chart_renders_the_runners_flags_for_equivalent_values() {
    // Every optional flag set, every value away from its default (like the runner's test timings).
    let mut op = operator_flags("e2e-cluster", "$(POD_NAME)");
    op.ec2_endpoint = Some("http://127.0.0.1:5000".into());
    op.region = Some("us-west-2".into());
    op.metrics_addr = "127.0.0.1:18080".parse().unwrap();
    op.lease_namespace = NAMESPACE.into();
    op.lease_name = "enipool-operator-e2e".into();
    op.lease_duration_seconds = 6;
    op.mutate_qps = Some(2.5);
    op.mutate_burst = Some(20);
    op.describe_qps = Some(10.0);
    op.describe_burst = Some(40);
    op.budget_share = 0.25;
    op.gc_interval_seconds = 10;
    op.leak_grace_seconds = 20;
    op.resync_seconds = 10;
    op.agent_stale_seconds = 60;
    op.termination_wait_seconds = Some(900);
    op.workers = 4;
    op.vpc_cidrs = vec!["10.0.0.0/16".into(), "100.64.0.0/16".into()];
    op.node_selector = Some("enipool.io/enabled=true".into());
    op.log_format = LogFormat::Text;
    let mut ag = chart_agent("$(NODE_NAME)");
    ag.socket = "/run/enipool-e2e/cni.sock".into();
    ag.cni_conf_name = "00-enipool-e2e.conflist".into();
    ag.cni_exclusive = true;
    ag.cni_uninstall = true;
    ag.cni_bin_dir = Some(CHART_CNI_BIN_DIR.into());
    ag.startup_taint = Some("example.com/cni-not-ready".into());
    ag.state_dir = "/var/lib/enipool-e2e".into();
    ag.del_journal_dir = "/var/lib/enipool-e2e/del".into();
    ag.metrics_addr = "127.0.0.1:16000".into();
    ag.introspection_addr = "127.0.0.1:16001".into();
    ag.mtu = 1500;
    ag.external_snat = true;
    ag.snat_port_randomization = "sequential".into();
    ag.snat_exclude_cidrs = vec!["192.168.0.0/16".into()];
    ag.leak_grace_seconds = 30;
    ag.publish_debounce_ms = 200;
    ag.host_repair_interval_seconds = 5;
    ag.annotate_pod_ip = true;
    ag.ip_family = "IPv6".into();
    op.ip_family = enipool_crds::IpFamily::IPv6;
    ag.ipv4_egress_cidr = "169.254.200.0/22".into();
    ag.log_format = "text".into();
    let docs = render(&Values::Json(values_for(&op, &ag))).unwrap();
    assert_chart_flags(&docs, &op, &ag);
    // And the other way round: the defaults, as values, render the default flags.
    let (mut op, mut ag) = (operator_flags("x", "$(POD_NAME)"), chart_agent("$(NODE_NAME)"));
    op.lease_namespace = NAMESPACE.into();
    let docs = render(&Values::Json(values_for(&op, &ag))).unwrap();
    assert_chart_flags(&docs, &op, &ag);
    ag.external_snat = false;
    assert!(!agent_args(&ag).iter().any(|a| a.starts_with("--netns")));
}

#[test]
fn flags_exist_in_the_binaries() {
    // The operator's real parser accepts the chart's command line.
    use clap::Parser;
    let mut op = operator_flags("c", "$(POD_NAME)");
    op.ec2_endpoint = Some("http://127.0.0.1:1".into());
    op.region = Some("us-west-2".into());
    op.mutate_qps = Some(1.5);
    op.mutate_burst = Some(3);
    op.describe_qps = Some(4.0);
    op.describe_burst = Some(5);
    op.vpc_cidrs = vec!["10.0.0.0/16".into()];
    let argv = std::iter::once("enipool-operator".to_string()).chain(operator_args(&op));
    let parsed = enipool_operator::args::Args::try_parse_from(argv);
    assert!(parsed.is_ok(), "the operator rejects the chart's flags: {parsed:?}");
    // The agent's flags, from its clap definition (this crate does not link the agent).
    let src = std::fs::read_to_string(root().join("node-agent/src/args.rs")).unwrap();
    let known = long_flags(&src);
    let mut ag = AgentFlags::new("n");
    ag.external_snat = true;
    ag.snat_exclude_cidrs = vec!["10.9.0.0/16".into()];
    ag.netns = Some("/run/netns/x".into());
    ag.cni_conf_source = Some(CHART_CNI_CONF_SOURCE.into());
    ag.cni_conf_dir = Some(CHART_CNI_CONF_DIR.into());
    ag.cni_exclusive = true;
    ag.cni_uninstall = true;
    ag.cni_bin_dir = Some(CHART_CNI_BIN_DIR.into());
    ag.startup_taint = Some("enipool.io/agent-not-ready".into());
    ag.annotate_pod_ip = true;
    for a in agent_args(&ag) {
        let name = a.trim_start_matches("--").split('=').next().unwrap().to_string();
        assert!(
            known.contains(&name),
            "agent flag --{name} is not in node-agent/src/args.rs ({known:?})"
        );
    }
}

/// `cni.uninstall`: off by default (the agent leaves the plugin on the node when it stops, and
/// does not even mount the bin dir); on, the agent gets `--cni-uninstall`, the bin dir mounted
/// where `--cni-bin-dir` says, and nothing else changes.
#[test]
fn cni_uninstall_renders_the_flag_and_the_bin_dir_only_when_enabled() {
    let agent = |docs: &[Value]| {
        container(find(docs, "DaemonSet", &format!("{RELEASE}-agent")), "agent").clone()
    };
    let mounts = |c: &Value| -> Vec<(String, String)> {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].as_str().unwrap().into(), m["mountPath"].as_str().unwrap().into()))
            .collect()
    };
    let with = |uninstall: bool| {
        let values = json!({"clusterName": "c", "cni": {"uninstall": uninstall}});
        agent(&render(&Values::Json(values)).unwrap())
    };
    let (off, on) = (with(false), with(true));
    let (off_args, on_args) = (strings(&off["args"]), strings(&on["args"]));
    assert!(
        !off_args
            .iter()
            .any(|a| a.starts_with("--cni-uninstall") || a.starts_with("--cni-bin-dir")),
        "{off_args:?}"
    );
    assert!(!mounts(&off).iter().any(|(n, _)| n == "cni-bin-dir"), "{:?}", mounts(&off));
    let added: Vec<&String> = on_args.iter().filter(|a| !off_args.contains(a)).collect();
    assert_eq!(added, ["--cni-uninstall", &format!("--cni-bin-dir={CHART_CNI_BIN_DIR}")]);
    assert!(
        mounts(&on).contains(&("cni-bin-dir".into(), CHART_CNI_BIN_DIR.into())),
        "{:?}",
        mounts(&on)
    );
}

/// `--long-names` of the `#[arg(long ...)] pub field: T` fields of a clap derive.
fn long_flags(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut pending = false;
    for line in src.lines().map(str::trim) {
        if line.starts_with("#[arg(") && line.contains("long") {
            pending = true;
        } else if pending && line.starts_with("pub ") {
            let field = line["pub ".len()..].split(':').next().unwrap().trim();
            out.insert(field.replace('_', "-"));
            pending = false;
        }
    }
    out
}

/// The post-delete hook's `enipool-operator cleanup` command line: accepted by the real parser
/// (`enipool_operator::args::parse_invocation`, what `main` uses), and naming the same Lease,
/// Lease namespace and node selector as the operator Deployment, so it waits for the right Lease
/// and releases the same pools the operator manages.
#[test]
fn cleanup_hook_flags_are_the_subcommands_and_match_the_operators() {
    use enipool_operator::args::{parse_invocation, Invocation};
    for (values, prefix) in [("default-values.yaml", "enipool"), ("custom-values.yaml", "netpool")]
    {
        let docs = render(&Values::File(values)).unwrap();
        let job = find(&docs, "Job", &format!("{prefix}-cleanup"));
        let args = strings(&container(job, "cleanup")["args"]);
        let argv = std::iter::once("enipool-operator".to_string()).chain(args.iter().cloned());
        let parsed = parse_invocation(argv);
        let Ok(Invocation::Cleanup(c)) = parsed else {
            panic!("{values}: the cleanup subcommand rejects the hook's flags {args:?}: {parsed:?}")
        };
        let deploy = find(&docs, "Deployment", &format!("{prefix}-operator"));
        let op = strings(&container(deploy, "operator")["args"]);
        let flag = |all: &[String], name: &str| {
            let p = format!("--{name}=");
            all.iter().find_map(|a| a.strip_prefix(&p).map(String::from))
        };
        for name in ["lease-namespace", "lease-name", "lease-duration-seconds", "node-selector"] {
            assert_eq!(flag(&args, name), flag(&op, name), "{values}: --{name}");
        }
        assert_eq!(flag(&args, "identity").as_deref(), Some("$(POD_NAME)"));
        assert_eq!(c.lease_namespace, NAMESPACE);
        assert_eq!(c.config().node_selector, flag(&op, "node-selector"));
        // The hook's defaults stand: the wait is the subcommand's own (120 s).
        assert_eq!(c.timeout_seconds, 120, "{values}");
    }
}
