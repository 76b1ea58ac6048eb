//! The JSON admin endpoints under `/admin`: call counters, faults, the state, a reset.

use super::Shared;
use crate::faults::{ActionCounters, FaultConfig};
use crate::state::State;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::Json;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) async fn counters(
    AxState(sh): AxState<Arc<Shared>>,
) -> Json<BTreeMap<String, ActionCounters>> {
    Json(sh.faults.lock().expect("faults lock").counters.clone())
}

pub(super) async fn get_faults(AxState(sh): AxState<Arc<Shared>>) -> Json<FaultConfig> {
    Json(sh.faults.lock().expect("faults lock").config.clone())
}

pub(super) async fn set_faults(
    AxState(sh): AxState<Arc<Shared>>,
    Json(cfg): Json<FaultConfig>,
) -> StatusCode {
    sh.faults.lock().expect("faults lock").set(cfg);
    StatusCode::NO_CONTENT
}

pub(super) async fn state(AxState(sh): AxState<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(sh.with_state(|st, _, _| serde_json::to_value(&*st).unwrap_or_default()))
}

pub(super) async fn reset_all(AxState(sh): AxState<Arc<Shared>>) -> StatusCode {
    reset(&sh);
    StatusCode::NO_CONTENT
}

/// Back to an empty region with no faults (the timing stays).
pub(super) fn reset(sh: &Shared) {
    let timing = *sh.timing.lock().expect("timing lock");
    let mut inner = sh.inner.lock().expect("state lock");
    let account = inner.state.account;
    inner.state = State { timing, account, ..Default::default() };
    inner.history.clear();
    drop(inner);
    let mut f = sh.faults.lock().expect("faults lock");
    f.set(FaultConfig::default());
    f.counters.clear();
}
