//! The Helm chart (`charts/enipool`): lint, offline schema validation, the flags it passes against
//! the runner's, RBAC against `rbac-expectations.yaml` and against the code, the agent's
//! ValidatingAdmissionPolicy evaluated in CEL, the install-cni script run for real, the IAM policy
//! against the operator's EC2 calls, and the image build files.
//!
//! Needs `helm` (v3) and `kubernetes-validate` (`scripts/install-deps` installs both); a missing
//! tool fails the test, it never skips.

use anyhow::{bail, Context, Result};
use enipool_e2e::runner::flags::{agent_args, operator_args, AgentFlags, OperatorFlags};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const RELEASE: &str = "enipool";
const NAMESPACE: &str = "kube-system";
const NODE_NAME_CLAIM: &str = "authentication.kubernetes.io/node-name";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn chart() -> PathBuf {
    root().join("charts/enipool")
}

/// `helm`: /usr/local/bin/helm, else the one on PATH. Panics (test failure) when neither exists.
fn helm() -> PathBuf {
    let fixed = PathBuf::from("/usr/local/bin/helm");
    if fixed.exists() {
        return fixed;
    }
    if let Some(p) = which("helm") {
        return p;
    }
    panic!("helm not found (/usr/local/bin/helm or PATH): run scripts/install-deps, which installs helm v3");
}

fn kubernetes_validate() -> PathBuf {
    which("kubernetes-validate").unwrap_or_else(|| {
        panic!(
            "kubernetes-validate not found on PATH: run scripts/install-deps, which installs it \
             (pip kubernetes-validate)"
        )
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<(bool, String, String)> {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Values files the tests render with: the chart's CI files, or JSON written to a temp file.
enum Values<'a> {
    File(&'a str),
    Json(Value),
}

/// `helm template` → the rendered YAML text.
fn render_text(values: &Values, extra: &[&str]) -> Result<String> {
    let tmp = tempfile::tempdir()?;
    let file = match values {
        Values::File(name) => chart().join("ci").join(name),
        Values::Json(v) => {
            let p = tmp.path().join("values.json");
            std::fs::write(&p, serde_json::to_vec_pretty(v)?)?;
            p
        }
    };
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE, "-f"])
        .arg(&file)
        .args(extra);
    let (ok, stdout, stderr) = run(&mut cmd, None)?;
    if !ok {
        bail!("helm template failed: {stderr}");
    }
    Ok(stdout)
}

/// `helm template` → the rendered objects.
fn render(values: &Values) -> Result<Vec<Value>> {
    parse_docs(&render_text(values, &[])?)
}

fn parse_docs(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).context("parsing rendered YAML")?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered chart"))
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn init_container<'a>(workload: &'a Value, name: &str) -> Option<&'a Value> {
    workload["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
}

/// `hostnet::CAPABILITIES` of node-agent/src/hostnet/mod.rs: what the agent's root test
/// (node-agent/tests/unprivileged_root.rs) proves it runs with (this crate does not link the agent).
fn agent_capabilities() -> Vec<String> {
    let src = std::fs::read_to_string(root().join("node-agent/src/hostnet/mod.rs")).unwrap();
    let line = src
        .lines()
        .find(|l| l.starts_with("pub const CAPABILITIES: &[&str] = &["))
        .expect("pub const CAPABILITIES in node-agent/src/hostnet/mod.rs");
    line.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().expect("string").to_string()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Lint and schema validation

#[test]
fn helm_lint_strict() {
    for values in ["default-values.yaml", "custom-values.yaml"] {
        let mut cmd = Command::new(helm());
        cmd.args(["lint", "--strict"]).arg(chart()).arg("-f").arg(chart().join("ci").join(values));
        let (ok, out, err) = run(&mut cmd, None).unwrap();
        assert!(ok, "helm lint --strict with {values} failed:\n{out}\n{err}");
    }
    // Without the one required value the chart refuses to render, saying what is missing.
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE]).arg(chart());
    let (ok, _, err) = run(&mut cmd, None).unwrap();
    assert!(!ok && err.contains("clusterName is required"), "{err}");
    // The values schema rejects a wrong type and an unknown key.
    for bad in ["agent.mtu=big", "operator.bogus=1", "operator.logFormat=xml"] {
        let mut cmd = Command::new(helm());
        cmd.args(["template", RELEASE]).arg(chart()).args(["--set", "clusterName=c", "--set", bad]);
        let (ok, _, err) = run(&mut cmd, None).unwrap();
        assert!(!ok && err.contains("schema"), "--set {bad} was accepted: {err}");
    }
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    };
    let (generated, in_chart) = (root().join("crds"), chart().join("crds"));
    assert_eq!(
        names(&generated),
        names(&in_chart),
        "charts/enipool/crds/ must hold exactly the files of crds/"
    );
    for n in names(&generated) {
        let a = std::fs::read(generated.join(&n)).unwrap();
        let b = std::fs::read(in_chart.join(&n)).unwrap();
        assert!(
            a == b,
            "charts/enipool/crds/{n} differs from crds/{n}: cp crds/*.yaml charts/enipool/crds/"
        );
    }
}

