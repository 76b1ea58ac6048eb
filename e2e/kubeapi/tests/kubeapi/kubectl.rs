//! The real `/usr/bin/kubectl` against the server: get, printer columns, -o wide, server-side
//! apply of the project's generated CRDs, get -w.

use std::process::Stdio;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{install_widgets, kubectl, Env, KUBECTL};

fn repo(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn kubectl_get_and_printer_columns() {
    let env = Env::start().await;
    let out = kubectl(&env, &["get", "namespaces"]).await;
    assert!(out.contains("NAME") && out.contains("kube-system") && out.contains("Active"), "{out}");
    let widgets = install_widgets(&env.client).await;
    widgets.patch("w1", &PatchParams::apply("test"), &Patch::Apply(json!({
        "apiVersion": "test.enipool.io/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3, "zone": "eu-1a"}
    }))).await.unwrap();
    widgets
        .patch_status(
            "w1",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({
                "apiVersion": "test.enipool.io/v1", "kind": "Widget", "metadata": {"name": "w1"},
                "status": {"phase": "Ok", "conditions": [{"type": "Ready", "status": "True"}]}
            })),
        )
        .await
        .unwrap();
    let out = kubectl(&env, &["get", "widgets"]).await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "PHASE", "READY", "AGE"], "{out}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["w1", "3", "Ok", "True"], "{out}");
    let wide = kubectl(&env, &["get", "wg", "-o", "wide"]).await;
    assert!(wide.lines().next().unwrap().contains("ZONE") && wide.contains("eu-1a"), "{wide}");
    let yaml = kubectl(&env, &["get", "widget", "w1", "-o", "yaml"]).await;
    assert!(yaml.contains("zone: eu-1a"), "{yaml}");
    env.api.shutdown().await;
}

#[tokio::test]
async fn kubectl_server_side_apply_of_generated_crds_and_watch() {
    let env = Env::start().await;
    kubectl(&env, &["apply", "--server-side", "-f", &repo("crds/enipool.io_enipools.yaml")]).await;
    kubectl(&env, &["apply", "--server-side", "-f", &repo("crds/enipool.io_enipoolpolicies.yaml")])
        .await;
    let dir = env.dir.path();
    let pool = dir.join("pool.yaml");
    std::fs::write(&pool, "apiVersion: enipool.io/v1alpha1\nkind: ENIPool\nmetadata:\n  name: node-a\nspec:\n  nodeName: node-a\n  instanceID: i-0123456789abcdef0\n").unwrap();
    let out = kubectl(&env, &["apply", "--server-side", "-f", pool.to_str().unwrap()]).await;
    assert!(out.contains("serverside-applied"), "{out}");
    let out = kubectl(&env, &["get", "enipools"]).await;
    let header = out.lines().next().unwrap();
    for col in [
        "NAME",
        "NODE",
        "INSTANCE",
        "TYPE",
        "MODE",
        "ENIS",
        "ALLOCATED",
        "IN-USE",
        "AVAILABLE",
        "TARGET",
        "READY",
        "AGE",
    ] {
        assert!(header.contains(col), "missing {col}: {out}");
    }
    assert!(out.contains("i-0123456789abcdef0"), "{out}");
    let wide = kubectl(&env, &["get", "enipools", "-o", "wide"]).await;
    assert!(wide.lines().next().unwrap().contains("LAST-SYNC"), "{wide}");

    // get -w: start, change the object, read the new line.
    let mut child = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(["get", "enipools", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kubectl get -w");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.contains("EVENT") || first.contains("NAME"), "{first}");
    let second = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(second.contains("node-a"), "{second}");
    std::fs::write(&pool, "apiVersion: enipool.io/v1alpha1\nkind: ENIPool\nmetadata:\n  name: node-a\n  labels:\n    changed: \"yes\"\nspec:\n  nodeName: node-a\n  instanceID: i-0123456789abcdef0\n").unwrap();
    kubectl(&env, &["apply", "--server-side", "-f", pool.to_str().unwrap()]).await;
    let third = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(third.contains("MODIFIED") && third.contains("node-a"), "{third}");
    child.kill().await.unwrap();

    // Immutability through kubectl: the CEL transition rule rejects the change.
    std::fs::write(&pool, "apiVersion: enipool.io/v1alpha1\nkind: ENIPool\nmetadata:\n  name: node-a\nspec:\n  nodeName: node-a\n  instanceID: i-0fedcba9876543210\n").unwrap();
    let out = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(["apply", "--server-side", "-f", pool.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("immutable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.api.shutdown().await;
}

/// Manual debugging aid: `cargo test -p enipool-e2e --test kubeapi -- --ignored serve_for_debugging`
/// serves for two minutes with a kubeconfig at /tmp/kubeapi-debug.kubeconfig.
#[tokio::test]
#[ignore]
async fn serve_for_debugging() {
    let env = Env::start().await;
    env.api.write_kubeconfig(std::path::Path::new("/tmp/kubeapi-debug.kubeconfig")).unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
}
