//! ValidatingAdmissionPolicies, enforced like the apiserver's `ValidatingAdmissionPolicy`
//! admission plugin on every CREATE, UPDATE and DELETE (subresources, server-side apply and
//! patches included), after schema validation and before the object is stored.
//!
//! For each binding (by name) of an existing policy: the policy's `matchConstraints` and the
//! binding's `matchResources` must select the request (`admission_match.rs`) and every
//! `matchConditions` expression be true; then `variables` are evaluated in order (as
//! `variables.<name>`) and each of `validations` must be true. A false validation is a failure
//! with its `messageExpression`, `message` or `failed expression: <expr>`, and its `reason`
//! (default Invalid). An evaluation error (or a matchCondition error) is a failure when
//! `failurePolicy` is Fail (the default) and ignored when it is Ignore. The binding's
//! `validationActions` decide what a failure does: `Deny` refuses the request with
//! `ValidatingAdmissionPolicy '<p>' with binding '<b>' denied request: <message>` (403, 422, 401
//! or 413 from the reason), `Warn` adds a `Warning` response header, `Audit` does nothing here.
//!
//! CEL variables: `object` (null on DELETE), `oldObject` (null on CREATE), `request`
//! (operation, name, namespace, subResource, kind, resource, requestKind, requestResource,
//! requestSubResource, userInfo with extra, dryRun, options), `params` (null),
//! `namespaceObject` (null for cluster-scoped objects) and `variables`.
//!
//! Departures: `paramKind` is not supported (such a policy fails as a configuration error, per
//! its failurePolicy); `authorizer` is not bound; policies are not type-checked when stored
//! (an expression that does not compile fails at evaluation, per failurePolicy); no cost
//! budget; writes the server makes itself (garbage collection, namespace cleanup) are not
//! admitted. As on a real server, requests to the admission-configuration kinds themselves are
//! exempt.

use std::sync::Mutex;

use serde_json::Value;

use super::audit::{AuditLog, AuditRecord};
use super::authn::UserInfo;
use super::celenv::{self, to_cel};
use super::error::{ApiError, ApiResult, Cause};
use super::State;

pub use super::admission_request::{AdmissionRequest, Gvk, Gvr, Operation};

/// The API group of the policy kinds.
pub const GROUP: &str = "admissionregistration.k8s.io";

/// What the policies decided about one request.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The error the request is refused with (the first denying policy binding).
    pub denied: Option<ApiError>,
    /// `Warning` header texts of bindings with the Warn action.
    pub warnings: Vec<String>,
}

/// One failed validation (or evaluation error under failurePolicy Fail).
struct Failure {
    message: String,
    reason: &'static str,
}

fn reason_code(reason: &str) -> (&'static str, u16) {
    match reason {
        "Forbidden" => ("Forbidden", 403),
        "Unauthorized" => ("Unauthorized", 401),
        "RequestEntityTooLarge" => ("RequestEntityTooLarge", 413),
        _ => ("Invalid", 422),
    }
}

fn aggregate(errors: &[String]) -> String {
    if errors.len() == 1 {
        errors[0].clone()
    } else {
        format!("[{}]", errors.join(", "))
    }
}

