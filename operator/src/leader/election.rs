//! The election's decisions, without I/O: what to do with the Lease as read, whether this replica
//! leads at a given instant, and the timing that makes two leaders impossible.
//!
//! Every instant here is this replica's own monotonic clock; no timestamp another replica wrote is
//! compared with it. A leader counts its term from the *start* of its last successful write, so
//! it stops before the write could have been seen by anyone. A standby counts a holder's term
//! from the moment it *first saw* the holder's latest write, which is after that write was made.
//! So with equal clock rates the leader's term (renew deadline) ends at least
//! `lease duration − renew deadline` before any standby may take over.

use k8s_openapi::api::coordination::v1::Lease;
use std::time::Duration;
use tokio::time::Instant;

/// Longest retry period: a standby tries this often at least (client-go's default), so a released
/// Lease is taken within it; a leader renews this often.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The election's periods, all derived from the lease duration (client-go's defaults for 15 s:
/// renew deadline 10 s, retry period 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a holder's latest write must stay unchanged before a standby takes the Lease.
    pub lease_duration: Duration,
    /// A leader stops acting when no renewal started within this long succeeded.
    pub renew_deadline: Duration,
    /// Time between two attempts (a leader renewing, a standby watching for expiry).
    pub retry_period: Duration,
    /// Bound on one attempt (read and write of the Lease): two fit in a renew deadline.
    pub attempt_timeout: Duration,
}

impl Timing {
    /// The timing for a lease duration.
    pub fn new(lease_duration: Duration) -> Self {
        let renew_deadline = lease_duration * 2 / 3;
        Timing {
            lease_duration,
            renew_deadline,
            retry_period: (lease_duration / 3).min(RETRY_PERIOD),
            attempt_timeout: renew_deadline / 2,
        }
    }
}

/// What identifies one write of the Lease: any renewal, takeover or release changes it (the
/// resourceVersion alone would do; the rest is kept for readable logs and for servers that reuse
/// versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `holderIdentity`; empty when released.
    pub holder: String,
    /// `leaseDurationSeconds` as the holder promised it (`None`: absent or not positive).
    pub duration: Option<Duration>,
    /// `renewTime` as written, only compared.
    pub renew_time: Option<String>,
    /// `leaseTransitions`.
    pub transitions: i32,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
}

impl Record {
    /// The record of a Lease as read.
    pub fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.unwrap_or_default(),
            duration: spec
                .lease_duration_seconds
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64)),
            renew_time: spec.renew_time.map(|t| t.0.to_string()),
            transitions: spec.lease_transitions.unwrap_or(0),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// There is none: create it, holding it.
    Create,
    /// This replica holds it: write it again (renew).
    Renew,
    /// Free (released) or expired: write it with this replica as holder.
    Take,
    /// Another replica holds it and its term has not run out on this replica's clock.
    Wait,
}

/// One replica's view of the election across attempts.
#[derive(Debug, Clone)]
pub struct Elector {
    identity: String,
    timing: Timing,
    /// The last record read or written, and when this replica first saw it in that form.
    observed: Option<(Record, Instant)>,
    /// Start of the last attempt that wrote the Lease with this replica as holder.
    renewed: Option<Instant>,
}

impl Elector {
    /// A replica that has seen nothing yet.
    pub fn new(identity: &str, timing: Timing) -> Self {
        Elector { identity: identity.to_string(), timing, observed: None, renewed: None }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Decide on the Lease as read at `now` (`None`: there is none).
    pub fn decide(&mut self, lease: Option<&Record>, now: Instant) -> Step {
        let Some(rec) = lease else {
            self.observed = None;
            return Step::Create;
        };
        if self.observed.as_ref().is_none_or(|(seen, _)| seen != rec) {
            self.observed = Some((rec.clone(), now));
        }
        if rec.holder == self.identity {
            return Step::Renew;
        }
        if rec.holder.is_empty() {
            return Step::Take;
        }
        // Someone else holds it: whatever this replica thought, it does not lead now.
        self.renewed = None;
        let since = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let term = rec.duration.unwrap_or(self.timing.lease_duration);
        if now.saturating_duration_since(since) >= term {
            Step::Take
        } else {
            Step::Wait
        }
    }

    /// The write of an attempt that started at `started` succeeded at `now`, leaving `written`.
    pub fn wrote(&mut self, started: Instant, written: Record, now: Instant) {
        self.renewed = Some(started);
        self.observed = Some((written, now));
    }

    /// Until when this replica leads (exclusive): the renew deadline after the start of its last
    /// successful write. `None`: it does not hold the Lease.
    pub fn leading_until(&self) -> Option<Instant> {
        self.renewed.map(|t| t + self.timing.renew_deadline)
    }

    /// Whether this replica leads at `now`.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.leading_until().is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn rec(holder: &str, rv: u32) -> Record {
        Record {
            holder: holder.into(),
            duration: Some(S(15)),
            renew_time: Some(format!("renew-{rv}")),
            transitions: 0,
            resource_version: Some(rv.to_string()),
        }
    }

