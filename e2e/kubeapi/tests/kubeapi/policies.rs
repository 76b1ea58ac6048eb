//! ValidatingAdmissionPolicies enforced by the server, through kube-rs with a pod-bound
//! service-account token: a node's agent may write only the Widget named after its node (the
//! node-name extra of its token), on every write path (merge, JSON and apply patches, PUT, the
//! status subresource, an apply that creates); matchConditions, variables, Warn vs Deny,
//! failurePolicy, reasons and codes, DELETE, and kubectl apply of the policy kinds.

use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use crate::common::{install_widgets, kubectl, obj, widget, widget_ar, Env};

const AGENT: &str = "system:serviceaccount:kube-system:agent";
const NODE: &str = "authentication.kubernetes.io/node-name";

/// A policy on widgets and widgets/status with these extra spec fields, bound with `actions`.
async fn policy(env: &Env, name: &str, spec: Value, actions: Value) {
    let mut s = json!({"matchConstraints": {"resourceRules": [{"apiGroups": ["test.enipool.io"],
        "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["widgets", "widgets/status"]}]}});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    let docs = [
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
               "metadata": {"name": name}, "spec": s}),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": name}, "spec": {"policyName": name, "validationActions": actions}}),
    ];
    use k8s_openapi::api::admissionregistration::v1 as ar;
    let pp = PostParams::default();
    Api::<ar::ValidatingAdmissionPolicy>::all(env.client.clone())
        .create(&pp, &obj(docs[0].clone()))
        .await
        .unwrap();
    Api::<ar::ValidatingAdmissionPolicyBinding>::all(env.client.clone())
        .create(&pp, &obj(docs[1].clone()))
        .await
        .unwrap();
}

/// The agent's policy: only for the agent's user, the node from a variable, a message naming both.
fn own_widget() -> Value {
    json!({
        "failurePolicy": "Fail",
        "matchConditions": [{"name": "is-agent", "expression": format!("request.userInfo.username == '{AGENT}'")}],
        "variables": [{"name": "node", "expression":
            format!("has(request.userInfo.extra) && '{NODE}' in request.userInfo.extra ? request.userInfo.extra['{NODE}'][0] : ''")}],
        "validations": [{"expression": "object.metadata.name == variables.node", "reason": "Forbidden",
            "messageExpression": "'the agent on ' + variables.node + ' may not write ' + object.metadata.name"}],
    })
}

/// Widgets n1 and n2, and a kube client with the token of the agent pod on node n1.
async fn setup(env: &Env) -> (Api<DynamicObject>, Api<DynamicObject>) {
    let widgets = install_widgets(&env.client).await;
    let pp = PostParams::default();
    for n in ["n1", "n2"] {
        widgets.create(&pp, &widget(n, json!({"size": 1}))).await.unwrap();
        Api::<Node>::all(env.client.clone())
            .create(&pp, &obj(json!({"metadata": {"name": n}})))
            .await
            .unwrap();
    }
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), "kube-system");
    sas.create(&pp, &obj(json!({"metadata": {"name": "agent"}}))).await.unwrap();
    Api::<Pod>::namespaced(env.client.clone(), "kube-system")
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "agent-n1"}, "spec": {"nodeName": "n1",
            "serviceAccountName": "agent", "containers": [{"name": "c", "image": "agent"}]}})),
        )
        .await
        .unwrap();
    let req = obj(
        json!({"spec": {"audiences": [], "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "agent-n1"}}}),
    );
    let token = sas.create_token_request("agent", &pp, &req).await.unwrap().status.unwrap().token;
    let agent = env.api.client_with_token(&token).unwrap();
    (widgets, Api::namespaced_with(agent, "default", &widget_ar()))
}

fn denied(r: Result<DynamicObject, kube::Error>) -> (u16, String, String) {
    match r.unwrap_err() {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("{other:?}"),
    }
}

fn status_apply(name: &str, phase: &str) -> Value {
    json!({"apiVersion": "test.enipool.io/v1", "kind": "Widget", "metadata": {"name": name}, "status": {"phase": phase}})
}

#[tokio::test]
async fn a_policy_keeps_an_agent_to_its_own_nodes_object() {
    let env = Env::start().await;
    let (widgets, agent) = setup(&env).await;
    policy(&env, "own-widget", own_widget(), json!(["Deny"])).await;
    let pp = PatchParams::default();
    let merge = |phase: &str| Patch::Merge(json!({"status": {"phase": phase}}));

    // Its own node's object: every write path works.
    agent.patch_status("n1", &pp, &merge("a")).await.unwrap();
    agent
        .patch_status(
            "n1",
            &PatchParams::apply("agent").force(),
            &Patch::Apply(status_apply("n1", "b")),
        )
        .await
        .unwrap();
    agent
        .patch("n1", &pp, &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();

    // Another node's object: refused on every path, with the policy's reason and message, and
    // nothing changes.
    let before = widgets.get("n2").await.unwrap();
    let want = (
        403,
        "Forbidden".to_string(),
        "widgets.test.enipool.io \"n2\" is forbidden: ValidatingAdmissionPolicy 'own-widget' with binding 'own-widget' denied request: the agent on n1 may not write n2".to_string(),
    );
    assert_eq!(denied(agent.patch_status("n2", &pp, &merge("stolen")).await), want);
    let apply = PatchParams::apply("agent").force();
    assert_eq!(
        denied(agent.patch_status("n2", &apply, &Patch::Apply(status_apply("n2", "x"))).await),
        want
    );
    let json_patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/status", "value": {"phase": "x"}}]))
            .unwrap();
    assert_eq!(denied(agent.patch_status("n2", &pp, &Patch::<()>::Json(json_patch)).await), want);
    let mut replaced = before.clone();
    replaced.data["status"] = json!({"phase": "x"});
    assert_eq!(denied(agent.replace_status("n2", &PostParams::default(), &replaced).await), want);
    assert_eq!(
        denied(agent.patch("n2", &pp, &Patch::Merge(json!({"spec": {"size": 2}}))).await),
        want
    );
    let after = widgets.get("n2").await.unwrap();
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version);
    assert_eq!(after.data, before.data);
    // An apply that would create another object is a refused CREATE; nothing is created.
    let create = json!({"apiVersion": "test.enipool.io/v1", "kind": "Widget", "metadata": {"name": "n3"}, "spec": {"size": 1}});
    let (code, _, msg) =
        denied(agent.patch("n3", &PatchParams::apply("agent"), &Patch::Apply(create)).await);
    assert_eq!(code, 403);
    assert!(msg.ends_with("may not write n3"), "{msg}");
    assert!(widgets.get_opt("n3").await.unwrap().is_none());

    // The matchCondition: other users are not subject to the policy.
    widgets.patch_status("n2", &pp, &merge("admin")).await.unwrap();
    env.api.shutdown().await;
}

/// PATCH a widget's status with a raw request: (status code, Warning headers).
async fn raw_status_patch(client: &kube::Client, name: &str) -> (u16, Vec<String>) {
    let req = http::Request::patch(format!(
        "/apis/test.enipool.io/v1/namespaces/default/widgets/{name}/status"
    ))
    .header("content-type", "application/merge-patch+json")
    .body(kube::client::Body::from(br#"{"status":{"phase":"w"}}"#.to_vec()))
    .unwrap();
    let resp = client.send(req).await.unwrap();
    let warnings =
        resp.headers().get_all("warning").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    (resp.status().as_u16(), warnings)
}

#[tokio::test]
async fn actions_failure_policies_reasons_and_deletes() {
    let env = Env::start().await;
    let (widgets, agent) = setup(&env).await;
    let always_false =
        json!({"validations": [{"expression": "false", "message": "just a warning"}]});
    policy(&env, "warn", always_false, json!(["Warn"])).await;
    let (code, warnings) = raw_status_patch(&agent.clone().into_client(), "n2").await;
    assert_eq!(code, 200, "Warn does not deny");
    assert_eq!(warnings, ["299 - \"Validation failed for ValidatingAdmissionPolicy 'warn' with binding 'warn': just a warning\""]);

    // An evaluation error: ignored under failurePolicy Ignore, a 422 under Fail.
    let erring = |fp: &str| json!({"failurePolicy": fp, "validations": [{"expression": "object.spec.missing > 0"}]});
    policy(&env, "ignore", erring("Ignore"), json!(["Deny"])).await;
    widgets
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "i"}})),
        )
        .await
        .unwrap();
    policy(&env, "strict", erring("Fail"), json!(["Deny"])).await;
    let (code, reason, msg) = denied(
        widgets
            .patch_status(
                "n1",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "f"}})),
            )
            .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(msg.starts_with("widgets.test.enipool.io \"n1\" is forbidden: ValidatingAdmissionPolicy 'strict' with binding 'strict' denied request: expression 'object.spec.missing > 0' resulted in error"), "{msg}");
    let status: Api<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding> =
        Api::all(env.client.clone());
    status.delete("strict", &DeleteParams::default()).await.unwrap();

    // A reason sets the code: RequestEntityTooLarge is 413.
    let big = json!({"validations": [{"expression": "object.spec.size < 5", "reason": "RequestEntityTooLarge", "message": "too big"}]});
    policy(&env, "size", big, json!(["Deny"])).await;
    let (code, reason, _) = denied(
        widgets
            .patch(
                "n1",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"size": 7, "mode": "B"}})),
            )
            .await,
    );
    assert_eq!((code, reason.as_str()), (413, "RequestEntityTooLarge"));

    // DELETE: object is null, oldObject the stored one.
    let mut keep = json!({"matchConstraints": {"resourceRules": [{"apiGroups": ["test.enipool.io"], "apiVersions": ["*"],
        "operations": ["DELETE"], "resources": ["widgets"]}]},
        "validations": [{"expression": "object == null && !has(oldObject.metadata.labels)", "message": "labelled widgets stay"}]});
    keep["matchConstraints"]["resourceRules"][0]["scope"] = json!("Namespaced");
    policy(&env, "keep", keep, json!(["Deny"])).await;
    widgets
        .patch(
            "n2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"k": "v"}}})),
        )
        .await
        .unwrap();
    let e = widgets.delete("n2", &DeleteParams::default()).await.unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 422 && s.message.ends_with("labelled widgets stay")),
        "{e:?}"
    );
    assert!(widgets.get_opt("n2").await.unwrap().is_some());
    widgets.delete("n1", &DeleteParams::default()).await.unwrap();
    env.api.shutdown().await;
}

