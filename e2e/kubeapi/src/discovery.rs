//! Discovery (`/api`, `/apis`, `/apis/{group}[/{version}]`, `/version`) and OpenAPI stubs.
//!
//! Only the legacy discovery format is served: kubectl asks for aggregated discovery
//! (`as=APIGroupDiscoveryList`) first and falls back when the reply's content type is plain
//! `application/json`, as it does against servers older than 1.26.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::resources::{version_priority, Registry, ResourceDef};

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-enipool-e2e",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub fn core_versions(addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}],
    })
}

/// Versions served per group, preferred first.
fn groups(reg: &Registry) -> BTreeMap<String, Vec<String>> {
    let mut g: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in reg.all().iter().filter(|d| !d.group.is_empty()) {
        let vs = g.entry(d.group.clone()).or_default();
        for v in &d.versions {
            if !vs.contains(&v.name) {
                vs.push(v.name.clone());
            }
        }
    }
    for vs in g.values_mut() {
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    }
    g
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0].clone()})
}

/// `/apis`.
pub fn group_list(reg: &Registry) -> Value {
    let gs: Vec<Value> = groups(reg).iter().map(|(n, vs)| group_json(n, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

/// `/apis/{group}`.
pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    let gs = groups(reg);
    let vs = gs.get(name)?;
    let mut g = group_json(name, vs);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn verbs(d: &ResourceDef) -> Vec<&'static str> {
    let _ = d;
    vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
}

/// `/api/v1` or `/apis/{group}/{version}`.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut res = Vec::new();
    for d in reg.all().iter().filter(|d| d.group == group) {
        let Some(v) = d.version(version) else { continue };
        let mut r = json!({
            "name": d.plural, "singularName": d.singular, "namespaced": d.namespaced,
            "kind": d.kind, "verbs": verbs(d),
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        res.push(r);
        if d.group.is_empty() && d.plural == "serviceaccounts" {
            res.push(json!({
                "name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                "verbs": ["create"],
            }));
        }
        if v.status_subresource {
            res.push(json!({
                "name": format!("{}/status", d.plural), "singularName": "", "namespaced": d.namespaced,
                "kind": d.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if res.is_empty() && !(group.is_empty() && version == "v1") {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": res}),
    )
}

/// `/openapi/v3`: the path index. Entries carry no schemas, so kubectl's OpenAPI-based features
/// (`explain`, client-side field validation) find nothing and fall back or report it.
pub fn openapi_v3_index(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert("api/v1".into(), json!({"serverRelativeURL": "/openapi/v3/api/v1"}));
    for (g, vs) in groups(reg) {
        for v in vs {
            let p = format!("apis/{g}/{v}");
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}")}));
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/{path}` (`api/v1` or `apis/{group}/{version}`): for each resource a PATCH
/// operation tagged with its GVK and the query parameters the server understands (kubectl checks
/// for `fieldValidation` there to choose server-side field validation), and for custom resources
/// their openAPIV3Schema as a component (enough for `kubectl explain`). Built-in kinds have no
/// schema here.
pub fn openapi_v3_doc(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for d in reg.all().iter().filter(|d| d.group == group) {
        let Some(v) = d.version(version) else { continue };
        let gvk = json!([{"group": group, "version": version, "kind": d.kind}]);
        let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
            .iter()
            .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": true}))
            .collect();
        let ns = if d.namespaced { "/namespaces/{namespace}" } else { "" };
        let op = json!({
            "operationId": format!("patch{}", d.kind),
            "parameters": params,
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk[0].clone(),
        });
        paths.insert(format!("{prefix}{ns}/{}/{{name}}", d.plural), json!({"patch": op}));
        if let Some(schema) = &v.schema {
            let mut sc = schema.clone();
            sc["x-kubernetes-group-version-kind"] = gvk;
            let rev_group: Vec<&str> = group.split('.').rev().collect();
            schemas.insert(format!("{}.{version}.{}", rev_group.join("."), d.kind), sc);
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