    fn elector(me: &str) -> Elector {
        Elector::new(me, Timing::new(S(15)))
    }

    #[test]
    fn timing_follows_client_go_defaults_and_scales_down() {
        let t = Timing::new(S(15));
        assert_eq!((t.renew_deadline, t.retry_period, t.attempt_timeout), (S(10), S(2), S(5)));
        let t = Timing::new(S(3));
        assert_eq!((t.renew_deadline, t.retry_period), (S(2), S(1)));
        // A long lease still retries every 2 s: a released Lease is taken at once.
        assert_eq!(Timing::new(S(120)).retry_period, RETRY_PERIOD);
        for d in [3, 6, 15, 60, 120] {
            let t = Timing::new(S(d));
            assert!(t.renew_deadline < t.lease_duration, "{t:?}");
            assert!(t.retry_period < t.renew_deadline && t.attempt_timeout < t.renew_deadline);
        }
    }

    #[test]
    fn what_to_do_with_the_lease_as_read() {
        let t0 = Instant::now();
        // (lease read, step) for a replica that has seen nothing before.
        let table: [(Option<Record>, Step); 4] = [
            (None, Step::Create),
            (Some(rec("me", 1)), Step::Renew),
            (Some(rec("", 1)), Step::Take), // released by a stopping leader: no waiting
            (Some(rec("other", 1)), Step::Wait),
        ];
        for (lease, want) in table {
            assert_eq!(elector("me").decide(lease.as_ref(), t0), want, "{lease:?}");
        }
    }

    #[test]
    fn a_leader_leads_for_the_renew_deadline_from_the_start_of_its_last_renewal() {
        let t0 = Instant::now();
        let mut e = elector("me");
        assert!(!e.is_leader(t0), "leads before any write");
        assert_eq!(e.decide(None, t0), Step::Create);
        // The write took 3 s to answer: the term counts from the attempt's start.
        e.wrote(t0, rec("me", 1), t0 + S(3));
        assert_eq!(e.leading_until(), Some(t0 + S(10)));
        assert!(e.is_leader(t0 + S(9)));
        // Renewals keep failing or hanging: at the deadline it stops, whatever the calls do.
        assert!(!e.is_leader(t0 + S(10)));
        // A renewal that started at 8 s and succeeded late still only counts from 8 s.
        assert_eq!(e.decide(Some(&rec("me", 1)), t0 + S(8)), Step::Renew);
        e.wrote(t0 + S(8), rec("me", 2), t0 + S(12));
        assert!(e.is_leader(t0 + S(17)) && !e.is_leader(t0 + S(18)));
    }

    #[test]
    fn a_leader_that_reads_another_holder_stops_at_once() {
        let t0 = Instant::now();
        let mut e = elector("me");
        e.wrote(t0, rec("me", 1), t0);
        assert_eq!(e.decide(Some(&rec("other", 2)), t0 + S(1)), Step::Wait);
        assert!(!e.is_leader(t0 + S(1)));
        assert_eq!(e.leading_until(), None);
    }

    #[test]
    fn expiry_is_a_full_duration_of_the_same_record_on_the_local_clock() {
        let t0 = Instant::now();
        let mut e = elector("me");
        // First seen at t0 (whenever it was written): a whole duration from now.
        assert_eq!(e.decide(Some(&rec("other", 1)), t0), Step::Wait);
        assert_eq!(e.decide(Some(&rec("other", 1)), t0 + S(14)), Step::Wait);
        // Renewed at 14 s (a new version): the count starts again from when it was seen.
        assert_eq!(e.decide(Some(&rec("other", 2)), t0 + S(14)), Step::Wait);
        assert_eq!(e.decide(Some(&rec("other", 2)), t0 + S(28)), Step::Wait);
        assert_eq!(e.decide(Some(&rec("other", 2)), t0 + S(29)), Step::Take);
        // Any change of the record counts as a renewal: holder, renewTime, transitions, version.
        let changes: [fn(&mut Record); 4] = [
            |r| r.holder = "third".into(),
            |r| r.renew_time = Some("later".into()),
            |r| r.transitions += 1,
            |r| r.resource_version = Some("99".into()),
        ];
        for change in changes {
            let mut e = elector("me");
            let mut r = rec("other", 1);
            e.decide(Some(&r), t0);
            change(&mut r);
            assert_eq!(e.decide(Some(&r), t0 + S(10)), Step::Wait, "{r:?}");
            assert_eq!(e.decide(Some(&r), t0 + S(20)), Step::Wait, "{r:?}");
            assert_eq!(e.decide(Some(&r), t0 + S(25)), Step::Take, "{r:?}");
        }
    }

