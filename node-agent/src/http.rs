//! HTTP endpoints: `/metrics`, `/healthz` (always `ok` while the process serves HTTP), `/readyz`
//! (the agent can serve CNI requests; not whether an address is free) on the metrics address;
//! `/v1/allocations`, `/v1/enis` and `/v1/logs` (introspection) on the loopback address.

use crate::agent::Agent;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct HttpState {
    pub agent: Arc<Agent>,
    pub registry: Arc<Registry>,
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn metrics_router(s: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(s)
}

/// Introspection (bind to loopback only).
pub fn introspection_router(s: HttpState) -> Router {
    Router::new()
        .route("/v1/allocations", get(allocations))
        .route("/v1/enis", get(enis))
        .route("/v1/logs", get(logs))
        .with_state(s)
}

async fn metrics(
    State(s): State<HttpState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut out = String::new();
    let code = match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
}

/// 200 while the agent can serve CNI requests ([`Agent::readiness`]: store checked against the
/// node, pool view received, an ENI programmed), also when no address is free right now (the body
/// says so; CNI STATUS and the ENIPool's status report that, not the pod's readiness). 503 with
/// the reason otherwise.
async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    match s.agent.readiness() {
        Ok(summary) => (StatusCode::OK, format!("{summary}\n")),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

/// The agent's recent log lines ([`crate::recent_logs`]).
async fn logs() -> (StatusCode, String) {
    match crate::recent_logs::text() {
        Some(t) => (StatusCode::OK, t),
        None => (StatusCode::NOT_FOUND, "this process keeps no log lines\n".into()),
    }
}

async fn allocations(State(s): State<HttpState>) -> Json<serde_json::Value> {
    let st = s.agent.state();
    Json(serde_json::json!({
        "epoch": st.epoch,
        "allocations": st.allocations.values().collect::<Vec<_>>(),
        "cooling": st.cooling.iter().map(|(ip, t)| serde_json::json!({"ip": ip, "freeAfter": t})).collect::<Vec<_>>(),
        "offered": st.offered.iter().map(|(n, o)| serde_json::json!({"item": n.to_string(), "revision": o.revision, "epoch": o.epoch})).collect::<Vec<_>>(),
    }))
}

async fn enis(State(s): State<HttpState>) -> Json<serde_json::Value> {
    let v = s.agent.view();
    Json(serde_json::json!({
        "revision": v.revision,
        "enis": v.enis.iter().map(|e| serde_json::json!({
            "id": e.id, "deviceIndex": e.device_index, "mac": e.mac, "table": e.table(),
            "ready": e.ready, "attached": e.attached,
            "ips": e.ips, "prefixes": e.prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "releasing": v.releasing.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
    }))
}
