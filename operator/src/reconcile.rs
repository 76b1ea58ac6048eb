//! The EC2 half of a pool reconcile, testable without a Kubernetes client: observe EC2 (I/O) →
//! replay the journal (I/O) → plan (no I/O, `plan::*`) → act, journaled (I/O) → report (the new
//! status). Status is written through a [`StatusSink`] — before each batch of EC2 mutations (the
//! journal) and once at the end — so the kube glue in `controller.rs` only supplies the sink.

use crate::capacity::CapacityCache;
use crate::conditions::{self, Round};
use crate::ec2::{Ec2Api, Ec2Error, Ec2ErrorKind, Eni, Instance, Query};
use crate::error::{Error, Result};
use crate::journal::{self, Owner, MAX_OPERATIONS};
use crate::plan::placement::SubnetView;
use crate::plan::release::{self, ReleaseDecision, ReleaseInput};
use crate::plan::{self, Blocked, Demand, GrowthInput, Step};
use crate::sync::{self, SubnetCache, Synced};
use enipool_crds::settings::{self, EffectiveSettings, PREFIX_SIZE};
use enipool_crds::{
    ENIPoolPolicySpec, ENIPoolStatus, IpMode, OperationKind, PoolOverrides, SubnetState, Target,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a subnet that answered `InsufficientCidrBlocks` gets /32s instead of prefixes (the VPC
/// CNI waits 120 s before trying that subnet again).
const NO_CIDR_COOLDOWN_SECS: i64 = 120;

/// Process-wide state the pool reconciles share.
pub struct Shared {
    /// EC2.
    pub ec2: Arc<dyn Ec2Api>,
    /// Cluster name (tags, GC scope).
    pub cluster: String,
    /// `--vpc-cidrs` (empty = derive from subnets).
    pub vpc_cidrs: Vec<String>,
    /// Agent report older than this is stale.
    pub agent_stale_secs: i64,
    /// Periodic resync.
    pub resync: Duration,
    /// Instance-type limits.
    pub capacity: CapacityCache,
    /// Subnet CIDRs.
    pub subnets: SubnetCache,
    /// Per-node memory that may be lost on failover (losing it only delays a release).
    pub memory: Memory,
}

/// In-memory hints; none is needed for safety.
#[derive(Debug, Default)]
pub struct Memory {
    /// Pool → when the current excess was first seen.
    excess_since: Mutex<HashMap<String, Timestamp>>,
    /// Subnet → until when prefixes are not requested there.
    no_cidr: Mutex<HashMap<String, Timestamp>>,
    /// Subnet states as last seen (for policy status).
    pub subnet_states: Mutex<BTreeMap<String, SubnetState>>,
}

impl Memory {
    fn no_cidr_now(&self, now: Timestamp) -> BTreeSet<String> {
        let mut m = self.no_cidr.lock().expect("memory lock");
        m.retain(|_, until| *until > now);
        m.keys().cloned().collect()
    }

    /// Subnets where prefixes are not requested right now (no aligned /28 left).
    pub fn no_cidr_subnets(&self, now: Timestamp) -> BTreeSet<String> {
        self.no_cidr_now(now)
    }

    /// Subnet states as last seen by pool reconciles.
    pub fn subnet_states(&self) -> BTreeMap<String, SubnetState> {
        self.subnet_states.lock().expect("memory lock").clone()
    }

    fn note_subnet(&self, id: &str, zone: &str, available: i32, exhausted: bool, now: &Time) {
        let mut m = self.subnet_states.lock().expect("memory lock");
        m.insert(
            id.to_string(),
            SubnetState {
                id: id.into(),
                zone: zone.into(),
                available_ips: available,
                exhausted,
                last_checked: Some(now.clone()),
            },
        );
    }
}

/// What the reconcile knows about one pool (from the ENIPool, its Node and the chosen policy).
#[derive(Debug, Clone, Default)]
pub struct PoolInput {
    /// Pool (= node) name.
    pub name: String,
    /// Pool uid.
    pub uid: String,
    /// Pool generation.
    pub generation: Option<i64>,
    /// Instance id.
    pub instance_id: String,
    /// Chosen policy name ("" = defaults).
    pub policy_name: String,
    /// Chosen policy.
    pub policy: Option<ENIPoolPolicySpec>,
    /// Per-node overrides.
    pub overrides: Option<PoolOverrides>,
    /// `spec.paused`.
    pub paused: bool,
    /// Current status (the agent part included, read-only).
    pub status: ENIPoolStatus,
}

/// Writes the operator's part of a pool status (SSA; the agent part is never sent).
#[async_trait::async_trait]
pub trait StatusSink: Send + Sync {
    /// Write.
    async fn write(&self, status: &ENIPoolStatus) -> Result<()>;
}

/// Something worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning (else Normal).
    pub warning: bool,
    /// Stable reason.
    pub reason: &'static str,
    /// Human text.
    pub message: String,
}

/// Result of one reconcile.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The status as written.
    pub status: ENIPoolStatus,
    /// When to look again.
    pub requeue: Duration,
    /// Events to publish.
    pub notes: Vec<Note>,
}

