//! RBAC authorization, as the apiserver's RBAC authorizer (k8s.io/kubernetes
//! `plugin/pkg/auth/authorizer/rbac`) decides it from ClusterRoles, ClusterRoleBindings, Roles and
//! RoleBindings, for the request attributes of [`AuditRecord`].
//!
//! A request is allowed when a rule of a role bound to the user allows it: ClusterRoleBindings
//! everywhere, RoleBindings (to a Role of their namespace or to a ClusterRole) only in their
//! namespace. Subjects: `User` by name, `Group` by membership, `ServiceAccount` by the user name
//! `system:serviceaccount:<ns>:<name>` (a RoleBinding's subject without a namespace means the
//! binding's namespace). Rules match by verb, apiGroup, resource (`*`, `resource/subresource`,
//! `*/subresource`) and resourceNames, or for non-resource requests by nonResourceURLs (`*` and
//! `/prefix/*`). `system:masters` bypasses RBAC, as the apiserver's privileged-group authorizer
//! does.
//!
//! The default ClusterRoleBindings of a real cluster that concern every user are built in rather
//! than stored: `system:discovery`, `system:basic-user` (to `system:authenticated`) and
//! `system:public-info-viewer` (to everyone). Departure: aggregated ClusterRoles
//! (`aggregationRule`) are not aggregated; their own `rules` count.

use serde_json::{json, Value};

use super::audit::AuditRecord;
use super::authn::{UserInfo, AUTHENTICATED, MASTERS};
use super::error::ApiError;
use super::store::Store;

/// The API group of the RBAC kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// The outcome of one authorization check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A rule allows it (or the user is in `system:masters`).
    Allow,
    /// No rule allows it; `reason` lists bindings whose role is missing (empty when none), as
    /// the real authorizer reports them.
    Deny {
        /// `RBAC: clusterrole.rbac.authorization.k8s.io "x" not found` or empty.
        reason: String,
    },
}

/// A set of RBAC objects to authorize against (the server's store, or rendered manifests).
#[derive(Debug, Default, Clone)]
pub struct Rbac<'a> {
    cluster_roles: Vec<&'a Value>,
    roles: Vec<&'a Value>,
    cluster_role_bindings: Vec<&'a Value>,
    role_bindings: Vec<&'a Value>,
}

fn strs(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// The default ClusterRoles bound to every (authenticated) user in a real cluster.
fn bootstrap_rules(user: &UserInfo) -> Vec<Value> {
    let public = json!({"verbs": ["get"],
        "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"]});
    let mut rules = vec![public];
    if user.in_group(AUTHENTICATED) {
        rules.push(json!({"verbs": ["get"], "nonResourceURLs": [
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
            "/readyz", "/version", "/version/"]}));
        rules.push(json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}));
        rules.push(json!({"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
            "resources": ["selfsubjectreviews"]}));
    }
    rules
}

/// Whether `rule` (a PolicyRule) allows the request `r`.
pub fn rule_allows(rule: &Value, r: &AuditRecord) -> bool {
    let verb_ok = strs(&rule["verbs"]).any(|v| v == "*" || v == r.verb);
    if !verb_ok {
        return false;
    }
    if !r.is_resource() {
        return strs(&rule["nonResourceURLs"]).any(|u| {
            u == "*"
                || u == r.path
                || u.strip_suffix('*').is_some_and(|prefix| r.path.starts_with(prefix))
        });
    }
    let group_ok = strs(&rule["apiGroups"]).any(|g| g == "*" || g == r.api_group);
    let combined = r.resource_path();
    let resource_ok = strs(&rule["resources"]).any(|res| {
        res == "*"
            || res == combined
            || (!r.subresource.is_empty()
                && res.strip_prefix("*/").is_some_and(|s| s == r.subresource))
    });
    let names: Vec<&str> = strs(&rule["resourceNames"]).collect();
    let name_ok = names.is_empty() || names.iter().any(|n| !r.name.is_empty() && *n == r.name);
    group_ok && resource_ok && name_ok
}

