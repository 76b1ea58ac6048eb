//! What one reconcile round observed, turned into pool conditions (no I/O) and Event notes.

use crate::ec2::{Ec2Error, Ec2ErrorKind};
use crate::plan::Sized;
use crate::reconcile::Note;
use enipool_crds::conditions::*;
use enipool_crds::settings::EffectiveSettings;
use enipool_crds::summary::{set_condition, summarize};
use enipool_crds::ENIPoolStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::time::Duration;

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
    /// A call failed in a way that stops mutations this round (credentials).
    pub fatal: bool,
    /// Last EC2 error text.
    pub last_error: String,
    /// Why the instance is gone (shutting down or terminated), when it is.
    pub instance_gone: Option<String>,
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
            fatal: false,
            last_error: String::new(),
            instance_gone: None,
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
            _ => crate::resync::jittered(self.resync, rand::random::<f64>()),
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
            set_condition(c, EC2_SYNCED, true, "Synced", "EC2 read for this node", g, t())
        }
        None => set_condition(c, EC2_SYNCED, false, "NotSynced", "EC2 not read yet", g, t()),
        Some(e) => set_condition(c, EC2_SYNCED, false, "SyncFailed", e.clone(), g, t()),
    }
    if r.throttled {
        set_condition(c, THROTTLED, true, "RequestLimitExceeded", r.last_error.clone(), g, t());
    } else {
        set_condition(c, THROTTLED, false, "NotThrottled", "", g, t());
    }
    if r.subnet_exhausted {
        set_condition(
            c,
            SUBNET_EXHAUSTED,
            true,
            "SubnetExhausted",
            format!("{missing} addresses missing: no allowed subnet has room"),
            g,
            t(),
        );
    } else {
        set_condition(c, SUBNET_EXHAUSTED, false, "SubnetsHaveRoom", "", g, t());
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
            "CapacityExhausted",
            format!("node holds its maximum of {} pod addresses", eff.capacity.max_pod_ips),
            g,
            t(),
        );
    } else {
        set_condition(c, CAPACITY_EXHAUSTED, false, "HasCapacity", "", g, t());
    }
    let agent = st.agent.as_ref();
    let age =
        agent.and_then(|a| a.last_heartbeat.as_ref()).map(|h| now.0.duration_since(h.0).as_secs());
    match age {
        Some(a) if a > stale_secs => set_condition(
            c,
            AGENT_STALE,
            true,
            "NoHeartbeat",
            format!("agent last reported {a}s ago"),
            g,
            t(),
        ),
        Some(_) => set_condition(c, AGENT_STALE, false, "Reporting", "", g, t()),
        None => {
            set_condition(c, AGENT_STALE, false, "NotYetReported", "agent has not reported", g, t())
        }
    }
    let summary = summarize(st);
    let c = &mut st.conditions;
    let orphaned = agent.map(|a| a.orphaned_in_use.len()).unwrap_or(0);
    if orphaned > 0 || summary.in_use > summary.allocated {
        let msg = format!(
            "agent reports {} in use ({} orphaned), EC2 holds {}",
            summary.in_use, orphaned, summary.allocated
        );
        set_condition(c, INCONSISTENT_STATE, true, "AddressesInUseMissing", msg, g, t());
    } else {
        set_condition(c, INCONSISTENT_STATE, false, "Consistent", "", g, t());
    }
    let (ready, reason, msg) = if let Some(gone) = &r.instance_gone {
        (false, "InstanceTerminated", gone.clone())
    } else if !r.synced {
        (false, "EC2NotSynced", r.sync_error.clone().unwrap_or_default())
    } else if summary.allocated == 0 && target.ips > 0 {
        (false, "NoAddresses", "no pod address allocated yet".to_string())
    } else if r.subnet_exhausted && missing > 0 {
        (false, "SubnetExhausted", format!("{missing} addresses missing"))
    } else if r.capacity_exhausted && missing > 0 {
        (false, "CapacityExhausted", format!("{missing} addresses missing"))
    } else if r.throttled && missing > 0 {
        (false, "Throttled", format!("{missing} addresses missing"))
    } else if r.fatal && missing > 0 {
        (false, "Unauthorized", format!("{missing} addresses missing: {}", r.last_error))
    } else {
        (true, "Ready", format!("{} addresses allocated, target {}", summary.allocated, target.ips))
    };
    set_condition(c, READY, ready, reason, msg, g, t());
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
