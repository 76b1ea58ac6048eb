//! A pool's conditions, decided here and nowhere else, without I/O: from what a round observed
//! ([`apply`]), from a round that failed ([`verdicts`], [`mark`]), and the Events for their
//! transitions ([`notes`]). Their reasons are the constants in [`reason`], or the error's
//! [`Error::category`] where the error is the reason; `docs/operations.md` lists them.

use super::notes::Note;
use crate::ec2::{Ec2Error, Ec2ErrorKind};
use crate::error::Error;
use crate::plan::Sized;
use enipool_crds::conditions::*;
use enipool_crds::settings::EffectiveSettings;
use enipool_crds::summary::{set_condition, summarize};
use enipool_crds::ENIPoolStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::time::Duration;

/// The condition reasons a round sets (users see them in the pool's status and in Events).
pub mod reason {
    /// `EC2Synced=True`.
    pub const SYNCED: &str = "Synced";
    /// `EC2Synced=False`: EC2 not read yet this round.
    pub const NOT_SYNCED: &str = "NotSynced";
    /// `EC2Synced=False`: the per-node sync failed (message: the EC2 error).
    pub const SYNC_FAILED: &str = "SyncFailed";
    /// `Throttled=True`: EC2 answered `RequestLimitExceeded`.
    pub const REQUEST_LIMIT_EXCEEDED: &str = "RequestLimitExceeded";
    /// `Throttled=False`.
    pub const NOT_THROTTLED: &str = "NotThrottled";
    /// `SubnetExhausted=True`, and `Ready=False` while addresses are missing for it.
    pub const SUBNET_EXHAUSTED: &str = "SubnetExhausted";
    /// `SubnetExhausted=False`.
    pub const SUBNETS_HAVE_ROOM: &str = "SubnetsHaveRoom";
    /// `CapacityExhausted=True`, and `Ready=False` while addresses are missing for it.
    pub const CAPACITY_EXHAUSTED: &str = "CapacityExhausted";
    /// `CapacityExhausted=False`.
    pub const HAS_CAPACITY: &str = "HasCapacity";
    /// `AgentStale=True`.
    pub const NO_HEARTBEAT: &str = "NoHeartbeat";
    /// `AgentStale=False`.
    pub const REPORTING: &str = "Reporting";
    /// `AgentStale=False`: no report yet.
    pub const NOT_YET_REPORTED: &str = "NotYetReported";
    /// `InconsistentState=True`.
    pub const ADDRESSES_IN_USE_MISSING: &str = "AddressesInUseMissing";
    /// `InconsistentState=False`.
    pub const CONSISTENT: &str = "Consistent";
    /// `Ready=True`.
    pub const READY: &str = "Ready";
    /// `Ready=False`: the instance is shutting down or terminated.
    pub const INSTANCE_TERMINATED: &str = "InstanceTerminated";
    /// `Ready=False`: EC2 was not read this round.
    pub const EC2_NOT_SYNCED: &str = "EC2NotSynced";
    /// `Ready=False`: nothing allocated yet.
    pub const NO_ADDRESSES: &str = "NoAddresses";
    /// `Ready=False`: throttled while addresses are missing.
    pub const THROTTLED: &str = "Throttled";
    /// `Ready=False`: a call growth needs was refused by the operator's IAM role.
    pub const UNAUTHORIZED: &str = "Unauthorized";
    /// `Ready=False`: new ENIs are needed and the account's regional ENI quota is reached.
    pub const ENI_QUOTA_EXCEEDED: &str = "ENIQuotaExceeded";
    /// `Frozen=True`, and `Ready=False` while the pool holds less than its target.
    pub const NODE_CORDONED: &str = "NodeCordoned";
    /// `Frozen=False`.
    pub const NOT_FROZEN: &str = "NotFrozen";
}

/// How long a pool waits after a call its role may not make.
pub const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(30);

/// Facts gathered during one reconcile.
#[derive(Debug, Clone)]
pub struct Round {
    /// The per-node sync succeeded.
    pub synced: bool,
    /// Why it did not.
    pub sync_error: Option<String>,
    /// EC2 throttled a call.
    pub throttled: bool,
    /// No allowed subnet had room.
    pub subnet_exhausted: bool,
    /// The instance could not take more ENIs or addresses.
    pub capacity_exhausted: bool,
    /// New ENIs were needed and the account's regional ENI quota is reached.
    pub eni_quota: bool,
    /// A call failed in a way that stops mutations this round (credentials).
    pub fatal: bool,
    /// Last EC2 error text.
    pub last_error: String,
    /// Why the instance is gone (shutting down or terminated), when it is.
    pub instance_gone: Option<String>,
    /// The node is cordoned and its policy freezes cordoned nodes: nothing was grown or released.
    pub frozen: bool,
    wake: Option<Duration>,
    resync: Duration,
}

