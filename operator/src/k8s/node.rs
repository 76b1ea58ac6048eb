//! The Node controller: every AWS Node gets its ENIPool (identity spec, owner reference, finalizer,
//! zone and policy labels, by SSA), and a pool deleted while its Node lives is made again.

use super::context::{valid, Context};
use crate::error::{Error, Result};
use enipool_crds::select::select_policy;
use enipool_crds::{
    ENIPool, ENIPoolPolicy, CORDONED_LABEL, INSTANCE_TYPE_LABEL, OPERATOR_FIELD_MANAGER,
    POLICY_LABEL, POOL_FINALIZER, ZONE_LABEL,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// `aws:///<az>/<instance-id>` → (az, instance id).
pub fn parse_provider_id(id: &str) -> Option<(String, String)> {
    let rest = id.strip_prefix("aws://")?;
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let instance = parts.last().filter(|s| s.starts_with("i-"))?;
    let az = if parts.len() >= 2 { parts[parts.len() - 2] } else { "" };
    Some((az.to_string(), instance.to_string()))
}

/// The Node is cordoned (`kubectl cordon`, `spec.unschedulable`).
pub fn cordoned(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
}

/// The pool's labels no longer say what its Node says (its policy, whether it is cordoned). The
/// Node controller relabels it then, and the relabel wakes the pool controller: Nodes are watched
/// once, by the Node controller.
pub(super) fn labels_stale(pool: &ENIPool, node: &Node, policy: &str) -> bool {
    pool.labels().get(POLICY_LABEL).map(String::as_str).unwrap_or("") != policy
        || pool.labels().contains_key(CORDONED_LABEL) != cordoned(node)
}

/// The chosen policy of a node.
pub(super) fn choose_policy(
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
pub(super) async fn apply_pool(
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
    if cordoned(node) {
        labels.insert(CORDONED_LABEL.into(), json!("true"));
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
    let pools: Api<ENIPool> = ctx.pools_api();
    pools.patch(&name, &pp, &Patch::Apply(&patch)).await.map_err(Error::kube("ApplyPool"))?;
    Ok(())
}

/// Node controller: make sure every AWS Node has its pool, labelled with the policy its labels
/// select and whether it is cordoned (`labels_stale` says when they are out of date).
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
        if labels_stale(pool, node, &policy) {
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
