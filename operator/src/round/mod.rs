//! The EC2 round of one pool, testable without a Kubernetes client: observe EC2 (I/O,
//! [`observe`]) → finish what the status read back asks for and replay the journal (I/O,
//! [`replay`]) → plan (no I/O, [`crate::plan`]) → act, journaled (`grow.rs`, `release.rs`) → report
//! (the conditions, [`conditions`], and the new status). Status is written through a
//! [`StatusSink`] — before each batch of EC2 mutations (the journal) and once at the end — so the
//! Kubernetes side ([`crate::k8s::pool`]) only supplies the sink.

pub mod conditions;
mod grow;
pub mod instance;
pub mod ipv6;
pub mod memory;
pub mod notes;
pub mod observe;
mod release;
pub mod replay;
mod report;
pub mod resync;
pub mod unconfirmed;

pub use memory::{Memory, FAILURE_EVENT_EVERY};
pub use notes::{note, Note};
pub use replay::{removal_patch, Removal, REJECTED};

use crate::ec2::capacity::CapacityCache;
use crate::ec2::vpc::VpcCidrs;
use crate::ec2::{Ec2Api, Instance};
use crate::error::{Error, Result};
use crate::journal::Owner;
use crate::plan::{self, Demand};
use conditions::Round;
use enipool_crds::settings::{self, EffectiveSettings};
use enipool_crds::{
    ENIPoolPolicySpec, ENIPoolStatus, IpFamily, OperationKind, PoolOverrides, Target,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use observe::{Described, SubnetCache};
use resync::ResyncPeriod;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Process-wide state the pool reconciles share.
pub struct Shared {
    /// EC2.
    pub ec2: Arc<dyn Ec2Api>,
    /// Cluster name (tags, GC scope).
    pub cluster: String,
    /// The cluster's address family, chosen at install.
    pub family: IpFamily,
    /// The VPC CIDR blocks published to agents (`--vpc-cidrs`, else DescribeVpcs, cached).
    pub vpc: VpcCidrs,
    /// Agent report older than this is stale.
    pub agent_stale_secs: i64,
    /// The configured resync period (the minimum; see `resync_period`).
    pub resync: Duration,
    /// The resync period in force, grown with the number of pools to fit the describe budget.
    pub resync_period: ResyncPeriod,
    pub capacity: CapacityCache,
    pub subnets: SubnetCache,
    /// Per-node memory that may be lost on failover (losing it only delays a release).
    pub memory: Memory,
}

/// What the reconcile knows about one pool (from the ENIPool, its Node and the chosen policy).
#[derive(Debug, Clone, Default)]
pub struct PoolInput {
    /// Pool (= node) name.
    pub name: String,
    pub uid: String,
    pub generation: Option<i64>,
    pub instance_id: String,
    /// Chosen policy name ("" = defaults).
    pub policy_name: String,
    pub policy: Option<ENIPoolPolicySpec>,
    pub overrides: Option<PoolOverrides>,
    /// `spec.paused`.
    pub paused: bool,
    /// The Node's `spec.unschedulable` (cordoned).
    pub cordoned: bool,
    /// Current status (the agent part included, read-only).
    pub status: ENIPoolStatus,
}

/// Writes the operator's part of a pool status (SSA; the agent part is never sent).
#[async_trait::async_trait]
pub trait StatusSink: Send + Sync {
    async fn write(&self, status: &ENIPoolStatus) -> Result<()>;
    /// Remove entries the reconcile dropped from the stored status, whoever wrote them: SSA only
    /// removes what the operator itself applied, so an entry written under another field manager
    /// would outlive every write. Guarded by what was read (see [`removal_patch`]).
    async fn remove(&self, removals: &[Removal]) -> Result<()>;
}

/// Result of one reconcile.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The status as written.
    pub status: ENIPoolStatus,
    /// When to look again.
    pub requeue: Duration,
    pub notes: Vec<Note>,
    /// The journal entries replayed this round: kind and outcome (for metrics).
    pub replays: Vec<(OperationKind, &'static str)>,
    /// The reasons of the entries read back and rejected this round (for metrics).
    pub rejected: Vec<&'static str>,
    /// Every status this round wrote, with the agent part it read.
    pub written: Vec<ENIPoolStatus>,
}

/// The operator's fields only: what SSA sends.
pub fn operator_part(s: &ENIPoolStatus) -> ENIPoolStatus {
    ENIPoolStatus { agent: None, ..s.clone() }
}

/// One round's working state for one pool: what it read, the status it builds, what it noticed.
struct PoolRound<'a> {
    shared: &'a Shared,
    input: &'a PoolInput,
    inst: Instance,
    eff: EffectiveSettings,
    /// What this round may change in EC2.
    gate: plan::Gate,
    owner: Owner,
    st: ENIPoolStatus,
    /// The last describe of the instance's ENIs, which `st.enis` and `views` show.
    described: Described,
    views: Vec<plan::EniView>,
    now: Time,
    round: Round,
    notes: Vec<Note>,
    replays: Vec<(OperationKind, &'static str)>,
    rejected: Vec<&'static str>,
}

impl PoolRound<'_> {
    fn ec2(&self) -> &dyn Ec2Api {
        self.shared.ec2.as_ref()
    }

    async fn write(&self, sink: &dyn StatusSink) -> Result<()> {
        sink.write(&operator_part(&self.st)).await
    }
}

