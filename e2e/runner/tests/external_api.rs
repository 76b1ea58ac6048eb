//! The runner against an external Kubernetes API (`enipool-e2e run … --kubeconfig`): the platform's
//! API server, started here, stands in for a real cluster's, already holding what a real cluster
//! has (a Node of its own with an aws providerID, a policy selecting every Node, the usual
//! namespaces). The runner binary brings its platform up against it with the EC2 simulator and the
//! VPC fabric and runs the platform's scenarios (see [`SCENARIOS`]); it must then leave nothing
//! behind: no Node, Pod, ENIPool, ENIPoolPolicy, Lease, namespace, ServiceAccount or Event of its
//! own (the CRDs apart, which stay installed), and nothing of the cluster's deleted or touched (the
//! cluster's Node never got a pool). Also when a scenario times out (the cluster is dropped
//! mid-scenario) and when the run is interrupted (SIGINT).
//!
//! Needs root (the fabric) and the platform's binaries next to the runner (`cargo build -p
//! enipool-operator -p enipool-agent -p enipool-cni`; a workspace `cargo test` builds them). Never
//! skips: a missing piece fails the test saying what is missing. Takes about three minutes.
//! `ENIPOOL_E2E_EXTERNAL_SCENARIOS` (comma-separated) replaces the scenario list when iterating.

#[path = "common/binaries.rs"]
mod binaries;

use enipool_crds::{ENIPool, ENIPoolPolicy};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;
use kubeapi::{KubeApi, KubeApiConfig};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Every scenario that brings up a platform cluster (`enipool-e2e list`), and crds-served, but
/// ec2-throttling-storm: 80 s of EC2 pacing, where nothing depends on which Kubernetes API it is.
/// (pools-match-ec2 and pod-gets-vpc-ip take `--kubeconfig` as a cluster with enipool installed
/// and real EC2.)
const SCENARIOS: &[&str] = &[
    "crds-served",
    "pods-one-node",
    "pods-across-nodes",
    "primary-and-secondary-eni",
    "cross-subnet",
    "custom-networking",
    "egress-snat",
    "node-startup",
    "cni-migration",
    "kubectl-get-enipools",
    "scale-up-new-eni",
    "warm-pool-churn",
    "scale-down-after-delay",
    "prefix-mode",
    "subnet-exhaustion",
    "gitops-policy-apply",
    "agent-kill9-under-load",
    "operator-leader-kill",
    "node-terminated",
    "chaos-combined",
];
/// The cluster's own Node: an EC2 instance of the real account, as on any AWS cluster.
const REAL_NODE: &str = "ip-172-31-7-9.us-west-2.compute.internal";
/// The cluster's own policy, selecting every Node.
const REAL_POLICY: &str = "cluster-default";

/// The platform's binaries the runner starts, refusing ones older than their sources.
fn check_binaries() {
    let build = "cargo build -p enipool-operator -p enipool-agent -p enipool-cni";
    // The same directory the runner (target/debug/enipool-e2e) takes them from.
    binaries::fresh_binary("enipool-operator", &["operator/src", "crds/src"], build);
    binaries::fresh_binary("enipool-agent", &["node-agent/src", "cni-shim/src", "crds/src"], build);
    binaries::fresh_binary("enipool-cni", &["cni-shim/src"], build);
}

async fn create<K>(api: &Api<K>, v: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).expect("object");
    api.create(&PostParams::default(), &obj).await.expect("create");
}

fn names<K: kube::Resource>(items: &[K]) -> BTreeSet<String> {
    items
        .iter()
        .map(|o| match o.meta().namespace.as_deref() {
            Some(ns) => format!("{ns}/{}", o.meta().name.clone().unwrap_or_default()),
            None => o.meta().name.clone().unwrap_or_default(),
        })
        .collect()
}

/// The "real" cluster before the run: the usual namespaces, a Node of its own with an aws
/// providerID and the labels the cloud provider sets, and a policy for every Node. No Lease, Pod
/// or ENIPool.
async fn seed(client: &kube::Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    create(
        &nodes,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": REAL_NODE, "labels": {
                "kubernetes.io/hostname": REAL_NODE,
                "topology.kubernetes.io/zone": "us-west-2a",
                "node.kubernetes.io/instance-type": "m5.large",
            }},
            "spec": {"providerID": "aws:///us-west-2a/i-0a1b2c3d4e5f60718"},
        }),
    )
    .await;
    // The CRDs are the runner's to install (server-side apply); the cluster's policy needs them,
    // so install them the way the runner does, as a cluster that already runs enipool has them.
    cluster::kube::install_crds(client).await.expect("CRDs");
    let policies: Api<ENIPoolPolicy> = Api::all(client.clone());
    create(
        &policies,
        serde_json::json!({
            "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPoolPolicy",
            "metadata": {"name": REAL_POLICY},
            "spec": {"mode": "SecondaryIP", "sizing": {"warmIPs": 5}},
        }),
    )
    .await;
}

