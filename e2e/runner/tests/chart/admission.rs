//! The agent's ValidatingAdmissionPolicy, evaluated in CEL: only the agent's ServiceAccount is
//! matched, and it may change only `status.agent` of its own node's pool, through the status
//! subresource. Each field a compromised node could forge is tried on its own.

use super::{find, render, strings, Values, NAMESPACE, NODE_NAME_CLAIM, RELEASE};
use anyhow::{bail, Result};
use kubeapi::admission::{validate, AdmissionRequest, Gvk, Gvr, Operation};
use kubeapi::UserInfo;
use serde_json::{json, Value};

/// The policy `<release>-<suffix>` and its binding from `docs`, checked to deny and to fail
/// closed.
pub(super) fn policy_and_binding(docs: &[Value], suffix: &str) -> Vec<Value> {
    let name = format!("{RELEASE}-{suffix}");
    let vap = find(docs, "ValidatingAdmissionPolicy", &name);
    let binding = find(docs, "ValidatingAdmissionPolicyBinding", &name);
    assert_eq!(binding["spec"]["policyName"], vap["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(vap["spec"]["failurePolicy"], "Fail");
    vec![vap.clone(), binding.clone()]
}

/// The agent's ServiceAccount as it authenticates, without a node claim.
pub(super) fn agent_sa() -> UserInfo {
    UserInfo::service_account(NAMESPACE, &format!("{RELEASE}-agent"))
        .with_groups(["system:authenticated"])
}

fn agent_vap() -> Vec<Value> {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let policy = policy_and_binding(&docs, "agent-own-pool");
    let rules = &policy[0]["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!(strings(&rules["resources"]), vec!["enipools", "enipools/status"]);
    assert_eq!(strings(&rules["operations"]), vec!["CREATE", "UPDATE", "DELETE"]);
    policy
}

/// `Ok` when the policy admits `r`, else the denial message (403 Forbidden, as the policy's
/// `reason` says).
pub(super) fn admit(policy: &[Value], r: &AdmissionRequest) -> Result<(), String> {
    match validate(policy, r).denied {
        None => Ok(()),
        Some(e) => {
            assert_eq!((e.code, e.reason), (403, "Forbidden"), "{}", e.message);
            assert!(!e.message.contains("resulted in error"), "{}", e.message);
            Err(e.message)
        }
    }
}

fn agent_user(node: &str) -> UserInfo {
    agent_sa().with_extra(NODE_NAME_CLAIM, [node])
}

/// A pool as the operator leaves it: spec, labels, finalizer, owner, and a status with a journal.
fn pool(name: &str) -> Value {
    json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool",
        "metadata": {"name": name, "resourceVersion": "41",
                     "labels": {"enipool.io/policy": "default"},
                     "finalizers": ["enipool.io/release"],
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                          "uid": "node-uid"}]},
        "spec": {"nodeName": name},
        "status": {
            "revision": 4, "releasedRevision": 2,
            "enis": [{"id": "eni-1", "deviceIndex": 0, "subnetID": "subnet-1",
                      "ips": ["10.0.0.10"], "attached": true}],
            "operations": [{"id": "0b9c1d1e-3f2a-4a5b-8c6d-7e8f9a0b1c2d", "kind": "AssignIPs",
                            "eniID": "eni-1", "count": 1}],
            "releasing": {"revision": 2, "ips": ["10.0.0.11/32"]},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "agent": {"epoch": 3, "inUse": 1}
        }
    })
}

/// The object of a status write as the apiserver stores it: the old object with the new status,
/// managedFields and resourceVersion set by the server.
fn status_write(old: &Value, f: impl FnOnce(&mut Value)) -> Value {
    let mut new = old.clone();
    new["metadata"]["resourceVersion"] = json!("42");
    new["metadata"]["managedFields"] =
        json!([{"manager": "enipool-agent", "operation": "Apply", "subresource": "status"}]);
    f(&mut new);
    new
}

