//! One request's way in: authentication, the audit record, RBAC authorization (when on), the
//! body, then routing (`handlers.rs`); admission `Warning`s go out as response headers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::header;

use super::authn::MASTERS;
use super::error::ApiError;
use super::handlers::{route, Routed};
use super::req::{Query, Req};
use super::{rbac, watch, Shared};

/// The router: everything goes through [`dispatch`].
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

async fn dispatch(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bearer = parts.headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    let user = match shared.with_state(|st| st.tokens.authenticate(&st.store, bearer)) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    shared.note_user(&user.username);
    if !shared.until_unfrozen(&user.username).await {
        return ApiError::new(503, "ServiceUnavailable", "the server is shutting down")
            .into_response();
    }
    let query: Query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let hdr = |h: header::HeaderName| {
        parts.headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    };
    let accept = hdr(header::ACCEPT);
    let content_type = hdr(header::CONTENT_TYPE);
    let user_agent = hdr(header::USER_AGENT);
    let path = parts.uri.path().to_string();
    let audit = super::audit::AuditRecord::from_request(
        &user.username,
        &parts.method,
        &path,
        query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    shared.audit.record(audit.clone());
    let rbac = shared.rbac.load(Ordering::SeqCst) && !user.in_group(MASTERS);
    if rbac {
        if let Err(e) = shared.with_state(|st| rbac::check(&st.store, &user, &audit)) {
            return e.into_response();
        }
    }
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(format!("reading body: {e}")).into_response(),
    };
    if let Some(delay) = shared.list_delay(&audit) {
        tokio::time::sleep(delay).await;
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let req = Req {
        method: parts.method.clone(),
        query,
        accept,
        content_type,
        user_agent,
        body: body.to_vec(),
        user,
        attrs: audit,
        rbac,
        warnings: Mutex::new(Vec::new()),
    };
    let mut response = match route(&shared, &segs, &req) {
        Ok(Routed::Response(r)) => r,
        Ok(Routed::Watch(tw)) => {
            let (t, w) = *tw;
            watch::serve(shared, t, w, req.user.username.clone())
        }
        Err(e) => e.into_response(),
    };
    for w in req.warnings.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}
