//! What the controllers share: the gated client, the watch stores that serve as caches, the round's
//! process-wide state, Events and metrics. Both controllers run on every replica so the caches stay
//! warm; only the Lease holder writes.

use crate::error::Error;
use crate::metrics::Metrics;
use crate::round::Shared;
use enipool_crds::{ENIPool, ENIPoolPolicy};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared by both controllers.
pub struct Context {
    /// EC2 side.
    pub shared: Shared,
    pub client: Client,
    /// Leadership: reconciles start only while this replica leads.
    pub leader: crate::leader::Leadership,
    /// Nodes cache (the Node controller's store).
    pub nodes: Store<DeserializeGuard<Node>>,
    /// Policies cache (the policy controller's store).
    pub policies: Store<DeserializeGuard<ENIPoolPolicy>>,
    /// Pools cache (the pool controller's store).
    pub pools: Store<DeserializeGuard<ENIPool>>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// How long a deleted pool waits for its instance to terminate before its finalizer is
    /// removed anyway (leftover ENIs then go to GC).
    pub termination_wait: Duration,
}

/// The object behind a guard, `None` when it did not deserialize.
pub fn valid<K>(g: &DeserializeGuard<K>) -> Option<&K> {
    g.0.as_ref().ok()
}

impl Context {
    pub(crate) fn is_leader(&self) -> bool {
        self.leader.is_leader()
    }

    /// A Node from the cache (`None` when absent or malformed).
    pub(crate) fn node(&self, name: &str) -> Option<Node> {
        self.nodes.get(&ObjectRef::new(name)).and_then(|g| valid(&g).cloned())
    }

    /// Every well-formed policy in the cache.
    pub(crate) fn valid_policies(&self) -> Vec<ENIPoolPolicy> {
        self.policies.state().iter().filter_map(|g| valid(g).cloned()).collect()
    }

    /// Size the resync period to the number of pools now cached (the metric and, when it moved by
    /// more than 10 %, a log line).
    pub(crate) fn refresh_resync_period(&self) {
        let pools = self.pools.len();
        let (period, previous) = self.shared.resync_period.update(pools);
        self.metrics.resync_period(period);
        if let Some(old) = previous {
            tracing::info!(
                pools,
                old_secs = old.as_secs(),
                new_secs = period.as_secs(),
                minimum_secs = self.shared.resync.as_secs(),
                "periodic resync period changed to fit the EC2 describe budget"
            );
        }
    }

    pub(crate) fn pools_api(&self) -> Api<ENIPool> {
        Api::all(self.client.clone())
    }

    pub(crate) async fn event(
        &self,
        pool: &ENIPool,
        warning: bool,
        reason: &str,
        note: String,
        field_path: Option<&str>,
    ) {
        let mut regarding = pool.object_ref(&());
        regarding.field_path = field_path.map(String::from);
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&ev, &regarding).await {
            tracing::debug!(%error, "publishing event failed");
        }
    }

    /// A Warning Event for a failed pool reconcile, reason = the error's category; at most one
    /// per pool and category every [`FAILURE_EVENT_EVERY`](crate::round::memory::FAILURE_EVENT_EVERY) so an EC2 outage retried
    /// every few seconds does not flood the API (the pool's conditions show it meanwhile).
    pub(crate) async fn failure_event(&self, pool: &ENIPool, error: &Error) {
        let reason = error.category();
        if self.shared.memory.failure_event_due(&pool.name_any(), reason, Instant::now()) {
            self.event(pool, true, reason, format!("reconcile failed: {error}"), None).await;
        }
    }
}

/// Requeue policy: transient errors back off with jitter; permanent ones wait longer. (A failed
/// pool reconcile has already shown itself on the pool and in a Warning Event, see
/// [`reconcile_pool`](super::pool::reconcile_pool): this function cannot await.)
pub fn error_policy<K: Resource>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.category());
    tracing::warn!(error = %error, category = error.category(), "reconcile failed");
    let age = obj.meta().creation_timestamp.as_ref().map(|t| {
        let d = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
        Duration::try_from(d).unwrap_or(Duration::ZERO)
    });
    let jitter = rand::random::<f64>();
    Action::requeue(retry_after(error, age, jitter))
}

/// When a failed reconcile runs again. `age` is the object's (none when unknown), `jitter` in
/// 0..1 spreads retries of many objects apart.
///
/// EC2's describes trail its mutations by seconds: a Node whose instance was launched a moment
/// ago is not found yet (`InvalidInstanceID.NotFound` right after RunInstances is EC2's documented
/// eventual consistency). A young pool is looked at again within seconds, so the node's first
/// addresses are not held back by the back-off meant for outages; an old one waits as any
/// transient failure does.
pub fn retry_after(error: &Error, age: Option<Duration>, jitter: f64) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0);
    let young = age.is_some_and(|a| a < YOUNG);
    match error {
        Error::InstanceNotFound(_) if young => Duration::from_secs_f64(1.0 + jitter),
        e if e.is_transient() => Duration::from_secs_f64(10.0 + 3.0 * jitter),
        _ => Duration::from_secs_f64(300.0 + 3.0 * jitter),
    }
}

/// How long after its creation a pool counts as young for [`retry_after`].
const YOUNG: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_nodes_instance_not_found_yet_is_retried_within_seconds() {
        let missing = Error::InstanceNotFound("i-1".into());
        let secs = |e: &Error, age: Option<u64>, j: f64| {
            retry_after(e, age.map(Duration::from_secs), j).as_secs_f64()
        };
        assert!(secs(&missing, Some(3), 1.0) <= 2.0, "launched a moment ago");
        assert!(secs(&missing, Some(3), 0.0) >= 1.0, "not at once: the describes need time");
        assert!(secs(&missing, Some(600), 0.0) >= 10.0, "an old pool backs off");
        assert!(secs(&missing, None, 0.0) >= 10.0, "age unknown: backs off");
        let other = Error::Config("x".into());
        assert!(secs(&other, Some(3), 0.0) >= 300.0, "permanent errors wait whatever the age");
    }
}
