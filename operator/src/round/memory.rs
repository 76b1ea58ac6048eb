//! What the pool rounds remember between rounds, in process: hints that may be lost on failover
//! (losing them only delays a release or costs an EC2 describe), never needed for safety. Each
//! hint is reached through a named method; the maps stay private to this module.

use super::unconfirmed;
use super::{Outcome, PoolInput};
use crate::ec2::Eni;
use crate::plan;
use enipool_crds::{ENIPoolStatus, SubnetState};
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
    /// Pool → (fingerprint of the inputs it was left in, until when nothing needs doing).
    quiet: Mutex<HashMap<String, (u64, std::time::Instant)>>,
    /// (pool, reason) → when the last Warning Event for a failed reconcile went out.
    warned: Mutex<HashMap<(String, &'static str), std::time::Instant>>,
    /// Pool → changes made that EC2's describes did not show yet.
    unconfirmed: Mutex<HashMap<String, Vec<unconfirmed::Pending>>>,
    /// Until when no ENI is created (the account's ENI quota was reached).
    eni_quota_until: Mutex<Option<Timestamp>>,
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

    /// Remember a change made to `pool`'s ENIs until a describe shows it.
    pub fn made(&self, pool: &str, change: unconfirmed::Change) {
        let until = Instant::now() + unconfirmed::KEEP;
        let mut m = self.unconfirmed.lock().expect("memory lock");
        m.entry(pool.to_string()).or_default().push(unconfirmed::Pending { change, until });
    }

    /// Count the changes made to `pool` that `described` does not show yet in `views`; whether
    /// any is left unconfirmed.
    pub fn overlay(&self, pool: &str, described: &[Eni], views: &mut Vec<plan::EniView>) -> bool {
        let mut m = self.unconfirmed.lock().expect("memory lock");
        let Some(pending) = m.remove(pool) else { return false };
        let kept = unconfirmed::overlay(pending, described, views, Instant::now());
        if kept.is_empty() {
            return false;
        }
        m.insert(pool.to_string(), kept);
        true
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
    fn a_subnet_without_cidr_blocks_gets_no_prefixes_for_the_cooldown() {
        let m = Memory::default();
        let t0 = Timestamp::now();
        m.avoid_prefixes_in("subnet-a".into(), t0);
        let at = |s: i64| t0 + SignedDuration::from_secs(s);
        assert!(m.no_cidr_subnets(at(NO_CIDR_COOLDOWN_SECS - 1)).contains("subnet-a"));
        assert!(m.no_cidr_subnets(at(NO_CIDR_COOLDOWN_SECS)).is_empty());
    }
}
