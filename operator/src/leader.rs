//! Leader election on a coordination.k8s.io/v1 Lease: acquire when absent or expired, renew every
//! third of the lease duration, step down when renewal has failed for a whole duration. Writes use
//! the Lease's resourceVersion (optimistic concurrency), so two candidates never both win.
//! Standbys keep their caches warm; only the leader writes to Kubernetes or EC2.

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
/// it stops renewing when it is dropped (a crashed replica), so the Lease expires.
pub async fn run(client: Client, cfg: LeaseConfig, tx: watch::Sender<bool>) {
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
        tokio::time::sleep(cfg.duration / 3).await;
    }
}
