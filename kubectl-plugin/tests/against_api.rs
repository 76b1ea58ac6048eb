//! The plugin binary against the test platform's Kubernetes API server, through a kubeconfig file
//! as a user would run it: the CRDs installed, a pool whose status is not Ready.

use enipool_crds::ENIPool;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kubeapi::{KubeApi, KubeApiConfig};
use serde_json::json;

async fn seed(client: &kube::Client) {
    cluster::kube::install_crds(client).await.expect("CRDs");
    let pools: Api<ENIPool> = Api::all(client.clone());
    let pool: ENIPool = serde_json::from_value(json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool",
        "metadata": {"name": "ip-10-0-1-5"},
        "spec": {"nodeName": "ip-10-0-1-5", "instanceID": "i-0123456789abcdef0"},
    }))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.expect("create pool");
    let status = json!({"status": {
        "enis": [{"id": "eni-0a", "deviceIndex": 0, "mac": "02:00:00:00:00:0a",
                  "subnetID": "subnet-0a", "subnetCIDR": "10.0.0.0/20", "primaryIP": "10.0.1.5",
                  "ips": ["10.0.1.20"]}],
        "conditions": [{"type": "Ready", "status": "False", "reason": "SubnetExhausted",
                        "message": "subnet-0a has no free addresses",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }});
    pools
        .patch_status("ip-10-0-1-5", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
}

fn plugin(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-enipool"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run kubectl-enipool");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_node_name_the_pool_that_is_not_ready_and_why() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let api = KubeApi::start(KubeApiConfig::default()).await.expect("API server");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    seed(&api.client().expect("client")).await;

    let kc = kubeconfig.clone();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || plugin(&kc, &["status"])).await.unwrap();
    assert!(ok, "status failed: {err}");
    let line = out
        .lines()
        .skip_while(|l| !l.starts_with("POOLS NOT READY"))
        .find(|l| l.contains("ip-10-0-1-5"))
        .unwrap_or_else(|| panic!("pool not listed as not Ready:\n{out}"));
    assert!(line.contains("SubnetExhausted: subnet-0a has no free addresses"), "{line}");

    let kc = kubeconfig.clone();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || plugin(&kc, &["node", "ip-10-0-1-5"])).await.unwrap();
    assert!(ok, "node failed: {err}");
    assert!(out.contains("eni-0a") && out.contains("10.0.1.20"), "{out}");
    assert!(out.contains("SubnetExhausted"), "{out}");

    let kc = kubeconfig.clone();
    let (ok, _, err) =
        tokio::task::spawn_blocking(move || plugin(&kc, &["node", "nope"])).await.unwrap();
    assert!(!ok && err.contains("no ENIPool named \"nope\""), "{err}");

    // --context picks a context other than the current one.
    let mut kc = Kubeconfig::read_from(&kubeconfig).unwrap();
    let good = kc.current_context.clone().expect("a current context");
    let mut dead = kc.clusters[0].clone();
    dead.name = "dead".into();
    dead.cluster.as_mut().unwrap().server = Some("https://127.0.0.1:1".into());
    let mut dead_ctx = kc.contexts[0].clone();
    dead_ctx.name = "dead".into();
    dead_ctx.context.as_mut().unwrap().cluster = "dead".into();
    kc.clusters.push(dead);
    kc.contexts.push(dead_ctx);
    kc.current_context = Some("dead".into());
    let two = dir.path().join("two-contexts");
    std::fs::write(&two, serde_json::to_string(&kc).unwrap()).unwrap();
    let t = two.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || plugin(&t, &["status"])).await.unwrap();
    assert!(!ok && err.contains("list enipools"), "the current context is the dead one: {err}");
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || plugin(&two, &["--context", &good, "status"]))
            .await
            .unwrap();
    assert!(ok && out.contains("ip-10-0-1-5"), "{err}\n{out}");
    api.shutdown().await;
}
