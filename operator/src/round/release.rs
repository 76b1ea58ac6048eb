//! Scale down (the agent's offer, then journaled unassigns) and the release of emptied ENIs.

use super::{note, PoolRound, StatusSink};
use crate::error::Result;
use crate::journal;
use crate::plan;
use crate::plan::release::{self, ReleaseDecision, ReleaseInput};
use enipool_crds::OperationKind;
use std::collections::BTreeSet;
use std::time::Duration;

impl PoolRound<'_> {
    /// Release handshake (agent offers, operator unassigns). Returns addresses in flight
    /// (offered or releasing) that must not count as held.
    pub(super) async fn release(&mut self, sink: &dyn StatusSink, target: i32) -> Result<()> {
        for _ in 0..3 {
            let alloc = plan::allocated(&self.views, self.eff.first_interface_index);
            // Offered and releasing addresses are spoken for: they do not age again.
            let free = release::excess(&self.eff, self.held(), target);
            let age = self.shared.memory.observe_excess(&self.input.name, self.now.0, free);
            let decision = release::decide_release(&ReleaseInput {
                eff: &self.eff,
                target,
                allocated: alloc,
                excess_age: &age,
                now: self.now.0,
                request: self.st.release_request.as_ref(),
                released_revision: self.st.released_revision,
                releasing: self.st.releasing.as_ref(),
                agent: self.input.status.agent.as_ref(),
                enis: &self.st.enis,
            });
            match decision {
                ReleaseDecision::Idle | ReleaseDecision::AwaitOffer => return Ok(()),
                ReleaseDecision::Wait { remaining_secs, .. } => {
                    self.round.wake_in(Duration::from_secs(remaining_secs.max(1) as u64));
                    return Ok(());
                }
                ReleaseDecision::Request(r) => {
                    self.notes.push(note(
                        false,
                        "ReleaseRequested",
                        format!(
                            "asked the agent to offer {} addresses (revision {})",
                            r.count, r.revision
                        ),
                    ));
                    self.shared.memory.excess_requested(&self.input.name, r.count);
                    self.st.release_request = Some(r);
                    return Ok(());
                }
                ReleaseDecision::Commit(r) => {
                    // The intent is published before any EC2 call (invariant: release only
                    // what the agent offered, docs/design.md).
                    self.st.releasing = Some(r);
                    self.st.revision += 1;
                    self.write(sink).await?;
                }
                ReleaseDecision::Unassign(groups) => {
                    let mut ops = Vec::new();
                    for g in &groups {
                        if !g.ips.is_empty() {
                            ops.push(journal::new_op(
                                OperationKind::UnassignIPs,
                                &g.eni_id,
                                g.ips.len() as i32,
                                g.ips.clone(),
                                None,
                                &self.now,
                            ));
                        }
                        if !g.prefixes.is_empty() {
                            ops.push(journal::new_op(
                                OperationKind::UnassignPrefixes,
                                &g.eni_id,
                                g.prefixes.len() as i32,
                                g.prefixes.clone(),
                                None,
                                &self.now,
                            ));
                        }
                    }
                    let ids: Vec<String> = ops.iter().map(|o| o.id.clone()).collect();
                    self.st.operations.extend(ops.clone());
                    self.write(sink).await?;
                    let mut failed = None;
                    for op in &ops {
                        let r = if op.kind == OperationKind::UnassignIPs {
                            let ips: Vec<_> =
                                op.items.iter().filter_map(|i| i.parse().ok()).collect();
                            self.ec2().unassign_ips(&op.eni_id, &ips).await
                        } else {
                            let p: Vec<_> =
                                op.items.iter().filter_map(|i| i.parse().ok()).collect();
                            self.ec2().unassign_prefixes(&op.eni_id, &p).await
                        };
                        if let Err(e) = r {
                            self.round.note_error(&e);
                            failed = Some(e);
                            break;
                        }
                        self.shared.memory.unassigned(&self.input.name, &op.eni_id, &op.items);
                    }
                    self.st.operations.retain(|o| !ids.contains(&o.id));
                    self.sync().await?;
                    if failed.is_some() {
                        return Ok(());
                    }
                }
                ReleaseDecision::Finish { revision } => {
                    let n = self.st.releasing.as_ref().map(plan::releasing_addresses).unwrap_or(0);
                    self.st.released_revision = revision;
                    if self.st.releasing.take().is_some() {
                        self.st.revision += 1;
                    }
                    self.notes.push(note(
                        false,
                        "Released",
                        format!("released {n} addresses (revision {revision})"),
                    ));
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Addresses that count toward the target now ([`plan::held`]).
    pub(super) fn held(&self) -> i32 {
        let in_flight = plan::in_flight(&self.st, self.input.status.agent.as_ref());
        plan::held(&self.views, self.eff.first_interface_index, in_flight)
    }

    /// Detach (then, via the journal, delete) managed secondary ENIs left empty.
    pub(super) async fn release_empty(
        &mut self,
        sink: &dyn StatusSink,
        growing: bool,
    ) -> Result<()> {
        let busy = self.st.releasing.is_some()
            || !release::pending_releases(&self.st.operations).is_empty();
        let empty = release::empty_enis(&self.st.enis, &self.eff, growing, busy);
        if empty.is_empty() {
            return Ok(());
        }
        let ops: Vec<_> = empty
            .iter()
            .map(|id| journal::new_op(OperationKind::DetachENI, id, 0, vec![], None, &self.now))
            .collect();
        self.st.operations.extend(ops.iter().cloned());
        self.write(sink).await?;
        let attached = self.ec2().describe_instance_enis(&self.inst.id).await?;
        // The first attempt goes through the replay code (one path for detach-then-delete); its
        // outcomes are not replays, so they are not counted in the replay metric.
        let offered = release::offered_items(&self.st);
        let journal::Replay { keep, errors, .. } =
            journal::replay(self.ec2(), ops, &self.owner, &attached, &offered).await;
        for e in &errors {
            self.round.note_error(e);
        }
        let keep_ids: BTreeSet<String> = keep.iter().map(|o| o.id.clone()).collect();
        self.st.operations.retain(|o| {
            o.kind != OperationKind::DetachENI
                || keep_ids.contains(&o.id)
                || !empty.contains(&o.eni_id)
        });
        for o in self.st.operations.iter_mut() {
            if let Some(k) = keep.iter().find(|k| k.id == o.id) {
                *o = k.clone();
            }
        }
        self.notes.push(note(
            false,
            "ENIReleased",
            format!("detaching empty ENIs {}", empty.join(", ")),
        ));
        self.sync().await?;
        Ok(())
    }
}
