//! The agent's ValidatingAdmissionPolicy, as rendered, evaluated by the test API server's
//! admission code (`enipool_e2e::kubeapi::admission`, the same the server enforces): only the
//! agent's ServiceAccount is matched, and it may write only its own node's pool.

use super::{find, render, strings, Values, NAMESPACE, NODE_NAME_CLAIM, RELEASE};
use enipool_e2e::kubeapi::admission::{validate, AdmissionRequest, Gvk, Gvr, Operation};
use enipool_e2e::kubeapi::UserInfo;
use serde_json::{json, Value};

fn pool(name: &str) -> Value {
    json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool", "metadata": {"name": name},
           "spec": {"nodeName": name}, "status": {"agent": {"epoch": 3}}})
}

/// An UPDATE of `pool`'s status by `user`.
fn status_update(pool_name: &str, user: UserInfo) -> AdmissionRequest {
    AdmissionRequest {
        operation: Operation::Update,
        kind: Gvk {
            group: "enipool.io".into(),
            version: "v1alpha1".into(),
            kind: "ENIPool".into(),
        },
        resource: Gvr {
            group: "enipool.io".into(),
            version: "v1alpha1".into(),
            resource: "enipools".into(),
        },
        sub_resource: "status".into(),
        name: pool_name.into(),
        user: user.with_groups(["system:authenticated"]),
        object: Some(pool(pool_name)),
        old_object: Some(pool(pool_name)),
        ..Default::default()
    }
}

#[test]
fn agent_admission_policy_allows_only_the_agents_own_node() {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let name = format!("{RELEASE}-agent-own-pool");
    let vap = find(&docs, "ValidatingAdmissionPolicy", &name);
    let binding = find(&docs, "ValidatingAdmissionPolicyBinding", &name);
    assert_eq!(binding["spec"]["policyName"], vap["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(vap["spec"]["failurePolicy"], "Fail");
    let rules = &vap["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!(strings(&rules["resources"]), vec!["enipools", "enipools/status"]);

    let agent_sa = format!("{RELEASE}-agent");
    let agent = |node: Option<&str>| {
        let u = UserInfo::service_account(NAMESPACE, &agent_sa);
        match node {
            Some(n) => u.with_extra(NODE_NAME_CLAIM, [n]),
            None => u,
        }
    };
    let decide = |req: AdmissionRequest| validate(&docs, &req).denied;

    // The agent on ip-10-0-0-1 writes its own pool: allowed.
    assert!(decide(status_update("ip-10-0-0-1", agent(Some("ip-10-0-0-1")))).is_none());
    // ... another node's pool: denied, with the policy's reason and a message naming the pool.
    let e = decide(status_update("ip-10-0-0-2", agent(Some("ip-10-0-0-1")))).expect("denied");
    assert_eq!((e.code, e.reason), (403, "Forbidden"));
    assert!(
        e.message.contains(&format!("ValidatingAdmissionPolicy '{name}' with binding '{name}'"))
            && e.message.contains("its own node")
            && e.message.ends_with("ip-10-0-0-2"),
        "message: {}",
        e.message
    );
    // A token without the node-name claim (not a bound pod token, or a cluster < 1.30): denied
    // by the policy's own check, not by an evaluation error.
    for user in [agent(None), agent(None).with_extra(NODE_NAME_CLAIM, Vec::<String>::new())] {
        let e = decide(status_update("ip-10-0-0-1", user)).expect("denied without the claim");
        assert!(!e.message.contains("resulted in error"), "{}", e.message);
    }

    // Only the agent's ServiceAccount is subject to the policy.
    for other in [
        UserInfo::service_account(NAMESPACE, &format!("{RELEASE}-operator")),
        UserInfo::new("kubernetes-admin"),
        UserInfo::service_account("other-ns", &agent_sa),
    ] {
        assert!(decide(status_update("ip-10-0-0-2", other.clone())).is_none(), "{other:?}");
    }
}
