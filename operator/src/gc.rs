//! Leaked-ENI garbage collection: ENIs carrying this cluster's owner tags, `available`, created
//! longer ago than the grace (the created-at tag makes it a single pass), and not referenced by any
//! pool's ENIs or journal. Deleted at most `cap` per run. Only the leader runs it.

use crate::ec2::{Ec2Api, Eni};
use crate::sync::is_managed;
use enipool_crds::{tags, ENIPool};
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeSet;

/// ENIs deleted per run at most (Cilium caps at 25 per interval).
pub const DEFAULT_CAP: usize = 25;

/// Ids and operation ids the pools still reference.
pub fn referenced(pools: &[std::sync::Arc<ENIPool>]) -> BTreeSet<String> {
    let mut r = BTreeSet::new();
    for p in pools {
        let Some(s) = p.status.as_ref() else { continue };
        r.extend(s.enis.iter().map(|e| e.id.clone()));
        for op in &s.operations {
            r.insert(op.id.clone());
            if !op.eni_id.is_empty() {
                r.insert(op.eni_id.clone());
            }
        }
    }
    r
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

/// One GC pass; returns the ENIs deleted.
pub async fn run_once(
    ec2: &dyn Ec2Api,
    cluster: &str,
    pools: &[std::sync::Arc<ENIPool>],
    grace_secs: i64,
) -> Vec<String> {
    let enis = match ec2.list_cluster_enis(cluster).await {
        Ok(e) => e,
        Err(error) => {
            tracing::warn!(%error, "GC listing failed");
            return vec![];
        }
    };
    let victims = select_leaked(
        &enis,
        cluster,
        Timestamp::now(),
        grace_secs,
        &referenced(pools),
        DEFAULT_CAP,
    );
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
}
