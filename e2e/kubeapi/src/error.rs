//! API errors rendered as `meta.k8s.io/v1` `Status` objects, the shape every Kubernetes client
//! (kube-rs's `ErrorResponse`, kubectl's `StatusError`) decodes.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{json, Value};

/// One failure cause (`details.causes[]`): a field path and what is wrong with it.
#[derive(Debug, Clone)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldManagerConflict`, ...
    pub reason: String,
    pub message: String,
    /// Field path, e.g. `spec.nodeName` (kubectl prints it).
    pub field: String,
}

/// A Kubernetes API error: HTTP code + `Status.reason` + message (+ details).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`, `Conflict`, `Invalid`, `Expired`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `details.name`/`group`/`kind`, when the error concerns one object.
    pub details: Option<Box<(String, String, String)>>,
    /// `details.causes`.
    pub causes: Vec<Cause>,
}

/// Result type of the API handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None, causes: Vec::new() }
    }
    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    /// 404 NotFound for `resource.group "name"`, worded like the apiserver.
    pub fn not_found(group_resource: &str, name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("{group_resource} \"{name}\" not found"));
        e.details =
            Some(Box::new((name.to_string(), group_of(group_resource), kind_of(group_resource))));
        e
    }
    /// 409 AlreadyExists.
    pub fn already_exists(group_resource: &str, name: &str) -> Self {
        let mut e =
            Self::new(409, "AlreadyExists", format!("{group_resource} \"{name}\" already exists"));
        e.details =
            Some(Box::new((name.to_string(), group_of(group_resource), kind_of(group_resource))));
        e
    }
    /// 409 Conflict for an optimistic-concurrency failure (stale resourceVersion / uid).
    pub fn conflict(group_resource: &str, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {group_resource} \"{name}\": {why}"),
        );
        e.details =
            Some(Box::new((name.to_string(), group_of(group_resource), kind_of(group_resource))));
        e
    }
    /// 422 Invalid with one cause per message (`"path: text"` messages are split on the first ": ").
    pub fn invalid(kind: &str, name: &str, errors: &[String]) -> Self {
        let causes: Vec<Cause> = errors
            .iter()
            .map(|m| {
                let (field, msg) = m.split_once(": ").unwrap_or(("", m.as_str()));
                Cause {
                    reason: "FieldValueInvalid".into(),
                    message: msg.to_string(),
                    field: field.to_string(),
                }
            })
            .collect();
        let joined =
            if errors.len() == 1 { errors[0].clone() } else { format!("[{}]", errors.join(", ")) };
        let mut e = Self::new(422, "Invalid", format!("{kind} \"{name}\" is invalid: {joined}"));
        e.details = Some(Box::new((name.to_string(), String::new(), kind.to_string())));
        e.causes = causes;
        e
    }
    /// 410 Gone / Expired: the requested resourceVersion was compacted away.
    pub fn expired(rv: u64) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {rv}"))
    }
    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.details.is_some() || !self.causes.is_empty() {
            let mut d = json!({});
            if let Some((name, group, kind)) = self.details.as_deref() {
                d["name"] = json!(name);
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                d["kind"] = json!(kind);
            }
            if !self.causes.is_empty() {
                d["causes"] = self
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
            }
            s["details"] = d;
        }
        s
    }
}

// `pods` -> kind "pods", group ""; `enipools.enipool.io` -> group "enipool.io". The apiserver puts the
// resource (not the Kind) in details.kind for these errors, so we do the same.
fn group_of(gr: &str) -> String {
    gr.split_once('.').map(|(_, g)| g.to_string()).unwrap_or_default()
}
fn kind_of(gr: &str) -> String {
    gr.split_once('.').map(|(r, _)| r.to_string()).unwrap_or_else(|| gr.to_string())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, [(http::header::CONTENT_TYPE, "application/json")], self.status().to_string())
            .into_response()
    }
}
