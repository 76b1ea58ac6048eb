//! A reconcile that fails shows on the pool. Which conditions say so is decided here without I/O
//! ([`verdicts`], [`mark`]); `record` then writes them the way every status write goes (the
//! whole operator part through the [`StatusSink`], SSA under the operator's field manager, the
//! agent part never sent), starting from the last status this round wrote, so the journal, the
//! ENIs and everything else stay exactly as they were. Nothing is written when the conditions
//! already say so (an EC2 outage retried every few seconds costs no API writes), and a failed
//! write is logged, never returned: the reconcile's own error is what the controller sees.

use super::{operator_part, PoolInput, Removal, StatusSink};
use crate::ec2::Ec2ErrorKind;
use crate::error::{Error, Result};
use enipool_crds::conditions::{EC2_SYNCED, READY, THROTTLED};
use enipool_crds::summary::set_condition;
use enipool_crds::ENIPoolStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::sync::Mutex;

/// One condition a failure sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Condition type.
    pub type_: &'static str,
    /// Its status.
    pub ok: bool,
    /// Its reason (the error's stable category where the error is the reason).
    pub reason: &'static str,
    /// Its message.
    pub message: String,
}

fn verdict(type_: &'static str, ok: bool, reason: &'static str, message: String) -> Verdict {
    Verdict { type_, ok, reason, message }
}

/// The conditions a failed pool reconcile sets (none when the failure says nothing about EC2).
///
/// - every EC2 error and every error that stops the pool from being synced: `EC2Synced=False`,
///   reason = [`Error::category`], message = the error;
/// - EC2 throttling also sets `Throttled=True` (`RequestLimitExceeded`, as a round does);
/// - the instance unknown to EC2 (terminated and gone, or never there) also sets `Ready=False`
///   (`InstanceNotFound`): nothing is synced for this node any more;
/// - Kubernetes API errors set nothing: EC2 is not what failed, and the write would go to the API
///   that just failed; the finalizer's errors set nothing (the pool is being deleted).
pub fn verdicts(err: &Error) -> Vec<Verdict> {
    let synced = || verdict(EC2_SYNCED, false, err.category(), err.to_string());
    match err {
        Error::Ec2(e) if e.kind == Ec2ErrorKind::Throttled => {
            vec![synced(), verdict(THROTTLED, true, "RequestLimitExceeded", e.to_string())]
        }
        Error::Ec2(_) => vec![synced()],
        Error::InstanceNotFound(id) => vec![
            synced(),
            verdict(
                READY,
                false,
                err.category(),
                format!(
                    "instance {id} not found in EC2 (terminated or unknown): nothing is synced"
                ),
            ),
        ],
        Error::ProviderId { .. } | Error::MissingField(_) | Error::Serialize(_) => vec![synced()],
        Error::Kube { .. } | Error::Finalizer(_) => vec![],
        // Process-level failures: no pool reconcile returns them.
        Error::Config(_) | Error::Stopped(_) | Error::Cleanup(_) => vec![],
    }
}

/// Set `verdicts` on `st`; `false` (and `st` untouched) when every condition already has that
/// status and reason. The message is not compared: EC2 messages carry request ids, and a new
/// id is no reason for a write.
pub fn mark(
    st: &mut ENIPoolStatus,
    verdicts: &[Verdict],
    generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = |ok: bool| if ok { "True" } else { "False" };
    let same = verdicts.iter().all(|v| {
        st.conditions
            .iter()
            .any(|c| c.type_ == v.type_ && c.status == status(v.ok) && c.reason == v.reason)
    });
    if same {
        return false;
    }
    for v in verdicts {
        let c = &mut st.conditions;
        set_condition(c, v.type_, v.ok, v.reason, v.message.clone(), generation, now.clone());
    }
    true
}

/// A sink that remembers the last status written through it (the base of a failure write: the
/// cached pool is older than what this round already wrote, e.g. a journal entry).
pub(super) struct Recording<'a> {
    inner: &'a dyn StatusSink,
    last: Mutex<Option<ENIPoolStatus>>,
}

impl<'a> Recording<'a> {
    pub(super) fn new(inner: &'a dyn StatusSink) -> Self {
        Recording { inner, last: Mutex::new(None) }
    }

    fn last(&self) -> Option<ENIPoolStatus> {
        self.last.lock().expect("recording lock").clone()
    }
}

#[async_trait::async_trait]
impl StatusSink for Recording<'_> {
    async fn write(&self, status: &ENIPoolStatus) -> Result<()> {
        self.inner.write(status).await?;
        *self.last.lock().expect("recording lock") = Some(status.clone());
        Ok(())
    }

    async fn remove(&self, removals: &[Removal]) -> Result<()> {
        self.inner.remove(removals).await
    }
}

/// Show `err` on the pool: the operator part as last written (this round, else as cached) with
/// only the failure's conditions changed. Returns the status written, if any.
pub(super) async fn record(
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
