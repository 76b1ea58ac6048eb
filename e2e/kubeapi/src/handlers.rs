//! HTTP routing and the REST verbs. One fallback handler parses Kubernetes paths itself, which
//! keeps `/api/v1/namespaces/{ns}/pods/{name}/status` and friends in one readable place.
//!
//! Besides stored resources: TokenRequest (`tokenrequest.rs`) and SelfSubjectReview.
//!
//! Departures: `limit`/`continue` pages are not snapshots (a continued list sees newer objects);
//! `resourceVersion`/`resourceVersionMatch` on lists are accepted but always answered with the
//! latest state (except `Exact` on another version: 410); `dryRun` is refused.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{header, Method, StatusCode};
use serde_json::{json, Value};

use super::admission::Caller;
use super::error::{ApiError, ApiResult};
use super::ops::{self, Own};
use super::patch::PatchKind;
use super::req::Req;
use super::selectors::{FieldSelector, LabelSelector};
use super::target::Target;
use super::{apply, discovery, gc, patch, protobuf, table, tokenrequest, watch, Shared};

pub(super) fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

pub(super) enum Routed {
    Response(Response),
    Watch(Box<(Target, watch::WatchParams)>),
}

pub(super) fn route(shared: &Arc<Shared>, segs: &[&str], req: &Req) -> ApiResult<Routed> {
    let resp = |v: Value| Ok(Routed::Response(json_response(StatusCode::OK, &v)));
    match segs {
        [] => resp(
            json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/openapi/v3", "/version"]}),
        ),
        ["version"] => resp(discovery::version()),
        ["healthz" | "readyz" | "livez"] => {
            Ok(Routed::Response((StatusCode::OK, "ok").into_response()))
        }
        ["api"] => resp(discovery::core_versions(&shared.addr.to_string())),
        ["apis"] => resp(shared.with_state(|st| discovery::group_list(&st.registry))),
        ["openapi", "v2"] => Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource (openapi/v2 is not served)",
        )),
        ["openapi", "v3"] => {
            resp(shared.with_state(|st| discovery::openapi_v3_index(&st.registry)))
        }
        ["openapi", "v3", "api", v] => openapi_doc(shared, "", v),
        ["openapi", "v3", "apis", g, v] => openapi_doc(shared, g, v),
        ["api", "v1"] => resp(
            shared.with_state(|st| discovery::resource_list(&st.registry, "", "v1")).expect("core"),
        ),
        ["apis", g] => shared
            .with_state(|st| discovery::group(&st.registry, g))
            .map(|v| Routed::Response(json_response(StatusCode::OK, &v)))
            .ok_or_else(|| {
                ApiError::new(404, "NotFound", "the server could not find the requested resource")
            }),
        ["apis", g, v] => shared
            .with_state(|st| discovery::resource_list(&st.registry, g, v))
            .map(|v| Routed::Response(json_response(StatusCode::OK, &v)))
            .ok_or_else(|| {
                ApiError::new(404, "NotFound", "the server could not find the requested resource")
            }),
        ["api", "v1", rest @ ..] => resource(shared, "", "v1", rest, req),
        ["apis", g, v, rest @ ..] => resource(shared, g, v, rest, req),
        _ => {
            Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"))
        }
    }
}

fn openapi_doc(shared: &Shared, group: &str, version: &str) -> ApiResult<Routed> {
    shared
        .with_state(|st| discovery::openapi_v3_doc(&st.registry, group, version))
        .map(|v| Routed::Response(json_response(StatusCode::OK, &v)))
        .ok_or_else(|| {
            ApiError::new(404, "NotFound", "the server could not find the requested resource")
        })
}

fn target(shared: &Shared, group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let not_found =
        || ApiError::new(404, "NotFound", "the server could not find the requested resource");
    let (namespace, rest) = match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            (None, vec!["namespaces", *ns, *sub])
        }
        ["namespaces", ns, r, more @ ..] => {
            let mut v = vec![*r];
            v.extend_from_slice(more);
            (Some(ns.to_string()), v)
        }
        other => (None, other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(n.to_string()), None),
        [r, n, s] => (*r, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(not_found()),
    };
    let def = shared
        .with_state(|st| st.registry.find(group, version, plural).cloned())
        .ok_or_else(not_found)?;
    if namespace.is_some() && !def.namespaced {
        return Err(not_found());
    }
    if def.namespaced && namespace.is_none() && name.is_some() {
        return Err(not_found());
    }
    if let Some(s) = &sub {
        let has = def.version(version).is_some_and(|v| v.status_subresource);
        if !((s == "status" && has) || (s == "finalize" && def.plural == "namespaces")) {
            return Err(not_found());
        }
    }
    Ok(Target { def, version: version.to_string(), namespace, name, sub })
}

