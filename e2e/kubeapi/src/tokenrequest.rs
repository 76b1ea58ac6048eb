//! `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`: TokenRequest, as the apiserver's
//! token REST storage answers it (Kubernetes >= 1.30: node info in pod-bound tokens, Node-bound
//! tokens, a token id).
//!
//! The ServiceAccount must exist (404). A `spec.boundObjectRef` to a Pod, Secret or Node must
//! name an existing object (404) whose uid matches a given one (409); a Pod must run as this
//! ServiceAccount (400). The minted token authenticates as `system:serviceaccount:<ns>:<name>`
//! (uid: the ServiceAccount's) in `system:serviceaccounts`, `system:serviceaccounts:<ns>` and
//! `system:authenticated`, with `userInfo.extra` `authentication.kubernetes.io/credential-id`
//! (`JTI=<id>`) and, for a Pod, `pod-name`, `pod-uid` and (when the pod has `spec.nodeName`)
//! `node-name`, plus `node-uid` when that Node exists; for a Node, `node-name` and `node-uid`.
//! ValidatingAdmissionPolicies see the TokenRequest as a CREATE of `serviceaccounts/token`.
//!
//! Departure: the token is an opaque random string, not a signed JWT; only this server accepts
//! it (see `authn.rs` for how it is checked on use).

use serde_json::{json, Value};

use super::admission::{self, AdmissionRequest, Caller, Gvk, Gvr, Operation};
use super::authn::{
    Minted, UserInfo, AUTHENTICATED, EXTRA_CREDENTIAL_ID, EXTRA_NODE_NAME, EXTRA_NODE_UID,
    EXTRA_POD_NAME, EXTRA_POD_UID,
};
use super::error::{ApiError, ApiResult};
use super::store::ObjKey;
use super::{now, State};

const KIND: &str = "TokenRequest";
const API_VERSION: &str = "authentication.k8s.io/v1";
/// The audience of tokens that do not ask for one (the API server's own).
const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

