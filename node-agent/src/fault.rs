//! Fault injection for the crash-consistency tests: when `ENIPOOL_AGENT_FAULT_POINT` names a
//! point, the process aborts there (as `kill -9` would stop it). Off in production: the variable
//! is read once and an unset variable costs one atomic load per point.

use std::sync::OnceLock;

/// Environment variable naming the point to abort at.
pub const FAULT_ENV: &str = "ENIPOOL_AGENT_FAULT_POINT";

static POINT: OnceLock<Option<String>> = OnceLock::new();

/// Abort the process if `name` is the configured fault point.
pub fn point(name: &str) {
    let p = POINT.get_or_init(|| std::env::var(FAULT_ENV).ok().filter(|s| !s.is_empty()));
    if p.as_deref() == Some(name) {
        std::process::abort();
    }
}
