//! The fully-real path of `pools-match-ec2` and `pod-gets-vpc-ip`, proven against independent
//! processes. A platform cluster (EC2 simulator, VPC fabric, Kubernetes API, operator and agents
//! as processes, two nodes, pods) stands in for "an existing cluster where enipool is installed";
//! this test plays that cluster's kubelet (it runs the Pods bound to the platform's nodes that the
//! platform did not create: sandbox netns, CNI ADD through libcni, status Running with the podIP;
//! CNI DEL when the Pod is deleted); and the runner binary runs as a child in real mode, knowing
//! only what a user would give it: `--kubeconfig`, `--ec2-endpoint` and the AWS settings.
//!
//! The negative test breaks three invariants behind the stopped operators' backs (an address
//! unassigned in EC2, a leaked cluster ENI, a second pod with another pod's IP) and requires the
//! runner to report exactly those three.
//!
//! Needs root (network namespaces), and current `target/debug/enipool-{operator,agent,cni}`
//! (`cargo build -p enipool-operator -p enipool-agent -p enipool-cni`). Everything is torn down
//! when the test ends, also when it fails.

#[path = "common/binaries.rs"]
mod binaries;

use anyhow::{bail, Context, Result};
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use cluster::Target;
use cluster::{wait, Cluster, Spec, REGION};
use enipool_crds::{tags, ENIPool};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

/// One platform cluster at a time: two would compete for the two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// Fails (never skips) without root; points the platform at the workspace's binaries, refusing
/// any older than its sources.
fn setup() -> std::sync::MutexGuard<'static, ()> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the real-mode tests need root (the platform's nodes are network namespaces): run them as root"
    );
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let build = "cargo build -p enipool-operator -p enipool-agent -p enipool-cni";
    let operator = binaries::fresh_binary("enipool-operator", &["operator/src", "crds/src"], build);
    binaries::fresh_binary("enipool-agent", &["node-agent/src", "cni-shim/src", "crds/src"], build);
    binaries::fresh_binary("enipool-cni", &["cni-shim/src"], build);
    // The platform looks next to its own executable otherwise: target/debug/deps for this test.
    std::env::set_var("ENIPOOL_E2E_BIN_DIR", operator.parent().expect("bin dir"));
    guard
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()
}

/// Two m5.large nodes with 12 warm IPs (the primary ENI holds 9, so each pool also has an ENI
/// enipool created and tagged) and one platform pod per node.
async fn cluster(name: &str) -> Result<Cluster> {
    let spec = Spec::new(name, 2).policy(serde_json::json!({
        "mode": "SecondaryIP",
        "sizing": {"warmIPs": 12, "batch": 1},
        "release": {"enabled": true, "delaySeconds": 10},
        "cooldownSeconds": 1,
    }));
    let c = Cluster::up(&Target::default(), spec).await?;
    let r = async {
        for (i, n) in c.nodes().iter().enumerate() {
            wait_ready(&c, &n.name).await?;
            c.add_pod(&format!("w{i}"), &n.name).await?;
        }
        Ok(())
    }
    .await;
    match r {
        Ok(()) => Ok(c),
        Err(e) => Err(c.finish(Err(e)).await.unwrap_err()),
    }
}

/// Pool Ready, with a secondary ENI the agent programmed.
async fn wait_ready(c: &Cluster, node: &str) -> Result<()> {
    wait::poll(
        &format!("ENIPool {node} Ready with two programmed ENIs"),
        Duration::from_secs(90),
        || async {
            let p = c.pool(node).await?;
            let st = p.status.context("no status")?;
            let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            let programmed = st.agent.map(|a| a.ready_enis).unwrap_or_default();
            if !ready || st.enis.len() < 2 || st.enis.iter().any(|e| !programmed.contains(&e.id)) {
                bail!("Ready {ready}, ENIs {:?}, programmed {programmed:?}", st.enis.len());
            }
            Ok(())
        },
    )
    .await
}