fn key(resource: &str, namespace: &str, name: &str) -> ObjKey {
    ObjKey {
        group: String::new(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn invalid(name: &str, error: String) -> ApiError {
    ApiError::invalid(&format!("{KIND}.authentication.k8s.io"), name, &[error])
}

fn uid(o: &Value) -> String {
    o["metadata"]["uid"].as_str().unwrap_or_default().to_string()
}

/// The bound object's key, its uid and the extras it adds.
type Bound = (ObjKey, String, Vec<(&'static str, String)>);

/// Look up `spec.boundObjectRef` (in namespace `ns`, for ServiceAccount `sa`).
fn bound_object(st: &State, ns: &str, sa: &str, r: &Value) -> ApiResult<Bound> {
    let api_version = r["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or_default();
    let kind = r["kind"].as_str().unwrap_or_default();
    let name = r["name"].as_str().unwrap_or_default();
    let get = |resource: &str, namespace: &str| {
        let k = key(resource, namespace, name);
        st.store.get(&k).cloned().map(|o| (k, o)).ok_or_else(|| ApiError::not_found(resource, name))
    };
    let (k, obj, extra) = match (group, kind) {
        ("", "Pod") => {
            let (k, pod) = get("pods", ns)?;
            if pod["spec"]["serviceAccountName"].as_str().unwrap_or("default") != sa {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{sa}\" to pod running with different serviceaccount name."
                )));
            }
            let mut extra = vec![(EXTRA_POD_NAME, name.to_string()), (EXTRA_POD_UID, uid(&pod))];
            if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                extra.push((EXTRA_NODE_NAME, node.to_string()));
                if let Some(n) = st.store.get(&key("nodes", "", node)) {
                    extra.push((EXTRA_NODE_UID, uid(n)));
                }
            }
            (k, pod, extra)
        }
        ("", "Node") => {
            let (k, node) = get("nodes", "")?;
            let extra = vec![(EXTRA_NODE_NAME, name.to_string()), (EXTRA_NODE_UID, uid(&node))];
            (k, node, extra)
        }
        ("", "Secret") => {
            let (k, secret) = get("secrets", ns)?;
            (k, secret, Vec::new())
        }
        _ => {
            let version = api_version.rsplit('/').next().unwrap_or_default();
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind}"
            )));
        }
    };
    let actual = uid(&obj);
    if let Some(want) = r["uid"].as_str().filter(|u| !u.is_empty()) {
        if want != actual {
            return Err(ApiError::conflict(kind, name, &format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated")));
        }
    }
    Ok((k, actual, extra))
}

/// Mint a token for ServiceAccount `ns/name` as `body` (a TokenRequest) asks.
pub(crate) fn create(
    st: &mut State,
    ns: &str,
    name: &str,
    mut body: Value,
    caller: &Caller,
) -> ApiResult<Value> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body of the request was not a JSON object"));
    }
    let api_version = body["apiVersion"].as_str().unwrap_or(API_VERSION);
    let kind = body["kind"].as_str().unwrap_or(KIND);
    if (api_version, kind) != (API_VERSION, KIND) {
        return Err(ApiError::bad_request(format!(
            "the body must be a {API_VERSION} {KIND}, not {api_version} {kind}"
        )));
    }
    for (field, want, what) in
        [("name", name, "service account name"), ("namespace", ns, "service account namespace")]
    {
        if let Some(v) = body["metadata"][field].as_str().filter(|v| !v.is_empty() && *v != want) {
            return Err(invalid(
                name,
                format!(
                    "metadata.{field}: Invalid value: \"{v}\": must match the {what} if specified"
                ),
            ));
        }
    }
    let sa_key = key("serviceaccounts", ns, name);
    let sa = st
        .store
        .get(&sa_key)
        .cloned()
        .ok_or_else(|| ApiError::not_found("serviceaccounts", name))?;
    let spec = &mut body["spec"];
    if spec["audiences"].as_array().is_none_or(|a| a.is_empty()) {
        spec["audiences"] = json!([DEFAULT_AUDIENCE]);
    }
    if spec["expirationSeconds"].is_null() {
        spec["expirationSeconds"] = json!(3600);
    }
    let seconds = spec["expirationSeconds"].as_i64().unwrap_or(-1);
    if seconds < 600 {
        return Err(invalid("", format!("spec.expirationSeconds: Invalid value: {}: may not specify a duration less than 10 minutes", spec["expirationSeconds"])));
    }
    if seconds > 1 << 32 {
        return Err(invalid("", format!("spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds")));
    }
    let created = jiff::Timestamp::now();
    body["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": now()});
    body["apiVersion"] = json!(API_VERSION);
    body["kind"] = json!(KIND);
    if let Some(m) = body.as_object_mut() {
        m.remove("status");
    }
    let request = AdmissionRequest {
        operation: Operation::Create,
        kind: Gvk {
            group: "authentication.k8s.io".into(),
            version: "v1".into(),
            kind: KIND.into(),
        },
        resource: Gvr {
            group: String::new(),
            version: "v1".into(),
            resource: "serviceaccounts".into(),
        },
        sub_resource: "token".into(),
        name: name.into(),
        namespace: ns.into(),
        user: caller.user.clone(),
        object: Some(body.clone()),
        old_object: None,
        namespace_object: st.store.get(&key("namespaces", "", ns)).cloned(),
    };
    admission::admit_request(st, caller, &request)?;
    let bound = match body["spec"].get("boundObjectRef").filter(|r| r.is_object()) {
        Some(r) => Some(bound_object(st, ns, name, r)?),
        None => None,
    };
    let jti = uuid::Uuid::new_v4().to_string();
    let mut user = UserInfo::service_account(ns, name).with_groups([AUTHENTICATED]);
    user.uid = uid(&sa);
    for (k, v) in bound.iter().flat_map(|b| b.2.iter()) {
        user = user.with_extra(k, [v.clone()]);
    }
    user = user.with_extra(EXTRA_CREDENTIAL_ID, [format!("JTI={jti}")]);
    let expires = created + jiff::SignedDuration::from_secs(seconds);
    let token = format!("enipool-e2e-sa.{}", uuid::Uuid::new_v4().simple());
    st.tokens.minted.insert(
        token.clone(),
        Minted {
            user,
            service_account: (sa_key, uid(&sa)),
            bound: bound.map(|(k, uid, _)| (k, uid)),
            expires,
        },
    );
    body["status"] = json!({
        "token": token,
        "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    Ok(body)
}
