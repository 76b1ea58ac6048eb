//! The report of a failed round: the pool shows the failure. Which conditions say so is decided in
//! [`super::conditions`] ([`verdicts`], [`mark`]); [`record_failure`] writes them the way every
//! status write goes (the whole operator part through the [`StatusSink`], SSA under the operator's
//! field manager, the agent part never sent), starting from the last status this round wrote, so
//! the journal, the ENIs and everything else stay exactly as they were. Nothing is written when
//! the conditions already say so (an EC2 outage retried every few seconds costs no API writes),
//! and a failed write is logged, never returned: the round's own error is what the controller
//! sees.

use super::conditions::{mark, verdicts};
use super::{operator_part, PoolInput, Removal, StatusSink};
use crate::error::{Error, Result};
use enipool_crds::ENIPoolStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::sync::Mutex;

/// A sink that remembers the statuses written through it: the last one is the base of a failure
/// write (the cached pool is older than what this round already wrote, e.g. a journal entry), and
/// all of them are the round's own writes when their watch events come back.
pub(super) struct Recording<'a> {
    inner: &'a dyn StatusSink,
    written: Mutex<Vec<ENIPoolStatus>>,
}

impl<'a> Recording<'a> {
    pub(super) fn new(inner: &'a dyn StatusSink) -> Self {
        Recording { inner, written: Mutex::new(vec![]) }
    }

    fn last(&self) -> Option<ENIPoolStatus> {
        self.written.lock().expect("recording lock").last().cloned()
    }

    /// Every status written, in order.
    pub(super) fn written(&self) -> Vec<ENIPoolStatus> {
        self.written.lock().expect("recording lock").clone()
    }
}

#[async_trait::async_trait]
impl StatusSink for Recording<'_> {
    async fn write(&self, status: &ENIPoolStatus) -> Result<()> {
        self.inner.write(status).await?;
        self.written.lock().expect("recording lock").push(status.clone());
        Ok(())
    }

    async fn remove(&self, removals: &[Removal]) -> Result<()> {
        self.inner.remove(removals).await
    }
}

/// Show `err` on the pool: the operator part as last written (this round, else as cached) with
/// only the failure's conditions changed. Returns the status written, if any.
pub(super) async fn record_failure(
    input: &PoolInput,
    sink: &Recording<'_>,
    err: &Error,
    now: &Time,
) -> Option<ENIPoolStatus> {
    let v = verdicts(err);
    if v.is_empty() {
        return None;
    }
    let mut st = sink.last().unwrap_or_else(|| operator_part(&input.status));
    if !mark(&mut st, &v, input.generation, now) {
        return None;
    }
    match sink.inner.write(&st).await {
        Ok(()) => Some(st),
        Err(error) => {
            tracing::warn!(pool = %input.name, %error, failure = %err, "recording a failed reconcile on the pool failed");
            None
        }
    }
}

#[cfg(test)]
mod tests;
