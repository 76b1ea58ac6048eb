use super::*;
use serde_json::json;

const NODE: &str = "authentication.kubernetes.io/node-name";

fn policy(name: &str, spec: Value) -> Value {
    let mut s = json!({"matchConstraints": {"resourceRules": [{"apiGroups": ["enipool.io"],
        "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["enipools", "enipools/status"]}]}});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
           "metadata": {"name": name}, "spec": s})
}

fn binding(name: &str, policy: &str, actions: Value) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
           "metadata": {"name": name}, "spec": {"policyName": policy, "validationActions": actions}})
}

fn update(pool: &str, user: UserInfo) -> AdmissionRequest {
    let obj = json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool",
                     "metadata": {"name": pool}, "status": {"epoch": 3}});
    AdmissionRequest {
        operation: Operation::Update,
        kind: Gvk::new("enipool.io", "v1alpha1", "ENIPool"),
        resource: Gvr::new("enipool.io", "v1alpha1", "enipools"),
        sub_resource: "status".into(),
        name: pool.into(),
        user,
        object: Some(obj.clone()),
        old_object: Some(obj),
        ..Default::default()
    }
}

fn agent(node: &str) -> UserInfo {
    UserInfo::service_account("kube-system", "agent").with_extra(NODE, [node])
}

fn own_pool(extra: Value) -> Value {
    policy("own-pool", extra)
}

const OWN: &str =
    "object.metadata.name == request.userInfo.extra['authentication.kubernetes.io/node-name'][0]";

#[test]
fn a_false_validation_denies_with_its_message_reason_and_code() {
    let p = own_pool(json!({"validations": [{"expression": OWN,
        "messageExpression": "'writes ' + object.metadata.name", "reason": "Forbidden"}]}));
    let b = binding("own-pool-b", "own-pool", json!(["Deny"]));
    let objs = [p, b];
    assert!(validate(&objs, &update("n1", agent("n1"))).denied.is_none());
    let e = validate(&objs, &update("n2", agent("n1"))).denied.expect("denied");
    assert_eq!((e.code, e.reason), (403, "Forbidden"));
    assert_eq!(e.message, "enipools.enipool.io \"n2\" is forbidden: ValidatingAdmissionPolicy 'own-pool' with binding 'own-pool-b' denied request: writes n2");
    // Reasons and their codes; message, then the failed expression, as the fallback.
    for (reason, code, msg, want) in [
        (None, 422, Some("static"), "static"),
        (Some("Invalid"), 422, None, "failed expression: false"),
        (Some("Unauthorized"), 401, None, "failed expression: false"),
        (Some("RequestEntityTooLarge"), 413, None, "failed expression: false"),
    ] {
        let mut v = json!({"expression": "false"});
        if let Some(r) = reason {
            v["reason"] = json!(r);
        }
        if let Some(m) = msg {
            v["message"] = json!(m);
        }
        let objs =
            [own_pool(json!({"validations": [v]})), binding("b", "own-pool", json!(["Deny"]))];
        let e = validate(&objs, &update("n1", agent("n1"))).denied.expect("denied");
        assert_eq!(e.code, code, "{reason:?}");
        assert!(e.message.ends_with(&format!("denied request: {want}")), "{}", e.message);
    }
}

#[test]
fn match_conditions_variables_and_request_fields() {
    let spec = json!({
        "matchConditions": [{"name": "agent", "expression": "request.userInfo.username == 'system:serviceaccount:kube-system:agent'"}],
        "variables": [
            {"name": "claims", "expression": "has(request.userInfo.extra) ? request.userInfo.extra : {}"},
            {"name": "node", "expression": "'authentication.kubernetes.io/node-name' in variables.claims ? variables.claims['authentication.kubernetes.io/node-name'][0] : ''"},
        ],
        "validations": [{"expression": "object.metadata.name == variables.node && request.subResource == 'status' && request.operation == 'UPDATE' && oldObject.status.epoch == 3"}],
    });
    let objs = [own_pool(spec), binding("b", "own-pool", json!(["Deny"]))];
    assert!(validate(&objs, &update("n1", agent("n1"))).denied.is_none());
    assert!(validate(&objs, &update("n2", agent("n1"))).denied.is_some());
    // No extra at all (a static token): the variable falls back, the validation is false.
    let plain = UserInfo::service_account("kube-system", "agent");
    assert!(validate(&objs, &update("n1", plain)).denied.is_some());
    // Another user is not matched.
    assert!(validate(&objs, &update("n2", UserInfo::new("admin"))).denied.is_none());
}