/// Everything the test checks after the run: (kind, namespace/name) of what exists.
async fn inventory(client: &kube::Client) -> BTreeSet<(String, String)> {
    let lp = ListParams::default();
    let mut out = BTreeSet::new();
    let mut add = |kind: &str, names: BTreeSet<String>| {
        out.extend(names.into_iter().map(|n| (kind.to_string(), n)));
    };
    add("Node", names(&Api::<Node>::all(client.clone()).list(&lp).await.unwrap().items));
    add("Pod", names(&Api::<Pod>::all(client.clone()).list(&lp).await.unwrap().items));
    add("ENIPool", names(&Api::<ENIPool>::all(client.clone()).list(&lp).await.unwrap().items));
    let pols = Api::<ENIPoolPolicy>::all(client.clone()).list(&lp).await.unwrap().items;
    add("ENIPoolPolicy", names(&pols));
    add("Lease", names(&Api::<Lease>::all(client.clone()).list(&lp).await.unwrap().items));
    add("Namespace", names(&Api::<Namespace>::all(client.clone()).list(&lp).await.unwrap().items));
    let sas = Api::<ServiceAccount>::all(client.clone()).list(&lp).await.unwrap().items;
    add("ServiceAccount", names(&sas));
    add("Event", names(&Api::<Event>::all(client.clone()).list(&lp).await.unwrap().items));
    out
}

/// The stand-in cluster: its API server, a kubeconfig for it, and what it held before the run.
struct StandIn {
    api: KubeApi,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    client: kube::Client,
    before: BTreeSet<(String, String)>,
}

impl StandIn {
    async fn start() -> StandIn {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let api = KubeApi::start(KubeApiConfig::default()).await.expect("start the API server");
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let client = api.client().expect("client");
        seed(&client).await;
        let before = inventory(&client).await;
        api.clear_audit();
        StandIn { api, _dir: dir, kubeconfig, client, before }
    }

    /// `enipool-e2e <args> --kubeconfig <stand-in>`.
    fn runner(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_enipool-e2e"));
        cmd.args(args).arg("--kubeconfig").arg(&self.kubeconfig);
        cmd.env_remove("ENIPOOL_E2E_EC2_ENDPOINT").env_remove("ENIPOOL_E2E_KUBECONFIG");
        // With --kubeconfig these would mean real EC2 (`Target::real_ec2`).
        for k in cluster::AWS_SETTINGS {
            cmd.env_remove(k);
        }
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    /// Nothing of the run is left, nothing of the cluster is gone or changed, and the cluster's
    /// Node never got a pool.
    async fn assert_clean(&self) {
        let after = inventory(&self.client).await;
        let added: Vec<_> = after.difference(&self.before).collect();
        let removed: Vec<_> = self.before.difference(&after).collect();
        assert!(added.is_empty(), "left in the cluster by the run: {added:?}");
        assert!(removed.is_empty(), "deleted from the cluster by the run: {removed:?}");
        let audit = self.api.audit();
        let pools_of_real: Vec<_> = audit
            .iter()
            .filter(|r| r.resource == "enipools" && r.name == REAL_NODE)
            .map(|r| format!("{} {}", r.verb, r.name))
            .collect();
        assert!(pools_of_real.is_empty(), "the cluster's Node got a pool: {pools_of_real:?}");
        let real_touched: Vec<_> = audit
            .iter()
            .filter(|r| {
                (r.resource == "nodes" && r.name == REAL_NODE)
                    || (r.resource == "enipoolpolicies" && r.name == REAL_POLICY)
            })
            .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch"))
            .map(|r| format!("{} {}/{}", r.verb, r.resource, r.name))
            .collect();
        assert!(real_touched.is_empty(), "the run changed the cluster's objects: {real_touched:?}");
        let node = Api::<Node>::all(self.client.clone()).get(REAL_NODE).await.expect("real Node");
        assert!(node.labels().keys().all(|k| !k.starts_with("enipool")), "{:?}", node.labels());
    }

    /// Nodes the runner created in this API so far.
    fn nodes_created(&self) -> usize {
        let audit = self.api.audit();
        audit
            .iter()
            .filter(|r| r.verb == "create" && r.resource == "nodes" && r.subresource.is_empty())
            .count()
    }
}

/// The tests bring up fabrics and operators: one at a time on a shared machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Fails (never skips) without root or the binaries; runs `f` on a runtime of its own.
fn run_test<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        nix::unistd::geteuid().is_root(),
        "external_api needs root (the runner's VPC fabric: network namespaces, veths, nftables): \
         run it as root"
    );
    check_binaries();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    rt.expect("runtime").block_on(f());
}

