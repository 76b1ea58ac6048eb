//! The ENIPool finalizer. A pool deleted while its node lives — a Node of its name runs on its
//! instance, whether the Node object is the same one or was re-registered by its kubelet — is only
//! released (the Node controller recreates it and the new pool adopts the ENIs). A pool whose node
//! is gone waits, at most `termination_wait`, for its instance to terminate, deletes the
//! `available` ENIs the node left behind, and removes the finalizer.
//!
//! Leftovers are the ENIs EC2 lists with this cluster's tag and the pool's instance tag (every ENI
//! the operator creates carries both, from the CreateNetworkInterface call itself). That catches
//! an ENI that was created but never recorded — the operator stopped between the create and the
//! status write and the journal entry was lost — when its node goes, instead of after GC's leak
//! grace. What the pool's status names is not consulted: the node writes its own pool's status,
//! and an ENI it names may be another node's.
//!
//! The finalizer never holds a Node: the pool's owner reference does not block the Node's
//! deletion, and past `termination_wait` an EC2 failure no longer holds the pool either (what is
//! left is GC's).

use super::context::Context;
use super::node::parse_provider_id;
use crate::ec2::{Ec2Api, Ec2ErrorKind, Ec2Result, Eni};
use crate::error::Result;
use crate::journal::is_managed;
use crate::journal::validate::created_for;
use enipool_crds::{ENIPool, POOL_FINALIZER};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::time::Duration;

/// Finalizer of a pool being deleted (I/O: EC2, then the finalizer patch).
pub(crate) async fn finalize(pool: &ENIPool, ctx: &Context) -> Result<Action> {
    if !pool.finalizers().iter().any(|f| f == POOL_FINALIZER) {
        return Ok(Action::await_change());
    }
    if !node_lives(pool, ctx).await? {
        let waited = pool
            .meta()
            .deletion_timestamp
            .as_ref()
            .map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t.0).as_secs())
            .unwrap_or(0);
        let overdue = waited >= ctx.termination_wait.as_secs() as i64;
        let ec2 = ctx.shared.ec2.as_ref();
        let instance = &pool.spec.instance_id;
        match ec2.describe_instances(std::slice::from_ref(instance)).await {
            Ok(found) if !overdue && found.first().is_some_and(|i| i.state != "terminated") => {
                return Ok(Action::requeue(ctx.shared.resync.min(Duration::from_secs(30))));
            }
            Ok(_) => {}
            Err(e) if !overdue => return Err(e.into()),
            Err(error) => {
                tracing::warn!(pool = %pool.name_any(), %error, "instance state unknown past the termination wait; cleaning up anyway");
            }
        }
        match delete_leftovers(ec2, &ctx.shared.cluster, instance).await {
            Ok(deleted) => ctx.metrics.enis_deleted("node_deleted", deleted.len()),
            Err(e) if !overdue => return Err(e.into()),
            Err(error) => {
                tracing::warn!(pool = %pool.name_any(), %error, "leftover ENIs not listed past the termination wait; GC will find them");
            }
        }
    }
    let rest: Vec<String> =
        pool.finalizers().iter().filter(|f| *f != POOL_FINALIZER).cloned().collect();
    let patch =
        json!({"metadata": {"finalizers": rest, "resourceVersion": pool.resource_version()}});
    // Named type: the chart test derives the RBAC this file needs from the `Api<Kind>` it names.
    let pools: Api<ENIPool> = ctx.pools_api();
    pools
        .patch(&pool.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(crate::Error::kube("RemoveFinalizer"))?;
    Ok(Action::await_change())
}

/// Whether the pool's node still lives (I/O only when the cache says it does). The Node and
/// pool caches follow separate watch streams: the garbage collector deletes the pool after its
/// Node, but the pool's deletion can reach the operator before the Node's. Trusting the cache
/// then would release the pool as if it were merely deleted, skipping the cleanup of a deleted
/// node (seen in CI: the finalizer never asked EC2 about the instance). So "lives" is confirmed
/// with a GET; "gone" needs no confirmation (a cache never shows a Node deleted too early).
async fn node_lives(pool: &ENIPool, ctx: &Context) -> Result<bool> {
    if !is_own_live_node(pool, ctx.node(&pool.spec.node_name).as_ref()) {
        return Ok(false);
    }
    own_node_lives_in_api(pool, ctx).await
}

/// Whether the API server (not the cache) has `pool`'s live node (one GET, see
/// [`is_own_live_node`]). Both directions of a cache's lag are confirmed with it: the finalizer's
/// "the Node lives" here, and the pool reconcile's "the Node is gone" before it deletes a pool.
pub(crate) async fn own_node_lives_in_api(pool: &ENIPool, ctx: &Context) -> Result<bool> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let live = nodes.get_opt(&pool.spec.node_name).await.map_err(crate::Error::kube("GetNode"))?;
    Ok(is_own_live_node(pool, live.as_ref()))
}

