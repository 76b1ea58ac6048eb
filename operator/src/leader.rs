//! Leader election on a coordination.k8s.io/v1 Lease, as client-go's leader election does it:
//! acquire when absent, released or expired; a leader renews every retry period and stops acting
//! when no renewal succeeded within the renew deadline, a timer that runs even while a renewal
//! hangs; a standby takes the Lease once its record stayed unchanged for a whole lease duration on
//! the standby's own clock. The decisions and the timing are in `election.rs`, the gate the rest
//! of the operator asks in `gate.rs`, EC2 for the leader only in `ec2.rs`.
//!
//! Writes use the Lease's resourceVersion (optimistic concurrency), so two candidates never both
//! win. Every attempt (read, then write) is bounded by [`Timing::attempt_timeout`]. Standbys keep
//! their caches warm; only the leader writes to Kubernetes or EC2.
//!
//! A leader that stops gracefully [`release`]s the Lease (as client-go does: empty
//! `holderIdentity`, duration 1 s), so a standby takes over at its next retry instead of waiting
//! for the Lease to expire. A crashed leader releases nothing: the Lease expires.

mod ec2;
mod election;
mod gate;

pub use ec2::{leader_only, LeaderGate, LeaderOnlyEc2, NOT_LEADER};
pub use election::{Elector, Record, Step, Timing, RETRY_PERIOD};
pub use gate::Leadership;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

/// One replica campaigning for, or holding, the Lease.
pub struct Candidate {
    api: Api<Lease>,
    cfg: LeaseConfig,
    elector: Elector,
}

impl Candidate {
    /// A candidate that has seen nothing yet.
    pub fn new(api: Api<Lease>, cfg: LeaseConfig) -> Self {
        let elector = Elector::new(&cfg.identity, Timing::new(cfg.duration));
        Candidate { api, cfg, elector }
    }

    pub fn timing(&self) -> Timing {
        self.elector.timing()
    }

    /// Until when this replica leads (see [`Elector::leading_until`]).
    pub fn leading_until(&self) -> Option<Instant> {
        self.elector.leading_until()
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.elector.is_leader(Instant::now())
    }

    /// One acquire-or-renew attempt, bounded by the attempt timeout (a timeout is an error with
    /// [`crate::error::Cut::NoAnswer`] inside `kube::Error::Service`). Whether this replica leads
    /// afterwards is [`Candidate::leading_until`].
    pub async fn attempt(&mut self) -> Result<(), kube::Error> {
        let limit = self.timing().attempt_timeout;
        match tokio::time::timeout(limit, self.try_once(Instant::now())).await {
            Ok(r) => r,
            Err(_) => Err(kube::Error::Service(Box::new(crate::error::Cut::NoAnswer(limit)))),
        }
    }

    async fn try_once(&mut self, started: Instant) -> Result<(), kube::Error> {
        let lease = self.api.get_opt(&self.cfg.name).await?;
        let step = self.elector.decide(lease.as_ref().map(Record::of).as_ref(), Instant::now());
        let written = match (step, lease) {
            (Step::Wait, _) => return Ok(()),
            (Step::Create, _) | (_, None) => {
                let created = self.api.create(&PostParams::default(), &self.new_lease()).await;
                conflict_is_lost(created)?
            }
            (Step::Renew | Step::Take, Some(mut lease)) => {
                self.hold(&mut lease, step == Step::Take);
                let pp = PostParams::default();
                conflict_is_lost(self.api.replace(&self.cfg.name, &pp, &lease).await)?
            }
        };
        if let Some(lease) = written {
            self.elector.wrote(started, Record::of(&lease), Instant::now());
        }
        Ok(())
    }

    fn new_lease(&self) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: ObjectMeta { name: Some(self.cfg.name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.cfg.identity.clone()),
                lease_duration_seconds: Some(self.cfg.duration.as_secs() as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        }
    }

    /// This replica as holder. The times are for people (`kubectl get lease`); no replica
    /// decides with another one's clock.
    fn hold(&self, lease: &mut Lease, take: bool) {
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(Default::default);
        if take {
            spec.holder_identity = Some(self.cfg.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.cfg.duration.as_secs() as i32);
    }
}

/// A write another replica beat (409 Conflict) changes nothing here: the next attempt reads again.
fn conflict_is_lost(r: Result<Lease, kube::Error>) -> Result<Option<Lease>, kube::Error> {
    match r {
        Ok(lease) => Ok(Some(lease)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Run the election forever, setting `leadership`. A future, not a task: whoever drives it stops
/// renewing when it is dropped (a crashed replica, or a graceful stop that then calls
/// [`release`]), so the Lease expires unless released; the term then ends on its own.
pub async fn run(client: Client, cfg: LeaseConfig, leadership: &Leadership) {
    let identity = cfg.identity.clone();
    let mut candidate = Candidate::new(Api::namespaced(client, &cfg.namespace), cfg);
    let timing = candidate.timing();
    tracing::info!(
        %identity,
        lease_duration = ?timing.lease_duration,
        renew_deadline = ?timing.renew_deadline,
        retry_period = ?timing.retry_period,
        "campaigning for the Lease"
    );
    let elect = async {
        loop {
            if let Err(error) = candidate.attempt().await {
                tracing::warn!(%error, "lease renewal failed");
            }
            if leadership.set(candidate.leading_until()) {
                tracing::info!(leader = leadership.is_leader(), %identity, "leadership changed");
            }
            tokio::time::sleep(timing.retry_period).await;
        }
    };
    tokio::join!(elect, leadership.watchdog());
}

/// Give the Lease up (graceful shutdown, after the controllers stopped): when this replica holds
/// it, write it back with an empty `holderIdentity` and a 1 s duration, under the resourceVersion
/// just read, so a Lease another replica has taken meanwhile is never overwritten (a conflict is
/// re-read, and left alone unless it is still ours). `Ok(true)` when released.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    for _ in 0..3 {
        let Some(mut lease) = api.get_opt(&cfg.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = Some(String::new());
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        match api.replace(&cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}
