//! Workload shape: the operator Deployment, the agent DaemonSet (no AWS credentials, unprivileged
//! after a privileged sysctl init), the conflist, and the install-cni script run for real.

use super::{
    agent_capabilities, chart, container, find, helm, init_container, render, root, run, strings,
    Values, RELEASE,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;

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
        // The agent runs with the environment the test platform gives it.
        let (name, value) = cluster::flags::MALLOC_ARENA_MAX;
        assert_eq!(c["env"][1], json!({"name": name, "value": value}), "{}", c["env"]);
        let init = init_container(ds, "install-cni").expect("install-cni init container");
        assert_ne!(init["securityContext"]["privileged"], true);
        assert_eq!(init["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        // No AWS credentials of any kind: env, IRSA/Pod Identity annotations, mounted files.
        let text = serde_json::to_string(ds).unwrap();
        // (IRSA's annotations; the compute-type node label in the affinity is no credential.)
        for needle in [
            "AWS_",
            "aws-iam-token",
            "eks.amazonaws.com/role-arn",
            "eks.amazonaws.com/audience",
            "/.aws",
        ] {
            assert!(!text.contains(needle), "{values}: the agent DaemonSet mentions {needle}");
        }
        let sa = find(&docs, "ServiceAccount", sa_name);
        assert!(sa["metadata"]["annotations"].is_null(), "{values}: agent SA has annotations");
        assert!(!strings(&c["args"]).iter().any(|a| a.starts_with("--netns")));
        // Host mounts: socket dir, state, netns and the CNI config dir (the agent writes the
        // conflist once it can serve) in the agent; the CNI bin dir in the init container.
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
        assert!(m.contains(&"/host/cni/net.d".to_string()), "{m:?}");
        assert!(m.contains(&"/etc/enipool/install".to_string()), "{m:?}");
        let im = mounts(init);
        assert!(im.contains(&"/host/cni/bin".to_string()), "{im:?}");
        assert!(
            !im.contains(&"/host/cni/net.d".to_string()),
            "the init container must not see the CNI config dir: a conflist written before the \
             agent can serve makes the node take pods it cannot start"
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
    assert_eq!(strings(&init["args"]), ["--log-format=json", "--ip-family=IPv4", "sysctl-init"]);
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

/// The agent pod runs every container under the runtime's default seccomp filter, set once for
/// the pod and overridden by no container, in the default and the `agent.privileged` shape. The
/// unprivileged agent keeps CAP_SYS_ADMIN, without which that filter refuses `setns`.
#[test]
fn agent_pod_runs_under_the_runtime_default_seccomp_profile() {
    for (values, ds_name) in
        [("default-values.yaml", "enipool-agent"), ("custom-values.yaml", "netpool-agent")]
    {
        let docs = render(&Values::File(values)).unwrap();
        let ds = find(&docs, "DaemonSet", ds_name);
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(
            spec["securityContext"]["seccompProfile"],
            json!({"type": "RuntimeDefault"}),
            "{values}: the pod's seccompProfile"
        );
        let containers = ["initContainers", "containers"]
            .iter()
            .flat_map(|k| spec[*k].as_array().cloned().unwrap_or_default());
        for c in containers {
            assert!(
                c["securityContext"]["seccompProfile"].is_null(),
                "{values}: container {} overrides the pod's seccompProfile",
                c["name"]
            );
        }
        let agent = container(ds, "agent");
        if agent["securityContext"]["privileged"] != true {
            assert!(
                strings(&agent["securityContext"]["capabilities"]["add"])
                    .contains(&"SYS_ADMIN".to_string()),
                "{values}: {}",
                agent["securityContext"]
            );
        }
    }
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

/// Runs the chart's install-cni script (from the rendered ConfigMap) against temporary host dirs:
/// it installs the plugin and writes no conflist (the agent does, once it can serve).
#[test]
fn install_cni_script_installs_the_plugin_only() {
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
    assert_eq!(env["REQUIRE"], "portmap");

    let t = tempfile::tempdir().unwrap();
    let (bin, src) = (t.path().join("bin"), t.path().join("src"));
    for d in [&bin, &src] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(src.join("install-cni.sh"), cm["data"]["install-cni.sh"].as_str().unwrap())
        .unwrap();
    std::fs::write(src.join("enipool-cni"), b"#!/bin/sh\necho plugin v2\n").unwrap();
    let install = |require: &str| {
        let mut cmd = Command::new("sh");
        cmd.arg(src.join("install-cni.sh"))
            .env("PLUGIN", src.join("enipool-cni"))
            .env("HOST_BIN_DIR", &bin)
            .env("REQUIRE", require);
        run(&mut cmd, None).unwrap()
    };
    // portmap required but absent: a clear failure, nothing installed.
    let (ok, _, err) = install("portmap");
    assert!(!ok && err.contains("portmap") && err.contains("cni.portmap.enabled"), "{err}");
    assert!(!bin.join("enipool-cni").exists());
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
        // No temporary files left behind for the runtime to trip over.
        for e in std::fs::read_dir(&bin).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!n.starts_with('.'), "left {n} in {}", bin.display());
        }
    }
}

/// `cleanupOnUninstall`: a post-delete hook Job running `enipool-operator cleanup` with the
/// operator image and placement, under its own ServiceAccount whose RBAC (a hook too, since the
/// release's RBAC is gone in post-delete) is created before the Job; every hook object is removed
/// on success and replaced on the next run. No hook object without the value.
#[test]
fn cleanup_hook_is_a_post_delete_job_with_its_own_rbac_created_first() {
    for (values, prefix) in [("default-values.yaml", "enipool"), ("custom-values.yaml", "netpool")]
    {
        let docs = render(&Values::File(values)).unwrap();
        let name = format!("{prefix}-cleanup");
        let hooks: Vec<&Value> = docs
            .iter()
            .filter(|d| !d["metadata"]["annotations"]["helm.sh/hook"].is_null())
            .collect();
        let kinds: Vec<&str> = hooks.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Job"],
            "{values}: the hook objects"
        );
        let weight = |d: &Value| -> i64 {
            d["metadata"]["annotations"]["helm.sh/hook-weight"].as_str().unwrap().parse().unwrap()
        };
        let job = find(&docs, "Job", &name);
        for h in &hooks {
            let a = &h["metadata"]["annotations"];
            assert_eq!(a["helm.sh/hook"], "post-delete", "{values}: {h}");
            assert_eq!(
                a["helm.sh/hook-delete-policy"], "before-hook-creation,hook-succeeded",
                "{values}: {h}"
            );
            assert_eq!(h["metadata"]["name"], name.as_str());
            assert_eq!(h["metadata"]["labels"]["app.kubernetes.io/component"], "cleanup");
            if h["kind"] != "Job" {
                assert!(weight(h) < weight(job), "{values}: {} not before the Job", h["kind"]);
            }
        }
        // The Job: the operator's image, its own ServiceAccount, the `cleanup` subcommand, the
        // operator's network and placement (the agents are gone: no pod networking).
        let deploy = find(&docs, "Deployment", &format!("{prefix}-operator"));
        let (ops, spec) = (&deploy["spec"]["template"]["spec"], &job["spec"]["template"]["spec"]);
        let c = container(job, "cleanup");
        assert_eq!(c["image"], container(deploy, "operator")["image"]);
        assert_eq!(strings(&c["args"])[0], "cleanup");
        assert!(c["command"].is_null(), "the image's entrypoint is the binary");
        assert_eq!(spec["serviceAccountName"], name.as_str());
        assert_eq!(spec["restartPolicy"], "Never");
        for k in ["hostNetwork", "dnsPolicy", "nodeSelector", "tolerations", "securityContext"] {
            assert_eq!(spec[k], ops[k], "{values}: {k} differs from the operator's");
        }
        assert_eq!(c["securityContext"], container(deploy, "operator")["securityContext"]);
    }
    let off = json!({"clusterName": "c", "cleanupOnUninstall": false});
    let docs = render(&Values::Json(off)).unwrap();
    assert!(
        docs.iter().all(|d| d["metadata"]["annotations"]["helm.sh/hook"].is_null()),
        "cleanupOnUninstall=false still renders a hook"
    );
    assert!(docs
        .iter()
        .all(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] != "cleanup"));
}