/// Whether `node` is the live node of `pool` (no I/O): present, not being deleted, and on the
/// pool's instance. The instance, named by the Node's providerID, is what the pool's ENIs belong
/// to: a kubelet that re-registers makes a new Node object (a new uid) on the same instance,
/// whose new pool must adopt the ENIs, while a Node of the same name on another instance is
/// another node, and the old one's pool must be cleaned up. Only a Node without a usable
/// providerID is judged by the pool's owner reference (the same object, or the name when the pool
/// records none).
pub fn is_own_live_node(pool: &ENIPool, node: Option<&Node>) -> bool {
    let Some(node) = node else { return false };
    if node.meta().deletion_timestamp.is_some() {
        return false;
    }
    let provider = node.spec.as_ref().and_then(|s| s.provider_id.as_deref());
    if let Some((_, instance)) = provider.and_then(parse_provider_id) {
        return instance == pool.spec.instance_id;
    }
    let owner = pool.owner_references().iter().find(|o| o.kind == "Node").map(|o| &o.uid);
    match owner {
        Some(uid) => node.meta().uid.as_ref() == Some(uid),
        None => true,
    }
}

/// Whether the finalizer may delete `eni` (no I/O): created by enipool for this cluster and for
/// `instance_id` (the tags, compared exactly: EC2 tag filters take wildcards) and `available`,
/// never an ENI that is attached or on its way to or from an instance.
pub fn deletable(eni: &Eni, cluster: &str, instance_id: &str) -> bool {
    is_managed(eni, cluster)
        && created_for(eni, instance_id)
        && eni.status == "available"
        && eni.attachment.is_none()
}