fn resource(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    req: &Req,
) -> ApiResult<Routed> {
    if req.q("dryRun").is_some_and(|d| !d.is_empty()) {
        return Err(ApiError::bad_request("dryRun is not supported by the e2e API server"));
    }
    let caller = req.caller(shared);
    if let ("", "v1", ["namespaces", ns, "serviceaccounts", name, "token"]) = (group, version, rest)
    {
        if req.method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let body = if req.content_type.starts_with(protobuf::CONTENT_TYPE) {
            protobuf::token_request(&req.body)
                .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?
        } else {
            parse_json(&req.body)?
        };
        let v = shared.with_state(|st| tokenrequest::create(st, ns, name, body, &caller))?;
        return Ok(Routed::Response(json_response(StatusCode::CREATED, &v)));
    }
    if let ("authentication.k8s.io", "v1", ["selfsubjectreviews"]) = (group, version, rest) {
        if req.method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        // `kubectl auth whoami`: the request's own user.
        let v = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
            "metadata": {"creationTimestamp": super::now()},
            "status": {"userInfo": req.user.to_json()}});
        return Ok(Routed::Response(json_response(StatusCode::CREATED, &v)));
    }
    let t = target(shared, group, version, rest)?;
    let respond = |v: ApiResult<Value>, created: bool| -> ApiResult<Routed> {
        let v = v?;
        let v = if req.wants_table() && v.get("kind").is_some_and(|k| k != "Status") {
            table::table(
                &t,
                std::slice::from_ref(&v),
                req.q("includeObject").unwrap_or("Metadata"),
                json!({"resourceVersion": v["metadata"]["resourceVersion"]}),
                true,
            )
        } else {
            v
        };
        let code = if created { StatusCode::CREATED } else { StatusCode::OK };
        Ok(Routed::Response(json_response(code, &v)))
    };
    let name = t.name.clone();
    let sub = t.sub.clone().unwrap_or_default();
    let sub = if sub == "finalize" { String::new() } else { sub };
    match (&req.method, name) {
        (&Method::GET, None) => {
            if req.flag("watch") {
                let w = watch::WatchParams::from_query(&req.query, &t, req.wants_table())?;
                return Ok(Routed::Watch(Box::new((t, w))));
            }
            let v = shared.with_state(|st| list(st, &t, req))?;
            Ok(Routed::Response(json_response(StatusCode::OK, &v)))
        }
        (&Method::GET, Some(n)) => respond(
            shared.with_state(|st| {
                st.store
                    .get(&t.key(&n))
                    .cloned()
                    .map(|o| t.present(o))
                    .ok_or_else(|| ApiError::not_found(&t.def.group_resource(), &n))
            }),
            false,
        ),
        (&Method::POST, None) => {
            let body = parse_json(&req.body)?;
            let manager = req.manager();
            respond(
                shared.with_state(|st| {
                    ops::create(st, &t, body, Own::Update(&manager), req.strict(), Some(&caller))
                }),
                true,
            )
        }
        (&Method::PUT, Some(n)) => {
            let body = parse_json(&req.body)?;
            let manager = req.manager();
            respond(
                shared
                    .with_state(|st| put(st, &t, &n, body, &sub, &manager, req.strict(), &caller)),
                false,
            )
        }
        (&Method::PATCH, Some(n)) => {
            let kind = PatchKind::from_content_type(&req.content_type)?;
            let manager = req.manager();
            if kind == PatchKind::Apply {
                let body = apply::parse_body(&req.body)?;
                let manager = req.q("fieldManager").unwrap_or("").to_string();
                let created = shared.with_state(|st| st.store.get(&t.key(&n)).is_none());
                return respond(
                    shared.with_state(|st| {
                        apply::apply(
                            st,
                            &t,
                            &n,
                            body,
                            &manager,
                            req.flag("force"),
                            &sub,
                            req.strict(),
                            Some(&caller),
                        )
                    }),
                    created && sub.is_empty(),
                );
            }
            respond(shared.with_state(|st| {
                let old = st.store.get(&t.key(&n)).cloned().ok_or_else(|| ApiError::not_found(&t.def.group_resource(), &n))?;
                let new = patch::apply_patch(&old, kind, &req.body)?;
                if let Some(rv) = new["metadata"]["resourceVersion"].as_str() {
                    if old["metadata"]["resourceVersion"] != rv {
                        return Err(ApiError::conflict(&t.def.group_resource(), &n, "the object has been modified; please apply your changes to the latest version and try again"));
                    }
                }
                ops::update(st, &t, &old, new, &sub, Own::Update(&manager), req.strict(), Some(&caller))
            }), false)
        }
        (&Method::DELETE, Some(n)) => {
            let opts = delete_options(req)?;
            respond(
                shared.with_state(|st| {
                    let (uid, rv) = (opts.1.as_deref(), opts.2.as_deref());
                    ops::delete(st, &t, &t.key(&n), opts.0, uid, rv, Some(&caller))
                }),
                false,
            )
        }
        (&Method::DELETE, None) => {
            let opts = delete_options(req)?;
            let v = shared.with_state(|st| -> ApiResult<Value> {
                let mut l = list(st, &t, req)?;
                for item in l["items"].as_array().cloned().unwrap_or_default() {
                    let n = item["metadata"]["name"].as_str().unwrap_or_default();
                    let mut tt = t.clone();
                    tt.namespace = item["metadata"]["namespace"].as_str().map(String::from);
                    match ops::delete(st, &tt, &tt.key(n), opts.0, None, None, Some(&caller)) {
                        // Objects already deleted stay deleted; the first refusal ends it.
                        Ok(_) | Err(ApiError { code: 404, .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                l["metadata"]["resourceVersion"] = json!(st.store.rv().to_string());
                Ok(l)
            })?;
            Ok(Routed::Response(json_response(StatusCode::OK, &v)))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .or_else(|_| apply::parse_body(body))
        .map_err(|e| ApiError::bad_request(format!("invalid body: {}", e.message)))
}

// The request's parts one for one; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn put(
    st: &mut super::State,
    t: &Target,
    name: &str,
    body: Value,
    sub: &str,
    manager: &str,
    strict: bool,
    caller: &Caller,
) -> ApiResult<Value> {
    let old = st
        .store
        .get(&t.key(name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.def.group_resource(), name))?;
    match body["metadata"]["resourceVersion"].as_str() {
        Some(rv) if old["metadata"]["resourceVersion"] != rv => {
            return Err(ApiError::conflict(&t.def.group_resource(), name, "the object has been modified; please apply your changes to the latest version and try again"));
        }
        // Custom resources require a resourceVersion on update; built-ins allow unconditional ones.
        None if t.def.crd.is_some() => {
            return Err(ApiError::invalid(
                &t.def.kind,
                name,
                &["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                    .into()],
            ));
        }
        _ => {}
    }
    if body["metadata"]["uid"].as_str().is_some_and(|u| old["metadata"]["uid"] != u) {
        return Err(ApiError::conflict(
            &t.def.group_resource(),
            name,
            "Precondition failed: UID in precondition does not match the UID in record",
        ));
    }
    ops::update(st, t, &old, body, sub, Own::Update(manager), strict, Some(caller))
}

type DeleteOpts = (gc::Propagation, Option<String>, Option<String>);

fn delete_options(req: &Req) -> ApiResult<DeleteOpts> {
    let body: Value = if req.body.is_empty() { json!({}) } else { parse_json(&req.body)? };
    let policy = body["propagationPolicy"]
        .as_str()
        .map(String::from)
        .or_else(|| req.q("propagationPolicy").map(String::from));
    let orphan = body["orphanDependents"] == true || req.q("orphanDependents") == Some("true");
    let prop = match policy.as_deref() {
        Some("Orphan") => gc::Propagation::Orphan,
        None if orphan => gc::Propagation::Orphan,
        _ => gc::Propagation::Background,
    };
    let pre = &body["preconditions"];
    Ok((
        prop,
        pre["uid"].as_str().map(String::from),
        pre["resourceVersion"].as_str().map(String::from),
    ))
}

fn list(st: &mut super::State, t: &Target, req: &Req) -> ApiResult<Value> {
    let ls = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fs = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), &t.def.plural)
        .map_err(ApiError::bad_request)?;
    let rv = st.store.rv();
    if req.q("resourceVersionMatch") == Some("Exact") {
        if let Some(want) = req.q("resourceVersion").and_then(|r| r.parse::<u64>().ok()) {
            if want != rv {
                return Err(ApiError::expired(want));
            }
        }
    }
    let limit = req.q("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    let after = req.q("continue").filter(|c| !c.is_empty()).map(decode_continue).transpose()?;
    let ns = t.namespace.as_deref();
    let mut items = Vec::new();
    let mut more = None;
    for (k, o) in st.store.list(&t.def.group, &t.def.plural, ns) {
        let pos = (k.namespace.clone(), k.name.clone());
        if after.as_ref().is_some_and(|a| &pos <= a) {
            continue;
        }
        if !(ls.matches(o) && fs.matches(o)) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            more = Some(());
            break;
        }
        items.push((pos, t.present(o.clone())));
    }
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if more.is_some() {
        if let Some((last, _)) = items.last() {
            meta["continue"] = json!(format!("{}/{}", last.0, last.1));
        }
    }
    let objs: Vec<Value> = items.into_iter().map(|(_, o)| o).collect();
    if req.wants_table() {
        return Ok(table::table(
            t,
            &objs,
            req.q("includeObject").unwrap_or("Metadata"),
            meta,
            true,
        ));
    }
    Ok(json!({
        "kind": t.def.list_kind,
        "apiVersion": t.api_version(),
        "metadata": meta,
        "items": objs,
    }))
}

fn decode_continue(c: &str) -> ApiResult<(String, String)> {
    c.split_once('/')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| ApiError::bad_request("invalid continue token"))
}