fn update(node: &str, claim: &str, old: Value, new: Value) -> AdmissionRequest {
    request(Operation::Update, "status", node, agent_user(claim), Some(new), Some(old))
}

fn request(
    operation: Operation,
    sub_resource: &str,
    name: &str,
    user: UserInfo,
    object: Option<Value>,
    old_object: Option<Value>,
) -> AdmissionRequest {
    AdmissionRequest {
        operation,
        kind: Gvk::new("enipool.io", "v1alpha1", "ENIPool"),
        resource: Gvr::new("enipool.io", "v1alpha1", "enipools"),
        sub_resource: sub_resource.into(),
        name: name.into(),
        user,
        object,
        old_object,
        ..Default::default()
    }
}

#[test]
fn only_the_agents_service_account_is_matched() {
    let vap = agent_vap();
    let old = pool("n1");
    let forged = status_write(&old, |o| o["status"]["operations"] = json!([]));
    for user in [
        UserInfo::service_account(NAMESPACE, &format!("{RELEASE}-operator")),
        UserInfo::new("kubernetes-admin"),
        UserInfo::service_account("other-ns", &format!("{RELEASE}-agent"))
            .with_extra(NODE_NAME_CLAIM, ["n1"]),
    ] {
        let mut r = update("n1", "n1", old.clone(), forged.clone());
        r.user = user.clone();
        assert_eq!(admit(&vap, &r), Ok(()), "{user:?} must not be subject to the agent's policy");
    }
    let r = update("n1", "n1", old, forged);
    assert!(admit(&vap, &r).is_err(), "the agent is subject to it");
}

#[test]
fn the_agent_writes_status_agent_of_its_own_pool() {
    let vap = agent_vap();
    let old = pool("ip-10-0-0-1");
    let new = status_write(&old, |o| o["status"]["agent"] = json!({"epoch": 3, "inUse": 5}));
    assert_eq!(admit(&vap, &update("ip-10-0-0-1", "ip-10-0-0-1", old.clone(), new)), Ok(()));

    // Its first report, before the operator wrote any status: the apiserver defaults the new
    // status's revision counters, which is not a change by the agent.
    let mut bare = pool("ip-10-0-0-1");
    bare.as_object_mut().unwrap().remove("status");
    let first = status_write(&bare, |o| {
        o["status"] = json!({"revision": 0, "releasedRevision": 0, "agent": {"epoch": 1}})
    });
    assert_eq!(admit(&vap, &update("ip-10-0-0-1", "ip-10-0-0-1", bare, first)), Ok(()));
}

#[test]
fn the_agent_may_not_write_another_nodes_pool_or_without_a_node_claim() {
    let vap = agent_vap();
    let old = pool("ip-10-0-0-2");
    let new = status_write(&old, |o| o["status"]["agent"]["inUse"] = json!(9));
    let err =
        admit(&vap, &update("ip-10-0-0-2", "ip-10-0-0-1", old.clone(), new.clone())).unwrap_err();
    assert!(err.contains("its own node") && err.contains("ip-10-0-0-2"), "message: {err}");
    // A token without the node-name claim (not a bound pod token, or a cluster < 1.30): denied,
    // not an evaluation error.
    let sa = UserInfo::service_account(NAMESPACE, &format!("{RELEASE}-agent"));
    for user in [sa.clone(), sa.with_extra(NODE_NAME_CLAIM, Vec::<String>::new())] {
        let mut r = update("ip-10-0-0-2", "ip-10-0-0-2", old.clone(), new.clone());
        r.user = user;
        let err = admit(&vap, &r).unwrap_err();
        assert!(err.contains("its own node"), "message: {err}");
    }
}

