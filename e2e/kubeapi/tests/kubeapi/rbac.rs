//! RBAC authorization through kube-rs clients: off by default, `system:masters` unrestricted, and
//! when on, exactly what the stored roles grant (subresources, resourceNames, RoleBinding to a
//! ClusterRole in one namespace, ServiceAccount subjects, the create check of an apply that
//! creates), refused with the apiserver's 403; and `kubectl apply` of the chart's rendered RBAC.

use enipool_crds::ENIPool;
use enipool_kubeapi::{KubeApiConfig, UserInfo};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use crate::chart_rbac;
use crate::common::{code, install_widgets, kubectl, obj, widget, widget_ar, Env};

const AGENT: &str = "system:serviceaccount:kube-system:agent";

fn forbidden(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 && s.reason == "Forbidden" => s.message,
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

async fn create_rbac(client: &kube::Client, objects: Value) {
    let pp = PostParams::default();
    for o in objects.as_array().unwrap() {
        match o["kind"].as_str().unwrap() {
            "ClusterRole" => drop(
                Api::<ClusterRole>::all(client.clone()).create(&pp, &obj(o.clone())).await.unwrap(),
            ),
            "ClusterRoleBinding" => drop(
                Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&pp, &obj(o.clone()))
                    .await
                    .unwrap(),
            ),
            "RoleBinding" => {
                let ns = o["metadata"]["namespace"].as_str().unwrap();
                drop(
                    Api::<RoleBinding>::namespaced(client.clone(), ns)
                        .create(&pp, &obj(o.clone()))
                        .await
                        .unwrap(),
                )
            }
            k => panic!("{k}"),
        }
    }
}

/// kubectl's combined output when it fails (it must).
async fn kubectl_status(env: &Env, args: &[&str]) -> String {
    let out = tokio::process::Command::new(crate::common::KUBECTL)
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "kubectl {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn sa_subject() -> Value {
    json!([{"kind": "ServiceAccount", "name": "agent", "namespace": "kube-system"}])
}

#[tokio::test]
async fn rbac_is_off_by_default_and_never_restricts_masters() {
    let env = Env::start().await;
    assert!(!env.api.rbac_enabled());
    env.api.add_token("agent-token", UserInfo::service_account("kube-system", "agent"));
    let agent = env.api.client_with_token("agent-token").unwrap();
    let nodes: Api<Node> = Api::all(agent.clone());
    nodes.create(&PostParams::default(), &obj(json!({"metadata": {"name": "n1"}}))).await.unwrap();

    env.api.set_rbac(true);
    let msg = forbidden(nodes.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(msg, format!("nodes is forbidden: User \"{AGENT}\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"));
    let msg = forbidden(nodes.delete("n1", &DeleteParams::default()).await.unwrap_err());
    assert_eq!(msg, format!("nodes \"n1\" is forbidden: User \"{AGENT}\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope"));
    // Discovery and /version stay readable to authenticated users.
    agent.apiserver_version().await.unwrap();
    // The admin token is in system:masters: no RBAC objects needed.
    Api::<Node>::all(env.client.clone()).list(&ListParams::default()).await.unwrap();

    env.api.set_rbac(false);
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    env.api.shutdown().await;
}

#[tokio::test]
async fn rbac_allows_exactly_what_rules_grant() {
    let env = Env::with_config(KubeApiConfig { rbac: true, ..Default::default() }).await;
    let widgets = install_widgets(&env.client).await;
    widgets.create(&PostParams::default(), &widget("w1", json!({"size": 1}))).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    for n in ["allowed", "other"] {
        cms.create(&PostParams::default(), &obj(json!({"metadata": {"name": n}}))).await.unwrap();
    }
    env.api.add_token("agent-token", UserInfo::service_account("kube-system", "agent"));
    create_rbac(&env.client, json!([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "agent"},
         "rules": [
            {"apiGroups": ["test.enipool.io"], "resources": ["widgets"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["test.enipool.io"], "resources": ["widgets/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["allowed"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "agent"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "agent"},
         "subjects": sa_subject()},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "cm-patcher"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "agent-cm", "namespace": "default"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cm-patcher"},
         "subjects": sa_subject()},
    ])).await;
    let agent = env.api.client_with_token("agent-token").unwrap();
    let aw: Api<kube::api::DynamicObject> =
        Api::namespaced_with(agent.clone(), "default", &widget_ar());

    // Widgets: read, and patch status only.
    aw.list(&ListParams::default()).await.unwrap();
    let status = Patch::Merge(json!({"status": {"phase": "Ok"}}));
    aw.patch_status("w1", &PatchParams::default(), &status).await.unwrap();
    let msg = forbidden(
        aw.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(msg, format!("widgets.test.enipool.io \"w1\" is forbidden: User \"{AGENT}\" cannot patch resource \"widgets\" in API group \"test.enipool.io\" in the namespace \"default\""));
    let msg = forbidden(aw.delete("w1", &DeleteParams::default()).await.unwrap_err());
    assert!(msg.contains("cannot delete resource \"widgets\""), "{msg}");
    let w1 = widgets.get("w1").await.unwrap();
    let put = aw.replace_status("w1", &PostParams::default(), &w1).await.unwrap_err();
    assert!(forbidden(put).contains("cannot update resource \"widgets/status\""));

    // ConfigMaps: the named one through the ClusterRoleBinding; get and patch in `default` through
    // the RoleBinding to a ClusterRole; nothing in another namespace.
    let acm: Api<ConfigMap> = Api::namespaced(agent.clone(), "default");
    acm.get("allowed").await.unwrap();
    acm.get("other").await.unwrap();
    let elsewhere: Api<ConfigMap> = Api::namespaced(agent.clone(), "kube-public");
    let msg = forbidden(elsewhere.get("other").await.unwrap_err());
    assert_eq!(msg, format!("configmaps \"other\" is forbidden: User \"{AGENT}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-public\""));
    assert_eq!(
        code(&elsewhere.get("allowed").await.unwrap_err()),
        404,
        "the named grant is cluster-wide"
    );
    let msg = forbidden(acm.list(&ListParams::default()).await.unwrap_err());
    assert!(msg.starts_with("configmaps is forbidden:"), "{msg}");
    acm.patch("other", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "1"}})))
        .await
        .unwrap();
    // An apply that would create the object is also checked as `create`, which is not granted.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}, "data": {"a": "1"}});
    let e = acm.patch("new", &PatchParams::apply("agent"), &Patch::Apply(&cm)).await.unwrap_err();
    assert_eq!(forbidden(e), "configmaps \"new\" is forbidden: ");
    assert_eq!(code(&cms.get("new").await.unwrap_err()), 404, "nothing was created");
    let audit = env.api.audit();
    assert!(audit
        .iter()
        .any(|r| r.user == AGENT && r.verb == "create" && r.implied && r.name == "new"));
    // Once it exists, the same apply is a patch, which is granted.
    cms.create(&PostParams::default(), &obj(json!({"metadata": {"name": "new"}}))).await.unwrap();
    acm.patch("new", &PatchParams::apply("agent"), &Patch::Apply(&cm)).await.unwrap();

    // Another ServiceAccount of the same name in another namespace gets nothing.
    env.api.add_token("impostor", UserInfo::service_account("default", "agent"));
    let impostor: Api<ConfigMap> =
        Api::namespaced(env.api.client_with_token("impostor").unwrap(), "default");
    assert!(forbidden(impostor.get("allowed").await.unwrap_err())
        .contains("system:serviceaccount:default:agent"));
    env.api.shutdown().await;
}