/// The runner binary in real mode; returns (success, stdout). Its stderr is passed through.
async fn runner(c: &Cluster, args: &[&str]) -> Result<(bool, String)> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_enipool-e2e"));
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(&c.kube.kubeconfig)
        .args(["--ec2-endpoint", &c.sim().endpoint_url(), "--timeout-seconds", "240"])
        // What the operator gets for the simulator (cluster/node.rs), as a user's AWS settings.
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ENIPOOL_E2E_POD_NAMESPACE", c.pod_namespace())
        .env_remove("ENIPOOL_E2E_CLUSTER_NAME")
        .env_remove("ENIPOOL_E2E_KUBECONFIG")
        .env_remove("ENIPOOL_E2E_EC2_ENDPOINT")
        .stderr(std::process::Stdio::inherit());
    let out = wait::blocking(move || cmd.output()).await.context("running enipool-e2e")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("----- enipool-e2e {args:?} -----\n{stdout}");
    Ok((out.status.success(), stdout))
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// What the test's kubelet did: `ADD <pod> <ip>` and `DEL <pod>`.
type Log = Mutex<Vec<String>>;

/// The cluster's kubelet for Pods the platform did not create (its own carry `app=enipool-e2e`):
/// runs each new Pod bound to one of the platform's nodes, and tears its sandbox down (CNI DEL)
/// once the Pod object is gone. Runs until dropped.
async fn kubelet(c: &Cluster, log: &Log) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(c.client().clone(), c.pod_namespace());
    let nodes: BTreeSet<String> = c.nodes().into_iter().map(|n| n.name).collect();
    let mut running: BTreeSet<String> = BTreeSet::new();
    loop {
        let pods = api.list(&ListParams::default()).await?.items;
        for p in &pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            let ours = p.metadata.labels.as_ref().and_then(|l| l.get("app")).map(String::as_str)
                == Some("enipool-e2e");
            let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref());
            if ours
                || running.contains(&name)
                || c.pod(&name).is_ok()
                || !bound.is_some_and(|n| nodes.contains(n))
            {
                continue;
            }
            let info =
                c.run_existing_pod(&name).await.with_context(|| format!("running Pod {name}"))?;
            log.lock().unwrap().push(format!("ADD {name} {}", info.ip()?));
            running.insert(name);
        }
        let listed: BTreeSet<String> =
            pods.iter().filter_map(|p| p.metadata.name.clone()).collect();
        for gone in running.difference(&listed).cloned().collect::<Vec<_>>() {
            // CNI DEL and the sandbox go first; deleting the object after is a 404 (it is gone).
            if let Err(e) = c.delete_pod(&gone).await {
                let not_found = e.chain().any(|c| {
                    matches!(c.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 404)
                });
                if !not_found {
                    return Err(e.context(format!("tearing down Pod {gone}")));
                }
            }
            log.lock().unwrap().push(format!("DEL {gone}"));
            running.remove(&gone);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn runner_in_real_mode_passes_on_a_healthy_cluster() {
    let _serial = setup();
    let rt = runtime();
    let c = rt.block_on(cluster("real-mode")).expect("platform cluster");
    let log = Log::default();
    let r = rt.block_on(async {
        let child = runner(&c, &["run", "pools-match-ec2", "pod-gets-vpc-ip"]);
        let (ok, out) = tokio::select! {
            r = child => r?,
            r = kubelet(&c, &log) => bail!("the test's kubelet stopped: {r:?}"),
        };
        if !ok || last_line(&out) != "2 passed, 0 failed" {
            bail!("the runner failed in real mode: {out}");
        }
        // The cluster name was found the way it is on a real cluster without --cluster-name.
        let from_tags = format!("cluster {} (from the pools' ENI tags)", c.name);
        if !out.contains(&from_tags) {
            bail!("expected {from_tags:?} in the runner's output");
        }
        // The Pod ran through this test's kubelet, with the address the runner checked, and its
        // sandbox was torn down when the runner deleted it.
        let log = log.lock().unwrap().clone();
        let (pod, ip) = match log.first().map(|l| l.split(' ').collect::<Vec<_>>()).as_deref() {
            Some(["ADD", pod, ip]) => (pod.to_string(), ip.to_string()),
            _ => bail!("the test's kubelet ran no Pod: {log:?}"),
        };
        if log != [format!("ADD {pod} {ip}"), format!("DEL {pod}")] {
            bail!("kubelet log {log:?}: expected one ADD and one DEL");
        }
        if !pod.starts_with("enipool-e2e-vpc-ip-") || !out.contains(&format!("pod {pod} on ")) {
            bail!("the runner's Pod was not the one this kubelet ran: {log:?}");
        }
        if !out.contains(&format!(": {ip}\n")) {
            bail!("the runner did not check the address {ip} the kubelet got");
        }
        Ok(())
    });
    rt.block_on(c.finish(r)).expect("real mode against the platform");
}

/// An SDK client for the simulator, as the operator's.
async fn ec2(c: &Cluster) -> aws_sdk_ec2::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(c.sim().endpoint_url())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "real-mode-test"))
        .load()
        .await;
    aws_sdk_ec2::Client::new(&conf)
}

