//! Leaked-ENI garbage collection: ENIs carrying this cluster's owner tags, `available`, created
//! longer ago than the grace (the created-at tag makes it a single pass), and not referenced by any
//! pool's ENIs or journal. Deleted at most `cap` per run. Only the leader runs it.

use super::context::Context;
use crate::ec2::{Ec2Api, Eni};
use crate::journal::is_managed;
use enipool_crds::{tags, ENIPool};
use k8s_openapi::jiff::Timestamp;
use kube::core::DeserializeGuard;
use std::collections::BTreeSet;
use std::sync::Arc;

/// ENIs deleted per run at most (Cilium caps at 25 per interval).
pub const DEFAULT_CAP: usize = 25;

/// The ENI ids and operation ids the cached pools still reference (their published ENIs and
/// their journals), read in place from the cache's guards: only the ids are copied, never a pool
/// (copying every pool cost 26 MiB at 5,000 pools). `None` when a pool is malformed: its ENIs and
/// journal cannot be read, so they could not be protected.
pub fn referenced<'a>(
    pools: impl IntoIterator<Item = &'a DeserializeGuard<ENIPool>>,
) -> Option<BTreeSet<String>> {
    let mut r = BTreeSet::new();
    for g in pools {
        let pool = g.0.as_ref().ok()?;
        let Some(s) = pool.status.as_ref() else { continue };
        r.extend(s.enis.iter().map(|e| e.id.clone()));
        for op in &s.operations {
            r.insert(op.id.clone());
            if !op.eni_id.is_empty() {
                r.insert(op.eni_id.clone());
            }
        }
    }
    Some(r)
}

/// Which ENIs to delete (pure).
pub fn select_leaked(
    enis: &[Eni],
    cluster: &str,
    now: Timestamp,
    grace_secs: i64,
    referenced: &BTreeSet<String>,
    cap: usize,
) -> Vec<String> {
    enis.iter()
        .filter(|e| is_managed(e, cluster) && e.status == "available" && e.attachment.is_none())
        .filter(|e| !referenced.contains(&e.id))
        .filter(|e| e.tags.get(tags::OPERATION).is_none_or(|op| !referenced.contains(op)))
        .filter(|e| {
            e.tags
                .get(tags::CREATED_AT)
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|t| now.duration_since(t).as_secs() > grace_secs)
        })
        .take(cap)
        .map(|e| e.id.clone())
        .collect()
}

/// One GC pass over the ENIs tagged with `cluster`, sparing `referenced` (see [`referenced`]);
/// returns the ENIs deleted.
pub async fn run_once(
    ec2: &dyn Ec2Api,
    cluster: &str,
    referenced: &BTreeSet<String>,
    grace_secs: i64,
) -> Vec<String> {
    let enis = match ec2.list_cluster_enis(cluster).await {
        Ok(e) => e,
        Err(error) => {
            tracing::warn!(%error, "GC listing failed");
            return vec![];
        }
    };
    let victims =
        select_leaked(&enis, cluster, Timestamp::now(), grace_secs, referenced, DEFAULT_CAP);
    let mut deleted = vec![];
    for id in victims {
        match ec2.delete_eni(&id).await {
            Ok(()) => {
                tracing::info!(eni_id = %id, "deleted leaked ENI");
                deleted.push(id);
            }
            Err(error) => tracing::warn!(eni_id = %id, %error, "deleting leaked ENI failed"),
        }
    }
    deleted
}

/// One GC run (leader only). Skipped while a pool is malformed: its ENIs and journal cannot be
/// read, so they could not be protected. Only the referenced ids are collected from the cache.
pub async fn gc_once(ctx: &Context, grace_secs: i64) -> Vec<String> {
    let Some(referenced) = referenced(ctx.pools.state().iter().map(Arc::as_ref)) else {
        tracing::warn!("GC skipped: a malformed ENIPool's ENIs cannot be told apart from leaks");
        return vec![];
    };
    let deleted =
        run_once(ctx.shared.ec2.as_ref(), &ctx.shared.cluster, &referenced, grace_secs).await;
    ctx.metrics.enis_deleted("leaked", deleted.len());
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn eni(id: &str, age_secs: i64, op: &str, available: bool, cluster: &str) -> Eni {
        let created = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(age_secs);
        let tags: BTreeMap<String, String> = [
            (tags::CLUSTER, cluster),
            (tags::OWNER, tags::OWNER_VALUE),
            (tags::CREATED_AT, &created.to_string()),
            (tags::OPERATION, op),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Eni {
            id: id.into(),
            status: if available { "available" } else { "in-use" }.into(),
            tags,
            ..Default::default()
        }
    }

    #[test]
    fn leak_selection_table() {
        let enis = vec![
            eni("eni-old", 3600, "op-1", true, "c"),
            eni("eni-young", 10, "op-2", true, "c"),
            eni("eni-inuse", 3600, "op-3", false, "c"),
            eni("eni-journaled", 3600, "op-4", true, "c"),
            eni("eni-other-cluster", 3600, "op-5", true, "other"),
            eni("eni-listed", 3600, "op-6", true, "c"),
        ];
        let refs: BTreeSet<String> = ["op-4".to_string(), "eni-listed".to_string()].into();
        assert_eq!(
            select_leaked(&enis, "c", Timestamp::now(), 600, &refs, 25),
            vec!["eni-old".to_string()]
        );
        assert!(select_leaked(&enis, "c", Timestamp::now(), 600, &refs, 0).is_empty(), "rate cap");
    }

    /// A pool publishing `enis` with the journal `ops` (`None`: no status yet).
    fn pool(name: &str, status: Option<(&[&str], serde_json::Value)>) -> DeserializeGuard<ENIPool> {
        let mut p = ENIPool::new(name, Default::default());
        p.status = status.map(|(enis, ops)| enipool_crds::ENIPoolStatus {
            enis: enis
                .iter()
                .map(|id| enipool_crds::EniStatus { id: id.to_string(), ..Default::default() })
                .collect(),
            operations: serde_json::from_value(ops).expect("operations"),
            ..Default::default()
        });
        DeserializeGuard(Ok(p))
    }

    fn op(id: &str, kind: &str, eni: &str) -> serde_json::Value {
        serde_json::json!({"id": id, "type": kind, "eniID": eni, "startedAt": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn referenced_are_published_enis_journal_ids_and_journal_enis() {
        let pools = [
            pool("a", Some((&["eni-a0", "eni-a1"], serde_json::json!([])))),
            // A CreateENI before EC2 answered has no ENI yet: its operation id (the ENI's
            // operation tag) protects what it may have created.
            pool(
                "b",
                Some((
                    &[],
                    serde_json::json!([
                        op("op-b1", "CreateENI", ""),
                        op("op-b2", "AttachENI", "eni-b2"),
                    ]),
                )),
            ),
            pool("c", None),
        ];
        let want: BTreeSet<String> =
            ["eni-a0", "eni-a1", "op-b1", "op-b2", "eni-b2"].map(String::from).into();
        assert_eq!(referenced(pools.iter()), Some(want));
        assert_eq!(referenced([]), Some(BTreeSet::new()));
    }

    #[test]
    fn a_malformed_pool_means_no_referenced_set() {
        let bad = DeserializeGuard::<ENIPool>(Err(kube::core::error_boundary::InvalidObject {
            error: "spec: missing field `nodeName`".into(),
            metadata: Default::default(),
        }));
        let good = pool("a", Some((&["eni-a0"], serde_json::json!([]))));
        assert_eq!(referenced([&good, &bad]), None, "GC must not run blind to a pool's ENIs");
        assert_eq!(referenced([&bad, &good]), None);
    }
}