/// Run one round for a pool against EC2 and return the status written. A failure is also shown on
/// the pool (`EC2Synced=False` with the error's category, see [`conditions::verdicts`]) before it
/// is returned unchanged.
pub async fn run_round(
    shared: &Shared,
    input: &PoolInput,
    sink: &dyn StatusSink,
) -> Result<Outcome> {
    let sink = report::Recording::new(sink);
    match round_steps(shared, input, &sink).await {
        Ok(mut out) => {
            let agent = input.status.agent.clone();
            out.written = sink
                .written()
                .into_iter()
                .map(|w| ENIPoolStatus { agent: agent.clone(), ..w })
                .collect();
            Ok(out)
        }
        Err(err) => {
            report::record_failure(input, &sink, &err, &Time(Timestamp::now())).await;
            Err(err)
        }
    }
}

/// DescribeInstances for the pool's instance; the answer is remembered for the next rounds.
async fn describe_instance(shared: &Shared, input: &PoolInput) -> Result<Instance> {
    let inst = shared
        .ec2
        .describe_instances(std::slice::from_ref(&input.instance_id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::InstanceNotFound(input.instance_id.clone()))?;
    shared.memory.described_instance(&input.name, &inst, Instant::now());
    Ok(inst)
}

async fn round_steps(shared: &Shared, input: &PoolInput, sink: &dyn StatusSink) -> Result<Outcome> {
    let now = Time(Timestamp::now());
    let before = operator_part(&input.status);
    let reused = shared.memory.instance(&input.name, &input.instance_id, Instant::now());
    let inst = match reused.clone() {
        Some(inst) => inst,
        None => describe_instance(shared, input).await?,
    };
    let (limits, source) = shared.capacity.limits(&inst.instance_type).await;
    let eff = settings::resolve(
        shared.family,
        input.policy.as_ref(),
        input.overrides.as_ref(),
        limits,
        source,
    );
    let owner = Owner {
        cluster: shared.cluster.clone(),
        node: input.name.clone(),
        instance_id: inst.id.clone(),
        pool_uid: input.uid.clone(),
        extra_tags: input.policy.as_ref().map(|p| p.eni.extra_tags.clone()).unwrap_or_default(),
    };
    let gate = plan::Gate::decide(input.paused, eff.freeze_when_cordoned, input.cordoned);
    let mut n = PoolRound {
        shared,
        input,
        inst,
        eff,
        gate,
        owner,
        st: input.status.clone(),
        described: Described::default(),
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

    let synced = n.sync().await;
    if let (Some(_), Ok(enis)) = (&reused, &synced) {
        if !instance::shows_primary(&n.inst, enis) {
            // The remembered state is out of date: the instance is described again before the
            // round acts on it.
            shared.memory.forget_instance(&input.name);
            n.inst = describe_instance(shared, input).await?;
            let cidrs = n.st.instance.take().map(|i| i.vpc_cidrs).unwrap_or_default();
            n.st.instance = Some(observe::instance_info(&n.inst, cidrs));
        }
    }
    let running = n.inst.state == "running";
    if matches!(n.inst.state.as_str(), "shutting-down" | "terminated") {
        n.round.instance_gone = Some(format!("instance {} is {}", n.inst.id, n.inst.state));
    }
    if let Ok(attached) = synced {
        if running {
            n.settle(sink, &attached).await;
        }
    }
    let agent = input.status.agent.as_ref();
    let ipv6 = n.eff.ip_family == IpFamily::IPv6;
    let target = match ipv6 {
        true => ipv6::target(&n.eff),
        false => plan::compute_target(&n.eff, Demand::reported(agent)),
    };
    n.st.target = Some(Target { ips: target.ips, reason: target.reason.into() });
    let mut missing = 0;
    n.round.frozen = gate == plan::Gate::Frozen;
    let may_act = n.round.synced && running && gate.may_start_work();
    if may_act && ipv6 {
        missing = n.ensure_ipv6_prefix(sink, target.ips).await?;
    } else if may_act {
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
        written: vec![],
    })
}

#[cfg(test)]
mod tests;