/// An address of the pool that no pod holds, and its ENI.
fn free_address(pool: &ENIPool, used: &[Ipv4Addr]) -> Option<(String, String)> {
    let st = pool.status.as_ref()?;
    st.enis.iter().find_map(|e| {
        let ip = e.ips.iter().find(|a| a.parse().is_ok_and(|a: Ipv4Addr| !used.contains(&a)))?;
        Some((e.id.clone(), ip.clone()))
    })
}

#[test]
fn runner_in_real_mode_reports_broken_invariants() {
    let _serial = setup();
    let rt = runtime();
    let c = rt.block_on(cluster("real-mode-neg")).expect("platform cluster");
    let r = rt.block_on(async {
        // Nothing repairs what follows: the leader would resync the pool, GC would delete the ENI.
        for i in 0..c.spec.operator_replicas {
            c.core.procs.stop(&format!("operator-{i}"));
        }
        let ec2 = ec2(&c).await;
        let nodes = c.nodes();
        let used: Vec<Ipv4Addr> = c.pods().iter().filter_map(|p| p.ip).collect();
        // 1. An address the pool records, unassigned in EC2.
        let pool = c.pool(&nodes[0].name).await?;
        let (eni, ip) = free_address(&pool, &used).context("a free address in the pool")?;
        ec2.unassign_private_ip_addresses()
            .network_interface_id(&eni)
            .private_ip_addresses(&ip)
            .send()
            .await?;
        // 2. An ENI tagged for this cluster by enipool, available, two hours old, recorded nowhere.
        let created = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2)).to_string();
        let mut spec = TagSpecification::builder().resource_type(ResourceType::NetworkInterface);
        for (k, v) in [
            (tags::CLUSTER, c.name.as_str()),
            (tags::OWNER, tags::OWNER_VALUE),
            (tags::CREATED_AT, created.as_str()),
        ] {
            spec = spec.tags(Tag::builder().key(k).value(v).build());
        }
        let leaked = ec2
            .create_network_interface()
            .subnet_id(&c.subnet_ids[0])
            .groups(&c.sg_id)
            .tag_specifications(spec.build())
            .send()
            .await?
            .network_interface()
            .and_then(|n| n.network_interface_id())
            .map(str::to_string)
            .context("CreateNetworkInterface returned no id")?;
        // 3. A second pod claiming the IP of the pod on the second node.
        let victim = c.pods().into_iter().find(|p| p.node == nodes[1].name).context("pod on n2")?;
        let twin = victim.ip()?.to_string();
        let api: Api<Pod> = Api::namespaced(c.client().clone(), c.pod_namespace());
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "twin"},
            "spec": {"nodeName": nodes[1].name, "containers": [{"name": "c", "image": "x"}]},
        }))?;
        api.create(&PostParams::default(), &pod).await?;
        let status = serde_json::json!({"status": {"phase": "Running", "podIP": twin}});
        api.patch_status("twin", &PatchParams::default(), &Patch::Merge(&status)).await?;
        // The audit reads EC2 through its describes, which show a change only after their lag.
        tokio::time::sleep(cluster::DESCRIBE_LAG + Duration::from_millis(500)).await;

        let (ok, out) = runner(&c, &["run", "pools-match-ec2", "--cluster-name", &c.name]).await?;
        if ok || last_line(&out) != "0 passed, 1 failed" {
            bail!("the runner passed a broken cluster: {out}");
        }
        let expected = BTreeMap::from([
            ("unassigned address", format!("records {ip} on {eni}, EC2 has not assigned it there")),
            ("leaked ENI", format!("leaked ENI {leaked} (available, created-at {created})")),
            ("duplicate pod IP", format!("both have IP {twin}")),
            ("nothing else", format!("3 finding(s) in cluster {}", c.name)),
        ]);
        for (what, text) in expected {
            if !out.contains(&text) {
                bail!("{what}: {text:?} missing from the runner's report");
            }
        }
        Ok(())
    });
    rt.block_on(c.finish(r)).expect("real mode reports what was broken");
}