/// The agent DaemonSet's node affinity, applied to a node's labels as the scheduler applies
/// `matchExpressions` (terms ORed, expressions ANDed; NotIn also matches a missing label).
fn agent_may_run_on(ds: &Value, labels: &[(&str, &str)]) -> bool {
    let terms = &ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let Some(terms) = terms.as_array() else { return true };
    terms.iter().any(|t| {
        t["matchExpressions"].as_array().into_iter().flatten().all(|e| {
            let value = labels.iter().find(|(k, _)| *k == e["key"]).map(|(_, v)| *v);
            let values: Vec<&str> =
                e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            match e["operator"].as_str() {
                Some("NotIn") => value.is_none_or(|v| !values.contains(&v)),
                Some("In") => value.is_some_and(|v| values.contains(&v)),
                Some("Exists") => value.is_some(),
                Some("DoesNotExist") => value.is_none(),
                other => panic!("operator {other:?} not handled by this test"),
            }
        })
    })
}

/// By default the agent is not scheduled where it can never be ready (Fargate, hybrid nodes),
/// and still lands on every EC2 node, labelled or not.
#[test]
fn agent_skips_fargate_and_hybrid_nodes_by_default() {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let ds = find(&docs, "DaemonSet", "enipool-agent");
    const KEY: &str = "eks.amazonaws.com/compute-type";
    assert!(!agent_may_run_on(ds, &[(KEY, "fargate")]), "Fargate node");
    assert!(!agent_may_run_on(ds, &[(KEY, "hybrid")]), "hybrid node");
    assert!(agent_may_run_on(ds, &[(KEY, "ec2")]), "EC2 node labelled ec2");
    assert!(agent_may_run_on(ds, &[("kubernetes.io/os", "linux")]), "unlabelled EC2 node");
}

/// `agent.podMTU` sets the pods' MTU in the conflist apart from the ENIs' (`--mtu`), and
/// `cni.bandwidth.enabled` chains the bandwidth plugin, which the installer then requires.
#[test]
fn pod_mtu_and_bandwidth_plugin() {
    let values = json!({
        "clusterName": "c",
        "agent": {"mtu": 9001, "podMTU": 1400},
        "cni": {"bandwidth": {"enabled": true}},
    });
    let docs = render(&Values::Json(values)).unwrap();
    let cm = find(&docs, "ConfigMap", &format!("{RELEASE}-cni"));
    let conflist: Value =
        serde_json::from_str(cm["data"]["conflist.json"].as_str().unwrap()).unwrap();
    assert_eq!(conflist["plugins"][0]["mtu"], 1400);
    let types: Vec<&str> = conflist["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["enipool-cni", "portmap", "bandwidth"]);
    assert_eq!(conflist["plugins"][2]["capabilities"]["bandwidth"], true);
    let ds = find(&docs, "DaemonSet", &format!("{RELEASE}-agent"));
    assert!(strings(&container(ds, "agent")["args"]).contains(&"--mtu=9001".to_string()));
    let init = init_container(ds, "install-cni").unwrap();
    let require = init["env"].as_array().unwrap().iter().find(|e| e["name"] == "REQUIRE").unwrap();
    assert_eq!(require["value"], "portmap bandwidth");
}
