//! What the pool rounds remember between rounds, in process: hints that may be lost on failover
//! (losing them only delays a release or costs an EC2 describe), never needed for safety. Each
//! hint is reached through a named method; the maps stay private to this module.

use super::{instance, unconfirmed};
use super::{Outcome, PoolInput};
use crate::ec2::{Eni, Instance};
use crate::plan;
use enipool_crds::{ENIPoolStatus, EniStatus, SubnetState};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a subnet that answered `InsufficientCidrBlocks` gets /32s instead of prefixes (the VPC
/// CNI waits 120 s before trying that subnet again).
pub const NO_CIDR_COOLDOWN_SECS: i64 = 120;
/// How long no pool creates an ENI after EC2 answered that the account's regional ENI quota is
/// reached. The quota is the account's, not a node's: one refusal tells every pool, and only
/// a quota increase or ENIs deleted elsewhere lift it, so it is asked again only this often.
pub const ENI_QUOTA_COOLDOWN_SECS: i64 = 300;

/// In-memory hints; none is needed for safety.
#[derive(Debug, Default)]
pub struct Memory {
    /// Pool → how long each part of its excess has lasted.
    excess: Mutex<HashMap<String, plan::release::ExcessTimer>>,
    /// Subnet → until when prefixes are not requested there.
    no_cidr: Mutex<HashMap<String, Timestamp>>,
    /// Subnet states as last seen (for policy status).
    subnet_states: Mutex<BTreeMap<String, SubnetState>>,
    /// Pool → (fingerprints of the statuses its last round wrote, until when nothing needs
    /// doing).
    quiet: Mutex<HashMap<String, (Vec<u64>, std::time::Instant)>>,
    /// (pool, reason) → when the last Warning Event for a failed reconcile went out.
    warned: Mutex<HashMap<(String, &'static str), std::time::Instant>>,
    /// Pool → changes made that EC2's describes did not show yet.
    unconfirmed: Mutex<HashMap<String, Vec<unconfirmed::Pending>>>,
    /// Until when no ENI is created (the account's ENI quota was reached).
    eni_quota_until: Mutex<Option<Timestamp>>,
    /// Pool → its instance as DescribeInstances last answered.
    instances: Mutex<HashMap<String, instance::Reading>>,
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
        input.cordoned,
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
    /// left them or as it wrote them on the way (a watch event of our own write); `None` =
    /// reconcile now. Journal entries the round kept are retried at its requeue deadline, not at
    /// once: an entry failing on every attempt (a missing IAM grant) would otherwise be retried
    /// on each watch event of the status write recording the failure.
    ///
    /// A status the round wrote before its last write (its journal) can still be what the cache
    /// holds when the round ends; the round acted on all of it, and the event of its last write
    /// follows, so it costs no round either.
    pub fn quiet_for(&self, pool: &str, input: &PoolInput) -> Option<Duration> {
        let m = self.quiet.lock().expect("memory lock");
        let (fps, until) = m.get(pool)?;
        let left = until.checked_duration_since(std::time::Instant::now())?;
        fps.contains(&fingerprint(input, &input.status)).then_some(left)
    }

    /// Remember how a round left `pool`, what it wrote on the way, and when it wants to look
    /// again.
    pub fn left_quiet(&self, pool: &str, input: &PoolInput, out: &Outcome) {
        let mut fps = vec![fingerprint(input, &out.status)];
        fps.extend(out.written.iter().map(|w| fingerprint(input, w)));
        let until = std::time::Instant::now() + out.requeue;
        self.quiet.lock().expect("memory lock").insert(pool.to_string(), (fps, until));
    }

    /// Forget a pool (deleted), or how a round left it (a round failed: the retry must run).
    pub fn forget(&self, pool: &str) {
        self.quiet.lock().expect("memory lock").remove(pool);
    }

    /// Remember a change made to `pool`'s ENIs until a describe shows it.
    pub fn made(&self, pool: &str, change: unconfirmed::Change) {
        let until = Instant::now() + unconfirmed::KEEP;
        let mut m = self.unconfirmed.lock().expect("memory lock");
        m.entry(pool.to_string()).or_default().push(unconfirmed::Pending { change, until });
    }

    /// Count the changes made to `pool` that `described` does not show yet in `views`, and
    /// publish the addresses among them in `published` (see [`unconfirmed::overlay`]); whether
    /// any change is kept from `published` until a describe shows it.
    pub fn overlay(
        &self,
        pool: &str,
        described: &[Eni],
        views: &mut Vec<plan::EniView>,
        published: &mut [EniStatus],
    ) -> bool {
        let mut m = self.unconfirmed.lock().expect("memory lock");
        let Some(pending) = m.remove(pool) else { return false };
        let o = unconfirmed::overlay(pending, described, views, published, Instant::now());
        if !o.kept.is_empty() {
            m.insert(pool.to_string(), o.kept);
        }
        o.held_back
    }

    /// Addresses of `pool` unassigned by the operator: a describe not showing them is right.
    pub fn unassigned(&self, pool: &str, eni_id: &str, items: &[String]) {
        if let Some(pending) = self.unconfirmed.lock().expect("memory lock").get_mut(pool) {
            unconfirmed::unassigned(pending, eni_id, items);
        }
    }

    /// Forget the changes made to a deleted pool.
    pub fn forget_changes(&self, pool: &str) {
        self.unconfirmed.lock().expect("memory lock").remove(pool);
    }

    /// `pool`'s instance as last described, when that answer may stand for it at `now`
    /// ([`instance::reuse`]).
    pub fn instance(&self, pool: &str, instance_id: &str, now: Instant) -> Option<Instance> {
        let m = self.instances.lock().expect("memory lock");
        instance::reuse(m.get(pool)?, instance_id, now).cloned()
    }

    /// Remember what DescribeInstances answered for `pool`'s instance at `at`.
    pub fn described_instance(&self, pool: &str, instance: &Instance, at: Instant) {
        let reading = instance::Reading { instance: instance.clone(), at };
        self.instances.lock().expect("memory lock").insert(pool.to_string(), reading);
    }

    /// Drop `pool`'s instance answer (the pool is deleted, or the answer no longer fits what EC2
    /// shows).
    pub fn forget_instance(&self, pool: &str) {
        self.instances.lock().expect("memory lock").remove(pool);
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
    /// Record `pool`'s excess seen at `now` and return how long each part of it has lasted.
    pub fn observe_excess(
        &self,
        pool: &str,
        now: Timestamp,
        excess: i32,
    ) -> plan::release::ExcessTimer {
        let mut m = self.excess.lock().expect("memory lock");
        let timer = m.entry(pool.to_string()).or_default();
        timer.observe(now, excess);
        let age = timer.clone();
        if excess <= 0 {
            m.remove(pool);
        }
        age
    }

    /// `count` addresses of `pool`'s excess were asked for: the oldest part is spoken for.
    pub fn excess_requested(&self, pool: &str, count: i32) {
        if let Some(t) = self.excess.lock().expect("memory lock").get_mut(pool) {
            t.consume(count);
        }
    }

    /// Ask for /32s instead of prefixes in `subnet` for [`NO_CIDR_COOLDOWN_SECS`] from `now` (it
    /// answered `InsufficientCidrBlocks`).
    pub fn avoid_prefixes_in(&self, subnet: String, now: Timestamp) {
        let until = now + k8s_openapi::jiff::SignedDuration::from_secs(NO_CIDR_COOLDOWN_SECS);
        self.no_cidr.lock().expect("memory lock").insert(subnet, until);
    }

    /// EC2 answered `NetworkInterfaceLimitExceeded` at `now`: no pool creates an ENI for
    /// [`ENI_QUOTA_COOLDOWN_SECS`].
    pub fn eni_quota_reached(&self, now: Timestamp) {
        let until = now + k8s_openapi::jiff::SignedDuration::from_secs(ENI_QUOTA_COOLDOWN_SECS);
        *self.eni_quota_until.lock().expect("memory lock") = Some(until);
    }

    /// Whether ENIs may be created at `now` (the ENI quota was not reached a moment ago).
    pub fn may_create_enis(&self, now: Timestamp) -> bool {
        self.eni_quota_until.lock().expect("memory lock").is_none_or(|until| until <= now)
    }

    /// Subnets where prefixes are not requested right now (no aligned /28 left).
    pub fn no_cidr_subnets(&self, now: Timestamp) -> BTreeSet<String> {
        let mut m = self.no_cidr.lock().expect("memory lock");
        m.retain(|_, until| *until > now);
        m.keys().cloned().collect()
    }

    /// Subnet states as last seen by pool reconciles.
    pub fn subnet_states(&self) -> BTreeMap<String, SubnetState> {
        self.subnet_states.lock().expect("memory lock").clone()
    }

    /// Remember a subnet's state as a round saw it (policy status shows it).
    pub fn note_subnet(&self, id: &str, zone: &str, available: i32, exhausted: bool, now: &Time) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    #[test]
    fn failure_events_are_rate_limited_per_pool_and_reason() {
        let m = Memory::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(m.failure_event_due("a", "Transient", at(0)));
        assert!(!m.failure_event_due("a", "Transient", at(10)), "same pool and reason: held back");
        assert!(m.failure_event_due("a", "Throttled", at(10)), "another reason goes out");
        assert!(m.failure_event_due("b", "Transient", at(10)), "another pool goes out");
        let window = FAILURE_EVENT_EVERY.as_secs();
        assert!(!m.failure_event_due("a", "Transient", at(window - 1)));
        assert!(m.failure_event_due("a", "Transient", at(window)), "once the window passed");
        assert!(!m.failure_event_due("a", "Transient", at(window + 1)));
    }

    #[test]
    fn excess_is_held_from_when_it_was_first_seen_until_it_is_gone() {
        let m = Memory::default();
        let t0 = Timestamp::now();
        let at = |s: i64| t0 + SignedDuration::from_secs(s);
        let delay = SignedDuration::from_secs(30);
        assert_eq!(m.observe_excess("a", at(0), 3).lasted(at(40), delay), 3);
        assert_eq!(m.observe_excess("b", at(40), 3).lasted(at(40), delay), 0, "per pool");
        assert_eq!(m.observe_excess("a", at(50), 0).lasted(at(50), delay), 0, "gone");
        assert_eq!(m.observe_excess("a", at(60), 3).lasted(at(80), delay), 0, "starts again");
        m.excess_requested("a", 3);
        assert_eq!(m.observe_excess("a", at(95), 0), Default::default(), "requested, then used");
    }

    #[test]
    fn every_status_a_round_wrote_is_its_own_write_until_the_deadline() {
        let m = Memory::default();
        let input = PoolInput { name: "a".into(), ..Default::default() };
        let journal = ENIPoolStatus {
            operations: vec![crate::journal::new_op(
                enipool_crds::OperationKind::AssignIPs,
                "eni-1",
                8,
                vec![],
                None,
                &Time(Timestamp::now()),
            )],
            ..Default::default()
        };
        let last = ENIPoolStatus { revision: 1, ..Default::default() };
        let out = Outcome {
            status: last.clone(),
            requeue: Duration::from_secs(60),
            notes: vec![],
            replays: vec![],
            rejected: vec![],
            written: vec![journal.clone(), last.clone()],
        };
        m.left_quiet("a", &input, &out);
        let read = |status: &ENIPoolStatus| PoolInput { status: status.clone(), ..input.clone() };
        assert!(m.quiet_for("a", &read(&last)).is_some(), "the last write");
        assert!(m.quiet_for("a", &read(&journal)).is_some(), "the journal written on the way");
        let other = ENIPoolStatus { revision: 2, ..Default::default() };
        assert!(m.quiet_for("a", &read(&other)).is_none(), "a status the round did not write");
        let agent = enipool_crds::AgentStatus { epoch: 1, ..Default::default() };
        let reported = ENIPoolStatus { agent: Some(agent), ..journal };
        assert!(m.quiet_for("a", &read(&reported)).is_none(), "the agent reported since");
        let over = Outcome { requeue: Duration::ZERO, ..out };
        m.left_quiet("a", &input, &over);
        assert!(m.quiet_for("a", &read(&last)).is_none(), "past the deadline");
    }

    #[test]
    fn a_subnet_without_cidr_blocks_gets_no_prefixes_for_the_cooldown() {
        let m = Memory::default();
        let t0 = Timestamp::now();
        m.avoid_prefixes_in("subnet-a".into(), t0);
        let at = |s: i64| t0 + SignedDuration::from_secs(s);
        assert!(m.no_cidr_subnets(at(NO_CIDR_COOLDOWN_SECS - 1)).contains("subnet-a"));
        assert!(m.no_cidr_subnets(at(NO_CIDR_COOLDOWN_SECS)).is_empty());
    }
}
