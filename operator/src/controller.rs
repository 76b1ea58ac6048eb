//! Kubernetes glue: the Node controller (every AWS Node gets its ENIPool; a pool deleted while its
//! Node lives is recreated) and the ENIPool controller (dereference → validate → the EC2 half in
//! `reconcile.rs` → status by SSA; the finalizer in `finalizer.rs`). Both run on every replica so
//! caches stay warm; only the Lease holder writes.

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::reconcile::{self, PoolInput, Shared, StatusSink};
use enipool_crds::select::select_policy;
use enipool_crds::{
    ENIPool, ENIPoolPolicy, ENIPoolStatus, INSTANCE_TYPE_LABEL, OPERATOR_FIELD_MANAGER,
    POLICY_LABEL, POOL_FINALIZER, ZONE_LABEL,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared by both controllers.
pub struct Context {
    /// EC2 side.
    pub shared: Shared,
    /// Client.
    pub client: Client,
    /// Leadership: reconciles start only while this replica leads.
    pub leader: crate::leader::Leadership,
    /// Nodes cache (the Node controller's store).
    pub nodes: Store<DeserializeGuard<Node>>,
    /// Policies cache (the policy controller's store).
    pub policies: Store<DeserializeGuard<ENIPoolPolicy>>,
    /// Pools cache (the pool controller's store).
    pub pools: Store<DeserializeGuard<ENIPool>>,
    /// Events.
    pub recorder: Recorder,
    /// Metrics.
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

    async fn event(
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
    /// per pool and category every [`reconcile::FAILURE_EVENT_EVERY`] so an EC2 outage retried
    /// every few seconds does not flood the API (the pool's conditions show it meanwhile).
    async fn failure_event(&self, pool: &ENIPool, error: &Error) {
        let reason = error.category();
        if self.shared.memory.failure_event_due(&pool.name_any(), reason, Instant::now()) {
            self.event(pool, true, reason, format!("reconcile failed: {error}"), None).await;
        }
    }
}

/// `aws:///<az>/<instance-id>` → (az, instance id).
pub fn parse_provider_id(id: &str) -> Option<(String, String)> {
    let rest = id.strip_prefix("aws://")?;
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let instance = parts.last().filter(|s| s.starts_with("i-"))?;
    let az = if parts.len() >= 2 { parts[parts.len() - 2] } else { "" };
    Some((az.to_string(), instance.to_string()))
}

/// The chosen policy of a node.
fn choose_policy(
    ctx: &Context,
    node: &Node,
    pinned: Option<&str>,
) -> (String, Option<ENIPoolPolicy>) {
    let policies = ctx.valid_policies();
    let sel = select_policy(&policies, node.labels(), pinned);
    let chosen = sel.chosen.and_then(|n| policies.into_iter().find(|p| p.name_any() == n));
    (chosen.as_ref().map(|p| p.name_any()).unwrap_or_default(), chosen)
}

/// SSA of a pool's metadata and identity spec.
async fn apply_pool(
    ctx: &Context,
    node: &Node,
    instance_id: &str,
    zone: &str,
    policy: &str,
) -> Result<()> {
    let name = node.name_any();
    let uid = node.uid().ok_or(Error::MissingField("node uid"))?;
    let mut labels = serde_json::Map::new();
    labels.insert(
        ZONE_LABEL.into(),
        json!(node.labels().get(ZONE_LABEL).cloned().unwrap_or_else(|| zone.to_string())),
    );
    if let Some(t) = node.labels().get(INSTANCE_TYPE_LABEL) {
        labels.insert(INSTANCE_TYPE_LABEL.into(), json!(t));
    }
    if !policy.is_empty() {
        labels.insert(POLICY_LABEL.into(), json!(policy));
    }
    let patch = json!({
        "apiVersion": "enipool.io/v1alpha1",
        "kind": "ENIPool",
        "metadata": {
            "name": name,
            "labels": labels,
            // blockOwnerDeletion false: a Node's deletion never waits for its pool.
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": false}],
            "finalizers": [POOL_FINALIZER],
        },
        "spec": {"nodeName": name, "instanceID": instance_id},
    });
    let pp = PatchParams::apply(OPERATOR_FIELD_MANAGER).force();
    ctx.pools_api()
        .patch(&name, &pp, &Patch::Apply(&patch))
        .await
        .map_err(Error::kube("ApplyPool"))?;
    Ok(())
}

/// Node controller: make sure every AWS Node has its pool, labelled with the policy its labels
/// select (a label change re-labels the pool, which wakes the pool controller: Nodes are watched
/// once, here).
pub async fn reconcile_node(
    guard: Arc<DeserializeGuard<Node>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let Some(node) = valid(&guard) else {
        tracing::warn!(name = ?guard.name_any(), "malformed Node skipped");
        return Ok(Action::await_change());
    };
    if !ctx.is_leader() || node.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let provider = node.spec.as_ref().and_then(|s| s.provider_id.clone()).unwrap_or_default();
    let Some((zone, instance_id)) = parse_provider_id(&provider) else {
        return Ok(Action::await_change()); // not an AWS node: not ours
    };
    let existing = ctx.pools.get(&ObjectRef::new(&node.name_any()));
    if let Some(g) = existing.as_ref().filter(|p| p.meta().deletion_timestamp.is_none()) {
        let Some(pool) = valid(g) else { return Ok(Action::await_change()) };
        let pinned = pool.spec.policy_ref.as_ref().map(|r| r.name.as_str());
        let (policy, _) = choose_policy(&ctx, node, pinned);
        if pool.labels().get(POLICY_LABEL).map(String::as_str).unwrap_or("") != policy {
            apply_pool(&ctx, node, &pool.spec.instance_id, &zone, &policy).await?;
        }
        return Ok(Action::await_change());
    }
    if existing.is_some() {
        return Ok(Action::requeue(Duration::from_secs(2))); // finalizing; recreate once it is gone
    }
    let (policy, _) = choose_policy(&ctx, node, None);
    apply_pool(&ctx, node, &instance_id, &zone, &policy).await?;
    tracing::info!(node = %node.name_any(), %instance_id, "created ENIPool");
    Ok(Action::await_change())
}

/// Writes the operator part of the status by SSA on the status subresource.
struct KubeSink {
    api: Api<ENIPool>,
    name: String,
}

#[async_trait::async_trait]
impl StatusSink for KubeSink {
    async fn write(&self, status: &ENIPoolStatus) -> Result<()> {
        let patch = json!({
            "apiVersion": "enipool.io/v1alpha1",
            "kind": "ENIPool",
            "metadata": {"name": self.name},
            "status": status,
        });
        let pp = PatchParams::apply(OPERATOR_FIELD_MANAGER).force();
        self.api
            .patch_status(&self.name, &pp, &Patch::Apply(&patch))
            .await
            .map_err(Error::kube("PatchPoolStatus"))?;
        Ok(())
    }

    async fn remove(&self, removals: &[reconcile::Removal]) -> Result<()> {
        let patch: json_patch::Patch = serde_json::from_value(reconcile::removal_patch(removals))?;
        let pp = PatchParams {
            field_manager: Some(OPERATOR_FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.api
            .patch_status(&self.name, &pp, &Patch::Json::<()>(patch))
            .await
            .map_err(Error::kube("RemovePoolStatusEntries"))?;
        Ok(())
    }
}

/// Pool controller.
pub async fn reconcile_pool(
    guard: Arc<DeserializeGuard<ENIPool>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let pool = match &guard.0 {
        Ok(p) => p,
        Err(invalid) => {
            tracing::warn!(name = ?invalid.metadata.name, error = %invalid.error, "malformed ENIPool skipped");
            return Ok(Action::await_change());
        }
    };
    ctx.refresh_resync_period();
    let resync = ctx.shared.resync;
    if !ctx.is_leader() {
        return Ok(Action::requeue(resync));
    }
    let started = Instant::now();
    let name = pool.name_any();
    let result = if pool.meta().deletion_timestamp.is_some() {
        ctx.metrics.pool_state(&name, None);
        ctx.shared.memory.forget(&name);
        ctx.shared.memory.forget_changes(&name);
        crate::finalizer::finalize(pool, &ctx).await
    } else {
        reconcile_live(pool, &ctx).await
    };
    ctx.metrics.reconciled(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        ctx.shared.memory.forget(&name); // the retry must go to EC2 again
        ctx.failure_event(pool, error).await;
    }
    result
}

async fn reconcile_live(pool: &ENIPool, ctx: &Context) -> Result<Action> {
    let name = pool.name_any();
    let Some(node) = ctx.node(&pool.spec.node_name) else {
        // Not cached. The cache can lag behind the API server (with --node-selector it is a
        // second Node watch, which may not have a Node the Node controller just made a pool
        // for), so "gone" is confirmed with a GET before the pool goes.
        if crate::finalizer::own_node_lives_in_api(pool, ctx).await? {
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        // The Node is gone: delete the pool so its finalizer cleans EC2 up.
        ctx.pools_api()
            .delete(&name, &DeleteParams::default())
            .await
            .map_err(Error::kube("DeletePool"))?;
        return Ok(Action::await_change());
    };
    let pinned = pool.spec.policy_ref.as_ref().map(|r| r.name.as_str());
    let (policy_name, policy) = choose_policy(ctx, &node, pinned);
    if pool.labels().get(POLICY_LABEL).map(String::as_str).unwrap_or("") != policy_name {
        let zone = pool.labels().get(ZONE_LABEL).cloned().unwrap_or_default();
        apply_pool(ctx, &node, &pool.spec.instance_id, &zone, &policy_name).await?;
    }
    let input = PoolInput {
        name: name.clone(),
        uid: pool.uid().unwrap_or_default(),
        generation: pool.meta().generation,
        instance_id: pool.spec.instance_id.clone(),
        policy_name,
        policy: policy.map(|p| p.spec),
        overrides: pool.spec.overrides.clone(),
        paused: pool.spec.paused,
        status: pool.status.clone().unwrap_or_default(),
    };
    if let Some(left) = ctx.shared.memory.quiet_for(&name, &input) {
        return Ok(Action::requeue(left)); // our own status write came back: nothing to do
    }
    let sink = KubeSink { api: ctx.pools_api(), name: name.clone() };
    let out = reconcile::reconcile_pool(&ctx.shared, &input, &sink).await?;
    ctx.shared.memory.left_quiet(&name, &input, &out);
    for (kind, outcome) in &out.replays {
        ctx.metrics.journal_replay(&format!("{kind:?}"), outcome);
    }
    for reason in &out.rejected {
        ctx.metrics.journal_rejected(reason);
    }
    for n in &out.notes {
        ctx.event(pool, n.warning, n.reason, n.message.clone(), n.field_path.as_deref()).await;
    }
    let state = if pool.spec.paused {
        "Paused"
    } else if enipool_crds::summary::is_true(
        &out.status.conditions,
        enipool_crds::conditions::READY,
    ) {
        "Ready"
    } else {
        "NotReady"
    };
    ctx.metrics.pool_state(&name, Some(state));
    Ok(Action::requeue(out.requeue))
}

/// One GC run (leader only). Skipped while a pool is malformed: its ENIs and journal cannot be
/// read, so they could not be protected. Only the referenced ids are collected from the cache.
pub async fn gc_once(ctx: &Context, grace_secs: i64) -> Vec<String> {
    let Some(referenced) = crate::gc::referenced(ctx.pools.state().iter().map(Arc::as_ref)) else {
        tracing::warn!("GC skipped: a malformed ENIPool's ENIs cannot be told apart from leaks");
        return vec![];
    };
    let deleted =
        crate::gc::run_once(ctx.shared.ec2.as_ref(), &ctx.shared.cluster, &referenced, grace_secs)
            .await;
    ctx.metrics.enis_deleted("leaked", deleted.len());
    deleted
}

/// Requeue policy: transient errors back off with jitter; permanent ones wait longer. (A failed
/// pool reconcile has already shown itself on the pool and in a Warning Event, see
/// [`reconcile_pool`]: this function cannot await.)
pub fn error_policy<K>(_obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.category());
    tracing::warn!(error = %error, category = error.category(), "reconcile failed");
    let jitter = Duration::from_millis(rand::random_range(0..3000u64));
    if error.is_transient() {
        Action::requeue(Duration::from_secs(10) + jitter)
    } else {
        Action::requeue(Duration::from_secs(300) + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_provider_id;

    #[test]
    fn provider_ids() {
        let ok = |z: &str, i: &str| Some((z.to_string(), i.to_string()));
        assert_eq!(parse_provider_id("aws:///us-east-1a/i-0abc123"), ok("us-east-1a", "i-0abc123"));
        assert_eq!(parse_provider_id("aws:///i-0abc123"), ok("", "i-0abc123"));
        assert_eq!(parse_provider_id("gce://p/z/n"), None);
        assert_eq!(parse_provider_id("aws:///us-east-1a/"), None);
    }
}