/// Deletes what a deleted node left behind: the deletable ENIs EC2 lists as created for its
/// instance (I/O). Returns the ids deleted. A failed listing is an error (nothing is deleted); a
/// failed delete is logged and left to GC.
pub async fn delete_leftovers(
    ec2: &dyn Ec2Api,
    cluster: &str,
    instance_id: &str,
) -> Ec2Result<Vec<String>> {
    // An empty instance id would select ENIs whose instance tag is empty: not this node's.
    if instance_id.is_empty() {
        return Ok(vec![]);
    }
    let found = ec2.list_leftover_enis(cluster, instance_id).await?;
    let mut deleted = Vec::new();
    for eni in found.iter().filter(|e| deletable(e, cluster, instance_id)) {
        match ec2.delete_eni(&eni.id).await {
            Ok(()) => {
                tracing::info!(eni_id = %eni.id, %instance_id, "deleted a deleted node's leftover ENI");
                deleted.push(eni.id.clone());
            }
            Err(e) if e.kind == Ec2ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(eni_id = %eni.id, %error, "cleanup delete failed; GC will retry");
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec2::fake::FakeEc2;
    use crate::ec2::CreateEni;
    use enipool_crds::tags;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn tagged(cluster: &str, instance: &str, owner: bool) -> CreateEni {
        let mut t: BTreeMap<String, String> = [
            (tags::CLUSTER, cluster),
            (tags::NODE, "node-a"),
            (tags::INSTANCE_ID, instance),
            (tags::CREATED_AT, "2026-01-01T00:00:00Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if owner {
            t.insert(tags::OWNER.into(), tags::OWNER_VALUE.into());
        }
        CreateEni {
            subnet_id: "subnet-a".into(),
            secondary_ips: 1,
            tags: t,
            client_token: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        }
    }

    async fn create(fake: &FakeEc2, req: CreateEni) -> String {
        fake.create_eni(&req).await.expect("create").id
    }

    fn ids(fake: &FakeEc2) -> Vec<String> {
        fake.enis().into_iter().map(|e| e.id).collect()
    }

    /// The safety table: only this cluster's available ENIs created for this instance go.
    #[tokio::test]
    async fn deletes_leftovers_of_the_instance_and_nothing_else() {
        let fake = FakeEc2::new();
        fake.launch("i-1", "m5.large", 0);
        fake.launch("i-2", "m5.large", 0);
        let lost = create(&fake, tagged("c", "i-1", true)).await;
        let lost_too = create(&fake, tagged("c", "i-1", true)).await;
        let other_cluster = create(&fake, tagged("other", "i-1", true)).await;
        let not_ours = create(&fake, tagged("c", "i-1", false)).await;
        let other_instance = create(&fake, tagged("c", "i-2", true)).await;
        let in_use = create(&fake, tagged("c", "i-1", true)).await;
        fake.attach_eni(&in_use, "i-2", 1).await.expect("attach");
        let before = ids(&fake);
        fake.reset_calls();

        let mut deleted = delete_leftovers(&fake, "c", "i-1").await.expect("cleanup");
        deleted.sort();
        let mut want = vec![lost, lost_too];
        want.sort();
        assert_eq!(deleted, want);
        let deletes = fake.calls().iter().filter(|c| **c == "DeleteNetworkInterface").count();
        assert_eq!(deletes, want.len(), "no delete even tried on an in-use or foreign ENI");
        let left: Vec<String> = before.into_iter().filter(|id| !want.contains(id)).collect();
        assert_eq!(ids(&fake), left, "everything else is still there");
        for kept in [other_cluster, not_ours, other_instance, in_use] {
            assert!(left.contains(&kept), "{kept} kept");
        }
        // Run again (the finalizer is retried): nothing more to do.
        let again = delete_leftovers(&fake, "c", "i-1").await.expect("cleanup");
        assert!(again.is_empty());
        assert!(delete_leftovers(&fake, "c", "").await.expect("cleanup").is_empty());
    }

    /// What the listing returns is judged again: exact tags (EC2 tag filters take wildcards),
    /// `available` and unattached.
    #[test]
    fn deletable_table() {
        let eni = |cluster: &str, instance: &str, owner: bool, attached: bool| {
            let req = tagged(cluster, instance, owner);
            Eni {
                id: "eni-1".into(),
                status: if attached { "in-use" } else { "available" }.into(),
                attachment: attached.then(|| crate::ec2::Attachment {
                    instance_id: "i-1".into(),
                    ..Default::default()
                }),
                tags: req.tags,
                ..Default::default()
            }
        };
        let cases = [
            (eni("c", "i-1", true, false), true, "ours, for the instance, available"),
            (eni("c", "i-1", true, true), false, "attached"),
            (eni("c", "i-2", true, false), false, "created for another instance"),
            (eni("c", "i-*", true, false), false, "a wildcard is not the instance"),
            (eni("c", "", true, false), false, "no instance tag"),
            (eni("other", "i-1", true, false), false, "another cluster's"),
            (eni("c", "i-1", false, false), false, "not the operator's"),
        ];
        for (e, want, case) in cases {
            assert_eq!(deletable(&e, "c", "i-1"), want, "{case}");
        }
    }

    #[tokio::test]
    async fn a_failed_listing_deletes_nothing() {
        let fake = FakeEc2::new();
        let lost = create(&fake, tagged("c", "i-1", true)).await;
        fake.fail_next("DescribeNetworkInterfaces", Ec2ErrorKind::Throttled);
        let err = delete_leftovers(&fake, "c", "i-1").await;
        assert_eq!(err.map_err(|e| e.kind), Err(Ec2ErrorKind::Throttled));
        assert!(ids(&fake).contains(&lost));
        assert_eq!(fake.mutations(), vec!["CreateNetworkInterface"]);
    }

    /// Which Node counts as the pool's live node: the cache and the confirming GET both go
    /// through this. The instance in the Node's providerID decides: a Node re-registered on the
    /// pool's instance (another uid) is its node, one of the same name on another instance is
    /// not. Without a usable providerID the owner reference decides.
    #[test]
    fn own_live_node_table() {
        use k8s_openapi::api::core::v1::NodeSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let node = |uid: &str, provider: Option<&str>, deleting: bool| {
            let mut n = Node::default();
            n.metadata.name = Some("node-a".into());
            n.metadata.uid = Some(uid.into());
            n.spec =
                Some(NodeSpec { provider_id: provider.map(String::from), ..Default::default() });
            if deleting {
                n.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            }
            n
        };
        let pool = |owner: Option<&str>, instance: &str| {
            let mut p = ENIPool::new("node-a", Default::default());
            p.spec.node_name = "node-a".into();
            p.spec.instance_id = instance.into();
            p.metadata.owner_references = owner.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: "node-a".into(),
                    uid: uid.into(),
                    ..Default::default()
                }]
            });
            p
        };
        let on_1 = Some("aws:///us-west-2a/i-1");
        let on_2 = Some("aws:///us-west-2a/i-2");
        let cases = [
            (pool(Some("u1"), "i-1"), Some(node("u1", on_1, false)), true, "the owner, alive"),
            (pool(Some("u1"), "i-1"), Some(node("u1", on_1, true)), false, "being deleted"),
            (pool(Some("u1"), "i-1"), None, false, "no Node"),
            (pool(Some("u1"), "i-1"), Some(node("u2", on_1, false)), true, "re-registered"),
            (pool(Some("u1"), "i-1"), Some(node("u2", on_1, true)), false, "re-registered, going"),
            (pool(Some("u1"), "i-1"), Some(node("u2", on_2, false)), false, "another instance"),
            (pool(Some("u1"), "i-1"), Some(node("u1", on_2, false)), false, "providerID decides"),
            (pool(Some("u1"), ""), Some(node("u1", on_1, false)), false, "pool without instance"),
            (pool(None, "i-1"), Some(node("u2", on_1, false)), true, "no owner recorded"),
            (pool(Some("u1"), "i-1"), Some(node("u1", None, false)), true, "no providerID: uid"),
            (
                pool(Some("u1"), "i-1"),
                Some(node("u2", None, false)),
                false,
                "no providerID, new uid",
            ),
            (
                pool(Some("u1"), "i-1"),
                Some(node("u2", Some("gce://p/z/n"), false)),
                false,
                "not AWS",
            ),
            (pool(None, "i-1"), Some(node("u2", None, false)), true, "nothing recorded: the name"),
            (pool(None, "i-1"), Some(node("u2", None, true)), false, "nothing recorded, going"),
        ];
        for (pool, node, want, case) in cases {
            assert_eq!(is_own_live_node(&pool, node.as_ref()), want, "{case}");
        }
    }
}
