//! The ENIPool controller: dereference → validate → pick the policy → the EC2 round
//! ([`crate::round`]) with a status sink → metrics and Events; a pool being deleted goes to the
//! finalizer instead.

use super::context::Context;
use super::node::{apply_pool, choose_policy};
use super::status::KubeSink;
use crate::error::{Error, Result};
use crate::round::{self, PoolInput};
use enipool_crds::{ENIPool, ZONE_LABEL};
use kube::api::{Api, DeleteParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The pool controller's reconcile (leader only; a follower just keeps its caches).
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
        ctx.shared.memory.forget_instance(&name);
        super::finalizer::finalize(pool, &ctx).await
    } else {
        reconcile_live_pool(pool, &ctx).await
    };
    ctx.metrics.reconciled(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        ctx.shared.memory.forget(&name); // the retry must go to EC2 again
        ctx.failure_event(pool, error).await;
    }
    result
}

async fn reconcile_live_pool(pool: &ENIPool, ctx: &Context) -> Result<Action> {
    let name = pool.name_any();
    let Some(node) = ctx.node(&pool.spec.node_name) else {
        // Not cached. The cache can lag behind the API server (with --node-selector it is a
        // second Node watch, which may not have a Node the Node controller just made a pool
        // for), so "gone" is confirmed with a GET before the pool goes.
        if super::finalizer::own_node_lives_in_api(pool, ctx).await? {
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        // The Node is gone: delete the pool so its finalizer cleans EC2 up.
        let pools: Api<ENIPool> = ctx.pools_api();
        pools.delete(&name, &DeleteParams::default()).await.map_err(Error::kube("DeletePool"))?;
        return Ok(Action::await_change());
    };
    let pinned = pool.spec.policy_ref.as_ref().map(|r| r.name.as_str());
    let (policy_name, policy) = choose_policy(ctx, &node, pinned);
    if super::node::labels_stale(pool, &node, &policy_name) {
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
        cordoned: super::node::cordoned(&node),
        status: pool.status.clone().unwrap_or_default(),
    };
    if let Some(left) = ctx.shared.memory.quiet_for(&name, &input) {
        return Ok(Action::requeue(left)); // our own status write came back: nothing to do
    }
    let sink = KubeSink { api: ctx.pools_api(), name: name.clone() };
    let out = round::run_round(&ctx.shared, &input, &sink).await?;
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
        enipool_crds::conditions::FROZEN,
    ) {
        "Frozen"
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