/// Whether `expr` mentions `variables.<name>`.
fn references(expr: &str, name: &str) -> bool {
    let pat = format!("variables.{name}");
    expr.match_indices(&pat).any(|(i, _)| {
        let after = expr[i + pat.len()..].chars().next();
        !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

fn message_for(ctx: &kube_cel::cel::Context, v: &Value) -> String {
    let from_expr = v["messageExpression"].as_str().and_then(|me| match celenv::eval(ctx, me) {
        Ok(kube_cel::cel::Value::String(s)) => {
            let s = s.trim().to_string();
            (!s.is_empty() && !s.contains('\n')).then_some(s)
        }
        _ => None,
    });
    from_expr
        .or_else(|| v["message"].as_str().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()))
        .unwrap_or_else(|| {
            format!("failed expression: {}", v["expression"].as_str().unwrap_or_default().trim())
        })
}

/// The failures of one policy under one binding for `req` (empty: admitted or not matched).
fn failures(policy: &Value, binding: &Value, req: &AdmissionRequest) -> Vec<Failure> {
    let spec = &policy["spec"];
    let fail_closed = spec["failurePolicy"].as_str() != Some("Ignore");
    let on_error = |message: String| {
        if fail_closed {
            vec![Failure { message, reason: "Invalid" }]
        } else {
            Vec::new()
        }
    };
    match super::admission_match::matches(&spec["matchConstraints"], req, true) {
        Ok(true) => {}
        Ok(false) => return Vec::new(),
        Err(e) => return on_error(e),
    }
    if binding["spec"]["matchResources"].is_object() {
        match super::admission_match::matches(&binding["spec"]["matchResources"], req, false) {
            Ok(true) => {}
            Ok(false) => return Vec::new(),
            Err(e) => return on_error(e),
        }
    }
    if !spec["paramKind"].is_null() {
        return on_error(
            "failed to configure binding: paramKind is not supported by the e2e API server".into(),
        );
    }
    let null = Value::Null;
    let mut ctx = celenv::context([
        ("object", to_cel(req.object.as_ref().unwrap_or(&null))),
        ("oldObject", to_cel(req.old_object.as_ref().unwrap_or(&null))),
        ("request", to_cel(&req.request_json())),
        ("params", to_cel(&null)),
        ("namespaceObject", to_cel(req.namespace_object.as_ref().unwrap_or(&null))),
        ("variables", celenv::map([])),
    ]);
    let mut errors = Vec::new();
    for mc in spec["matchConditions"].as_array().into_iter().flatten() {
        match celenv::eval_bool(&ctx, mc["expression"].as_str().unwrap_or_default()) {
            Ok(false) => return Vec::new(),
            Ok(true) => {}
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return on_error(aggregate(&errors));
    }
    let (mut vars, mut failed) = (Vec::new(), Vec::new());
    for v in spec["variables"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        match celenv::eval(&ctx, v["expression"].as_str().unwrap_or_default()) {
            Ok(val) => {
                vars.push((name, val));
                ctx.add_variable_from_value("variables", celenv::map(vars.clone()));
            }
            Err(e) => failed.push((name, e)),
        }
    }
    let mut out = Vec::new();
    for v in spec["validations"].as_array().into_iter().flatten() {
        let expr = v["expression"].as_str().unwrap_or_default();
        let result = match failed.iter().find(|(n, _)| references(expr, n)) {
            Some((n, e)) => Err(format!("composited variable \"{n}\" fails to evaluate: {e}")),
            None => celenv::eval_bool(&ctx, expr),
        };
        match result {
            Ok(true) => {}
            Ok(false) => out.push(Failure {
                message: message_for(&ctx, v),
                reason: reason_code(v["reason"].as_str().unwrap_or("Invalid")).0,
            }),
            Err(e) => out.extend(on_error(e)),
        }
    }
    out
}

fn exempt(req: &AdmissionRequest) -> bool {
    req.resource.group == GROUP
        && matches!(
            req.resource.resource.as_str(),
            "validatingadmissionpolicies"
                | "validatingadmissionpolicybindings"
                | "validatingwebhookconfigurations"
                | "mutatingwebhookconfigurations"
                | "mutatingadmissionpolicies"
                | "mutatingadmissionpolicybindings"
        )
}

/// Evaluate the ValidatingAdmissionPolicies and bindings among `objects` (anything else is
/// ignored) for `req`.
pub fn validate<'a>(
    objects: impl IntoIterator<Item = &'a Value>,
    req: &AdmissionRequest,
) -> Verdict {
    let mut verdict = Verdict::default();
    if exempt(req) {
        return verdict;
    }
    let (mut policies, mut bindings) = (Vec::new(), Vec::new());
    for o in objects {
        if o["apiVersion"].as_str().and_then(|a| a.split('/').next()) != Some(GROUP) {
            continue;
        }
        match o["kind"].as_str() {
            Some("ValidatingAdmissionPolicy") => policies.push(o),
            Some("ValidatingAdmissionPolicyBinding") => bindings.push(o),
            _ => {}
        }
    }
    let name = |o: &Value| o["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let mut pairs: Vec<(&Value, &Value)> = bindings
        .iter()
        .filter_map(|b| {
            let p = policies.iter().find(|p| p["metadata"]["name"] == b["spec"]["policyName"])?;
            Some((*p, *b))
        })
        .collect();
    pairs.sort_by_key(|(p, b)| (name(p), name(b)));
    for (policy, binding) in pairs {
        let actions: Vec<&str> = binding["spec"]["validationActions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for f in failures(policy, binding, req) {
            let (p, b) = (name(policy), name(binding));
            if actions.contains(&"Warn") {
                verdict.warnings.push(format!(
                    "Validation failed for ValidatingAdmissionPolicy '{p}' with binding '{b}': {}",
                    f.message
                ));
            }
            if actions.contains(&"Deny") && verdict.denied.is_none() {
                let inner = format!(
                    "ValidatingAdmissionPolicy '{p}' with binding '{b}' denied request: {}",
                    f.message
                );
                verdict.denied = Some(denial(req, &inner, f.reason));
            }
        }
    }
    verdict
}

/// `admission.NewForbidden` with the policy's reason and code.
fn denial(req: &AdmissionRequest, inner: &str, reason: &str) -> ApiError {
    let gr = req.group_resource();
    let message = if req.name.is_empty() {
        format!("{gr} is forbidden: {inner}")
    } else {
        format!("{gr} \"{}\" is forbidden: {inner}", req.name)
    };
    let (reason, code) = reason_code(reason);
    let mut e = ApiError::new(code, reason, message);
    e.details = Some(Box::new((
        req.name.clone(),
        req.resource.group.clone(),
        req.resource.resource.clone(),
    )));
    e.causes =
        vec![Cause { reason: String::new(), message: inner.to_string(), field: String::new() }];
    e
}

/// Who makes a write, for the checks the server runs inside the write pipeline: the implied
/// `create` authorization of an apply that creates, and admission.
pub(crate) struct Caller<'a> {
    pub user: &'a UserInfo,
    /// The request's authorization attributes.
    pub attrs: &'a AuditRecord,
    /// Whether RBAC decides this request (enabled, and the user is not in system:masters).
    pub rbac: bool,
    pub audit: &'a AuditLog,
    /// `Warning` headers for the response.
    pub warnings: &'a Mutex<Vec<String>>,
}

/// Run the policies of the server's store for `req`.
pub(crate) fn admit_request(st: &State, caller: &Caller, req: &AdmissionRequest) -> ApiResult<()> {
    let objects = ["validatingadmissionpolicies", "validatingadmissionpolicybindings"]
        .into_iter()
        .flat_map(|r| st.store.list(GROUP, r, None).map(|(_, o)| o));
    let verdict = validate(objects, req);
    if !verdict.warnings.is_empty() {
        caller.warnings.lock().unwrap_or_else(|p| p.into_inner()).extend(verdict.warnings);
    }
    verdict.denied.map_or(Ok(()), Err)
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