impl Round {
    /// A fresh round with the periodic resync as its default requeue.
    pub fn new(resync: Duration) -> Self {
        Round {
            synced: false,
            sync_error: None,
            throttled: false,
            subnet_exhausted: false,
            capacity_exhausted: false,
            eni_quota: false,
            fatal: false,
            last_error: String::new(),
            instance_gone: None,
            frozen: false,
            wake: None,
            resync,
        }
    }

    /// Record an EC2 failure.
    pub fn note_error(&mut self, e: &Ec2Error) {
        self.last_error = e.to_string();
        match e.kind {
            Ec2ErrorKind::Throttled => self.throttled = true,
            Ec2ErrorKind::Unauthorized => self.fatal = true,
            _ => {}
        }
        self.wake_in(Duration::from_secs(15));
    }

    /// No more mutations this round: throttled (let the budget recover) or not permitted.
    pub fn stop_mutations(&self) -> bool {
        self.throttled || self.fatal
    }

    /// Look again no later than `d`.
    pub fn wake_in(&mut self, d: Duration) {
        self.wake = Some(self.wake.map_or(d, |w| w.min(d)));
    }

    /// When to reconcile again: soon when work is pending, backed off with jitter when throttled,
    /// else the periodic resync, stretched by up to a fifth so pools spread out.
    pub fn requeue(&self) -> Duration {
        if self.throttled {
            let jitter = rand::random_range(0..5000u64);
            return Duration::from_secs(10) + Duration::from_millis(jitter);
        }
        // A denied call stays denied until someone changes the role's policy: retrying every few
        // seconds on every node would spend the account's request budget on refusals.
        if self.fatal {
            let jitter = rand::random_range(0..5000u64);
            return UNAUTHORIZED_RETRY + Duration::from_millis(jitter);
        }
        match self.wake {
            Some(w) if w < self.resync => w,
            _ => crate::round::resync::jittered(self.resync, rand::random::<f64>()),
        }
    }
}