#[test]
fn every_forged_field_of_the_agents_own_pool_is_refused() {
    let vap = agent_vap();
    let old = pool("n1");
    type Forge = fn(&mut Value);
    let forgeries: &[(&str, &str, Forge)] = &[
        ("a DeleteENI of another node's ENI in the journal", "status.operations", |o| {
            o["status"]["operations"].as_array_mut().unwrap().push(json!({
                "id": "5f0c8a43-1b7e-4d2a-9c3e-2f1a0b9c8d7e", "kind": "DeleteENI",
                "eniID": "eni-victim", "count": 0}))
        }),
        ("a journal emptied", "status.operations", |o| {
            o["status"].as_object_mut().unwrap().remove("operations");
        }),
        ("an ENI added", "status.enis", |o| {
            o["status"]["enis"].as_array_mut().unwrap().push(json!({
                "id": "eni-victim", "deviceIndex": 1, "subnetID": "subnet-1",
                "prefixes": ["0.0.0.0/1"], "attached": true}))
        }),
        ("an address added", "status.enis", |o| {
            o["status"]["enis"][0]["ips"] = json!(["10.0.0.10", "10.0.9.9"])
        }),
        ("addresses to release", "status.releasing", |o| {
            o["status"]["releasing"]["ips"] = json!(["10.0.9.9/32"])
        }),
        ("a release request", "status.releaseRequest", |o| {
            o["status"]["releaseRequest"] = json!({"revision": 9, "count": 3})
        }),
        ("a condition", "status.conditions", |o| {
            o["status"]["conditions"][0]["status"] = json!("False")
        }),
        ("the revision", "status.revision", |o| o["status"]["revision"] = json!(99)),
        ("the released revision", "status.releasedRevision", |o| {
            o["status"]["releasedRevision"] = json!(99)
        }),
        ("the instance", "status.instance", |o| o["status"]["instance"] = json!({"id": "i-other"})),
        ("the spec", "spec", |o| o["spec"]["paused"] = json!(true)),
        ("a label", "metadata.labels", |o| {
            o["metadata"]["labels"]["enipool.io/policy"] = json!("big")
        }),
        ("the finalizer removed", "metadata.finalizers", |o| {
            o["metadata"]["finalizers"] = json!([])
        }),
        ("the owner removed", "metadata.ownerReferences", |o| {
            o["metadata"].as_object_mut().unwrap().remove("ownerReferences");
        }),
        ("an annotation", "metadata.annotations", |o| {
            o["metadata"]["annotations"] = json!({"x": "y"})
        }),
    ];
    for (what, field, forge) in forgeries {
        let new = status_write(&old, |o| {
            o["status"]["agent"]["inUse"] = json!(2);
            forge(o)
        });
        let err = admit(&vap, &update("n1", "n1", old.clone(), new))
            .expect_err(&format!("{what} must be refused"));
        assert!(
            err.contains(&format!("changes {field}")),
            "{what}: the message must name {field}: {err}"
        );
    }
}

#[test]
fn the_agent_may_not_create_delete_or_write_the_main_resource() {
    let vap = agent_vap();
    let old = pool("n1");
    let create = request(Operation::Create, "", "n1", agent_user("n1"), Some(old.clone()), None);
    let err = admit(&vap, &create).unwrap_err();
    assert!(err.contains("may not create or delete"), "{err}");
    let delete = request(Operation::Delete, "", "n1", agent_user("n1"), None, Some(old.clone()));
    let err = admit(&vap, &delete).unwrap_err();
    assert!(err.contains("may not create or delete"), "{err}");
    let mut main = update("n1", "n1", old.clone(), status_write(&old, |_| {}));
    main.sub_resource = String::new();
    let err = admit(&vap, &main).unwrap_err();
    assert!(err.contains("status subresource"), "{err}");
}

