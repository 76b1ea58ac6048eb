//! The agent's ValidatingAdmissionPolicy, evaluated in CEL: only the agent's ServiceAccount is
//! matched, and it may write only its own node's pool.

use super::{find, render, strings, Values, NAMESPACE, NODE_NAME_CLAIM, RELEASE};
use anyhow::{bail, Result};
use serde_json::{json, Value};

struct Vap {
    match_conditions: Vec<String>,
    validations: Vec<kube_cel::VapExpression>,
}

fn agent_vap() -> Vap {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let vap = find(&docs, "ValidatingAdmissionPolicy", &format!("{RELEASE}-agent-own-pool"));
    let binding =
        find(&docs, "ValidatingAdmissionPolicyBinding", &format!("{RELEASE}-agent-own-pool"));
    assert_eq!(binding["spec"]["policyName"], vap["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(vap["spec"]["failurePolicy"], "Fail");
    let rules = &vap["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!(strings(&rules["resources"]), vec!["enipools", "enipools/status"]);
    assert!(vap["spec"]["variables"].is_null(), "the evaluator below binds no `variables`");
    Vap {
        match_conditions: vap["spec"]["matchConditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["expression"].as_str().unwrap().to_string())
            .collect(),
        validations: vap["spec"]["validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| kube_cel::VapExpression {
                expression: v["expression"].as_str().unwrap().to_string(),
                message: v["message"].as_str().map(str::to_string),
                message_expression: v["messageExpression"].as_str().map(str::to_string),
            })
            .collect(),
    }
}

fn pool(name: &str) -> Value {
    json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool", "metadata": {"name": name},
           "spec": {"nodeName": name}, "status": {"agent": {"epoch": 3}}})
}

fn admission(username: &str) -> kube_cel::AdmissionRequest {
    kube_cel::AdmissionRequest {
        operation: "UPDATE".into(),
        username: username.into(),
        groups: vec!["system:serviceaccounts".into(), "system:authenticated".into()],
        resource: kube_cel::GroupVersionResource {
            group: "enipool.io".into(),
            version: "v1alpha1".into(),
            resource: "enipools".into(),
        },
        ..Default::default()
    }
}

/// Evaluates with the full `request` the API server binds, including `userInfo.extra` (which
/// kube-cel's VapEvaluator does not bind), with the same Kubernetes CEL library.
fn eval_with_extra(expr: &str, object: &Value, username: &str, extra: &Value) -> Result<bool> {
    use kube_cel::cel::{Context, Program, Value as Cel};
    use kube_cel::KubeCelExt;
    let mut ctx = Context::default();
    ctx.register_all();
    let request = json!({
        "operation": "UPDATE", "name": object["metadata"]["name"], "namespace": "", "dryRun": false,
        "subResource": "status",
        "kind": {"group": "enipool.io", "version": "v1alpha1", "kind": "ENIPool"},
        "resource": {"group": "enipool.io", "version": "v1alpha1", "resource": "enipools"},
        "userInfo": {"username": username, "uid": "u", "groups": ["system:serviceaccounts"], "extra": extra},
    });
    ctx.add_variable("object", object.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    ctx.add_variable("oldObject", object.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    ctx.add_variable("request", request).map_err(|e| anyhow::anyhow!("{e}"))?;
    let program = Program::compile(expr).map_err(|e| anyhow::anyhow!("compiling {expr}: {e}"))?;
    match program.execute(&ctx).map_err(|e| anyhow::anyhow!("evaluating {expr}: {e}"))? {
        Cel::Bool(b) => Ok(b),
        other => bail!("{expr} returned {other:?}"),
    }
}

#[test]
fn agent_admission_policy_allows_only_the_agents_own_node() {
    let vap = agent_vap();
    let agent = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}-agent");
    let operator = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}-operator");
    let matched = |username: &str| -> bool {
        let ev = kube_cel::VapEvaluator::builder()
            .object(pool("n1"))
            .request(admission(username))
            .build();
        let conds: Vec<kube_cel::VapExpression> = vap
            .match_conditions
            .iter()
            .map(|e| kube_cel::VapExpression {
                expression: e.clone(),
                message: None,
                message_expression: None,
            })
            .collect();
        let results = ev.evaluate(&conds);
        for r in &results {
            assert!(r.message.as_deref().is_none_or(|m| !m.contains("error")), "{r:?}");
        }
        results.iter().all(|r| r.passed)
    };
    // Only the agent's ServiceAccount is subject to the policy.
    assert!(matched(&agent));
    assert!(!matched(&operator), "the operator must not be matched");
    assert!(!matched("kubernetes-admin"));
    assert!(!matched(&format!("system:serviceaccount:other-ns:{RELEASE}-agent")));

    let claim = |node: &str| json!({NODE_NAME_CLAIM: [node]});
    let allowed = |object: &Value, extra: &Value| -> bool {
        vap.validations
            .iter()
            .all(|v| eval_with_extra(&v.expression, object, &agent, extra).unwrap())
    };
    // The agent on ip-10-0-0-1 writes its own pool: allowed.
    assert!(allowed(&pool("ip-10-0-0-1"), &claim("ip-10-0-0-1")));
    // ... another node's pool: denied.
    assert!(!allowed(&pool("ip-10-0-0-2"), &claim("ip-10-0-0-1")));
    // A token without the node-name claim (not a bound pod token, or a cluster < 1.30): denied,
    // not an evaluation error.
    assert!(!allowed(&pool("ip-10-0-0-1"), &json!({})));
    assert!(!allowed(&pool("ip-10-0-0-1"), &json!({NODE_NAME_CLAIM: []})));

    // kube-cel's VapEvaluator binds no userInfo.extra: the policy then fails closed, with the
    // message that says why.
    let ev = kube_cel::VapEvaluator::builder()
        .object(pool("ip-10-0-0-2"))
        .request(admission(&agent))
        .build();
    let results = ev.evaluate(&vap.validations);
    assert!(results.iter().all(|r| !r.passed), "{results:?}");
    let msg = results[0].message.clone().unwrap_or_default();
    assert!(msg.contains("its own node") && msg.contains("ip-10-0-0-2"), "message: {msg}");
}