#[tokio::test]
async fn kubectl_applies_policies() {
    let env = Env::start().await;
    let docs = [
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
               "metadata": {"name": "cm"}, "spec": {"failurePolicy": "Fail",
               "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]},
               "validations": [{"expression": "has(object.data) && 'owner' in object.data", "message": "configmaps need an owner"}]}}),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": "cm"}, "spec": {"policyName": "cm", "validationActions": ["Deny"]}}),
    ];
    let file = env.dir.path().join("policy.yaml");
    std::fs::write(&file, docs.iter().map(Value::to_string).collect::<Vec<_>>().join("\n---\n"))
        .unwrap();
    let out = kubectl(&env, &["apply", "-f", file.to_str().unwrap()]).await;
    assert!(
        out.contains("validatingadmissionpolicy.admissionregistration.k8s.io/cm created"),
        "{out}"
    );
    let out = kubectl(&env, &["apply", "-f", file.to_str().unwrap()]).await;
    assert!(
        out.contains("validatingadmissionpolicybinding.admissionregistration.k8s.io/cm unchanged"),
        "{out}"
    );
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(env.client.clone(), "default");
    let e = cms
        .create(&PostParams::default(), &obj(json!({"metadata": {"name": "c"}})))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 422 && s.message.ends_with("denied request: configmaps need an owner")),
        "{e:?}"
    );
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "c"}, "data": {"owner": "me"}})),
    )
    .await
    .unwrap();
    env.api.shutdown().await;
}