/// The policy guards each status field by name (CEL cannot drop one key of an object and compare
/// the rest), so a status field added to the CRD must be added to the policy: this fails until it
/// is, and when a guarded field's "missing" value differs from the CRD's default.
#[test]
fn the_policy_guards_every_status_field_but_agent() -> Result<()> {
    let policy = agent_vap();
    let validations = policy[0]["spec"]["validations"].as_array().unwrap();
    let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(
        super::root().join("crds/enipool.io_enipools.yaml"),
    )?)?;
    for version in crd["spec"]["versions"].as_array().unwrap() {
        let props = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        for (name, schema) in props.as_object().unwrap() {
            if name == "agent" {
                continue;
            }
            let path = format!("status.{name}");
            let Some(expr) = validations
                .iter()
                .find(|v| {
                    v["message"].as_str().is_some_and(|m| m.ends_with(&format!("changes {path}")))
                })
                .and_then(|v| v["expression"].as_str())
            else {
                bail!("the agent admission policy does not guard {path}");
            };
            let missing = expr
                .split(&format!("? object.{path} : "))
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .map(str::trim)
                .unwrap_or_default()
                .to_string();
            let default = schema.get("default").map(Value::to_string);
            assert_eq!(
                missing,
                default.clone().unwrap_or_else(|| "null".into()),
                "{path}: the policy's value for a missing field must be the CRD default {default:?}"
            );
        }
    }
    Ok(())
}

/// The Node policy: an agent may remove the startup taint from its own Node, and nothing else.
fn node_vap() -> Vec<Value> {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    policy_and_binding(&docs, "agent-own-node")
}

const STARTUP_TAINT: &str = "enipool.io/agent-not-ready";

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "7",
                     "labels": {"topology.kubernetes.io/zone": "us-west-2a"}},
        "spec": {"providerID": "aws:///us-west-2a/i-1",
                 "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                            {"key": STARTUP_TAINT, "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn node_update(name: &str, claim: &str, sub: &str, old: Value, new: Value) -> AdmissionRequest {
    AdmissionRequest {
        operation: Operation::Update,
        kind: Gvk::new("", "v1", "Node"),
        resource: Gvr::new("", "v1", "nodes"),
        sub_resource: sub.into(),
        name: name.into(),
        user: agent_user(claim),
        object: Some(new),
        old_object: Some(old),
        ..Default::default()
    }
}

fn untainted(old: &Value) -> Value {
    let mut n = old.clone();
    n["spec"]["taints"] = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    n
}

#[test]
fn the_agent_removes_the_startup_taint_of_its_own_node_and_nothing_else() {
    let p = node_vap();
    let old = node("n1");
    admit(&p, &node_update("n1", "n1", "", old.clone(), untainted(&old))).unwrap();
    let e = admit(&p, &node_update("n2", "n1", "", node("n2"), untainted(&node("n2"))));
    assert!(e.unwrap_err().contains("Node n2"), "another node");
    let mut other = old.clone();
    other["spec"]["taints"] = json!([{"key": STARTUP_TAINT, "effect": "NoSchedule"}]);
    let e = admit(&p, &node_update("n1", "n1", "", old.clone(), other));
    assert!(e.unwrap_err().contains("other taints"), "another taint removed");
    let mut added = untainted(&old);
    added["spec"]["taints"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "x", "effect": "NoExecute"}));
    assert!(admit(&p, &node_update("n1", "n1", "", old.clone(), added)).is_err(), "added");
    for (field, value) in [
        ("labels", json!({"topology.kubernetes.io/zone": "us-west-2b"})),
        ("annotations", json!({"x": "y"})),
    ] {
        let mut n = untainted(&old);
        n["metadata"][field] = value;
        let e = admit(&p, &node_update("n1", "n1", "", old.clone(), n));
        assert!(e.unwrap_err().contains(&format!("metadata.{field}")), "{field}");
    }
    for (field, value) in [("unschedulable", json!(true)), ("providerID", json!("aws:///x/i-2"))] {
        let mut n = untainted(&old);
        n["spec"][field] = value;
        let e = admit(&p, &node_update("n1", "n1", "", old.clone(), n));
        assert!(e.unwrap_err().contains(&format!("spec.{field}")), "{field}");
    }
    let mut st = old.clone();
    st["status"]["conditions"][0]["status"] = json!("False");
    assert!(admit(&p, &node_update("n1", "n1", "status", old.clone(), st)).is_err(), "status");
    // Without the claim of a bound token: refused.
    let mut r = node_update("n1", "n1", "", old.clone(), untainted(&old));
    r.user = agent_sa();
    assert!(admit(&p, &r).is_err(), "no node-name claim");
}
