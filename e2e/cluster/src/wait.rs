//! Polling with deadlines: every wait names what it waits for and, when it gives up, says what it
//! saw last.

use anyhow::{bail, Result};
use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every `every` until it returns `Ok`, or fails after `timeout` with the last error
/// it returned ("not yet: …").
pub async fn until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(v) => {
                tracing::debug!(what, took = ?started.elapsed(), "wait done");
                return Ok(v);
            }
            Err(e) if started.elapsed() >= timeout => {
                bail!("timed out after {}s waiting for {what}; last seen: {e:#}", timeout.as_secs())
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}

/// [`until`] with a 500 ms poll interval.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    until(what, timeout, Duration::from_millis(500), check).await
}

/// Runs blocking code (shell commands, CNI calls, pings) off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task panicked")
}
