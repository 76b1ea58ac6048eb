//! The operation journal (invariant: journal before EC2 mutation, docs/design.md): every EC2
//! mutation is recorded in `status.operations` — and that status written — before the call is made.
//! The operation id is the ClientToken of CreateNetworkInterface and is tagged on the ENI, so a
//! restarted or new leader finishes or abandons each entry by looking at EC2 ([`replay`]) instead
//! of leaking or duplicating an ENI. The status is not the operator's alone (the node's agent
//! writes its own pool's), so an entry read back is replayed only once [`validate`] found that EC2
//! confirms it concerns this pool.
//!
//! `Operation` has no field for a CreateENI's parameters, so they ride in `items`:
//! `[subnet-id, sg-…, sg-…, ("prefixes")]` — enough to repeat the exact same request, whose
//! ClientToken makes EC2 return the ENI it already created.

use crate::ec2::{CreateEni, Ec2Api, Ec2Error, Ec2ErrorKind, Eni};
use enipool_crds::{tags, Operation, OperationKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::{BTreeMap, BTreeSet};

/// Marker item: the CreateENI carries prefixes, not secondary addresses.
const PREFIXES_MARKER: &str = "prefixes";
/// After this many failed attempts an entry is abandoned (its ENI, if any, is deleted or left to GC).
pub const MAX_ATTEMPTS: i32 = 5;
/// Journal bound (the CRD allows 16).
pub const MAX_OPERATIONS: usize = 16;

/// Who new ENIs are created for (tags and attachment target).
#[derive(Debug, Clone, Default)]
pub struct Owner {
    pub cluster: String,
    /// Node (= pool) name.
    pub node: String,
    pub instance_id: String,
    pub pool_uid: String,
    /// Extra tags from the policy.
    pub extra_tags: BTreeMap<String, String>,
}

/// A new journal entry.
pub fn new_op(
    kind: OperationKind,
    eni_id: &str,
    count: i32,
    items: Vec<String>,
    device_index: Option<i32>,
    now: &Time,
) -> Operation {
    Operation {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        eni_id: eni_id.to_string(),
        count,
        items,
        device_index,
        // Whole seconds, as the API server stores it: the create request of a CreateENI carries
        // it, and a replay (from the stored entry) must send the identical request.
        started_at: Time(
            k8s_openapi::jiff::Timestamp::from_second(now.0.as_second()).unwrap_or(now.0),
        ),
        attempts: 0,
        last_error: String::new(),
    }
}

/// Items of a CreateENI entry.
pub fn create_items(subnet_id: &str, security_groups: &[String], prefixes: bool) -> Vec<String> {
    let mut items = vec![subnet_id.to_string()];
    items.extend(security_groups.iter().cloned());
    if prefixes {
        items.push(PREFIXES_MARKER.to_string());
    }
    items
}

/// The CreateNetworkInterface request of an entry: deterministic, so a replay is the same request
/// (creation time = journal time) and EC2's ClientToken idempotency returns the same ENI.
pub fn create_request(op: &Operation, owner: &Owner) -> CreateEni {
    let prefixes = op.items.iter().any(|i| i == PREFIXES_MARKER);
    let mut t = owner.extra_tags.clone();
    t.insert(tags::CLUSTER.into(), owner.cluster.clone());
    t.insert(tags::NODE.into(), owner.node.clone());
    t.insert(tags::INSTANCE_ID.into(), owner.instance_id.clone());
    t.insert(tags::OWNER.into(), tags::OWNER_VALUE.into());
    t.insert(tags::CREATED_AT.into(), op.started_at.0.to_string());
    t.insert(tags::POOL_UID.into(), owner.pool_uid.clone());
    t.insert(tags::OPERATION.into(), op.id.clone());
    CreateEni {
        subnet_id: op.items.first().cloned().unwrap_or_default(),
        security_groups: op
            .items
            .iter()
            .skip(1)
            .filter(|i| *i != PREFIXES_MARKER)
            .cloned()
            .collect(),
        secondary_ips: if prefixes { 0 } else { op.count },
        prefixes: if prefixes { op.count } else { 0 },
        tags: t,
        description: format!("enipool {} {}", owner.cluster, owner.instance_id),
        client_token: op.id.clone(),
    }
}

/// The ENI an entry created and never attached, found by the entry's tag among the instance's
/// `available` ENIs. A replay looks here before sending the create again: EC2 forgets a
/// ClientToken after a while (a day or more), and an entry can outlive that (kept while the role
/// may not attach), so the token alone would make a second ENI.
async fn created_unattached(
    ec2: &dyn Ec2Api,
    op: &Operation,
    owner: &Owner,
) -> Result<Option<Eni>, Ec2Error> {
    let left = ec2.list_leftover_enis(&owner.cluster, &owner.instance_id).await?;
    Ok(left.into_iter().find(|e| {
        e.tags.get(tags::OPERATION) == Some(&op.id) && validate::created_for(e, &owner.instance_id)
    }))
}

/// Create (or find again, by ClientToken), attach at the entry's device index, and set
/// DeleteOnTermination. Safe to repeat from any point. Returns the ENI id.
pub async fn create_attach(
    ec2: &dyn Ec2Api,
    op: &mut Operation,
    owner: &Owner,
) -> Result<String, Ec2Error> {
    let eni = ec2.create_eni(&create_request(op, owner)).await?;
    // The ClientToken is the entry's id, which a forged entry can copy from another pool's
    // journal: an ENI EC2 returns for it is attached (or later deleted) only when it was created
    // for this pool's instance by this entry.
    if eni.tags.get(tags::OPERATION) != Some(&op.id)
        || !validate::created_for(&eni, &owner.instance_id)
    {
        return Err(Ec2Error {
            kind: Ec2ErrorKind::IdempotencyMismatch,
            action: "CreateNetworkInterface",
            code: "ForeignClientToken".into(),
            message: format!(
                "EC2 answered ClientToken {} with {}, not created for {} by this entry; left alone",
                op.id, eni.id, owner.instance_id
            ),
        });
    }
    op.eni_id = eni.id.clone();
    attach(ec2, &eni, op.device_index.unwrap_or(1), &owner.instance_id).await?;
    Ok(eni.id)
}

/// Attach an ENI to the instance if it is not attached yet, then set DeleteOnTermination.
async fn attach(
    ec2: &dyn Ec2Api,
    eni: &Eni,
    device_index: i32,
    instance_id: &str,
) -> Result<(), Ec2Error> {
    let attachment_id = match eni.attachment.as_ref() {
        Some(a) if a.instance_id == instance_id => {
            if a.delete_on_termination {
                return Ok(());
            }
            a.id.clone()
        }
        Some(a) => {
            return Err(Ec2Error {
                kind: Ec2ErrorKind::InUse,
                action: "AttachNetworkInterface",
                code: "InUse".into(),
                message: format!("{} is attached to {}", eni.id, a.instance_id),
            })
        }
        None => ec2.attach_eni(&eni.id, instance_id, device_index).await?,
    };
    ec2.set_delete_on_termination(&eni.id, &attachment_id, true).await
}

/// Outcome of replaying one entry.
#[derive(Debug)]
pub enum Replayed {
    /// Finished or found done: drop the entry.
    Done,
    /// Nothing left to do and nothing to finish (e.g. a count-based assign whose effect the sync
    /// will show): drop the entry.
    Abandoned(&'static str),
    /// Keep it (with attempts and last error updated) and try again later.
    Keep(Ec2Error),
    /// In progress in EC2 (an ENI still detaching): keep it, look again later. Not a failure, so
    /// it does not count toward [`MAX_ATTEMPTS`].
    Wait,
}

/// Whether `eni`, as EC2 describes it, holds nothing but `offered` items (addresses and prefixes
/// the agent gave up, see `plan::release::offered_items`): only then may a release detach it.
pub fn holds_only(eni: &Eni, offered: &BTreeSet<String>) -> bool {
    eni.secondary_ips.iter().map(|a| a.to_string()).all(|a| offered.contains(&a))
        && eni.prefixes.iter().map(|p| p.to_string()).all(|p| offered.contains(&p))
}

/// Whether enipool created this ENI for this cluster (only those may be detached or deleted).
pub fn is_managed(eni: &Eni, cluster: &str) -> bool {
    eni.tags.get(tags::OWNER).is_some_and(|o| o == tags::OWNER_VALUE)
        && eni.tags.get(tags::CLUSTER).is_some_and(|c| c == cluster)
}

/// Finish or abandon one entry by looking at EC2. `attached` are the instance's ENIs from the sync;
/// `offered` the items the agent gave up for release.
pub async fn replay_one(
    ec2: &dyn Ec2Api,
    op: &mut Operation,
    owner: &Owner,
    attached: &[Eni],
    offered: &BTreeSet<String>,
) -> Replayed {
    match op.kind {
        // Nothing journals one ([`validate`] rejects it before any replay): attaching an ENI an
        // entry names would hand this node any `available` ENI of the VPC.
        OperationKind::AttachENI => Replayed::Abandoned("the operator never journals an AttachENI"),
        OperationKind::CreateENI => {
            // Already attached with our token tag: only DeleteOnTermination may be missing.
            let found = attached.iter().find(|e| {
                e.tags.get(tags::OPERATION) == Some(&op.id)
                    || (!op.eni_id.is_empty() && e.id == op.eni_id)
            });
            let left = match found {
                Some(_) => None,
                None => match created_unattached(ec2, op, owner).await {
                    Ok(eni) => eni,
                    Err(e) => return Replayed::Keep(e),
                },
            };
            let result = match found.or(left.as_ref()) {
                Some(eni) => {
                    op.eni_id = eni.id.clone();
                    attach(ec2, eni, op.device_index.unwrap_or(1), &owner.instance_id).await
                }
                None => create_attach(ec2, op, owner).await.map(|_| ()),
            };
            match result {
                Ok(()) => Replayed::Done,
                // The ENI exists and the role may not attach it: keep the entry (and the ENI) for
                // when the grant is added. Giving up would leave the ENI behind (deleting it needs
                // the same grant) and the next growth would create another, one per round.
                Err(e) if e.kind == Ec2ErrorKind::Unauthorized && !op.eni_id.is_empty() => {
                    Replayed::Keep(e)
                }
                // The instance cannot take it, or the token no longer matches: give up; an ENI left
                // `available` is deleted here when known, else by GC after the grace.
                Err(e) if op.attempts + 1 >= MAX_ATTEMPTS || !e.kind.is_retryable() => {
                    if !op.eni_id.is_empty() && e.kind != Ec2ErrorKind::NotFound {
                        let _ = ec2.delete_eni(&op.eni_id).await;
                    }
                    tracing::warn!(op = %op.id, error = %e, "abandoning CreateENI");
                    Replayed::Abandoned("create could not be finished")
                }
                Err(e) => Replayed::Keep(e),
            }
        }
        // Count-based and release calls: the per-node sync shows what EC2 did; the release
        // handshake re-derives any unassign still needed from `status.releasing`.
        OperationKind::AssignIPs
        | OperationKind::AssignPrefixes
        | OperationKind::AssignIPv6Prefixes
        | OperationKind::UnassignIPs
        | OperationKind::UnassignPrefixes => Replayed::Abandoned("sync shows the outcome"),
        // Detach, then delete once EC2 reports the ENI `available`.
        OperationKind::DetachENI | OperationKind::DeleteENI => {
            let eni = match ec2.describe_enis(std::slice::from_ref(&op.eni_id)).await {
                Ok(v) => v.into_iter().next(),
                Err(e) => return Replayed::Keep(e),
            };
            let Some(eni) = eni else { return Replayed::Done };
            let r = match eni.attachment.as_ref() {
                // Validated before the replay; EC2 is asked again here, and an ENI that moved to
                // another instance meanwhile is not this pool's to detach.
                Some(a) if a.instance_id != owner.instance_id => {
                    return Replayed::Abandoned("attached to another instance")
                }
                Some(a) if a.status == "detaching" => return Replayed::Wait,
                // The entry was journaled for an empty ENI. Addresses on it now (assigned while
                // the detach kept failing) may be pods': detaching would take them away. A later
                // release decides again once the ENI is empty.
                Some(_) if !holds_only(&eni, offered) => {
                    tracing::warn!(op = %op.id, eni_id = %eni.id, ips = eni.secondary_ips.len(), prefixes = eni.prefixes.len(), "ENI release dropped: the ENI holds addresses again");
                    return Replayed::Abandoned("the ENI holds addresses not offered for release");
                }
                Some(a) => match ec2.detach_eni(&a.id, false).await {
                    Ok(()) => return Replayed::Wait, // deleted once EC2 reports it available
                    Err(e) => Err(e),
                },
                None => ec2.delete_eni(&eni.id).await,
            };
            match r {
                Ok(()) => Replayed::Done,
                Err(e) if e.kind == Ec2ErrorKind::NotFound => Replayed::Done,
                // A release that keeps failing (no permission, the ENI attached elsewhere, ...)
                // must not hold one of the pool's MAX_OPERATIONS journal slots forever: growth
                // needs them. Dropping it leaks nothing: an ENI still attached stays in the pool's
                // status (the sync shows it) and a later release decides again; one left
                // `available` with our tags is GC's after the leak grace.
                Err(e) if op.attempts + 1 >= MAX_ATTEMPTS || !e.kind.is_retryable() => {
                    tracing::warn!(op = %op.id, kind = ?op.kind, eni_id = %op.eni_id, error = %e, "abandoning ENI release");
                    Replayed::Abandoned("release could not be finished")
                }
                Err(e) => Replayed::Keep(e),
            }
        }
    }
}

/// What one replay of a pool's journal did.
#[derive(Debug, Default)]
pub struct Replay {
    /// The entries to keep.
    pub keep: Vec<Operation>,
    /// The errors of the entries kept after a failed attempt.
    pub errors: Vec<Ec2Error>,
    /// Every entry looked at: its kind and outcome (`finished`, `dropped`, `retry`, `waiting`),
    /// for `enipool_operator_journal_replays_total`.
    pub outcomes: Vec<(OperationKind, &'static str)>,
}

pub async fn replay(
    ec2: &dyn Ec2Api,
    ops: Vec<Operation>,
    owner: &Owner,
    attached: &[Eni],
    offered: &BTreeSet<String>,
) -> Replay {
    let mut r = Replay::default();
    for mut op in ops {
        let outcome = match replay_one(ec2, &mut op, owner, attached, offered).await {
            Replayed::Done => {
                tracing::info!(op = %op.id, kind = ?op.kind, "journal entry finished");
                "finished"
            }
            Replayed::Abandoned(why) => {
                tracing::info!(op = %op.id, kind = ?op.kind, why, "journal entry dropped");
                "dropped"
            }
            Replayed::Keep(e) => {
                op.attempts += 1;
                op.last_error = e.to_string();
                r.errors.push(e);
                "retry"
            }
            Replayed::Wait => "waiting",
        };
        r.outcomes.push((op.kind, outcome));
        if matches!(outcome, "retry" | "waiting") {
            r.keep.push(op);
        }
    }
    r
}

pub mod validate;

#[cfg(test)]
mod tests;
