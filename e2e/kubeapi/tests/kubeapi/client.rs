//! Core kinds through `kube::Client`: create/get/list/update/patch/delete semantics.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::common::{code, reason, Env};

fn node(name: &str, labels: serde_json::Value) -> Node {
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}),
    )
    .unwrap()
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn create_get_conflicts_and_selectors() {
    let env = Env::start().await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let pp = PostParams::default();
    let n1 = nodes.create(&pp, &node("n1", json!({"zone": "a"}))).await.unwrap();
    nodes.create(&pp, &node("n2", json!({"zone": "b"}))).await.unwrap();
    nodes.create(&pp, &node("n3", json!({}))).await.unwrap();
    assert!(n1.metadata.uid.is_some() && n1.metadata.creation_timestamp.is_some());
    let rv1 = n1.metadata.resource_version.clone().unwrap();

    // AlreadyExists.
    let e = nodes.create(&pp, &node("n1", json!({}))).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "AlreadyExists"));
    // NotFound.
    let e = nodes.get("nope").await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (404, "NotFound"));

    // Optimistic concurrency: the second update with the same resourceVersion conflicts.
    let mut a = nodes.get("n1").await.unwrap();
    let mut b = a.clone();
    a.metadata.labels.get_or_insert_default().insert("x".into(), "1".into());
    let a2 = nodes.replace("n1", &pp, &a).await.unwrap();
    assert_ne!(a2.metadata.resource_version.as_deref(), Some(rv1.as_str()));
    b.metadata.labels.get_or_insert_default().insert("x".into(), "2".into());
    let e = nodes.replace("n1", &pp, &b).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "Conflict"));

    // A no-op update does not bump the resourceVersion.
    let same = nodes.replace("n1", &pp, &a2).await.unwrap();
    assert_eq!(same.metadata.resource_version, a2.metadata.resource_version);

    // Label selectors.
    let names = |l: kube::core::ObjectList<Node>| {
        l.items.into_iter().map(|n| n.metadata.name.unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(names(nodes.list(&ListParams::default().labels("zone=a")).await.unwrap()), ["n1"]);
    assert_eq!(
        names(nodes.list(&ListParams::default().labels("zone")).await.unwrap()),
        ["n1", "n2"]
    );
    assert_eq!(names(nodes.list(&ListParams::default().labels("!zone")).await.unwrap()), ["n3"]);
    assert_eq!(
        names(nodes.list(&ListParams::default().labels("zone in (a,b),zone!=b")).await.unwrap()),
        ["n1"]
    );
    assert_eq!(
        names(nodes.list(&ListParams::default().labels("zone notin (a)")).await.unwrap()),
        ["n2", "n3"]
    );
    assert_eq!(
        names(nodes.list(&ListParams::default().fields("metadata.name=n2")).await.unwrap()),
        ["n2"]
    );

    // Pagination.
    let page = nodes.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = nodes.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!(names(rest), ["n3"]);

    // Pods: namespace must exist; spec.nodeName field selector; status starts Pending.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let p = pods.create(&pp, &pod("p1", "n1")).await.unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    pods.create(&pp, &pod("p2", "n2")).await.unwrap();
    let on_n1 = pods.list(&ListParams::default().fields("spec.nodeName=n1")).await.unwrap();
    assert_eq!(on_n1.items.len(), 1);
    let not_n1 = Api::<Pod>::all(env.client.clone())
        .list(&ListParams::default().fields("spec.nodeName!=n1"))
        .await
        .unwrap();
    assert_eq!(not_n1.items[0].metadata.name.as_deref(), Some("p2"));
    let missing: Api<Pod> = Api::namespaced(env.client.clone(), "nope");
    assert_eq!(code(&missing.create(&pp, &pod("p", "n1")).await.unwrap_err()), 404);

    // Status subresource: the main endpoint ignores .status; /status changes only .status.
    let st = pods
        .patch_status("p1", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.0.0.5"}, "spec": {"nodeName": "zzz"}})))
        .await
        .unwrap();
    assert_eq!(st.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(st.spec.as_ref().unwrap().node_name.as_deref(), Some("n1"));
    let m = pods
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Failed"}, "metadata": {"labels": {"k": "v"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(m.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(m.metadata.labels.unwrap()["k"], "v");

    // JSON patch.
    let j = pods
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(
                    json!([{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(j.metadata.annotations.unwrap()["a"], "b");

    // Delete.
    pods.delete("p2", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(&pods.get("p2").await.unwrap_err()), 404);
    env.api.shutdown().await;
}

#[tokio::test]
async fn leases_compare_and_swap() {
    let env = Env::start().await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-system");
    let l: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "enipool-operator"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2025-01-01T00:00:00.000000Z"}
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &l).await.unwrap();
    // Two candidates read the same version; only the first takeover wins.
    let mut b = created.clone();
    b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let mut c = created.clone();
    c.spec.as_mut().unwrap().holder_identity = Some("c".into());
    leases.replace("enipool-operator", &PostParams::default(), &b).await.unwrap();
    let e = leases.replace("enipool-operator", &PostParams::default(), &c).await.unwrap_err();
    assert_eq!(code(&e), 409);
    let now = leases.get("enipool-operator").await.unwrap();
    assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("b"));
    env.api.shutdown().await;
}

#[tokio::test]
async fn finalizers_and_owner_gc() {
    let env = Env::start().await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let pp = PostParams::default();
    let owner = nodes.create(&pp, &node("owner", json!({}))).await.unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "Node", "name": "owner", "uid": owner.metadata.uid, "controller": true}]);
    for (name, fin) in [("dep-plain", json!(null)), ("dep-fin", json!(["test.enipool.io/hold"]))] {
        let mut p = serde_json::to_value(pod(name, "owner")).unwrap();
        p["metadata"]["ownerReferences"] = oref.clone();
        if !fin.is_null() {
            p["metadata"]["finalizers"] = fin;
        }
        pods.create(&pp, &serde_json::from_value(p).unwrap()).await.unwrap();
    }
    // An orphan-policy delete keeps dependents (but drops the reference).
    let other = nodes.create(&pp, &node("other", json!({}))).await.unwrap();
    let mut p = serde_json::to_value(pod("dep-orphan", "other")).unwrap();
    p["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "Node", "name": "other", "uid": other.metadata.uid}]);
    pods.create(&pp, &serde_json::from_value(p).unwrap()).await.unwrap();
    nodes
        .delete(
            "other",
            &DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let orphan = pods.get("dep-orphan").await.unwrap();
    assert!(orphan.metadata.owner_references.is_none());

    // Background cascade: the plain dependent goes, the one with a finalizer is terminating.
    nodes.delete("owner", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(&pods.get("dep-plain").await.unwrap_err()), 404);
    let held = pods.get("dep-fin").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    // Deleting again is idempotent; removing the finalizer completes the deletion.
    pods.delete("dep-fin", &DeleteParams::default()).await.unwrap();
    pods.patch(
        "dep-fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(code(&pods.get("dep-fin").await.unwrap_err()), 404);
    env.api.shutdown().await;
}