/// Set the pool conditions from a round.
pub fn apply(
    st: &mut ENIPoolStatus,
    r: &Round,
    eff: &EffectiveSettings,
    target: Sized,
    missing: i32,
    stale_secs: i64,
    now: &Time,
) {
    let g = st.observed_generation;
    let c = &mut st.conditions;
    let t = || now.clone();
    match &r.sync_error {
        None if r.synced => {
            set_condition(c, EC2_SYNCED, true, reason::SYNCED, "EC2 read for this node", g, t())
        }
        None => set_condition(c, EC2_SYNCED, false, reason::NOT_SYNCED, "EC2 not read yet", g, t()),
        Some(e) => set_condition(c, EC2_SYNCED, false, reason::SYNC_FAILED, e.clone(), g, t()),
    }
    if r.throttled {
        set_condition(
            c,
            THROTTLED,
            true,
            reason::REQUEST_LIMIT_EXCEEDED,
            r.last_error.clone(),
            g,
            t(),
        );
    } else {
        set_condition(c, THROTTLED, false, reason::NOT_THROTTLED, "", g, t());
    }
    if r.subnet_exhausted {
        set_condition(
            c,
            SUBNET_EXHAUSTED,
            true,
            reason::SUBNET_EXHAUSTED,
            format!("{missing} addresses missing: no allowed subnet has room"),
            g,
            t(),
        );
    } else {
        set_condition(c, SUBNET_EXHAUSTED, false, reason::SUBNETS_HAVE_ROOM, "", g, t());
    }
    let cap = r.capacity_exhausted
        || (target.reason == "capacity"
            && missing == 0
            && target.ips > 0
            && eff.capacity.max_pod_ips == target.ips);
    if cap {
        set_condition(
            c,
            CAPACITY_EXHAUSTED,
            true,
            reason::CAPACITY_EXHAUSTED,
            format!("node holds its maximum of {} pod addresses", eff.capacity.max_pod_ips),
            g,
            t(),
        );
    } else {
        set_condition(c, CAPACITY_EXHAUSTED, false, reason::HAS_CAPACITY, "", g, t());
    }
    if r.frozen {
        let msg = "the Node is cordoned and the policy sets freezeWhenCordoned: no ENI or address \
                   changes until it is uncordoned (work already started is finished)";
        set_condition(c, FROZEN, true, reason::NODE_CORDONED, msg, g, t());
    } else {
        set_condition(c, FROZEN, false, reason::NOT_FROZEN, "", g, t());
    }
    let agent = st.agent.as_ref();
    let age =
        agent.and_then(|a| a.last_heartbeat.as_ref()).map(|h| now.0.duration_since(h.0).as_secs());
    match age {
        Some(a) if a > stale_secs => set_condition(
            c,
            AGENT_STALE,
            true,
            reason::NO_HEARTBEAT,
            format!("agent last reported {a}s ago"),
            g,
            t(),
        ),
        Some(_) => set_condition(c, AGENT_STALE, false, reason::REPORTING, "", g, t()),
        None => set_condition(
            c,
            AGENT_STALE,
            false,
            reason::NOT_YET_REPORTED,
            "agent has not reported",
            g,
            t(),
        ),
    }
    let summary = summarize(st);
    let c = &mut st.conditions;
    let orphaned = agent.map(|a| a.orphaned_in_use.len()).unwrap_or(0);
    if orphaned > 0 || summary.in_use > summary.allocated {
        let msg = format!(
            "agent reports {} in use ({} orphaned), EC2 holds {}",
            summary.in_use, orphaned, summary.allocated
        );
        set_condition(c, INCONSISTENT_STATE, true, reason::ADDRESSES_IN_USE_MISSING, msg, g, t());
    } else {
        set_condition(c, INCONSISTENT_STATE, false, reason::CONSISTENT, "", g, t());
    }
    let (ready, why, msg) = if let Some(gone) = &r.instance_gone {
        (false, reason::INSTANCE_TERMINATED, gone.clone())
    } else if !r.synced {
        (false, reason::EC2_NOT_SYNCED, r.sync_error.clone().unwrap_or_default())
    } else if r.frozen && summary.allocated < target.ips {
        let msg = format!(
            "{} addresses allocated, target {}: frozen while the Node is cordoned",
            summary.allocated, target.ips
        );
        (false, reason::NODE_CORDONED, msg)
    } else if summary.allocated == 0 && target.ips > 0 {
        let msg = match r.last_error.as_str() {
            "" => "no pod address allocated yet".to_string(),
            e => format!("no pod address allocated yet: {e}"),
        };
        (false, reason::NO_ADDRESSES, msg)
    } else if r.subnet_exhausted && missing > 0 {
        (false, reason::SUBNET_EXHAUSTED, format!("{missing} addresses missing"))
    } else if r.capacity_exhausted && missing > 0 {
        (false, reason::CAPACITY_EXHAUSTED, format!("{missing} addresses missing"))
    } else if r.eni_quota && missing > 0 {
        let msg = format!(
            "{missing} addresses missing: the account's regional network interface quota is \
             reached (raise it in Service Quotas, or free ENIs); existing ENIs are still filled"
        );
        (false, reason::ENI_QUOTA_EXCEEDED, msg)
    } else if r.throttled && missing > 0 {
        (false, reason::THROTTLED, format!("{missing} addresses missing"))
    } else if r.fatal && missing > 0 {
        (false, reason::UNAUTHORIZED, format!("{missing} addresses missing: {}", r.last_error))
    } else {
        (
            true,
            reason::READY,
            format!("{} addresses allocated, target {}", summary.allocated, target.ips),
        )
    };
    set_condition(c, READY, ready, why, msg, g, t());
}

/// One condition a failure sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub type_: &'static str,
    pub ok: bool,
    /// Its reason (the error's stable category where the error is the reason).
    pub reason: &'static str,
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
            vec![synced(), verdict(THROTTLED, true, reason::REQUEST_LIMIT_EXCEEDED, e.to_string())]
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

fn is(c: &[Condition], type_: &str) -> Option<bool> {
    c.iter().find(|x| x.type_ == type_).map(|x| x.status == "True")
}

/// Events for condition transitions (stable reasons).
pub fn notes(before: &[Condition], after: &[Condition]) -> Vec<Note> {
    let mut out = Vec::new();
    for (ty, bad_when) in [
        (SUBNET_EXHAUSTED, true),
        (CAPACITY_EXHAUSTED, true),
        (THROTTLED, true),
        (AGENT_STALE, true),
        (INCONSISTENT_STATE, true),
        (EC2_SYNCED, false),
    ] {
        let (b, a) = (is(before, ty), is(after, ty));
        if a == Some(bad_when) && b != Some(bad_when) {
            let msg =
                after.iter().find(|x| x.type_ == ty).map(|x| x.message.clone()).unwrap_or_default();
            let reason = match ty {
                SUBNET_EXHAUSTED => "SubnetExhausted",
                CAPACITY_EXHAUSTED => "CapacityExhausted",
                THROTTLED => "Throttled",
                AGENT_STALE => "AgentStale",
                INCONSISTENT_STATE => "InconsistentState",
                _ => "EC2SyncFailed",
            };
            out.push(Note { warning: true, reason, message: msg, field_path: None });
        }
    }
    if is(after, READY) == Some(true) && is(before, READY) != Some(true) {
        let message = "pool is ready".into();
        out.push(Note { warning: false, reason: "Ready", message, field_path: None });
    }
    out
}

#[cfg(test)]
mod tests;
