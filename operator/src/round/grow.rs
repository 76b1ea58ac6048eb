//! Scale up: plan the fewest calls (pure, `plan::placement`), journal them, make them, sync.

use super::unconfirmed::Change;
use super::{note, PoolRound, StatusSink};
use crate::ec2::{Ec2Error, Ec2ErrorKind, Query};
use crate::error::Result;
use crate::journal::{self, MAX_OPERATIONS};
use crate::plan::placement::SubnetView;
use crate::plan::{self, Blocked, EniView, GrowthInput, Step};
use enipool_crds::{IpMode, OperationKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeSet;
use std::time::Duration;

impl PoolRound<'_> {
    pub(super) async fn candidate_subnets(&mut self) -> Result<Vec<SubnetView>> {
        let placement =
            self.input.policy.as_ref().and_then(|p| p.eni.subnets.clone()).unwrap_or_default();
        let mut q = Query {
            vpc_id: Some(self.inst.vpc_id.clone()),
            zone: Some(self.inst.zone.clone()),
            ..Default::default()
        };
        if !placement.ids.is_empty() {
            q.ids = placement.ids;
        } else if !placement.tags.is_empty() {
            q.tags = placement.tags;
        } else {
            q.ids = vec![self.inst.subnet_id.clone()];
        }
        let mut found = self.ec2().describe_subnets(&q).await?;
        found.retain(|s| plan::placement::subnet_allowed(&s.tags));
        for s in &found {
            self.shared.memory.note_subnet(
                &s.id,
                &s.zone,
                s.available_ips,
                s.available_ips < 2,
                &self.now,
            );
        }
        Ok(found.into_iter().map(|s| SubnetView { id: s.id, available: s.available_ips }).collect())
    }

    pub(super) async fn security_groups(&self) -> Result<Vec<String>> {
        let sel = self
            .input
            .policy
            .as_ref()
            .and_then(|p| p.eni.security_groups.clone())
            .unwrap_or_default();
        if !sel.ids.is_empty() {
            return Ok(sel.ids);
        }
        if sel.tags.is_empty() {
            return Ok(self.inst.security_groups.clone());
        }
        let q =
            Query { vpc_id: Some(self.inst.vpc_id.clone()), tags: sel.tags, ..Default::default() };
        Ok(self.ec2().describe_security_groups(&q).await?.into_iter().map(|g| g.id).collect())
    }

    /// Scale up: plan (no I/O), journal + write, then the calls (I/O), then sync.
    pub(super) async fn grow(&mut self, sink: &dyn StatusSink, target: i32) -> Result<i32> {
        let deficit = plan::deficit(target, self.held());
        if deficit == 0 {
            return Ok(0);
        }
        let no_cidr = self.shared.memory.no_cidr_subnets(self.now.0);
        let releasing = plan::release::pending_releases(&self.st.operations);
        let mut subnets: Option<Vec<SubnetView>> = None;
        let growth = loop {
            let g = plan::plan_growth(&GrowthInput {
                enis: &self.views,
                deficit,
                prefixes: self.eff.mode.uses_prefixes(),
                allow_fallback: self.eff.mode == IpMode::PrefixWithFallback,
                no_cidr_subnets: &no_cidr,
                releasing_enis: &releasing,
                first_interface_index: self.eff.first_interface_index,
                max_enis: self.eff.capacity.max_enis,
                create_enis: self.shared.memory.may_create_enis(self.now.0),
                slots_per_eni: plan::slots_per_eni(&self.eff),
                subnets: subnets.as_deref(),
                max_steps: MAX_OPERATIONS.saturating_sub(self.st.operations.len()),
            });
            if g.blocked == Some(Blocked::NeedSubnets) && subnets.is_none() {
                subnets = Some(self.candidate_subnets().await?);
                continue;
            }
            break g;
        };
        match growth.blocked {
            Some(Blocked::Subnets) => self.round.subnet_exhausted = true,
            Some(Blocked::Capacity) => self.round.capacity_exhausted = true,
            Some(Blocked::EniQuota) => self.round.eni_quota = true,
            _ => {}
        }
        if growth.steps.is_empty() {
            return Ok(deficit);
        }
        let sgs = if growth.steps.iter().any(|s| matches!(s, Step::CreateEni { .. })) {
            self.security_groups().await?
        } else {
            vec![]
        };
        let ops: Vec<_> = growth.steps.iter().map(|s| step_op(s, &sgs, &self.now)).collect();
        self.st.operations.extend(ops.iter().cloned());
        self.write(sink).await?; // the journal, before the calls
        let (mut added, mut failed) = (0, false);
        for (step, mut op) in growth.steps.iter().zip(ops) {
            let result = match step {
                Step::AssignIps { eni_id, count } => self
                    .ec2()
                    .assign_ips(eni_id, *count)
                    .await
                    .map(|ips| (ips.len(), Change::AssignedIps { eni_id: eni_id.clone(), ips })),
                Step::AssignPrefixes { eni_id, count } => {
                    self.ec2().assign_prefixes(eni_id, *count).await.map(|prefixes| {
                        let n = prefixes.len() * 16;
                        (n, Change::AssignedPrefixes { eni_id: eni_id.clone(), prefixes })
                    })
                }
                Step::CreateEni { subnet_id, device_index, ips, prefixes } => {
                    journal::create_attach(self.ec2(), &mut op, &self.owner).await.map(|id| {
                        let view = EniView {
                            id,
                            device_index: *device_index,
                            subnet_id: subnet_id.clone(),
                            ips: *ips,
                            prefixes: *prefixes,
                            ipv6_prefixes: 0,
                            excluded: false,
                            managed: true,
                            attached: true,
                        };
                        (step.addresses() as usize, Change::Created(view))
                    })
                }
            };
            let keep = match result {
                Ok((n, change)) => {
                    added += n as i32;
                    // Until a describe shows it, so a lagging describe does not make it again.
                    self.shared.memory.made(&self.input.name, change);
                    false
                }
                Err(e) => {
                    failed = true;
                    self.round.note_error(&e);
                    self.step_failed(step, &e);
                    // A created-but-unattached ENI, or an ambiguous create, is left to the replay.
                    matches!(step, Step::CreateEni { .. })
                        && (!op.eni_id.is_empty() || e.kind == Ec2ErrorKind::Transient)
                }
            };
            let slot = self.st.operations.iter_mut().find(|o| o.id == op.id);
            match (keep, slot) {
                (true, Some(o)) => {
                    o.eni_id = op.eni_id.clone();
                    o.attempts += 1;
                    o.last_error = self.round.last_error.clone();
                }
                _ => self.st.operations.retain(|o| o.id != op.id),
            }
            if self.round.stop_mutations() {
                break;
            }
        }
        // Steps never sent are not in flight.
        let sent: BTreeSet<String> =
            self.st.operations.iter().filter(|o| o.attempts > 0).map(|o| o.id.clone()).collect();
        self.st.operations.retain(|o| {
            !matches!(
                o.kind,
                OperationKind::CreateENI | OperationKind::AssignIPs | OperationKind::AssignPrefixes
            ) || sent.contains(&o.id)
        });
        if added > 0 {
            self.notes.push(note(
                false,
                "Allocated",
                format!("added {added} addresses toward target {target}"),
            ));
        }
        // Assigns that all answered leave nothing a describe would add: their answers are what
        // EC2 did. A created ENI, or a failed call that may have been done, is described.
        let created = growth.steps.iter().any(|s| matches!(s, Step::CreateEni { .. }));
        if failed || created {
            self.sync().await?;
        } else {
            self.show();
        }
        Ok(plan::deficit(target, self.held()))
    }

    pub(super) fn step_failed(&mut self, step: &Step, e: &Ec2Error) {
        let subnet = match step {
            Step::CreateEni { subnet_id, .. } => Some(subnet_id.clone()),
            Step::AssignIps { eni_id, .. } | Step::AssignPrefixes { eni_id, .. } => {
                self.st.enis.iter().find(|x| &x.id == eni_id).map(|x| x.subnet_id.clone())
            }
        };
        match e.kind {
            Ec2ErrorKind::NoCidrBlocks => {
                if let Some(s) = subnet {
                    self.shared.memory.avoid_prefixes_in(s, self.now.0);
                }
                if self.eff.mode == IpMode::PrefixWithFallback {
                    self.round.wake_in(Duration::from_secs(1)); // next round asks for /32s there
                } else {
                    self.round.subnet_exhausted = true;
                }
            }
            Ec2ErrorKind::SubnetFull => {
                self.round.subnet_exhausted = true;
                if let Some(s) = subnet {
                    self.shared.memory.note_subnet(&s, &self.inst.zone, 0, true, &self.now);
                }
            }
            Ec2ErrorKind::AttachmentLimit | Ec2ErrorKind::AddressLimit => {
                self.round.capacity_exhausted = true
            }
            Ec2ErrorKind::EniQuota => {
                self.round.eni_quota = true;
                self.shared.memory.eni_quota_reached(self.now.0);
            }
            _ => {}
        }
    }
}

/// The journal entry of a growth step.
fn step_op(step: &Step, sgs: &[String], now: &Time) -> enipool_crds::Operation {
    match step {
        Step::AssignIps { eni_id, count } => {
            journal::new_op(OperationKind::AssignIPs, eni_id, *count, vec![], None, now)
        }
        Step::AssignPrefixes { eni_id, count } => {
            journal::new_op(OperationKind::AssignPrefixes, eni_id, *count, vec![], None, now)
        }
        Step::CreateEni { subnet_id, device_index, ips, prefixes } => journal::new_op(
            OperationKind::CreateENI,
            "",
            if *prefixes > 0 { *prefixes } else { *ips },
            journal::create_items(subnet_id, sgs, *prefixes > 0),
            Some(*device_index),
            now,
        ),
    }
}
