//! Request audit: every request the server receives, as the authorizer of a real apiserver sees
//! it, so tests can compare what a component really calls with what its RBAC grants.
//!
//! The attributes follow the apiserver's `RequestInfoFactory` (k8s.io/apiserver
//! `pkg/endpoints/request/requestinfo.go`), computed from the path and query alone, before the
//! request is handled (so a request that then fails with 404 or 409 is recorded too, as the
//! authorizer would have checked it):
//!
//! * `/api/v1/...` and `/apis/<group>/<version>/...` with at least a resource are resource
//!   requests; anything else (`/api`, `/apis/<group>/<version>`, `/version`, `/openapi/v3`, ...)
//!   is a non-resource request, recorded with an empty `resource`, the lower-case HTTP method as
//!   verb and the path.
//! * Verbs: POST → `create`, GET/HEAD → `get`, PUT → `update`, PATCH → `patch`, DELETE → `delete`;
//!   a GET without a name is `list`, or `watch` with `watch=true|1|t|T|TRUE|True`; a DELETE without
//!   a name is `deletecollection`; the legacy `/api/v1/watch/...` path is `watch`.
//! * `namespaces/<ns>/<resource>/...` sets the namespace; `namespaces/<ns>` and its `status` and
//!   `finalize` subresources are the `namespaces` resource with namespace and name `<ns>`.
//! * A list or watch whose field selector requires `metadata.name=<n>` has name `<n>`.
//! * A server-side apply PATCH that creates the object is authorized a second time with verb
//!   `create` (patch.go's `createAuthorizerAttributes`), once the patched object passed schema
//!   validation: a second record with verb `create` follows the `patch` one (`implied: true`).

use std::sync::Mutex;
use std::time::Instant;

use http::Method;

/// One authorization check, as RBAC would evaluate it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditRecord {
    /// User name from the bearer token (`system:anonymous` without a known token).
    pub user: String,
    /// Kubernetes authorization verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`); for non-resource requests the lower-case HTTP method.
    pub verb: String,
    /// API group (`""` for core).
    pub api_group: String,
    /// API version (`v1`, `v1alpha1`); empty for non-resource requests.
    pub api_version: String,
    /// Resource (plural); empty for a non-resource request.
    pub resource: String,
    /// Subresource (`status`, `finalize`, ...); empty when none.
    pub subresource: String,
    /// Namespace; empty for cluster-scoped requests and all-namespace lists.
    pub namespace: String,
    /// Object name; empty for collections (unless a field selector pins `metadata.name`).
    pub name: String,
    pub path: String,
    /// A second check the apiserver makes for the same request (`create` for an apply PATCH that
    /// created the object).
    pub implied: bool,
}

impl AuditRecord {
    /// Whether this is a resource request (else `path` is the non-resource URL).
    pub fn is_resource(&self) -> bool {
        !self.resource.is_empty()
    }

    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The second check of a server-side apply that creates the object.
    pub fn implied_create(&self) -> AuditRecord {
        AuditRecord { verb: "create".into(), implied: true, ..self.clone() }
    }

    /// The record of one request, from its method, path and query parameters.
    pub fn from_request<'a>(
        user: &str,
        method: &Method,
        path: &str,
        query: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> AuditRecord {
        let mut r = AuditRecord {
            user: user.to_string(),
            verb: method.as_str().to_ascii_lowercase(),
            api_group: String::new(),
            api_version: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: path.to_string(),
            implied: false,
        };
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // Prefix, group and version; at least one more part makes it a resource request.
        let rest = match parts.as_slice() {
            ["api", v, rest @ ..] if !rest.is_empty() => {
                r.api_version = v.to_string();
                rest
            }
            ["apis", g, v, rest @ ..] if !rest.is_empty() => {
                r.api_group = g.to_string();
                r.api_version = v.to_string();
                rest
            }
            _ => return r,
        };
        let mut rest = rest;
        let mut verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        };
        if rest.len() >= 2 && rest[0] == "watch" {
            verb = "watch";
            rest = &rest[1..];
        }
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            r.namespace = rest[1].to_string();
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        if let Some(res) = rest.first() {
            r.resource = res.to_string();
        }
        if let Some(n) = rest.get(1) {
            r.name = n.to_string();
        }
        if let Some(s) = rest.get(2) {
            r.subresource = s.to_string();
        }
        if r.name.is_empty() && verb == "get" {
            let mut watch = false;
            for (k, v) in query {
                match k {
                    "watch" => watch = matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"),
                    "fieldSelector" => {
                        if let Some(n) = exact_name(v) {
                            r.name = n;
                        }
                    }
                    _ => {}
                }
            }
            verb = if watch { "watch" } else { "list" };
        }
        if r.name.is_empty() && verb == "delete" {
            verb = "deletecollection";
        }
        r.verb = verb.to_string();
        r
    }
}

/// `metadata.name=<n>` (or `==`) among the AND-ed terms of a field selector.
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let v = term.trim().strip_prefix("metadata.name")?;
        let v = v.strip_prefix("==").or_else(|| v.strip_prefix('='))?;
        (!v.is_empty() && !v.contains('/') && v != "." && v != "..").then(|| v.to_string())
    })
}