/// The operator's fields only: what SSA sends.
pub fn operator_part(s: &ENIPoolStatus) -> ENIPoolStatus {
    ENIPoolStatus { agent: None, ..s.clone() }
}

struct Node<'a> {
    shared: &'a Shared,
    input: &'a PoolInput,
    inst: Instance,
    eff: EffectiveSettings,
    owner: Owner,
    st: ENIPoolStatus,
    views: Vec<plan::EniView>,
    now: Time,
    round: Round,
    notes: Vec<Note>,
}

impl Node<'_> {
    fn ec2(&self) -> &dyn Ec2Api {
        self.shared.ec2.as_ref()
    }

    /// Per-node sync (I/O): the instance's ENIs into status; bumps `revision` when they changed.
    async fn sync(&mut self) -> Result<Vec<Eni>> {
        let enis = match self.ec2().describe_instance_enis(&self.inst.id).await {
            Ok(e) => e,
            Err(e) => {
                self.round.sync_error = Some(e.to_string());
                self.round.note_error(&e);
                return Err(e.into());
            }
        };
        let ids: Vec<String> =
            enis.iter().map(|e| e.subnet_id.clone()).chain([self.inst.subnet_id.clone()]).collect();
        let subnets = self.shared.subnets.get(self.ec2(), &ids).await?;
        let exclude = self
            .input
            .policy
            .as_ref()
            .map(|p| p.eni.exclude_interface_tags.clone())
            .unwrap_or_default();
        let Synced { enis: published, views } =
            sync::build(&enis, &subnets, &exclude, &self.shared.cluster);
        if published != self.st.enis {
            self.st.enis = published;
            self.st.revision += 1;
        }
        self.views = views;
        self.st.instance = Some(sync::instance_info(&self.inst, &self.shared.vpc_cidrs, &subnets));
        self.round.synced = true;
        Ok(enis)
    }

    async fn write(&self, sink: &dyn StatusSink) -> Result<()> {
        sink.write(&operator_part(&self.st)).await
    }

    /// Release handshake (agent offers, operator unassigns). Returns addresses in flight
    /// (offered or releasing) that must not count as held.
    async fn release(&mut self, sink: &dyn StatusSink, target: i32) -> Result<()> {
        for _ in 0..3 {
            let alloc = plan::allocated(&self.views, self.eff.first_interface_index);
            let over = release::excess(&self.eff, alloc, target) > 0;
            let held = {
                let mut m = self.shared.memory.excess_since.lock().expect("memory lock");
                if over {
                    let since = *m.entry(self.input.name.clone()).or_insert(self.now.0);
                    self.now.0.duration_since(since).as_secs()
                } else {
                    m.remove(&self.input.name);
                    0
                }
            };
            let decision = release::decide_release(&ReleaseInput {
                eff: &self.eff,
                target,
                allocated: alloc,
                excess_held_secs: held,
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
                    self.st.release_request = Some(r);
                    self.shared
                        .memory
                        .excess_since
                        .lock()
                        .expect("memory lock")
                        .remove(&self.input.name);
                    return Ok(());
                }
                ReleaseDecision::Commit(r) => {
                    // Invariant 3: the intent is published before any EC2 call.
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
                    }
                    self.st.operations.retain(|o| !ids.contains(&o.id));
                    self.sync().await?;
                    if failed.is_some() {
                        return Ok(());
                    }
                }
                ReleaseDecision::Finish { revision } => {
                    let n = self
                        .st
                        .releasing
                        .as_ref()
                        .map(|r| r.ips.len() + r.prefixes.len() * PREFIX_SIZE as usize)
                        .unwrap_or(0);
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

    /// Addresses offered or releasing: held in EC2 but unusable by the agent.
    fn in_flight(&self) -> i32 {
        let releasing = self
            .st
            .releasing
            .as_ref()
            .map(|r| r.ips.len() as i32 + r.prefixes.len() as i32 * PREFIX_SIZE)
            .unwrap_or(0);
        let outstanding =
            self.st.release_request.as_ref().filter(|r| r.revision > self.st.released_revision);
        let offered = match (
            outstanding,
            self.input.status.agent.as_ref().and_then(|a| a.releasable.as_ref()),
        ) {
            (Some(req), Some(o)) if o.revision == req.revision && self.st.releasing.is_none() => {
                o.ips.len() as i32 + o.prefixes.len() as i32 * PREFIX_SIZE
            }
            _ => 0,
        };
        releasing + offered
    }

    async fn candidate_subnets(&mut self) -> Result<Vec<SubnetView>> {
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
        let found = self.ec2().describe_subnets(&q).await?;
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

    async fn security_groups(&self) -> Result<Vec<String>> {
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
    async fn grow(&mut self, sink: &dyn StatusSink, target: i32) -> Result<i32> {
        let held = plan::allocated(&self.views, self.eff.first_interface_index) - self.in_flight();
        let deficit = target - held;
        if deficit <= 0 {
            return Ok(0);
        }
        let no_cidr = self.shared.memory.no_cidr_now(self.now.0);
        let slots = (self.eff.capacity.ips_per_eni - 1).max(0);
        let mut subnets: Option<Vec<SubnetView>> = None;
        let growth = loop {
            let g = plan::plan_growth(&GrowthInput {
                enis: &self.views,
                deficit,
                prefixes: self.eff.mode.uses_prefixes(),
                allow_fallback: self.eff.mode == IpMode::PrefixWithFallback,
                no_cidr_subnets: &no_cidr,
                first_interface_index: self.eff.first_interface_index,
                max_enis: self.eff.capacity.max_enis,
                slots_per_eni: slots,
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
        let mut added = 0;
        for (step, mut op) in growth.steps.iter().zip(ops) {
            let result = match step {
                Step::AssignIps { eni_id, count } => {
                    self.ec2().assign_ips(eni_id, *count).await.map(|v| v.len())
                }
                Step::AssignPrefixes { eni_id, count } => {
                    self.ec2().assign_prefixes(eni_id, *count).await.map(|v| v.len() * 16)
                }
                Step::CreateEni { .. } => journal::create_attach(self.ec2(), &mut op, &self.owner)
                    .await
                    .map(|_| step.addresses() as usize),
            };
            let keep = match result {
                Ok(n) => {
                    added += n as i32;
                    false
                }
                Err(e) => {
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
        self.sync().await?;
        let held = plan::allocated(&self.views, self.eff.first_interface_index) - self.in_flight();
        Ok((target - held).max(0))
    }

    fn step_failed(&mut self, step: &Step, e: &Ec2Error) {
        let subnet = match step {
            Step::CreateEni { subnet_id, .. } => Some(subnet_id.clone()),
            Step::AssignIps { eni_id, .. } | Step::AssignPrefixes { eni_id, .. } => {
                self.st.enis.iter().find(|x| &x.id == eni_id).map(|x| x.subnet_id.clone())
            }
        };
        match e.kind {
            Ec2ErrorKind::NoCidrBlocks => {
                if let Some(s) = subnet {
                    let until = self.now.0
                        + k8s_openapi::jiff::SignedDuration::from_secs(NO_CIDR_COOLDOWN_SECS);
                    self.shared.memory.no_cidr.lock().expect("memory lock").insert(s, until);
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
            _ => {}
        }
    }

    /// Detach (then, via the journal, delete) managed secondary ENIs left empty.
    async fn release_empty(&mut self, sink: &dyn StatusSink, growing: bool) -> Result<()> {
        let busy = self.st.releasing.is_some()
            || self.st.operations.iter().any(|o| o.kind == OperationKind::DetachENI);
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
        let (keep, errors) = journal::replay(self.ec2(), ops, &self.owner, &attached).await;
        for e in errors.iter().filter(|e| e.code != "Detaching") {
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

fn note(warning: bool, reason: &'static str, message: String) -> Note {
    Note { warning, reason, message }
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

/// Reconcile one pool against EC2 and return the status written.
pub async fn reconcile_pool(
    shared: &Shared,
    input: &PoolInput,
    sink: &dyn StatusSink,
) -> Result<Outcome> {
    let now = Time(Timestamp::now());
    let before = operator_part(&input.status);
    let inst = shared
        .ec2
        .describe_instances(std::slice::from_ref(&input.instance_id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::InstanceNotFound(input.instance_id.clone()))?;
    let (limits, source) = shared.capacity.limits(&inst.instance_type).await;
    let eff = settings::resolve(input.policy.as_ref(), input.overrides.as_ref(), limits, source);
    let owner = Owner {
        cluster: shared.cluster.clone(),
        node: input.name.clone(),
        instance_id: inst.id.clone(),
        pool_uid: input.uid.clone(),
        extra_tags: input.policy.as_ref().map(|p| p.eni.extra_tags.clone()).unwrap_or_default(),
    };
    let mut n = Node {
        shared,
        input,
        inst,
        eff,
        owner,
        st: input.status.clone(),
        views: vec![],
        now: now.clone(),
        round: Round::new(shared.resync),
        notes: vec![],
    };
    n.st.effective = Some(n.eff.clone());
    n.st.policy = Some(input.policy_name.clone());
    n.st.observed_generation = input.generation;

    let running = n.inst.state == "running";
    if let Ok(attached) = n.sync().await {
        if !input.status.operations.is_empty() && running && !input.paused {
            let (keep, errors) =
                journal::replay(n.ec2(), input.status.operations.clone(), &n.owner, &attached)
                    .await;
            errors.iter().filter(|e| e.code != "Detaching").for_each(|e| n.round.note_error(e));
            if keep.len() != n.st.operations.len() || keep != n.st.operations {
                n.st.operations = keep;
                let _ = n.sync().await;
            }
        }
    }
    let agent = input.status.agent.as_ref();
    let demand = Demand {
        in_use: agent.map(|a| a.in_use).unwrap_or(0),
        pending_pods: agent.map(|a| a.pending_pods).unwrap_or(0),
    };
    let target = plan::compute_target(&n.eff, demand);
    n.st.target = Some(Target { ips: target.ips, reason: target.reason.into() });
    let mut missing = 0;
    if n.round.synced && running && !input.paused {
        n.release(sink, target.ips).await?;
        if !n.round.stop_mutations() {
            missing = n.grow(sink, target.ips).await?;
        }
        if !n.round.stop_mutations() {
            n.release_empty(sink, missing > 0).await?;
        }
    }
    if !n.st.operations.is_empty() {
        n.round.wake_in(Duration::from_secs(5));
    }
    conditions::apply(&mut n.st, &n.round, &n.eff, target, missing, shared.agent_stale_secs, &now);
    n.st.summary = Some(enipool_crds::summary::summarize(&n.st));
    n.notes.extend(conditions::notes(&before.conditions, &n.st.conditions));

    let mut after = operator_part(&n.st);
    after.last_ec2_sync = before.last_ec2_sync.clone();
    let stale_sync =
        before.last_ec2_sync.as_ref().is_none_or(|t| now.0.duration_since(t.0).as_secs() > 600);
    if after != before || (stale_sync && n.round.synced) {
        if n.round.synced {
            n.st.last_ec2_sync = Some(now.clone());
        }
        n.write(sink).await?;
    }
    if let Some(e) = n.round.sync_error.clone() {
        tracing::warn!(pool = %input.name, error = %e, "EC2 sync failed; mutations blocked for this node");
    }
    Ok(Outcome { requeue: n.round.requeue(), status: n.st, notes: n.notes })
}

#[cfg(test)]
mod tests;