#[test]
fn evaluation_errors_follow_the_failure_policy() {
    let erring = |fp: &str, where_: &str| {
        let mut spec = json!({"failurePolicy": fp, "validations": [{"expression": "true"}]});
        match where_ {
            "validation" => {
                spec["validations"] = json!([{"expression": "object.spec.missing == 1"}])
            }
            "condition" => {
                spec["matchConditions"] =
                    json!([{"name": "c", "expression": "object.spec.missing == 1"}])
            }
            "variable" => {
                spec["variables"] = json!([{"name": "v", "expression": "object.spec.missing"}]);
                spec["validations"] = json!([{"expression": "variables.v == 1"}]);
            }
            _ => unreachable!(),
        }
        let objs = [own_pool(spec), binding("b", "own-pool", json!(["Deny"]))];
        validate(&objs, &update("n1", agent("n1"))).denied
    };
    for w in ["validation", "condition", "variable"] {
        let e = erring("Fail", w).unwrap_or_else(|| panic!("{w}: Fail must deny"));
        assert_eq!(e.code, 422, "{w}");
        assert!(e.message.contains("resulted in error"), "{w}: {}", e.message);
        assert!(erring("Ignore", w).is_none(), "{w}: Ignore must admit");
    }
    assert!(erring("Fail", "variable")
        .unwrap()
        .message
        .contains("composited variable \"v\" fails to evaluate"));
}

#[test]
fn binding_actions_and_scope() {
    let p = own_pool(json!({"validations": [{"expression": "false", "message": "no"}]}));
    let r = update("n1", agent("n1"));
    let run = |objs: &[Value]| validate(objs, &r);
    let v = run(&[p.clone(), binding("w", "own-pool", json!(["Warn"]))]);
    assert!(v.denied.is_none());
    assert_eq!(
        v.warnings,
        ["Validation failed for ValidatingAdmissionPolicy 'own-pool' with binding 'w': no"]
    );
    let v = run(&[p.clone(), binding("a", "own-pool", json!(["Audit"]))]);
    assert!(v.denied.is_none() && v.warnings.is_empty());
    let v = run(&[p.clone(), binding("d", "own-pool", json!(["Deny", "Audit"]))]);
    assert!(v.denied.is_some() && v.warnings.is_empty());
    // A policy without a binding, or a binding of another policy, enforces nothing.
    assert!(run(std::slice::from_ref(&p)).denied.is_none());
    assert!(run(&[p.clone(), binding("x", "other", json!(["Deny"]))]).denied.is_none());
    // The binding's matchResources narrows the policy.
    let mut narrowed = binding("n", "own-pool", json!(["Deny"]));
    narrowed["spec"]["matchResources"] = json!({"resourceRules": [{"apiGroups": ["enipool.io"],
        "apiVersions": ["*"], "operations": ["CREATE"], "resources": ["enipools"]}]});
    assert!(run(&[p.clone(), narrowed]).denied.is_none());
    // DELETE is not in the policy's operations.
    let mut del = update("n1", agent("n1"));
    del.operation = Operation::Delete;
    assert!(validate(&[p.clone(), binding("d", "own-pool", json!(["Deny"]))], &del)
        .denied
        .is_none());
    // paramKind is unsupported: a configuration error, denied under Fail.
    let mut with_params = p;
    with_params["spec"]["paramKind"] = json!({"apiVersion": "v1", "kind": "ConfigMap"});
    with_params["spec"]["validations"] = json!([{"expression": "true"}]);
    let e = run(&[with_params, binding("d", "own-pool", json!(["Deny"]))]).denied.unwrap();
    assert!(e.message.contains("paramKind"), "{}", e.message);
    // Requests to the policy kinds themselves are exempt.
    let mut everything = policy("all", json!({"validations": [{"expression": "false"}]}));
    everything["spec"]["matchConstraints"]["resourceRules"] = json!([{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}]);
    let mut vap = update("p", UserInfo::new("u"));
    vap.resource = Gvr {
        group: GROUP.into(),
        version: "v1".into(),
        resource: "validatingadmissionpolicies".into(),
    };
    vap.sub_resource.clear();
    assert!(validate(&[everything, binding("d", "all", json!(["Deny"]))], &vap).denied.is_none());
}
