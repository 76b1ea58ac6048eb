use super::*;
use http::Method;
use serde_json::json;

const SA: &str = "system:serviceaccount:kube-system:agent";

fn sa() -> UserInfo {
    UserInfo::service_account("kube-system", "agent").with_groups([AUTHENTICATED])
}

fn req(method: Method, path: &str) -> AuditRecord {
    AuditRecord::from_request(SA, &method, path, [])
}

fn cluster_role(name: &str, rules: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": {"name": name}, "rules": rules})
}

fn binding(
    kind: &str,
    ns: Option<&str>,
    role: (&str, &str),
    subjects: serde_json::Value,
) -> serde_json::Value {
    let mut b = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {"name": "b"}, "roleRef": {"apiGroup": GROUP, "kind": role.0, "name": role.1},
        "subjects": subjects});
    if let Some(ns) = ns {
        b["metadata"]["namespace"] = json!(ns);
    }
    b
}

fn sa_subject() -> serde_json::Value {
    json!([{"kind": "ServiceAccount", "name": "agent", "namespace": "kube-system"}])
}

#[test]
fn rules_match_verbs_groups_resources_subresources_and_names() {
    let pools = "/apis/enipool.io/v1alpha1/enipools";
    let rule = |r: serde_json::Value| {
        let mut base =
            json!({"apiGroups": ["enipool.io"], "resources": ["enipools"], "verbs": ["get"]});
        for (k, v) in r.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    let get = req(Method::GET, &format!("{pools}/n1"));
    let status = req(Method::PATCH, &format!("{pools}/n1/status"));
    let list = req(Method::GET, pools);
    let cases = [
        (rule(json!({})), &get, true),
        (rule(json!({})), &list, false),
        (rule(json!({"verbs": ["*"]})), &list, true),
        (rule(json!({"apiGroups": [""]})), &get, false),
        (rule(json!({"apiGroups": ["*"]})), &get, true),
        (rule(json!({"verbs": ["patch"]})), &status, false),
        (rule(json!({"verbs": ["patch"], "resources": ["enipools/status"]})), &status, true),
        (rule(json!({"verbs": ["patch"], "resources": ["*/status"]})), &status, true),
        (rule(json!({"verbs": ["patch"], "resources": ["*/scale"]})), &status, false),
        (rule(json!({"verbs": ["patch"], "resources": ["*"]})), &status, true),
        (rule(json!({"resources": ["*/status"]})), &get, false),
        (rule(json!({"resourceNames": ["n1"]})), &get, true),
        (rule(json!({"resourceNames": ["n2"]})), &get, false),
        (rule(json!({"verbs": ["list"], "resourceNames": ["n1"]})), &list, false),
    ];
    for (i, (rule, r, want)) in cases.iter().enumerate() {
        assert_eq!(rule_allows(rule, r), *want, "case {i}: {rule} for {} {}", r.verb, r.path);
    }
    // A field selector on metadata.name gives a list a name, which resourceNames can match.
    let named =
        AuditRecord::from_request(SA, &Method::GET, pools, [("fieldSelector", "metadata.name=n1")]);
    assert!(rule_allows(&rule(json!({"verbs": ["list"], "resourceNames": ["n1"]})), &named));
    // Non-resource URLs: exact, `*` and `/prefix/*`.
    let metrics = req(Method::GET, "/metrics");
    let logs = req(Method::GET, "/logs/kube.log");
    let nr = |urls: serde_json::Value| json!({"verbs": ["get"], "nonResourceURLs": urls});
    assert!(rule_allows(&nr(json!(["/metrics"])), &metrics));
    assert!(!rule_allows(&nr(json!(["/metrics"])), &logs));
    assert!(rule_allows(&nr(json!(["/logs/*"])), &logs));
    assert!(rule_allows(&nr(json!(["*"])), &logs));
    assert!(!rule_allows(&nr(json!(["*"])), &get), "nonResourceURLs never grant resources");
}

#[test]
fn bindings_subjects_and_scopes() {
    let reader = cluster_role(
        "reader",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]),
    );
    let get_in = |ns: &str| req(Method::GET, &format!("/api/v1/namespaces/{ns}/configmaps/c"));
    let allowed = |objs: &[serde_json::Value], user: &UserInfo, r: &AuditRecord| {
        Rbac::from_objects(objs).authorize(user, r) == Decision::Allow
    };
    // ClusterRoleBinding: everywhere. The SA subject needs its namespace.
    let crb = binding("ClusterRoleBinding", None, ("ClusterRole", "reader"), sa_subject());
    assert!(allowed(&[reader.clone(), crb], &sa(), &get_in("a")));
    let crb_no_ns = binding(
        "ClusterRoleBinding",
        None,
        ("ClusterRole", "reader"),
        json!([{"kind": "ServiceAccount", "name": "agent"}]),
    );
    assert!(!allowed(&[reader.clone(), crb_no_ns], &sa(), &get_in("a")));
    // RoleBinding to a ClusterRole: only in the binding's namespace; its SA subject defaults to
    // the binding's namespace.
    let rb = binding(
        "RoleBinding",
        Some("a"),
        ("ClusterRole", "reader"),
        json!([{"kind": "ServiceAccount", "name": "agent"}]),
    );
    let rb_ks = binding(
        "RoleBinding",
        Some("kube-system"),
        ("ClusterRole", "reader"),
        json!([{"kind": "ServiceAccount", "name": "agent"}]),
    );
    assert!(!allowed(&[reader.clone(), rb], &sa(), &get_in("a")), "SA defaults to namespace a");
    assert!(allowed(&[reader.clone(), rb_ks.clone()], &sa(), &get_in("kube-system")));
    assert!(!allowed(&[reader.clone(), rb_ks.clone()], &sa(), &get_in("b")));
    let cluster_scoped = req(Method::GET, "/api/v1/nodes/n1");
    assert!(!allowed(&[reader.clone(), rb_ks], &sa(), &cluster_scoped));
    // RoleBinding to a Role of its namespace.
    let mut role = reader.clone();
    role["kind"] = json!("Role");
    role["metadata"] = json!({"name": "reader", "namespace": "a"});
    let rb_role = binding("RoleBinding", Some("a"), ("Role", "reader"), sa_subject());
    assert!(allowed(&[role.clone(), rb_role.clone()], &sa(), &get_in("a")));
    let mut elsewhere = role.clone();
    elsewhere["metadata"]["namespace"] = json!("b");
    assert!(!allowed(&[elsewhere, rb_role], &sa(), &get_in("a")), "a Role of another namespace");
    // User and Group subjects.
    let by_user = binding(
        "ClusterRoleBinding",
        None,
        ("ClusterRole", "reader"),
        json!([{"kind": "User", "name": SA}]),
    );
    assert!(allowed(&[reader.clone(), by_user], &sa(), &get_in("a")));
    let by_group = binding(
        "ClusterRoleBinding",
        None,
        ("ClusterRole", "reader"),
        json!([{"kind": "Group", "name": "system:serviceaccounts:kube-system"}]),
    );
    assert!(allowed(&[reader.clone(), by_group.clone()], &sa(), &get_in("a")));
    assert!(!allowed(
        &[reader, by_group],
        &UserInfo::new("bob").with_groups([AUTHENTICATED]),
        &get_in("a")
    ));
    // system:masters: everything, with no objects at all.
    assert!(allowed(&[], &UserInfo::admin("admin"), &req(Method::DELETE, "/api/v1/nodes/n1")));
}