#[test]
fn rendered_manifests_validate_against_kubernetes_schemas_strictly() {
    let validator = kubernetes_validate();
    for values in ["default-values.yaml", "custom-values.yaml"] {
        let text = render_text(&Values::File(values), &["--include-crds"]).unwrap();
        // Oldest supported (the chart's kubeVersion) and newest known.
        for version in ["1.30.0", "1.37.0"] {
            let mut cmd = Command::new(&validator);
            cmd.args(["--strict", "--quiet", "-k", version, "-"]);
            let (ok, out, err) = run(&mut cmd, Some(&text)).unwrap();
            assert!(ok, "kubernetes-validate --strict ({values}, {version}):\n{out}\n{err}");
            // Only our own custom resources may lack a schema; they are checked below.
            for line in
                out.lines().chain(err.lines()).filter(|l| l.contains("Couldn't find schema"))
            {
                assert!(line.contains("enipool.io/"), "{values}: {line}");
            }
        }
        // Custom resources against the CRD's openAPIV3Schema.
        let docs = parse_docs(&text).unwrap();
        for cr in docs.iter().filter(|d| d["apiVersion"] == "enipool.io/v1alpha1") {
            let kind = cr["kind"].as_str().unwrap();
            let crd = docs
                .iter()
                .find(|d| {
                    d["kind"] == "CustomResourceDefinition" && d["spec"]["names"]["kind"] == kind
                })
                .unwrap_or_else(|| panic!("no CRD for {kind}"));
            let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            let validator = jsonschema::validator_for(schema).unwrap();
            let errors: Vec<String> = validator.iter_errors(cr).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{values}: {kind} does not match its CRD: {errors:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Flags: the chart and the runner use the same command lines

/// Chart values equivalent to the given flags (the inverse of the chart's templates).
fn values_for(op: &OperatorFlags, ag: &AgentFlags) -> Value {
    let split = |addr: &str| -> (String, u16) {
        let (h, p) = addr.rsplit_once(':').expect("host:port");
        (h.to_string(), p.parse().expect("port"))
    };
    let (op_host, op_port) = split(&op.metrics_addr);
    let (ag_host, ag_port) = split(&ag.metrics_addr);
    assert_eq!(op.identity, "$(POD_NAME)", "the chart's operator identity is the pod name");
    assert_eq!(ag.node_name, "$(NODE_NAME)", "the chart's agent node name is the downward API's");
    assert_eq!(op.lease_namespace, NAMESPACE, "the chart passes its release namespace");
    assert!(ag.netns.is_none(), "--netns is for the test platform only");
    json!({
        "clusterName": op.cluster_name,
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
            "snatExcludeCIDRs": ag.snat_exclude_cidrs,
            "leakGraceSeconds": ag.leak_grace_seconds,
            "publishDebounceMs": ag.publish_debounce_ms,
            "logFormat": ag.log_format,
        },
    })
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
    let mut op = OperatorFlags::new("ci-default", "$(POD_NAME)");
    op.lease_namespace = NAMESPACE.into();
    op.log_format = "json".into(); // the one deliberate difference: JSON logs in a cluster
    let mut ag = AgentFlags::new("$(NODE_NAME)");
    ag.log_format = "json".into();
    assert_chart_flags(&docs, &op, &ag);
}

#[test]
fn chart_renders_the_runners_flags_for_equivalent_values() {
    // Every optional flag set, every value away from its default (like the runner's test timings).
    let mut op = OperatorFlags::new("e2e-cluster", "$(POD_NAME)");
    op.ec2_endpoint = Some("http://127.0.0.1:5000".into());
    op.region = Some("us-west-2".into());
    op.metrics_addr = "127.0.0.1:18080".into();
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
    op.workers = 4;
    op.vpc_cidrs = vec!["10.0.0.0/16".into(), "100.64.0.0/16".into()];
    op.node_selector = Some("enipool.io/enabled=true".into());
    op.log_format = "text".into();
    let mut ag = AgentFlags::new("$(NODE_NAME)");
    ag.socket = "/run/enipool-e2e/cni.sock".into();
    ag.state_dir = "/var/lib/enipool-e2e".into();
    ag.del_journal_dir = "/var/lib/enipool-e2e/del".into();
    ag.metrics_addr = "127.0.0.1:16000".into();
    ag.introspection_addr = "127.0.0.1:16001".into();
    ag.mtu = 1500;
    ag.external_snat = true;
    ag.snat_exclude_cidrs = vec!["192.168.0.0/16".into()];
    ag.leak_grace_seconds = 30;
    ag.publish_debounce_ms = 200;
    ag.log_format = "text".into();
    let docs = render(&Values::Json(values_for(&op, &ag))).unwrap();
    assert_chart_flags(&docs, &op, &ag);
    // And the other way round: the defaults, as values, render the default flags.
    let (mut op, mut ag) =
        (OperatorFlags::new("x", "$(POD_NAME)"), AgentFlags::new("$(NODE_NAME)"));
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
    let mut op = OperatorFlags::new("c", "$(POD_NAME)");
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
    for a in agent_args(&ag) {
        let name = a.trim_start_matches("--").split('=').next().unwrap().to_string();
        assert!(
            known.contains(&name),
            "agent flag --{name} is not in node-agent/src/args.rs ({known:?})"
        );
    }
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

// ---------------------------------------------------------------------------------------------
// Workload shape

#[test]
fn operator_deployment_shape() {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let d = find(&docs, "Deployment", &format!("{RELEASE}-operator"));
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(spec["hostNetwork"], true, "the operator must not need enipool's pod networking");
    assert_eq!(spec["dnsPolicy"], "Default", "cluster DNS needs pod networking");
    let tolerated: Vec<&str> =
        spec["tolerations"].as_array().unwrap().iter().filter_map(|t| t["key"].as_str()).collect();
    assert!(tolerated.contains(&"node.kubernetes.io/not-ready"), "{tolerated:?}");
    let anti =
        &spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(anti[0]["topologyKey"], "kubernetes.io/hostname");
    let c = container(d, "operator");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let pdb = find(&docs, "PodDisruptionBudget", &format!("{RELEASE}-operator"));
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"], d["spec"]["selector"]);

    // IRSA annotation from values on the operator's ServiceAccount only.
    let docs = render(&Values::File("custom-values.yaml")).unwrap();
    let sa = find(&docs, "ServiceAccount", "enipool-ec2");
    assert!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_string());
    let d = find(&docs, "Deployment", "netpool-operator");
    assert_eq!(d["spec"]["template"]["spec"]["serviceAccountName"], "enipool-ec2");
    assert_eq!(d["spec"]["replicas"], 3);
    let pref = &d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert!(pref["preferredDuringSchedulingIgnoredDuringExecution"].is_array());
    assert!(d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"].is_object());
}

#[test]
fn agent_daemonset_shape_and_no_aws_credentials() {
    for (values, ds_name, sa_name) in [
        ("default-values.yaml", "enipool-agent", "enipool-agent"),
        ("custom-values.yaml", "netpool-agent", "netpool-agent"),
    ] {
        let docs = render(&Values::File(values)).unwrap();
        let ds = find(&docs, "DaemonSet", ds_name);
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(spec["hostNetwork"], true);
        assert_eq!(spec["serviceAccountName"], sa_name);
        assert!(
            ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"].is_string()
                || ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"].is_number()
        );
        let c = container(ds, "agent");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
        let init = init_container(ds, "install-cni").expect("install-cni init container");
        assert_ne!(init["securityContext"]["privileged"], true);
        assert_eq!(init["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        // No AWS credentials of any kind: env, IRSA/Pod Identity annotations, mounted files.
        let text = serde_json::to_string(ds).unwrap();
        for needle in ["AWS_", "aws-iam-token", "eks.amazonaws.com", "/.aws"] {
            assert!(!text.contains(needle), "{values}: the agent DaemonSet mentions {needle}");
        }
        let sa = find(&docs, "ServiceAccount", sa_name);
        assert!(sa["metadata"]["annotations"].is_null(), "{values}: agent SA has annotations");
        assert!(!strings(&c["args"]).iter().any(|a| a.starts_with("--netns")));
        // Host mounts: socket dir, state, netns in the agent; CNI dirs in the init container.
        let mounts = |c: &Value| -> Vec<String> {
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["mountPath"].as_str().unwrap().to_string())
                .collect()
        };
        let m = mounts(c);
        assert!(m.contains(&"/run/netns".to_string()), "{m:?}");
        let im = mounts(init);
        assert!(
            im.contains(&"/host/cni/bin".to_string())
                && im.contains(&"/host/cni/net.d".to_string())
        );
        let host_paths: Vec<&str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["hostPath"]["path"].as_str())
            .collect();
        let tolerations = &spec["tolerations"];
        assert_eq!(
            tolerations,
            &json!([{"operator": "Exists"}]),
            "the agent tolerates every taint"
        );
        if values == "default-values.yaml" {
            for p in
                ["/opt/cni/bin", "/etc/cni/net.d", "/run/enipool", "/var/lib/enipool", "/run/netns"]
            {
                assert!(host_paths.contains(&p), "{p} not mounted: {host_paths:?}");
            }
        } else {
            for p in [
                "/usr/libexec/cni",
                "/etc/cni/conf.d",
                "/run/netpool",
                "/var/lib/netpool",
                "/var/spool/netpool-del",
            ] {
                assert!(host_paths.contains(&p), "{p} not mounted: {host_paths:?}");
            }
            // A loopback metrics address: the probes must go to loopback too.
            assert_eq!(c["livenessProbe"]["httpGet"]["host"], "127.0.0.1");
        }
    }
}

#[test]
fn agent_runs_unprivileged_after_a_privileged_sysctl_init() {
    // Default: the privileged part is a run-to-completion init container, first (so a node that
    // cannot forward never gets the conflist), running the agent image's binary, no shell.
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let ds = find(&docs, "DaemonSet", &format!("{RELEASE}-agent"));
    let names: Vec<&str> = ds["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sysctl-init", "install-cni"]);
    let agent = container(ds, "agent");
    let init = init_container(ds, "sysctl-init").unwrap();
    assert_eq!(init["image"], agent["image"], "sysctl-init is the agent image");
    assert!(init["command"].is_null(), "the image's entrypoint is enipool-agent: no shell");
    assert_eq!(strings(&init["args"]), ["--log-format=json", "sysctl-init"]);
    let args_rs = std::fs::read_to_string(root().join("node-agent/src/args.rs")).unwrap();
    assert!(args_rs.contains("    SysctlInit,"), "enipool-agent has no sysctl-init subcommand");
    assert_eq!(init["securityContext"]["privileged"], true, "it writes /proc/sys");
    assert!(init["volumeMounts"].is_null(), "sysctl-init needs no host path");
    // The agent: not privileged, exactly the capabilities its root test runs it with.
    let caps = agent_capabilities();
    assert_eq!(caps, ["NET_ADMIN", "SYS_ADMIN"], "review the chart's docs if this changes");
    assert_eq!(
        agent["securityContext"],
        json!({"privileged": false, "readOnlyRootFilesystem": true,
               "capabilities": {"drop": ["ALL"], "add": caps}}),
        "the agent container's securityContext"
    );
    let spec = &ds["spec"]["template"]["spec"];
    assert!(spec["hostPID"].is_null() && spec["hostIPC"].is_null());
    // Pod netns bind mounts made after the agent started: HostToContainer, the propagation a
    // non-privileged container may have (Bidirectional needs privileged).
    let netns = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/run/netns")
        .unwrap();
    assert_eq!(netns["mountPropagation"], "HostToContainer");

    // agent.privileged=true: the old shape, the agent sets the sysctl itself.
    let docs = render(&Values::File("custom-values.yaml")).unwrap();
    let ds = find(&docs, "DaemonSet", "netpool-agent");
    assert!(init_container(ds, "sysctl-init").is_none());
    assert_eq!(container(ds, "agent")["securityContext"], json!({"privileged": true}));

    // The old free-form value is gone: an upgrade that still sets it fails instead of being
    // silently ignored.
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE]).arg(chart()).args([
        "--set",
        "clusterName=c",
        "--set",
        "agent.securityContext.privileged=true",
    ]);
    let (ok, _, err) = run(&mut cmd, None).unwrap();
    assert!(!ok && err.contains("securityContext"), "{err}");
}

#[test]
fn conflist_chains_portmap_when_enabled() {
    let conflist = |values: &Values| -> Value {
        let docs = render(values).unwrap();
        let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
        serde_json::from_str(cm["data"]["conflist.json"].as_str().unwrap()).unwrap()
    };
    let on = conflist(&Values::File("default-values.yaml"));
    assert_eq!(
        on,
        json!({"cniVersion": "1.0.0", "name": "enipool", "plugins": [
            {"type": "enipool-cni", "agentSocket": "/run/enipool/cni.sock", "mtu": 9001,
             "delJournalDir": "/var/lib/enipool/del-journal"},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
        ]})
    );
    let off = conflist(&Values::File("custom-values.yaml"));
    assert_eq!(off["plugins"].as_array().unwrap().len(), 1);
    assert_eq!(off["plugins"][0]["type"], "enipool-cni");
}

/// Runs the chart's install-cni script (from the rendered ConfigMap) against temporary host dirs.
#[test]
fn install_cni_script_installs_plugin_and_conflist() {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let cm = find(&docs, "ConfigMap", &format!("{RELEASE}-cni"));
    let ds = find(&docs, "DaemonSet", &format!("{RELEASE}-agent"));
    let init = init_container(ds, "install-cni").expect("install-cni init container");
    let env: BTreeMap<String, String> = init["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap().into()))
        .collect();
    assert_eq!(env["CONF_NAME"], "10-enipool.conflist");
    assert_eq!(env["REQUIRE"], "portmap");

    let t = tempfile::tempdir().unwrap();
    let (bin, conf, src) = (t.path().join("bin"), t.path().join("net.d"), t.path().join("src"));
    for d in [&bin, &conf, &src] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(src.join("install-cni.sh"), cm["data"]["install-cni.sh"].as_str().unwrap())
        .unwrap();
    std::fs::write(src.join("conflist.json"), cm["data"]["conflist.json"].as_str().unwrap())
        .unwrap();
    std::fs::write(src.join("enipool-cni"), b"#!/bin/sh\necho plugin v2\n").unwrap();
    let install = |require: &str| {
        let mut cmd = Command::new("sh");
        cmd.arg(src.join("install-cni.sh"))
            .env("PLUGIN", src.join("enipool-cni"))
            .env("CONFLIST", src.join("conflist.json"))
            .env("HOST_BIN_DIR", &bin)
            .env("HOST_CONF_DIR", &conf)
            .env("CONF_NAME", &env["CONF_NAME"])
            .env("REQUIRE", require);
        run(&mut cmd, None).unwrap()
    };
    // portmap required but absent: a clear failure, nothing installed.
    let (ok, _, err) = install("portmap");
    assert!(!ok && err.contains("portmap") && err.contains("cni.portmap.enabled"), "{err}");
    assert!(!conf.join("10-enipool.conflist").exists());
    std::fs::write(bin.join("portmap"), b"").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("portmap"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(bin.join("enipool-cni"), b"old").unwrap();
    for _ in 0..2 {
        let (ok, out, err) = install("portmap");
        assert!(ok, "{out}{err}");
        let plugin = bin.join("enipool-cni");
        assert_eq!(std::fs::read(&plugin).unwrap(), b"#!/bin/sh\necho plugin v2\n");
        assert_eq!(std::fs::metadata(&plugin).unwrap().permissions().mode() & 0o777, 0o755);
        let written: Value =
            serde_json::from_slice(&std::fs::read(conf.join("10-enipool.conflist")).unwrap())
                .unwrap();
        assert_eq!(written["plugins"][0]["type"], "enipool-cni");
        // No temporary files left behind for the runtime to trip over.
        for d in [&bin, &conf] {
            for e in std::fs::read_dir(d).unwrap() {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                assert!(!n.starts_with('.'), "left {n} in {}", d.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RBAC

#[derive(Debug, serde::Deserialize)]
struct Expectations {
    operator: Component,
    agent: Component,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Component {
    service_account: String,
    rules: Vec<ExpectedRule>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExpectedRule {
    api_group: String,
    resource: String,
    kind: String,
    verbs: Vec<String>,
    scope: String,
    #[allow(dead_code)]
    why: String,
}

fn expectations() -> Expectations {
    let text = std::fs::read_to_string(chart().join("rbac-expectations.yaml")).unwrap();
    serde_saphyr::from_str(&text).expect("rbac-expectations.yaml")
}

/// (scope, apiGroup, resource, verb).
type Grant = (String, String, String, String);

fn expected_grants(c: &Component) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for r in &c.rules {
        assert!(r.scope == "cluster" || r.scope == "namespace", "scope {}", r.scope);
        for v in &r.verbs {
            out.insert((r.scope.clone(), r.api_group.clone(), r.resource.clone(), v.clone()));
        }
    }
    out
}

/// Everything the rendered RBAC grants the ServiceAccount `sa` in namespace NAMESPACE.
fn rendered_grants(docs: &[Value], sa: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for b in docs.iter().filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        let bound = b["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == NAMESPACE
        });
        if !bound {
            continue;
        }
        let scope = if b["kind"] == "RoleBinding" { "namespace" } else { "cluster" };
        let role_kind = b["roleRef"]["kind"].as_str().unwrap();
        let role = find(docs, role_kind, b["roleRef"]["name"].as_str().unwrap());
        for rule in role["rules"].as_array().unwrap() {
            assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null(), "{rule}");
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        assert!(g != "*" && r != "*" && v != "*", "wildcard in {rule}");
                        out.insert((scope.to_string(), g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn rbac_matches_expectations_exactly() {
    let exp = expectations();
    for (values, prefix, operator_sa) in [
        ("default-values.yaml", "enipool", "enipool-operator"),
        ("custom-values.yaml", "netpool", "enipool-ec2"),
    ] {
        let docs = render(&Values::File(values)).unwrap();
        let agent_sa = format!("{prefix}-{}", exp.agent.service_account);
        for (who, sa, c) in
            [("operator", operator_sa.to_string(), &exp.operator), ("agent", agent_sa, &exp.agent)]
        {
            let want = expected_grants(c);
            let have = rendered_grants(&docs, &sa);
            let extra: Vec<_> = have.difference(&want).collect();
            let missing: Vec<_> = want.difference(&have).collect();
            assert!(
                extra.is_empty() && missing.is_empty(),
                "{values}: {who} RBAC differs from rbac-expectations.yaml\n  granted but not expected: \
                 {extra:?}\n  expected but not granted: {missing:?}"
            );
        }
    }
}

/// A crude source scan: which resource kinds and write methods the code uses, per file.
///
/// For each `.rs` file under the given directories that mentions `kube::` (test modules after a
/// `#[cfg(test)]` line are cut off, line comments dropped), it collects the kinds named as
/// `Api<K>` / `Api::<K>` (through `DeserializeGuard<K>`), plus `Event` when it builds a `Recorder`,
/// and the kube calls it makes (`.create(`, `.delete(`, `.patch(`, `.patch_status(`,
/// `.replace(` (not `str::replace("..`), `.get_opt(`, `.list(`, watchers and controllers). It
/// reports a kind with no rule in the expectations, and a call whose verb no kind of the same file
/// has a rule for (on the main resource, or on `/status` for the `_status` calls).
///
/// Limits: it sees names, not types or data flow. A kind reached through a type alias, a generic
/// `Api<K>` or a helper in another file, a call on an `Api` passed in from elsewhere, or dynamic
/// objects (`DynamicObject`, `ApiResource`) escape it, and a verb is only matched to the kinds of
/// its own file. It fails when it should in the common cases (a new `Api<ConfigMap>`, a delete
/// added to the agent) and is a tripwire, not a proof. The strong check is the audit-based one:
/// run the binaries against the test platform's API and compare every recorded (user, verb,
/// resource) with rbac-expectations.yaml.
fn scan_source(
    files: &[(String, String)],
    rules: &[ExpectedRule],
) -> (BTreeSet<String>, Vec<String>) {
    let kind_re = regex::Regex::new(
        r"\bApi\s*(?:::)?\s*<\s*(?:DeserializeGuard\s*<\s*)?([A-Za-z_][A-Za-z0-9_:]*)",
    )
    .unwrap();
    let calls: &[(&str, &str, bool)] = &[
        // (pattern, verb, on the status subresource)
        (r"\.create\(", "create", false),
        (r"\.delete\(", "delete", false),
        (r"\.delete_collection\(", "deletecollection", false),
        (r"\.patch\(", "patch", false),
        (r"\.patch_status\(", "patch", true),
        (r#"\.replace\(\s*[^"'\s)]"#, "update", false),
        (r"\.replace_status\(", "update", true),
        (r"\.get_status\(", "get", true),
        (r"\.get_opt\(", "get", false),
        (r"\.get_metadata\(", "get", false),
        (r"\.list\(", "list", false),
        (
            r"\bwatcher\(|\bmetadata_watcher\(|Controller::new\(|\.owns\(|\.watches\(",
            "watch",
            false,
        ),
        (r"\bwatcher\(|\bmetadata_watcher\(|Controller::new\(|\.owns\(|\.watches\(", "list", false),
    ];
    let calls: Vec<(regex::Regex, &str, bool)> =
        calls.iter().map(|(p, v, s)| (regex::Regex::new(p).unwrap(), *v, *s)).collect();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (path, text) in files {
        if !text.contains("kube::") {
            continue;
        }
        let code: String = text
            .lines()
            .take_while(|l| l.trim() != "#[cfg(test)]")
            .map(|l| match l.find("//") {
                Some(i) => &l[..i],
                None => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut kinds: BTreeSet<String> = kind_re
            .captures_iter(&code)
            .map(|c| c[1].rsplit("::").next().unwrap().to_string())
            .filter(|k| k != "K" && k != "T")
            .collect();
        if code.contains("Recorder::new(") || code.contains("recorder.publish(") {
            kinds.insert("Event".into());
        }
        for k in &kinds {
            seen.insert(k.clone());
            if !rules.iter().any(|r| &r.kind == k) {
                problems.push(format!(
                    "{path}: uses Api<{k}> but rbac-expectations.yaml has no rule for kind {k}"
                ));
            }
        }
        for (re, verb, status) in &calls {
            if let Some(m) = re.find(&code) {
                let covered = rules.iter().any(|r| {
                    let right_resource = if *status {
                        r.resource.ends_with("/status")
                    } else {
                        !r.resource.contains('/')
                    };
                    kinds.contains(&r.kind) && right_resource && r.verbs.iter().any(|v| v == verb)
                });
                if !covered {
                    problems.push(format!(
                        "{path}: `{}` needs verb {verb}{} on one of {kinds:?}, which rbac-expectations.yaml does not grant",
                        m.as_str(),
                        if *status { " (status)" } else { "" }
                    ));
                }
            }
        }
    }
    (seen, problems)
}

fn rust_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root()).unwrap_or(&p).display().to_string();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn source_uses_only_expected_kinds_and_verbs() {
    let exp = expectations();
    for (dir, c) in [("operator/src", &exp.operator), ("node-agent/src", &exp.agent)] {
        let files: Vec<_> = rust_files(&root().join(dir))
            .into_iter()
            .filter(|(p, _)| {
                !p.ends_with("testing.rs") && !p.ends_with("testutil.rs") && !p.contains("/tests")
            })
            .collect();
        let (seen, problems) = scan_source(&files, &c.rules);
        assert!(problems.is_empty(), "{dir}:\n  {}", problems.join("\n  "));
        // Not vacuous: the scan must see the pool API in both components.
        assert!(seen.contains("ENIPool"), "{dir}: the scan found no Api<ENIPool> ({seen:?})");
        let unused: Vec<_> =
            c.rules.iter().filter(|r| !seen.contains(&r.kind)).map(|r| &r.resource).collect();
        if !unused.is_empty() {
            eprintln!("note: {dir} does not name the kinds of {unused:?} (granted per rbac-expectations.yaml)");
        }
    }
}

#[test]
fn source_scan_fails_when_it_should() {
    let exp = expectations();
    let file = |body: &str| vec![("x.rs".to_string(), format!("use kube::api::Api;\n{body}"))];
    // A kind nobody granted.
    let (_, p) = scan_source(&file("let cms: Api<ConfigMap> = Api::all(c);"), &exp.agent.rules);
    assert!(p.iter().any(|p| p.contains("ConfigMap")), "{p:?}");
    // A verb the agent does not have.
    let (_, p) = scan_source(
        &file("let a: Api<ENIPool> = Api::all(c); a.delete(&n, &dp).await;"),
        &exp.agent.rules,
    );
    assert!(p.iter().any(|p| p.contains("delete")), "{p:?}");
    let (_, p) = scan_source(
        &file("let a: Api<Pod> = Api::all(c); a.patch_status(&n, &pp, &x).await;"),
        &exp.agent.rules,
    );
    assert!(p.iter().any(|p| p.contains("patch")), "{p:?}");
    // What the agent does today passes; str::replace is not a kube update; tests are cut off.
    let ok = "let a: Api<ENIPool> = Api::all(c); a.patch_status(&n, &pp, &x).await; \
              let s = n.replace(\"a\", \"b\");\n#[cfg(test)]\nmod tests { fn t() { let x: Api<Secret>; } }";
    let (_, p) = scan_source(&file(ok), &exp.agent.rules);
    assert!(p.is_empty(), "{p:?}");
    // The operator's lease calls need update, which it has on leases.
    let lease = "let a: Api<Lease> = Api::namespaced(c, ns); a.replace(&name, &pp, &l).await;";
    assert!(scan_source(&file(lease), &exp.operator.rules).1.is_empty());
    assert!(!scan_source(&file(lease), &exp.agent.rules).1.is_empty());
}

// ---------------------------------------------------------------------------------------------
// The agent's ValidatingAdmissionPolicy, evaluated

struct Vap {
    match_conditions: Vec<String>,
    validations: Vec<kube_cel::VapExpression>,
}

fn agent_vap() -> Vap {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let vap = find(&docs, "ValidatingAdmissionPolicy", &format!("{RELEASE}-agent-own-pool"));
    let binding =
        find(&docs, "ValidatingAdmissionPolicyBinding", &format!("{RELEASE}-agent-own-pool"));
    assert_eq!(binding["spec"]["policyName"], vap["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(vap["spec"]["failurePolicy"], "Fail");
    let rules = &vap["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!(strings(&rules["resources"]), vec!["enipools", "enipools/status"]);
    assert!(vap["spec"]["variables"].is_null(), "the evaluator below binds no `variables`");
    Vap {
        match_conditions: vap["spec"]["matchConditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["expression"].as_str().unwrap().to_string())
            .collect(),
        validations: vap["spec"]["validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| kube_cel::VapExpression {
                expression: v["expression"].as_str().unwrap().to_string(),
                message: v["message"].as_str().map(str::to_string),
                message_expression: v["messageExpression"].as_str().map(str::to_string),
            })
            .collect(),
    }
}

fn pool(name: &str) -> Value {
    json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool", "metadata": {"name": name},
           "spec": {"nodeName": name}, "status": {"agent": {"epoch": 3}}})
}

fn admission(username: &str) -> kube_cel::AdmissionRequest {
    kube_cel::AdmissionRequest {
        operation: "UPDATE".into(),
        username: username.into(),
        groups: vec!["system:serviceaccounts".into(), "system:authenticated".into()],
        resource: kube_cel::GroupVersionResource {
            group: "enipool.io".into(),
            version: "v1alpha1".into(),
            resource: "enipools".into(),
        },
        ..Default::default()
    }
}

/// Evaluates with the full `request` the API server binds, including `userInfo.extra` (which
/// kube-cel's VapEvaluator does not bind), with the same Kubernetes CEL library.
fn eval_with_extra(expr: &str, object: &Value, username: &str, extra: &Value) -> Result<bool> {
    use kube_cel::cel::{Context, Program, Value as Cel};
    use kube_cel::KubeCelExt;
    let mut ctx = Context::default();
    ctx.register_all();
    let request = json!({
        "operation": "UPDATE", "name": object["metadata"]["name"], "namespace": "", "dryRun": false,
        "subResource": "status",
        "kind": {"group": "enipool.io", "version": "v1alpha1", "kind": "ENIPool"},
        "resource": {"group": "enipool.io", "version": "v1alpha1", "resource": "enipools"},
        "userInfo": {"username": username, "uid": "u", "groups": ["system:serviceaccounts"], "extra": extra},
    });
    ctx.add_variable("object", object.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    ctx.add_variable("oldObject", object.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    ctx.add_variable("request", request).map_err(|e| anyhow::anyhow!("{e}"))?;
    let program = Program::compile(expr).map_err(|e| anyhow::anyhow!("compiling {expr}: {e}"))?;
    match program.execute(&ctx).map_err(|e| anyhow::anyhow!("evaluating {expr}: {e}"))? {
        Cel::Bool(b) => Ok(b),
        other => bail!("{expr} returned {other:?}"),
    }
}

#[test]
fn agent_admission_policy_allows_only_the_agents_own_node() {
    let vap = agent_vap();
    let agent = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}-agent");
    let operator = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}-operator");
    let matched = |username: &str| -> bool {
        let ev = kube_cel::VapEvaluator::builder()
            .object(pool("n1"))
            .request(admission(username))
            .build();
        let conds: Vec<kube_cel::VapExpression> = vap
            .match_conditions
            .iter()
            .map(|e| kube_cel::VapExpression {
                expression: e.clone(),
                message: None,
                message_expression: None,
            })
            .collect();
        let results = ev.evaluate(&conds);
        for r in &results {
            assert!(r.message.as_deref().is_none_or(|m| !m.contains("error")), "{r:?}");
        }
        results.iter().all(|r| r.passed)
    };
    // Only the agent's ServiceAccount is subject to the policy.
    assert!(matched(&agent));
    assert!(!matched(&operator), "the operator must not be matched");
    assert!(!matched("kubernetes-admin"));
    assert!(!matched(&format!("system:serviceaccount:other-ns:{RELEASE}-agent")));

    let claim = |node: &str| json!({NODE_NAME_CLAIM: [node]});
    let allowed = |object: &Value, extra: &Value| -> bool {
        vap.validations
            .iter()
            .all(|v| eval_with_extra(&v.expression, object, &agent, extra).unwrap())
    };
    // The agent on ip-10-0-0-1 writes its own pool: allowed.
    assert!(allowed(&pool("ip-10-0-0-1"), &claim("ip-10-0-0-1")));
    // ... another node's pool: denied.
    assert!(!allowed(&pool("ip-10-0-0-2"), &claim("ip-10-0-0-1")));
    // A token without the node-name claim (not a bound pod token, or a cluster < 1.30): denied,
    // not an evaluation error.
    assert!(!allowed(&pool("ip-10-0-0-1"), &json!({})));
    assert!(!allowed(&pool("ip-10-0-0-1"), &json!({NODE_NAME_CLAIM: []})));

    // kube-cel's VapEvaluator binds no userInfo.extra: the policy then fails closed, with the
    // message that says why.
    let ev = kube_cel::VapEvaluator::builder()
        .object(pool("ip-10-0-0-2"))
        .request(admission(&agent))
        .build();
    let results = ev.evaluate(&vap.validations);
    assert!(results.iter().all(|r| !r.passed), "{results:?}");
    let msg = results[0].message.clone().unwrap_or_default();
    assert!(msg.contains("its own node") && msg.contains("ip-10-0-0-2"), "message: {msg}");
}

// ---------------------------------------------------------------------------------------------
// NOTES, IAM policy, images

#[test]
fn notes_tell_how_to_check_the_install() {
    // `helm template` drops NOTES.txt and `helm install --dry-run` wants a cluster (helm 3.19), so
    // render it through a copy of the chart with one extra template that includes it.
    let t = tempfile::tempdir().unwrap();
    let copy = t.path().join("enipool");
    let (ok, _, err) = run(Command::new("cp").arg("-r").arg(chart()).arg(&copy), None).unwrap();
    assert!(ok, "{err}");
    std::fs::write(
        copy.join("templates/zz-notes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rendered-notes\ndata:\n  notes: |\n\
         {{ include (print $.Template.BasePath \"/NOTES.txt\") . | indent 4 }}\n",
    )
    .unwrap();
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(&copy)
        .args(["--namespace", NAMESPACE, "--show-only", "templates/zz-notes.yaml", "-f"])
        .arg(chart().join("ci/default-values.yaml"));
    let (ok, out, err) = run(&mut cmd, None).unwrap();
    assert!(ok, "{err}");
    let docs = parse_docs(&out).unwrap();
    let notes = docs[0]["data"]["notes"].as_str().unwrap();
    for needle in
        ["kubectl get enipools", ".status.effective.capacity.maxPods", "docs/iam-policy.json"]
    {
        assert!(notes.contains(needle), "NOTES lack {needle}:\n{notes}");
    }
}

#[test]
fn iam_policy_covers_exactly_the_ec2_calls() {
    let policy: Value =
        serde_json::from_slice(&std::fs::read(root().join("docs/iam-policy.json")).unwrap())
            .unwrap();
    let mut allowed = BTreeSet::new();
    for s in policy["Statement"].as_array().unwrap() {
        assert_eq!(s["Effect"], "Allow");
        let actions = match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            a => strings(a),
        };
        for a in actions {
            assert!(a.starts_with("ec2:") && !a.contains('*'), "{a}");
            allowed.insert(a.trim_start_matches("ec2:").to_string());
        }
        // Every mutating statement is scoped by a condition.
        let mutating = !s["Sid"].as_str().unwrap().starts_with("Describe");
        let resource_all = s["Resource"] == "*";
        assert!(!(mutating && resource_all), "{} allows a mutation on every resource", s["Sid"]);
    }
    let src = std::fs::read_to_string(root().join("operator/src/ec2/aws.rs")).unwrap();
    let re = regex::Regex::new(r"\.client\s*\.\s*([a-z_]+)\(\)").unwrap();
    let called: BTreeSet<String> = re
        .captures_iter(&src)
        .map(|c| c[1].split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect::<String>())
        .collect();
    assert!(called.contains("CreateNetworkInterface"), "scan found {called:?}");
    assert_eq!(allowed, called, "docs/iam-policy.json vs the EC2 calls of operator/src/ec2/aws.rs");
}

#[test]
fn image_build_files_are_consistent() {
    for (image, package) in
        [("operator", "enipool-operator"), ("agent", "enipool-agent"), ("cni", "enipool-cni")]
    {
        let text =
            std::fs::read_to_string(root().join(format!("images/{image}.Dockerfile"))).unwrap();
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(froms.len(), 2, "{image}: a builder and a runtime stage");
        assert!(
            froms[0].contains("rust:") && froms[0].contains(" AS build"),
            "{image}: {}",
            froms[0]
        );
        assert!(text.contains(&format!("cargo build --release --locked -p {package}")), "{image}");
        let manifest = std::fs::read_to_string(root().join(match image {
            "operator" => "operator/Cargo.toml",
            "agent" => "node-agent/Cargo.toml",
            _ => "cni-shim/Cargo.toml",
        }))
        .unwrap();
        assert!(
            manifest.contains(&format!("name = \"{package}\"")),
            "{image}: no package {package}"
        );
        match image {
            "operator" => assert!(froms[1].contains("distroless") && text.contains("USER 65532")),
            "cni" => assert!(
                froms[1].contains("distroless/static")
                    && text.contains("/opt/enipool/bin/enipool-cni")
            ),
            _ => assert!(text.contains("nftables"), "the agent runs nft"),
        }
        // The chart's default image names are these.
        let values = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
        assert!(
            values.contains(&format!("repository: enipool-{image}")),
            "values.yaml image for {image}"
        );
    }
    // The install script's busybox shell and plugin path match the cni image.
    let ds = std::fs::read_to_string(chart().join("templates/agent-daemonset.yaml")).unwrap();
    assert!(ds.contains("/busybox/sh") && ds.contains("/opt/enipool/bin/enipool-cni"));
    // `make images` without a container engine: a clear message and a failure, never a silent pass.
    if which("make").is_some() {
        let mut cmd = Command::new("make");
        cmd.current_dir(root()).args(["images", "ENGINE="]);
        let (ok, _, err) = run(&mut cmd, None).unwrap();
        assert!(!ok && err.contains("no working container engine"), "{err}");
    }
}
