//! What the status read back asks the operator to finish — the journal and `releasing` — is
//! checked before anything is done (the describes here, the verdicts `journal::validate`'s): the
//! entries EC2 confirms are replayed, the others are dropped with a Warning and counted, never
//! acted on, and every entry dropped is removed from the stored status whoever wrote it.

use super::{note, Note, PoolRound, StatusSink};
use crate::ec2::Eni;
use crate::error::{Error, Result};
use crate::journal::{self, validate};
use enipool_crds::{Operation, OperationKind};
use serde_json::json;
use std::collections::BTreeMap;
use validate::{CreateRules, Facts, Reason, Verdict};

/// Event reason of a rejected journal entry or `releasing`.
pub const REJECTED: &str = "JournalEntryRejected";

/// One part of the stored status to remove, with what it held when read (its guard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// `status.operations[index]`, whose id was `id`.
    Operation {
        /// Position in the status read.
        index: usize,
        /// The entry's id there.
        id: String,
    },
    /// `status.releasing`, whose revision was `revision`.
    Releasing {
        /// Its revision when read.
        revision: i64,
    },
}

/// The JSON patch (RFC 6902) removing `removals`: every guard first, so a status changed since it
/// was read fails the whole patch and nothing is removed; then the removals, list items from the
/// last so the earlier indexes stay valid.
pub fn removal_patch(removals: &[Removal]) -> serde_json::Value {
    let mut entries: Vec<(usize, &str)> = removals
        .iter()
        .filter_map(|r| match r {
            Removal::Operation { index, id } => Some((*index, id.as_str())),
            Removal::Releasing { .. } => None,
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    entries.dedup_by_key(|e| e.0);
    let releasing = removals.iter().find_map(|r| match r {
        Removal::Releasing { revision } => Some(*revision),
        Removal::Operation { .. } => None,
    });
    let mut tests = Vec::new();
    let mut removes = Vec::new();
    for (index, id) in entries {
        let path = format!("/status/operations/{index}");
        tests.push(json!({"op": "test", "path": format!("{path}/id"), "value": id}));
        removes.push(json!({"op": "remove", "path": path}));
    }
    if let Some(revision) = releasing {
        tests.push(json!({"op": "test", "path": "/status/releasing/revision", "value": revision}));
        removes.push(json!({"op": "remove", "path": "/status/releasing"}));
    }
    tests.extend(removes);
    serde_json::Value::Array(tests)
}

impl PoolRound<'_> {
    /// Check the journal and `releasing` read back (describes only), replay the entries that hold
    /// up (not while paused; a frozen pool does replay), drop the others, and remove what was dropped from the stored status.
    /// A failed removal is only logged: what it would remove is never acted on, and is judged
    /// again next round.
    pub(super) async fn settle(&mut self, sink: &dyn StatusSink, attached: &[Eni]) {
        let read = self.input.status.operations.clone();
        let mut removals = Vec::new();
        if !read.is_empty() {
            self.settle_journal(&read, attached).await;
            let kept = |id: &str| self.st.operations.iter().any(|o| o.id == id);
            removals.extend(
                read.iter()
                    .enumerate()
                    .filter(|(_, o)| !kept(&o.id))
                    .map(|(index, o)| Removal::Operation { index, id: o.id.clone() }),
            );
        }
        if let Some(r) = validate::releasing(&self.st) {
            let revision = self.st.releasing.take().map(|r| r.revision).unwrap_or_default();
            // The agent stops holding the items back (saturating: the revision read is untrusted).
            self.st.revision = self.st.revision.saturating_add(1);
            self.reject(r.reason, validate::releasing_message(&r), "status.releasing".into());
            removals.push(Removal::Releasing { revision });
        }
        if removals.is_empty() {
            return;
        }
        if let Err(error) = sink.remove(&removals).await {
            tracing::warn!(pool = %self.input.name, %error, "removing dropped entries from the status failed; they are judged again next round");
        }
    }

    async fn settle_journal(&mut self, read: &[Operation], attached: &[Eni]) {
        let verdicts = self.judge(read, attached).await;
        let mut act = Vec::new();
        let mut kept = Vec::new();
        for (at, (op, verdict)) in read.iter().zip(verdicts).enumerate() {
            match verdict {
                Verdict::Act => act.push(op.clone()),
                Verdict::Unverified => kept.push(op.clone()),
                Verdict::Reject(r) => {
                    let field = format!("status.operations[{at}]");
                    self.reject(r.reason, validate::message(op, &r), field);
                }
            }
        }
        let replay = !act.is_empty() && self.gate.may_replay();
        if replay {
            let offered = crate::plan::release::offered_items(&self.st);
            let r = journal::replay(self.ec2(), act, &self.owner, attached, &offered).await;
            r.errors.iter().for_each(|e| self.round.note_error(e));
            self.replays = r.outcomes;
            kept.extend(r.keep);
        } else {
            kept.extend(act);
        }
        kept.sort_by_key(|o| read.iter().position(|r| r.id == o.id));
        if kept != self.st.operations {
            self.st.operations = kept;
            if replay {
                let _ = self.sync().await;
            }
        }
    }

    /// The verdict of every entry, in order (I/O: describes of the ENIs the entries name and, for
    /// a CreateENI, of the subnets and security groups growth would use).
    async fn judge(&mut self, read: &[Operation], attached: &[Eni]) -> Vec<Verdict> {
        let mut ids: Vec<String> =
            read.iter().filter(|o| validate::needs_describe(o)).map(|o| o.eni_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let described: Option<BTreeMap<String, Eni>> = if ids.is_empty() {
            Some(BTreeMap::new())
        } else {
            match self.ec2().describe_enis(&ids).await {
                Ok(found) => Some(found.into_iter().map(|e| (e.id.clone(), e)).collect()),
                Err(e) => {
                    self.round.note_error(&e);
                    None
                }
            }
        };
        let creates = read
            .iter()
            .any(|o| o.kind == OperationKind::CreateENI && validate::is_operator_id(&o.id));
        let rules = if creates {
            match self.create_rules().await {
                Ok(r) => Some(r),
                Err(error) => {
                    if let Error::Ec2(e) = &error {
                        self.round.note_error(e);
                    }
                    tracing::warn!(pool = %self.input.name, %error, "CreateENI entries not verified this round");
                    None
                }
            }
        } else {
            None
        };
        let facts = Facts {
            cluster: &self.shared.cluster,
            instance_id: &self.inst.id,
            attached,
            described: described.as_ref(),
            create: rules.as_ref(),
        };
        read.iter().map(|o| validate::check(o, &facts)).collect()
    }

    /// What growth would create now: its subnets and security groups (the same selection), and
    /// the instance's limits.
    async fn create_rules(&mut self) -> Result<CreateRules> {
        let subnets = self.candidate_subnets().await?.into_iter().map(|s| s.id).collect();
        let security_groups = self.security_groups().await?.into_iter().collect();
        Ok(CreateRules {
            subnets,
            security_groups,
            max_enis: self.eff.capacity.max_enis,
            slots_per_eni: (self.eff.capacity.ips_per_eni - 1).max(0),
        })
    }

    /// Drop with a Warning on the entry's `field` (its own Event series: one per place in the
    /// status, so a journal full of forged entries makes a bounded number of Events).
    fn reject(&mut self, reason: Reason, message: String, field: String) {
        tracing::warn!(pool = %self.input.name, reason = reason.as_str(), %message, "status entry rejected");
        self.rejected.push(reason.as_str());
        self.notes.push(Note { field_path: Some(field), ..note(true, REJECTED, message) });
    }
}

#[cfg(test)]
mod tests;
