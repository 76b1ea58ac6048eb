//! Watches: newline-delimited JSON events (`ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK`/`ERROR`),
//! resumable from any resourceVersion still in the event log; an older one gets an `ERROR` event
//! carrying a 410 `Expired` Status, like the real server (clients then relist).
//!
//! Without `resourceVersion` (or with "0") the watch first replays the current objects as
//! `ADDED`. `sendInitialEvents=true` (streaming lists, with `resourceVersionMatch=NotOlderThan`)
//! does the same and then sends the `k8s.io/initial-events-end` bookmark.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::channel::mpsc;
use futures::SinkExt;
use http::{header, StatusCode};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::req::Query;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{EventType, ObjKey};
use super::target::Target;
use super::{table, Shared};

/// Parameters of one watch request.
pub struct WatchParams {
    rv: Option<u64>,
    bookmarks: bool,
    timeout: Option<Duration>,
    initial_events: bool,
    labels: LabelSelector,
    fields: FieldSelector,
    table: bool,
    include_object: String,
}

impl WatchParams {
    /// From the query string.
    pub fn from_query(q: &Query, t: &Target, table: bool) -> ApiResult<Self> {
        let rv = match q.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => None,
            Some(r) => Some(
                r.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {r:?}")))?,
            ),
        };
        let initial_events = q.get("sendInitialEvents").map(String::as_str) == Some("true");
        if initial_events
            && q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan")
        {
            return Err(ApiError::new(
                422,
                "Invalid",
                "sendInitialEvents requires resourceVersionMatch=NotOlderThan",
            ));
        }
        Ok(WatchParams {
            rv,
            bookmarks: q.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
            timeout: q
                .get("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .map(Duration::from_secs),
            initial_events,
            labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
                .map_err(ApiError::bad_request)?,
            fields: FieldSelector::parse(
                q.get("fieldSelector").map(String::as_str).unwrap_or(""),
                &t.def.plural,
            )
            .map_err(ApiError::bad_request)?,
            table,
            include_object: q.get("includeObject").cloned().unwrap_or_else(|| "Metadata".into()),
        })
    }

    fn matches(&self, o: &Value) -> bool {
        self.labels.matches(o) && self.fields.matches(o)
    }
}

fn in_scope(t: &Target, k: &ObjKey) -> bool {
    k.group == t.def.group
        && k.resource == t.def.plural
        && t.namespace.as_ref().is_none_or(|ns| &k.namespace == ns)
}

/// Serve a watch of `user`: the response streams until the timeout, the client goes away or the
/// server stops. Nothing goes out while the user is frozen (`freeze.rs`).
pub fn serve(shared: Arc<Shared>, t: Target, w: WatchParams, user: String) -> Response {
    // A compacted starting rv is reported in-stream (HTTP 200 + ERROR event), like the real server.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let table_mode = w.table;
    tokio::spawn(run(shared, t, w, user, tx));
    stream_response(Body::from_stream(rx), table_mode)
}

struct Out {
    tx: mpsc::Sender<Result<Bytes, std::convert::Infallible>>,
    first: bool,
    shared: Arc<Shared>,
    user: String,
}

impl Out {
    async fn send(&mut self, t: &Target, w: &WatchParams, ty: &str, obj: Value) -> bool {
        let obj = if w.table && ty != "ERROR" && ty != "BOOKMARK" {
            let o = t.present(obj);
            let rv = o["metadata"]["resourceVersion"].clone();
            let tbl = table::table(
                t,
                &[o],
                &w.include_object,
                json!({"resourceVersion": rv}),
                self.first,
            );
            self.first = false;
            tbl
        } else if ty == "ERROR" || ty == "BOOKMARK" {
            obj
        } else {
            t.present(obj)
        };
        let mut line = json!({"type": ty, "object": obj}).to_string();
        line.push('\n');
        self.shared.until_unfrozen(&self.user).await
            && self.tx.send(Ok(Bytes::from(line))).await.is_ok()
    }
}

fn bookmark(t: &Target, rv: u64, initial_end: bool) -> Value {
    let mut md = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": t.def.kind, "apiVersion": t.api_version(), "metadata": md})
}

async fn run(
    shared: Arc<Shared>,
    t: Target,
    w: WatchParams,
    user: String,
    tx: mpsc::Sender<Result<Bytes, std::convert::Infallible>>,
) {
    let mut out = Out { tx, first: true, shared: shared.clone(), user };
    let mut changed = shared.changed.subscribe();
    let mut stopping = shared.stopping.subscribe();
    let deadline = w.timeout.map(|d| tokio::time::Instant::now() + d);
    // Initial state.
    let (mut cursor, initial) = {
        let st = shared.lock();
        match w.rv {
            Some(rv) if !w.initial_events => (rv, Vec::new()),
            _ => {
                let objs: Vec<Value> = st
                    .store
                    .list(&t.def.group, &t.def.plural, t.namespace.as_deref())
                    .filter(|(_, o)| w.matches(o))
                    .map(|(_, o)| o.clone())
                    .collect();
                (st.store.rv(), objs)
            }
        }
    };
    for o in initial {
        if !out.send(&t, &w, "ADDED", o).await {
            return;
        }
    }
    if w.initial_events && !out.send(&t, &w, "BOOKMARK", bookmark(&t, cursor, true)).await {
        return;
    }
    loop {
        let batch: Result<Vec<(&'static str, Value)>, u64> = {
            let st = shared.lock();
            let r = match st.store.events_after(cursor) {
                None => Err(cursor),
                Some(evs) => {
                    let mut v = Vec::new();
                    for e in evs.filter(|e| in_scope(&t, &e.key)) {
                        let new_m = w.matches(&e.obj);
                        let old_m = e.old.as_ref().is_some_and(|o| w.matches(o));
                        let ty = match e.ty {
                            EventType::Added if new_m => Some("ADDED"),
                            EventType::Modified if new_m && old_m => Some("MODIFIED"),
                            EventType::Modified if new_m => Some("ADDED"),
                            EventType::Modified if old_m => Some("DELETED"),
                            EventType::Deleted if new_m || old_m => Some("DELETED"),
                            _ => None,
                        };
                        if let Some(ty) = ty {
                            v.push((ty, (*e.obj).clone()));
                        }
                    }
                    cursor = cursor.max(st.store.rv());
                    Ok(v)
                }
            };
            r
        };
        match batch {
            Err(rv) => {
                let _ = out.send(&t, &w, "ERROR", ApiError::expired(rv).status()).await;
                return;
            }
            Ok(evs) => {
                for (ty, o) in evs {
                    if !out.send(&t, &w, ty, o).await {
                        return;
                    }
                }
            }
        }
        let bookmark_in = tokio::time::sleep(shared.config.bookmark_interval);
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = bookmark_in => {
                if w.bookmarks && !out.send(&t, &w, "BOOKMARK", bookmark(&t, cursor, false)).await {
                    return;
                }
            }
            _ = until_deadline => {
                // A frozen user's watch does not even end.
                out.shared.until_unfrozen(&out.user).await;
                return;
            }
            _ = stopping.changed() => return,
        }
    }
}

/// A streaming body response.
fn stream_response(body: Body, table: bool) -> Response {
    let ct =
        if table { "application/json;as=Table;v=v1;g=meta.k8s.io" } else { "application/json" };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ct)
        .body(body)
        .expect("response")
}