/// The log, most recent last.
#[derive(Debug, Default)]
pub(crate) struct AuditLog {
    /// With the time each was recorded.
    records: Mutex<Vec<(Instant, AuditRecord)>>,
}

impl AuditLog {
    pub(crate) fn record(&self, r: AuditRecord) {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), r));
    }

    pub(crate) fn snapshot(&self) -> Vec<AuditRecord> {
        self.snapshot_timed().into_iter().map(|(_, r)| r).collect()
    }

    pub(crate) fn snapshot_timed(&self) -> Vec<(Instant, AuditRecord)> {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn clear(&self) {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(method: Method, path: &str, query: &[(&str, &str)]) -> AuditRecord {
        AuditRecord::from_request("u", &method, path, query.iter().copied())
    }

    /// (verb, group, resource, subresource, namespace, name)
    fn attrs(r: &AuditRecord) -> (&str, &str, &str, &str, &str, &str) {
        (&r.verb, &r.api_group, &r.resource, &r.subresource, &r.namespace, &r.name)
    }

    #[test]
    fn verbs_follow_the_apiserver() {
        type Attrs<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);
        type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], Attrs<'a>);
        let cases: &[Case] = &[
            (Method::GET, "/api/v1/nodes", &[], ("list", "", "nodes", "", "", "")),
            (
                Method::GET,
                "/api/v1/nodes",
                &[("watch", "true")],
                ("watch", "", "nodes", "", "", ""),
            ),
            (Method::GET, "/api/v1/nodes", &[("watch", "1")], ("watch", "", "nodes", "", "", "")),
            (
                Method::GET,
                "/api/v1/nodes",
                &[("watch", "false")],
                ("list", "", "nodes", "", "", ""),
            ),
            (
                Method::GET,
                "/api/v1/nodes/n1",
                &[("watch", "1")],
                ("get", "", "nodes", "", "", "n1"),
            ),
            (Method::GET, "/api/v1/watch/nodes", &[], ("watch", "", "nodes", "", "", "")),
            (
                Method::GET,
                "/api/v1/watch/namespaces/d/pods/p",
                &[],
                ("watch", "", "pods", "", "d", "p"),
            ),
            (
                Method::GET,
                "/apis/enipool.io/v1alpha1/enipools",
                &[("watch", "true"), ("fieldSelector", "metadata.name=n1")],
                ("watch", "enipool.io", "enipools", "", "", "n1"),
            ),
            (
                Method::GET,
                "/api/v1/pods",
                &[("fieldSelector", "spec.nodeName=n1")],
                ("list", "", "pods", "", "", ""),
            ),
            (Method::GET, "/api/v1/namespaces/d/pods", &[], ("list", "", "pods", "", "d", "")),
            (
                Method::POST,
                "/api/v1/namespaces/d/events",
                &[],
                ("create", "", "events", "", "d", ""),
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l",
                &[],
                ("update", "coordination.k8s.io", "leases", "", "kube-system", "l"),
            ),
            (
                Method::PATCH,
                "/apis/enipool.io/v1alpha1/enipools/n1/status",
                &[("fieldManager", "x")],
                ("patch", "enipool.io", "enipools", "status", "", "n1"),
            ),
            (Method::DELETE, "/api/v1/nodes/n1", &[], ("delete", "", "nodes", "", "", "n1")),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/pods",
                &[],
                ("deletecollection", "", "pods", "", "d", ""),
            ),
            // Namespaces and their subresources.
            (Method::GET, "/api/v1/namespaces", &[], ("list", "", "namespaces", "", "", "")),
            (Method::GET, "/api/v1/namespaces/d", &[], ("get", "", "namespaces", "", "d", "d")),
            (
                Method::PUT,
                "/api/v1/namespaces/d/finalize",
                &[],
                ("update", "", "namespaces", "finalize", "d", "d"),
            ),
        ];
        for (m, path, q, want) in cases {
            let r = rec(m.clone(), path, q);
            assert!(r.is_resource(), "{m} {path}");
            assert_eq!(attrs(&r), *want, "{m} {path} {q:?}");
        }
    }

    #[test]
    fn non_resource_requests() {
        for p in ["/api", "/api/v1", "/apis", "/apis/enipool.io", "/apis/enipool.io/v1alpha1"] {
            let r = rec(Method::GET, p, &[]);
            assert!(!r.is_resource(), "{p}");
            assert_eq!((r.verb.as_str(), r.path.as_str()), ("get", p));
        }
        let r = rec(Method::GET, "/version", &[]);
        assert_eq!((r.verb.as_str(), r.resource.as_str()), ("get", ""));
    }

    #[test]
    fn apply_that_creates_is_also_create() {
        let log = AuditLog::default();
        let r = rec(Method::PATCH, "/apis/enipool.io/v1alpha1/enipools/n1/status", &[]);
        log.record(r.clone());
        log.record(r.implied_create());
        let got = log.snapshot();
        assert_eq!((got[1].verb.as_str(), got[1].implied), ("create", true));
        let (a, b) = (attrs(&got[1]), attrs(&r));
        assert_eq!((a.1, a.2, a.3, a.4, a.5), (b.1, b.2, b.3, b.4, b.5), "only the verb differs");
        log.clear();
        assert!(log.snapshot().is_empty());
    }
}
