//! Leader election on a coordination.k8s.io/v1 Lease: acquire when absent, released or expired,
//! renew every third of the lease duration, step down when renewal has failed for a whole
//! duration. Writes use the Lease's resourceVersion (optimistic concurrency), so two candidates
//! never both win. Standbys keep their caches warm and retry every [`RETRY_PERIOD`] (or a third of
//! the duration when that is shorter); only the leader writes to Kubernetes or EC2.
//!
//! A leader that stops gracefully [`release`]s the Lease (as client-go does: empty
//! `holderIdentity`, duration 1 s), so a standby takes over at its next retry instead of waiting
//! for the Lease to expire. A crashed leader releases nothing: the Lease expires.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use std::time::Duration;
use tokio::sync::watch;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// This replica.
    pub identity: String,
    /// Lease duration.
    pub duration: Duration,
}

/// Longest time between two acquisition attempts of a standby (client-go's default retry period).
/// It bounds a graceful handover: a released Lease is taken at the standby's next attempt.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// One acquire-or-renew attempt: `Ok(true)` when this replica holds the lease afterwards.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let secs = cfg.duration.as_secs() as i32;
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(cfg.name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let held_for = spec.lease_duration_seconds.unwrap_or(secs).max(1) as i64;
    let expired =
        spec.renew_time.as_ref().is_none_or(|t| now.duration_since(t.0).as_secs() > held_for);
    if holder != cfg.identity {
        if !holder.is_empty() && !expired {
            return Ok(false);
        }
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(secs);
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Run the election forever, publishing leadership on `tx`. A future, not a task: whoever drives
/// it stops renewing when it is dropped (a crashed replica, or a graceful stop that then calls
/// [`release`]), so the Lease expires unless released.
pub async fn run(client: Client, cfg: LeaseConfig, tx: &watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        match try_acquire(&api, &cfg).await {
            Ok(leader) => {
                last_ok = tokio::time::Instant::now();
                if *tx.borrow() != leader {
                    tracing::info!(leader, identity = %cfg.identity, "leadership changed");
                }
                tx.send_replace(leader);
            }
            Err(error) => {
                tracing::warn!(%error, "lease renewal failed");
                // Step down before another replica can consider the lease expired.
                if last_ok.elapsed() > cfg.duration * 2 / 3 && *tx.borrow() {
                    tracing::warn!("stepping down: lease not renewed");
                    tx.send_replace(false);
                }
            }
        }
        let next = period(&cfg, *tx.borrow());
        tokio::time::sleep(next).await;
    }
}

/// Time to the next attempt: the leader renews every third of the duration; a standby retries at
/// least every [`RETRY_PERIOD`], so that it sees a released Lease soon.
fn period(cfg: &LeaseConfig, leader: bool) -> Duration {
    let renew = cfg.duration / 3;
    if leader {
        renew
    } else {
        renew.min(RETRY_PERIOD)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(secs: u64) -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "me".into(),
            duration: Duration::from_secs(secs),
        }
    }

    #[test]
    fn standbys_retry_often_enough_to_take_a_released_lease_at_once() {
        // The leader renews every third of the duration.
        assert_eq!(period(&cfg(15), true), Duration::from_secs(5));
        // A standby retries every RETRY_PERIOD, whatever the duration…
        assert_eq!(period(&cfg(15), false), RETRY_PERIOD);
        assert_eq!(period(&cfg(120), false), RETRY_PERIOD);
        // …or faster when a third of the duration is shorter.
        assert_eq!(period(&cfg(3), false), Duration::from_secs(1));
    }
}