    #[test]
    fn the_holders_promised_duration_counts_not_ours() {
        let t0 = Instant::now();
        let mut e = elector("me"); // 15 s
        let mut r = rec("other", 1);
        r.duration = Some(S(60));
        e.decide(Some(&r), t0);
        assert_eq!(e.decide(Some(&r), t0 + S(59)), Step::Wait);
        assert_eq!(e.decide(Some(&r), t0 + S(60)), Step::Take);
        // Absent or nonsense: ours.
        let lease = Lease {
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some("other".into()),
                lease_duration_seconds: Some(-5),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut e = elector("me");
        e.decide(Some(&Record::of(&lease)), t0);
        assert_eq!(e.decide(Some(&Record::of(&lease)), t0 + S(14)), Step::Wait);
        assert_eq!(e.decide(Some(&Record::of(&lease)), t0 + S(15)), Step::Take);
    }

    #[test]
    fn a_skewed_renew_time_neither_hastens_nor_delays_a_takeover() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        use k8s_openapi::jiff::{SignedDuration, Timestamp};
        let t0 = Instant::now();
        let lease = |renew: Timestamp, rv: &str| {
            let mut l = Lease {
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some("other".into()),
                    lease_duration_seconds: Some(15),
                    renew_time: Some(MicroTime(renew)),
                    ..Default::default()
                }),
                ..Default::default()
            };
            l.metadata.resource_version = Some(rv.into());
            Record::of(&l)
        };
        let now = Timestamp::now();
        // The holder's clock is an hour behind: its fresh renewal looks long expired here.
        let behind = now - SignedDuration::from_hours(1);
        // Or an hour ahead: a renewal it stopped making looks fresh here for an hour.
        let ahead = now + SignedDuration::from_hours(1);
        for renew in [behind, ahead] {
            let mut e = elector("me");
            assert_eq!(e.decide(Some(&lease(renew, "1")), t0), Step::Wait);
            // Still renewing (new versions): never taken.
            let mut at = t0;
            for rv in 2..20 {
                at += S(5);
                let r = lease(renew + SignedDuration::from_secs(5 * rv), &rv.to_string());
                assert_eq!(e.decide(Some(&r), at), Step::Wait);
            }
            // Stopped renewing: taken a duration after the last version was seen, not an hour off.
            let last = lease(renew + SignedDuration::from_secs(5 * 19), "19");
            assert_eq!(e.decide(Some(&last), at + S(14)), Step::Wait);
            assert_eq!(e.decide(Some(&last), at + S(15)), Step::Take);
        }
    }

    #[test]
    fn the_leader_stops_before_a_standby_can_take_over() {
        // The leader's renewal starts at t0 and lands (is stored) at `landed`; the standby reads
        // it at `seen`, no earlier. Then the leader is cut off. Whatever the delays, the leader's
        // term ends a third of a duration before the standby takes the Lease.
        let t0 = Instant::now();
        for (landed, seen) in [(0, 0), (0, 2), (4, 5), (9, 9)] {
            let mut leader = elector("leader");
            let mut standby = elector("standby");
            leader.wrote(t0, rec("leader", 1), t0 + S(landed));
            let mut at = t0 + S(seen);
            assert_eq!(standby.decide(Some(&rec("leader", 1)), at), Step::Wait);
            while standby.decide(Some(&rec("leader", 1)), at) == Step::Wait {
                at += Duration::from_millis(100);
            }
            let stops = leader.leading_until().unwrap();
            assert!(stops + S(5) <= at, "landed {landed} s, seen {seen} s: takes over at {at:?}");
            assert!(!leader.is_leader(at));
        }
    }
}