#[tokio::test]
async fn kubectl_applies_the_charts_rbac_and_it_decides() {
    let env = Env::start().await;
    let docs =
        chart_rbac::render("enipool", "kube-system", "default-values.yaml").expect("helm template");
    let served = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];
    let items: Vec<Value> =
        docs.into_iter().filter(|d| served.iter().any(|k| d["kind"] == *k)).collect();
    assert!(items.iter().any(|d| d["kind"] == "RoleBinding"), "the chart has a RoleBinding");
    // One YAML stream of JSON documents (a `kind: List` would make kubectl ask for OpenAPI v2).
    let file = env.dir.path().join("rbac.yaml");
    let stream: Vec<String> = items.iter().map(Value::to_string).collect();
    std::fs::write(&file, stream.join("\n---\n")).unwrap();
    // kubectl sends no credentials to a plain-HTTP server: RBAC stays off while it applies. Twice:
    // create, then the update path.
    let out = kubectl(&env, &["apply", "-f", file.to_str().unwrap()]).await;
    assert!(out.contains("clusterrole.rbac.authorization.k8s.io/enipool-agent created"), "{out}");
    let out = kubectl(&env, &["apply", "-f", file.to_str().unwrap()]).await;
    assert!(
        out.contains(
            "rolebinding.rbac.authorization.k8s.io/enipool-operator-leader-election unchanged"
        ),
        "{out}"
    );
    let got = kubectl(&env, &["get", "clusterroles,clusterrolebindings", "-o", "name"]).await;
    assert!(got.contains("clusterrolebinding.rbac.authorization.k8s.io/enipool-operator"), "{got}");

    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    for (_, crd) in enipool_crds::generate::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    Api::<ENIPool>::all(env.client.clone())
        .create(&PostParams::default(), &obj(json!({"metadata": {"name": "n1"}, "spec": {"nodeName": "n1", "instanceID": "i-0123456789abcdef0"}})))
        .await
        .unwrap();
    env.api.set_rbac(true);
    env.api.add_token("agent", UserInfo::service_account("kube-system", "enipool-agent"));
    let pools: Api<ENIPool> = Api::all(env.api.client_with_token("agent").unwrap());
    pools.get("n1").await.unwrap();
    let msg = forbidden(pools.delete("n1", &DeleteParams::default()).await.unwrap_err());
    assert_eq!(msg, "enipools.enipool.io \"n1\" is forbidden: User \"system:serviceaccount:kube-system:enipool-agent\" cannot delete resource \"enipools\" in API group \"enipool.io\" at the cluster scope");

    // With RBAC on, kubectl (anonymous here) gets what system:unauthenticated is granted: not
    // even discovery at first.
    let out = kubectl_status(&env, &["get", "enipools"]).await;
    assert!(out.contains("Error from server (Forbidden)"), "{out}");
    let denied =
        env.api.audit().into_iter().any(|r| r.user == "system:anonymous" && r.path == "/api");
    assert!(denied, "kubectl's discovery was the anonymous request");
    create_rbac(&env.client, json!([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "discovery"},
         "rules": [{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "discovery"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "discovery"},
         "subjects": [{"kind": "Group", "name": "system:unauthenticated"}]},
    ])).await;
    let out = kubectl_status(&env, &["get", "enipools"]).await;
    assert!(out.contains("Error from server (Forbidden): enipools.enipool.io is forbidden: User \"system:anonymous\" cannot list resource \"enipools\" in API group \"enipool.io\" at the cluster scope"), "{out}");
    create_rbac(&env.client, json!([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "all"},
         "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "kubectl"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "all"},
         "subjects": [{"kind": "Group", "name": "system:unauthenticated"}]},
    ])).await;
    assert!(kubectl(&env, &["get", "enipools", "-o", "name"]).await.contains("enipool.io/n1"));
    env.api.shutdown().await;
}
