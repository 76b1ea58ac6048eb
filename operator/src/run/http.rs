//! `/metrics`, `/healthz`, `/readyz`. Ready once the watch caches have synced; leader and standby
//! are both ready (a standby keeps warm caches to take over fast).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared state of the endpoints.
pub struct Health {
    pub registry: Registry,
    pub ready: AtomicBool,
}

async fn metrics(
    State(h): State<Arc<Health>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &h.registry) {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            out,
        ),
        Err(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "text/plain")], String::new())
        }
    }
}

async fn readyz(State(h): State<Arc<Health>>) -> StatusCode {
    if h.ready.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// Serve until the process ends.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(health)).await
}