/// Whether a binding's subject is `user`; `binding_ns` is "" for a ClusterRoleBinding.
fn subject_matches(s: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = s["name"].as_str().unwrap_or_default();
    match s["kind"].as_str() {
        Some("User") => user.username == name,
        Some("Group") => user.in_group(name),
        Some("ServiceAccount") => {
            let ns = s["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(binding_ns);
            !ns.is_empty() && user.username == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

impl<'a> Rbac<'a> {
    /// Collect the RBAC kinds among `objects` (anything else is ignored).
    pub fn from_objects(objects: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut r = Rbac::default();
        for o in objects {
            let api = o["apiVersion"].as_str().unwrap_or_default();
            if api.split('/').next() != Some(GROUP) {
                continue;
            }
            match o["kind"].as_str() {
                Some("ClusterRole") => r.cluster_roles.push(o),
                Some("Role") => r.roles.push(o),
                Some("ClusterRoleBinding") => r.cluster_role_bindings.push(o),
                Some("RoleBinding") => r.role_bindings.push(o),
                _ => {}
            }
        }
        r
    }

    /// The RBAC objects of the server's store.
    pub(crate) fn from_store(store: &'a Store) -> Self {
        let kinds = ["clusterroles", "roles", "clusterrolebindings", "rolebindings"];
        Self::from_objects(
            kinds.into_iter().flat_map(|k| store.list(GROUP, k, None).map(|(_, o)| o)),
        )
    }

    /// The rules of a binding's roleRef, or the error the real resolver reports.
    fn role_rules(&self, binding: &Value, binding_ns: &str) -> Result<&'a Value, String> {
        let rr = &binding["roleRef"];
        let name = rr["name"].as_str().unwrap_or_default();
        let found = match rr["kind"].as_str() {
            Some("ClusterRole") => {
                self.cluster_roles.iter().find(|r| r["metadata"]["name"] == name).copied()
            }
            Some("Role") if !binding_ns.is_empty() => self
                .roles
                .iter()
                .find(|r| r["metadata"]["name"] == name && r["metadata"]["namespace"] == binding_ns)
                .copied(),
            _ => None,
        };
        let kind = rr["kind"].as_str().unwrap_or_default().to_lowercase();
        found.map(|r| &r["rules"]).ok_or_else(|| format!("{kind}.{GROUP} \"{name}\" not found"))
    }

    /// Decide one request of `user` (`system:masters` always allowed).
    pub fn authorize(&self, user: &UserInfo, r: &AuditRecord) -> Decision {
        if user.in_group(MASTERS) || bootstrap_rules(user).iter().any(|rule| rule_allows(rule, r)) {
            return Decision::Allow;
        }
        let mut errors = Vec::new();
        let cluster = self.cluster_role_bindings.iter().map(|b| (*b, ""));
        let local = self.role_bindings.iter().filter_map(|b| {
            let ns = b["metadata"]["namespace"].as_str().unwrap_or_default();
            (!r.namespace.is_empty() && ns == r.namespace).then_some((*b, ns))
        });
        for (b, ns) in cluster.chain(local) {
            if !b["subjects"].as_array().into_iter().flatten().any(|s| subject_matches(s, user, ns))
            {
                continue;
            }
            match self.role_rules(b, ns) {
                Ok(rules) => {
                    if rules.as_array().into_iter().flatten().any(|rule| rule_allows(rule, r)) {
                        return Decision::Allow;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let reason = match errors.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", errors[0]),
            _ => format!("RBAC: [{}]", errors.join(", ")),
        };
        Decision::Deny { reason }
    }
}

/// `<resource>.<group> "<name>" is forbidden: <why>` (403 Forbidden), as `NewForbidden` words it.
pub fn forbidden_error(r: &AuditRecord, why: &str) -> ApiError {
    let gr = if r.api_group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.api_group)
    };
    let message = match (gr.is_empty(), r.name.is_empty()) {
        (true, _) => format!("forbidden: {why}"),
        (false, true) => format!("{gr} is forbidden: {why}"),
        (false, false) => format!("{gr} \"{}\" is forbidden: {why}", r.name),
    };
    let mut e = ApiError::new(403, "Forbidden", message);
    e.details = Some(Box::new((r.name.clone(), r.api_group.clone(), r.resource.clone())));
    e
}

/// The 403 the authorization filter answers for a denied request.
pub fn denied(user: &UserInfo, r: &AuditRecord, reason: &str) -> ApiError {
    let u = &user.username;
    let mut why = if !r.is_resource() {
        format!("User {u:?} cannot {} path {:?}", r.verb, r.path)
    } else if !r.namespace.is_empty() {
        format!(
            "User {u:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            r.verb,
            r.resource_path(),
            r.api_group,
            r.namespace
        )
    } else {
        format!(
            "User {u:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            r.verb,
            r.resource_path(),
            r.api_group
        )
    };
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    forbidden_error(r, &why)
}

/// Authorize `r` against the store's RBAC objects: Ok, or the 403 of the authorization filter.
pub(crate) fn check(store: &Store, user: &UserInfo, r: &AuditRecord) -> Result<(), ApiError> {
    match Rbac::from_store(store).authorize(user, r) {
        Decision::Allow => Ok(()),
        Decision::Deny { reason } => Err(denied(user, r, &reason)),
    }
}

/// The check of a create that a server-side apply makes (patch.go's `withAuthorization`): its
/// 403 carries only the authorizer's reason after the object's name.
pub(crate) fn check_implied_create(
    store: &Store,
    user: &UserInfo,
    r: &AuditRecord,
) -> Result<(), ApiError> {
    match Rbac::from_store(store).authorize(user, r) {
        Decision::Allow => Ok(()),
        Decision::Deny { reason } => Err(forbidden_error(r, &reason)),
    }
}

#[cfg(test)]
#[path = "rbac_tests.rs"]
mod tests;