fn output_text(out: &std::process::Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Shown with --nocapture, and by the harness on failure.
    println!("--- enipool-e2e stdout\n{stdout}--- enipool-e2e stderr\n{stderr}");
    (stdout, stderr)
}

#[test]
fn fabric_scenarios_run_against_an_external_api_and_leave_nothing_behind() {
    let scenarios: Vec<String> = match std::env::var("ENIPOOL_E2E_EXTERNAL_SCENARIOS") {
        Ok(s) => s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
        Err(_) => SCENARIOS.iter().map(|s| s.to_string()).collect(),
    };
    run_test(|| async {
        let cluster = StandIn::start().await;
        let mut args = vec!["run"];
        args.extend(scenarios.iter().map(String::as_str));
        let out = cluster.runner(&args).output().await.expect("running enipool-e2e");
        let (stdout, stderr) = output_text(&out);
        let summary = format!("{} passed, 0 failed", scenarios.len());
        assert!(
            out.status.success() && stdout.lines().any(|l| l == summary),
            "enipool-e2e run --kubeconfig: {} (want the line {summary:?})",
            out.status
        );
        assert!(!stderr.contains("LEFT OBJECTS"), "the runner reported leftovers");
        // The operator finalized every pool itself (none needed its finalizer stripped).
        assert!(!stderr.contains("finalizers will be removed"), "pools not finalized in time");
        // Every scenario but crds-served joins nodes; fewer means they ran elsewhere.
        let joined = cluster.nodes_created();
        assert!(joined >= scenarios.len() - 1, "{joined} Nodes created in the external API");
        cluster.assert_clean().await;
        cluster.api.shutdown().await;
    });
}

#[test]
fn a_scenario_that_times_out_leaves_nothing_behind() {
    run_test(|| async {
        let cluster = StandIn::start().await;
        // scale-down-after-delay needs 20 s: dropped mid-scenario, with pods and pools in place.
        let out = cluster
            .runner(&["run", "scale-down-after-delay", "--timeout-seconds", "8"])
            .output()
            .await
            .expect("running enipool-e2e");
        let (stdout, stderr) = output_text(&out);
        assert!(!out.status.success(), "a timed-out scenario passed");
        assert!(stdout.contains("timed out after 8s") && stdout.contains("0 passed, 1 failed"));
        assert!(!stderr.contains("LEFT OBJECTS"), "the runner reported leftovers");
        assert!(cluster.nodes_created() >= 1, "the scenario never joined its node");
        cluster.assert_clean().await;
        cluster.api.shutdown().await;
    });
}

#[test]
fn an_interrupted_run_leaves_nothing_behind() {
    run_test(|| async {
        let cluster = StandIn::start().await;
        let child = cluster
            .runner(&["run", "scale-down-after-delay"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running enipool-e2e");
        // Interrupted once the run has pods (and so Nodes, pools, a policy, a Lease, a namespace).
        let pods: Api<Pod> = Api::all(cluster.client.clone());
        let lp = ListParams::default().labels("enipool-e2e/run");
        let started = std::time::Instant::now();
        while pods.list(&lp).await.unwrap().items.is_empty() {
            assert!(started.elapsed().as_secs() < 60, "no pod of the run within 60 s");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        let out = child.wait_with_output().await.expect("enipool-e2e exit");
        let (_, stderr) = output_text(&out);
        assert_eq!(out.status.code(), Some(130), "exit after SIGINT");
        assert!(!stderr.contains("LEFT OBJECTS"), "the runner reported leftovers");
        cluster.assert_clean().await;
        cluster.api.shutdown().await;
    });
}
