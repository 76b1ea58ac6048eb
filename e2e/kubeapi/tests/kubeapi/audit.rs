//! The request audit (`KubeApi::audit`) seen through a real client: each token's user, and the
//! authorization verbs kube-rs requests map to (list, watch, get, create, patch with the implied
//! create of an apply that creates, update, delete, deletecollection).

use std::time::Duration;

use enipool_kubeapi::{AuditRecord, KubeApi, KubeApiConfig, DEFAULT_TOKEN};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

const SA: &str = "system:serviceaccount:kube-system:tester";

fn client_with(api: &KubeApi, token: &str) -> kube::Client {
    let mut cfg = kube::Config::new(api.url().parse().unwrap());
    cfg.auth_info.token = Some(token.to_string().into());
    kube::Client::try_from(cfg).unwrap()
}

/// (user, verb, group, resource[/sub], namespace, name)
fn key(r: &AuditRecord) -> (String, String, String, String, String, String) {
    (
        r.user.clone(),
        r.verb.clone(),
        r.api_group.clone(),
        r.resource_path(),
        r.namespace.clone(),
        r.name.clone(),
    )
}

#[tokio::test]
async fn audit_records_users_and_authorization_verbs() {
    let mut cfg = KubeApiConfig::default();
    cfg.tokens.push(("sa-token".into(), SA.into()));
    let api = KubeApi::start(cfg).await.unwrap();
    let admin = api.client().unwrap();
    let sa = client_with(&api, "sa-token");
    assert!(api.audit().is_empty());

    let cms: Api<ConfigMap> = Api::namespaced(sa.clone(), "default");
    let cm = |n: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": n}, "data": {"a": "1"}})).unwrap()
    };
    cms.create(&PostParams::default(), &cm("c1")).await.unwrap();
    cms.get("c1").await.unwrap();
    cms.list(&ListParams::default()).await.unwrap();
    let mut c1 = cms.get("c1").await.unwrap();
    c1.data.get_or_insert_default().insert("b".into(), "2".into());
    cms.replace("c1", &PostParams::default(), &c1).await.unwrap();
    cms.patch("c1", &PatchParams::default(), &Patch::Merge(json!({"data": {"c": "3"}})))
        .await
        .unwrap();
    // Apply that creates: patch + implied create; apply again: patch only.
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c2"}});
    for _ in 0..2 {
        cms.patch("c2", &PatchParams::apply("t"), &Patch::Apply(&body)).await.unwrap();
    }
    cms.delete("c1", &DeleteParams::default()).await.unwrap();
    cms.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
    // A kube-runtime watcher, pinned to a name by field selector, in another namespace.
    let leases: Api<Lease> = Api::namespaced(sa.clone(), "kube-system");
    let w = watcher(leases, watcher::Config::default().fields("metadata.name=l1"));
    // Polled in a task: after its initial list the watcher opens the watch on the next poll.
    let task = tokio::spawn(w.for_each(|_| async {}));
    tokio::time::timeout(Duration::from_secs(10), async {
        while !api.audit().iter().any(|r| r.verb == "watch") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("watch recorded");
    task.abort();
    // The admin token's user, and a request without a token.
    Api::<ConfigMap>::namespaced(admin, "default").get_opt("nope").await.unwrap();
    let anon = client_with(&api, "unknown-token");
    let _ = Api::<ConfigMap>::namespaced(anon, "default").get_opt("nope").await;

    let got: Vec<_> = api.audit().iter().map(key).collect();
    let s = |v: &str| v.to_string();
    let rec = |u: &str, verb: &str, g: &str, r: &str, ns: &str, n: &str| {
        (s(u), s(verb), s(g), s(r), s(ns), s(n))
    };
    let want = vec![
        rec(SA, "create", "", "configmaps", "default", ""),
        rec(SA, "get", "", "configmaps", "default", "c1"),
        rec(SA, "list", "", "configmaps", "default", ""),
        rec(SA, "get", "", "configmaps", "default", "c1"),
        rec(SA, "update", "", "configmaps", "default", "c1"),
        rec(SA, "patch", "", "configmaps", "default", "c1"),
        rec(SA, "patch", "", "configmaps", "default", "c2"),
        rec(SA, "create", "", "configmaps", "default", "c2"),
        rec(SA, "patch", "", "configmaps", "default", "c2"),
        rec(SA, "delete", "", "configmaps", "default", "c1"),
        rec(SA, "deletecollection", "", "configmaps", "default", ""),
        rec(SA, "list", "coordination.k8s.io", "leases", "kube-system", "l1"),
        rec(SA, "watch", "coordination.k8s.io", "leases", "kube-system", "l1"),
        rec("admin", "get", "", "configmaps", "default", "nope"),
        rec("system:anonymous", "get", "", "configmaps", "default", "nope"),
    ];
    assert_eq!(got, want, "{:#?}", api.audit());
    assert!(api.audit()[7].implied, "the create of an apply that created is implied");
    assert!(DEFAULT_TOKEN != "sa-token");
    api.clear_audit();
    assert!(api.audit().is_empty());
    api.shutdown().await;
}