#[test]
fn defaults_and_denials_read_like_the_apiserver() {
    let none = Rbac::default();
    let user = sa();
    for path in ["/api", "/apis/enipool.io/v1alpha1", "/version", "/openapi/v3", "/healthz"] {
        assert_eq!(none.authorize(&user, &req(Method::GET, path)), Decision::Allow, "{path}");
    }
    let anon = UserInfo::anonymous();
    assert_eq!(none.authorize(&anon, &req(Method::GET, "/version")), Decision::Allow);
    assert_ne!(none.authorize(&anon, &req(Method::GET, "/apis")), Decision::Allow);
    let review = req(Method::POST, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews");
    assert_eq!(none.authorize(&user, &review), Decision::Allow);

    let del = req(Method::DELETE, "/apis/enipool.io/v1alpha1/enipools/n1");
    let e = denied(&user, &del, "");
    assert_eq!((e.code, e.reason), (403, "Forbidden"));
    assert_eq!(e.message, format!("enipools.enipool.io \"n1\" is forbidden: User \"{SA}\" cannot delete resource \"enipools\" in API group \"enipool.io\" at the cluster scope"));
    let list = req(Method::GET, "/api/v1/namespaces/d/pods");
    assert_eq!(denied(&user, &list, "").message, format!("pods is forbidden: User \"{SA}\" cannot list resource \"pods\" in API group \"\" in the namespace \"d\""));
    let status = req(Method::PUT, "/apis/enipool.io/v1alpha1/enipools/n1/status");
    assert!(denied(&user, &status, "")
        .message
        .contains("cannot update resource \"enipools/status\""));
    let path = req(Method::GET, "/metrics");
    assert_eq!(
        denied(&user, &path, "").message,
        format!("forbidden: User \"{SA}\" cannot get path \"/metrics\"")
    );

    // A binding of this user to a missing role is the reason.
    let dangling = binding("ClusterRoleBinding", None, ("ClusterRole", "gone"), sa_subject());
    let objs = [dangling];
    let Decision::Deny { reason } = Rbac::from_objects(&objs).authorize(&user, &del) else {
        panic!("allowed")
    };
    assert_eq!(reason, "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found");
    assert!(denied(&user, &del, &reason).message.ends_with(
        "at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found"
    ));
}
