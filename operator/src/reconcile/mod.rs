//! The EC2 half of a pool reconcile, testable without a Kubernetes client: observe EC2 (I/O) →
//! check what the status read back asks to finish against EC2 and replay the journal (I/O,
//! `verify.rs`) → plan (no I/O, `plan::*`) → act, journaled (I/O) → report (the new
//! status). Status is written through a [`StatusSink`] — before each batch of EC2 mutations (the
//! journal) and once at the end — so the kube glue in `controller.rs` only supplies the sink.

use crate::capacity::CapacityCache;
use crate::conditions::{self, Round};
use crate::ec2::{Ec2Api, Eni, Instance};
use crate::error::{Error, Result};
use crate::journal::Owner;
use crate::plan::{self, Demand};
use crate::resync::ResyncPeriod;
use crate::sync::{self, SubnetCache, Synced};
use crate::vpc::{self, VpcCidrs};
use enipool_crds::settings::{self, EffectiveSettings};
use enipool_crds::{
    ENIPoolPolicySpec, ENIPoolStatus, OperationKind, PoolOverrides, SubnetState, Target,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a subnet that answered `InsufficientCidrBlocks` gets /32s instead of prefixes (the VPC
/// CNI waits 120 s before trying that subnet again).
pub(super) const NO_CIDR_COOLDOWN_SECS: i64 = 120;

/// Process-wide state the pool reconciles share.
pub struct Shared {
    /// EC2.
    pub ec2: Arc<dyn Ec2Api>,
    /// Cluster name (tags, GC scope).
    pub cluster: String,
    /// The VPC CIDR blocks published to agents (`--vpc-cidrs`, else DescribeVpcs, cached).
    pub vpc: VpcCidrs,
    /// Agent report older than this is stale.
    pub agent_stale_secs: i64,
    /// The configured resync period (the minimum; see `resync_period`).
    pub resync: Duration,
    /// The resync period in force, grown with the number of pools to fit the describe budget.
    pub resync_period: ResyncPeriod,
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
    /// Pool → how long each part of its excess has lasted.
    excess: Mutex<HashMap<String, crate::plan::release::ExcessTimer>>,
    /// Subnet → until when prefixes are not requested there.
    no_cidr: Mutex<HashMap<String, Timestamp>>,
    /// Subnet states as last seen (for policy status).
    pub subnet_states: Mutex<BTreeMap<String, SubnetState>>,
    /// Pool → (fingerprint of the inputs it was left in, until when nothing needs doing).
    quiet: Mutex<HashMap<String, (u64, std::time::Instant)>>,
    /// (pool, reason) → when the last Warning Event for a failed reconcile went out.
    warned: Mutex<HashMap<(String, &'static str), std::time::Instant>>,
    /// Pool → changes made that EC2's describes did not show yet.
    unconfirmed: Mutex<HashMap<String, Vec<unconfirmed::Pending>>>,
}

/// At most one Warning Event per pool and failure category this often (the Recorder folds the
/// repeats into the Event's series; between them the failure shows on the pool's conditions).
pub const FAILURE_EVENT_EVERY: Duration = Duration::from_secs(300);

/// What a reconcile decides on (spec, policy, agent report, the operator's own ENIs, journal and
/// release state), without timestamps and conditions. Equal fingerprints before the requeue
/// deadline mean the only change since the last round was that round's own status write.
pub fn fingerprint(input: &PoolInput, status: &ENIPoolStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let text = serde_json::to_string(&(
        input.generation,
        &input.policy_name,
        &input.policy,
        &input.overrides,
        input.paused,
        &status.agent,
        &status.enis,
        &status.operations,
        &status.release_request,
        &status.releasing,
        status.released_revision,
        status.revision,
    ))
    .unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl Memory {
    /// Time left before `pool` needs EC2 again, when its inputs are exactly as the last round
    /// left them (a watch event of our own write); `None` = reconcile now. Journal entries the
    /// round kept are retried at its requeue deadline, not at once: an entry failing on every
    /// attempt (a missing IAM grant) would otherwise be retried on each watch event of the
    /// status write recording the failure.
    pub fn quiet_for(&self, pool: &str, input: &PoolInput) -> Option<Duration> {
        let m = self.quiet.lock().expect("memory lock");
        let (fp, until) = m.get(pool)?;
        let left = until.checked_duration_since(std::time::Instant::now())?;
        (*fp == fingerprint(input, &input.status)).then_some(left)
    }

    /// Remember how a round left `pool` and when it wants to look again.
    pub fn left_quiet(&self, pool: &str, input: &PoolInput, out: &Outcome) {
        let fp = fingerprint(input, &out.status);
        let until = std::time::Instant::now() + out.requeue;
        self.quiet.lock().expect("memory lock").insert(pool.to_string(), (fp, until));
    }

    /// Forget a pool (deleted), or how a round left it (a round failed: the retry must run).
    pub fn forget(&self, pool: &str) {
        self.quiet.lock().expect("memory lock").remove(pool);
    }

    /// Record `pool`'s excess seen now and return how long each part of it has lasted.
    pub fn observe_excess(
        &self,
        pool: &str,
        now: Timestamp,
        excess: i32,
    ) -> crate::plan::release::ExcessTimer {
        let mut m = self.excess.lock().expect("memory lock");
        let timer = m.entry(pool.to_string()).or_default();
        timer.observe(now, excess);
        let age = timer.clone();
        if excess <= 0 {
            m.remove(pool);
        }
        age
    }

    /// `count` addresses of `pool`'s excess were asked for.
    pub fn excess_requested(&self, pool: &str, count: i32) {
        if let Some(t) = self.excess.lock().expect("memory lock").get_mut(pool) {
            t.consume(count);
        }
    }

    /// Remember a change made to `pool`'s ENIs until a describe shows it.
    pub fn made(&self, pool: &str, change: unconfirmed::Change) {
        let until = Instant::now() + unconfirmed::KEEP;
        let mut m = self.unconfirmed.lock().expect("memory lock");
        m.entry(pool.to_string()).or_default().push(unconfirmed::Pending { change, until });
    }

    /// Count the changes made to `pool` that `described` does not show yet in `views`.
    pub fn overlay(&self, pool: &str, described: &[Eni], views: &mut Vec<plan::EniView>) {
        let mut m = self.unconfirmed.lock().expect("memory lock");
        let Some(pending) = m.remove(pool) else { return };
        let kept = unconfirmed::overlay(pending, described, views, Instant::now());
        if !kept.is_empty() {
            m.insert(pool.to_string(), kept);
        }
    }

    /// Forget the changes made to a deleted pool.
    pub fn forget_changes(&self, pool: &str) {
        self.unconfirmed.lock().expect("memory lock").remove(pool);
    }

    /// Whether a Warning Event for a failed reconcile of `pool` with `reason` may go out at `now`
    /// (none did within [`FAILURE_EVENT_EVERY`]); when it may, `now` is remembered.
    pub fn failure_event_due(&self, pool: &str, reason: &'static str, now: Instant) -> bool {
        let mut m = self.warned.lock().expect("memory lock");
        m.retain(|_, at| now.saturating_duration_since(*at) < FAILURE_EVENT_EVERY);
        if m.contains_key(&(pool.to_string(), reason)) {
            return false;
        }
        m.insert((pool.to_string(), reason), now);
        true
    }
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
    /// Remove entries the reconcile dropped from the stored status, whoever wrote them: SSA only
    /// removes what the operator itself applied, so an entry written under another field manager
    /// would outlive every write. Guarded by what was read (see [`removal_patch`]).
    async fn remove(&self, removals: &[Removal]) -> Result<()>;
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
    /// The part of the pool the Event is about (`status.operations[2]`), when not all of it.
    /// Events differing in it are not folded into one series.
    pub field_path: Option<String>,
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
    /// The journal entries replayed this round: kind and outcome (for metrics).
    pub replays: Vec<(OperationKind, &'static str)>,
    /// The reasons of the entries read back and rejected this round (for metrics).
    pub rejected: Vec<&'static str>,
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
    replays: Vec<(OperationKind, &'static str)>,
    rejected: Vec<&'static str>,
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
        let vpc_cidrs = self.vpc_cidrs().await?;
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
        let mut views = views;
        self.shared.memory.overlay(&self.input.name, &enis, &mut views);
        self.views = views;
        self.st.instance = Some(sync::instance_info(&self.inst, vpc_cidrs));
        self.round.synced = true;
        Ok(enis)
    }

    /// The VPC CIDRs to publish (see [`vpc::publish`]). With none known, the sync fails before
    /// anything is published: ENIs published without the VPC's blocks would give pods addresses
    /// whose traffic the agent SNATs or routes by the wrong ENI.
    async fn vpc_cidrs(&mut self) -> Result<Vec<String>> {
        let found = self.shared.vpc.lookup(self.ec2(), &self.inst.vpc_id).await;
        let shown = self.st.instance.as_ref().map(|i| i.vpc_cidrs.as_slice()).unwrap_or_default();
        match (vpc::publish(found.blocks.as_deref(), shown), found.error) {
            (Some(cidrs), None) => Ok(cidrs),
            (Some(cidrs), Some(e)) => {
                tracing::warn!(pool = %self.input.name, vpc = %self.inst.vpc_id, error = &e as &dyn std::error::Error, "VPC CIDR blocks not refreshed; publishing the ones known");
                self.notes.push(note(
                    true,
                    "VPCCIDRsNotRefreshed",
                    format!("keeping VPC CIDRs {}: {e}", cidrs.join(",")),
                ));
                Ok(cidrs)
            }
            (None, e) => {
                let e = e.unwrap_or_else(|| crate::ec2::Ec2Error {
                    kind: crate::ec2::Ec2ErrorKind::Transient,
                    action: "DescribeVpcs",
                    code: String::new(),
                    message: "not described yet".into(),
                });
                tracing::warn!(pool = %self.input.name, vpc = %self.inst.vpc_id, error = &e as &dyn std::error::Error, "VPC CIDR blocks unknown; pool not synced");
                self.notes.push(note(
                    true,
                    "VPCCIDRsUnknown",
                    format!("the VPC's CIDR blocks are not known, nothing is published: {e}"),
                ));
                self.round.sync_error = Some(format!("VPC CIDR blocks unknown: {e}"));
                self.round.note_error(&e);
                Err(e.into())
            }
        }
    }

    async fn write(&self, sink: &dyn StatusSink) -> Result<()> {
        sink.write(&operator_part(&self.st)).await
    }
}

pub(super) fn note(warning: bool, reason: &'static str, message: String) -> Note {
    Note { warning, reason, message, field_path: None }
}

/// Reconcile one pool against EC2 and return the status written. A failure is also shown on the
/// pool (`EC2Synced=False` with the error's category, see [`failure::verdicts`]) before it is
/// returned unchanged.
pub async fn reconcile_pool(
    shared: &Shared,
    input: &PoolInput,
    sink: &dyn StatusSink,
) -> Result<Outcome> {
    let sink = failure::Recording::new(sink);
    match reconcile_round(shared, input, &sink).await {
        Ok(out) => Ok(out),
        Err(err) => {
            failure::record(input, &sink, &err, &Time(Timestamp::now())).await;
            Err(err)
        }
    }
}

async fn reconcile_round(
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
        round: Round::new(shared.resync_period.current()),
        notes: vec![],
        replays: vec![],
        rejected: vec![],
    };
    n.st.effective = Some(n.eff.clone());
    n.st.policy = Some(input.policy_name.clone());
    n.st.observed_generation = input.generation;

    let running = n.inst.state == "running";
    if matches!(n.inst.state.as_str(), "shutting-down" | "terminated") {
        n.round.instance_gone = Some(format!("instance {} is {}", n.inst.id, n.inst.state));
    }
    if let Ok(attached) = n.sync().await {
        if running {
            n.settle(sink, &attached).await;
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
    Ok(Outcome {
        requeue: n.round.requeue(),
        status: n.st,
        notes: n.notes,
        replays: n.replays,
        rejected: n.rejected,
    })
}

pub mod failure;
mod grow;
mod release;
pub mod unconfirmed;
mod verify;

pub use verify::{removal_patch, Removal, REJECTED};
#[cfg(test)]
mod tests;
