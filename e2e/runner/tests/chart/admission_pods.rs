//! The pod-IP annotation's admission policy (`agent.annotatePodIP`), evaluated in CEL: the agent
//! may set `enipool.io/pod-ips` on pods bound to its own Node and change nothing else; a node is
//! not trusted with any other pod or field.

use super::admission::{admit, agent_sa, policy_and_binding};
use super::{find, render, Values, NODE_NAME_CLAIM, RELEASE};
use kubeapi::admission::{AdmissionRequest, Gvk, Gvr, Operation};
use kubeapi::UserInfo;
use serde_json::{json, Value};

const ANNOTATION: &str = "enipool.io/pod-ips";

fn rendered(annotate: bool) -> Vec<Value> {
    let values = json!({"clusterName": "c", "agent": {"annotatePodIP": annotate}});
    render(&Values::Json(values)).unwrap()
}

fn pods_vap() -> Vec<Value> {
    policy_and_binding(&rendered(true), "agent-own-pods")
}

fn agent_user(node: Option<&str>) -> UserInfo {
    let u = agent_sa();
    match node {
        Some(n) => u.with_extra(NODE_NAME_CLAIM, [n]),
        None => u,
    }
}

fn pod(node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "apps", "resourceVersion": "9",
                     "labels": {"app": "web"}, "annotations": {"team": "a"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": "Pending"}
    })
}

fn annotated(old: &Value) -> Value {
    let mut p = old.clone();
    p["metadata"]["annotations"][ANNOTATION] = json!("10.0.1.5");
    p
}

fn request(
    op: Operation,
    sub: &str,
    claim: Option<&str>,
    old: Option<Value>,
    new: Option<Value>,
) -> AdmissionRequest {
    AdmissionRequest {
        operation: op,
        kind: Gvk::new("", "v1", "Pod"),
        resource: Gvr::new("", "v1", "pods"),
        sub_resource: sub.into(),
        name: "web".into(),
        namespace: "apps".into(),
        user: agent_user(claim),
        object: new,
        old_object: old,
        ..Default::default()
    }
}

fn update(claim: &str, old: &Value, new: Value) -> AdmissionRequest {
    request(Operation::Update, "", Some(claim), Some(old.clone()), Some(new))
}

#[test]
fn the_agent_sets_the_annotation_on_pods_of_its_own_node_only() {
    let p = pods_vap();
    let old = pod("n1");
    admit(&p, &update("n1", &old, annotated(&old))).unwrap();
    // A pod without any annotation yet, and a change of the agent's own annotation.
    let mut bare = old.clone();
    bare["metadata"].as_object_mut().unwrap().remove("annotations");
    admit(&p, &update("n1", &bare, annotated(&bare))).unwrap();
    let mut moved = annotated(&old);
    moved["metadata"]["annotations"][ANNOTATION] = json!("10.0.1.6");
    admit(&p, &update("n1", &annotated(&old), moved)).unwrap();

    let e = admit(&p, &update("n2", &old, annotated(&old))).unwrap_err();
    assert!(e.contains("Pod apps/web"), "another node's pod: {e}");
    let mut unbound = old.clone();
    unbound["spec"].as_object_mut().unwrap().remove("nodeName");
    assert!(admit(&p, &update("n1", &unbound, annotated(&unbound))).is_err(), "unbound pod");
    let r = request(Operation::Update, "", None, Some(old.clone()), Some(annotated(&old)));
    assert!(admit(&p, &r).is_err(), "a token without the node-name claim");
}

#[test]
fn the_agent_changes_nothing_else_of_a_pod() {
    let p = pods_vap();
    let old = pod("n1");
    let changed = |f: &dyn Fn(&mut Value)| {
        let mut n = annotated(&old);
        f(&mut n);
        admit(&p, &update("n1", &old, n)).unwrap_err()
    };
    let e = changed(&|n| n["metadata"]["annotations"]["team"] = json!("b"));
    assert!(e.contains("other annotations"), "{e}");
    let e = changed(&|n| {
        n["metadata"]["annotations"].as_object_mut().unwrap().remove("team");
    });
    assert!(e.contains("other annotations"), "removed: {e}");
    let e = changed(&|n| n["metadata"]["annotations"]["x"] = json!("y"));
    assert!(e.contains("other annotations"), "added: {e}");
    let e = changed(&|n| n["metadata"]["labels"]["app"] = json!("db"));
    assert!(e.contains("metadata.labels"), "{e}");
    let e = changed(&|n| n["metadata"]["finalizers"] = json!(["x/y"]));
    assert!(e.contains("metadata.finalizers"), "{e}");
    let e = changed(&|n| n["spec"]["containers"][0]["image"] = json!("evil"));
    assert!(e.contains("spec"), "{e}");
    let e = changed(&|n| n["metadata"]["ownerReferences"] = json!([{"kind": "X", "name": "x"}]));
    assert!(e.contains("metadata.ownerReferences"), "{e}");

    for (op, sub, o, n) in [
        (Operation::Create, "", None, Some(old.clone())),
        (Operation::Delete, "", Some(old.clone()), None),
        (Operation::Update, "status", Some(old.clone()), Some(annotated(&old))),
        (Operation::Create, "eviction", None, Some(json!({"kind": "Eviction"}))),
    ] {
        let r = request(op, sub, Some("n1"), o, n);
        assert!(admit(&p, &r).is_err(), "{op:?} {sub}");
    }
    // Other users are not subject to it.
    let mut r = update("n1", &old, {
        let mut n = annotated(&old);
        n["spec"]["containers"][0]["image"] = json!("new");
        n
    });
    r.user = UserInfo::new("kubernetes-admin");
    admit(&p, &r).unwrap();
}

#[test]
fn pod_rbac_and_policy_are_rendered_only_when_enabled() {
    let grants_patch = |docs: &[Value]| {
        let role = find(docs, "ClusterRole", &format!("{RELEASE}-agent"));
        role["rules"].as_array().unwrap().iter().any(|r| {
            r["resources"].as_array().unwrap().contains(&json!("pods"))
                && r["verbs"].as_array().unwrap().contains(&json!("patch"))
        })
    };
    let has_vap = |docs: &[Value]| {
        let name = format!("{RELEASE}-agent-own-pods");
        docs.iter().any(|d| d["metadata"]["name"] == name)
    };
    let off = rendered(false);
    assert!(!grants_patch(&off) && !has_vap(&off), "off by default: no patch on pods");
    let on = rendered(true);
    assert!(grants_patch(&on) && has_vap(&on));
    let ds = find(&on, "DaemonSet", &format!("{RELEASE}-agent"));
    let args = super::container(ds, "agent")["args"].as_array().unwrap().clone();
    assert!(args.contains(&json!("--annotate-pod-ip")));
}
