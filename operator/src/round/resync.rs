//! The periodic resync's period. Every pool is looked at again after a resync period even when
//! nothing changed (drift in EC2 is only seen that way), and each look costs describe calls
//! (DescribeInstances + DescribeNetworkInterfaces for its instance). Describes share one EC2 bucket
//! (about 20/s per account, of which the operator takes `--budget-share`), so a fixed period does
//! not scale: 5,000 pools every 60 s would want ~170 describes/s, and the describes that pending
//! pods wait for would queue behind the resyncs. The period therefore grows with the number of
//! pools so that resyncs spend at most [`RESYNC_FRACTION`] of the operator's describe rate; the
//! configured period is the minimum. Demand-driven reconciles (watch events, a pending journal,
//! growth) do not wait for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Describe calls one resync of one pool makes (DescribeInstances + DescribeNetworkInterfaces).
pub const CALLS_PER_SYNC: f64 = 2.0;

/// Share of the operator's describe rate that periodic resyncs may use; the rest stays free for
/// the reconciles that pods are waiting for.
pub const RESYNC_FRACTION: f64 = 0.25;

/// A change of the period by more than this fraction is logged.
const LOG_CHANGE: f64 = 0.1;

/// Jitter added to each resync requeue, as a fraction of the period: pools requeued together
/// (all of them at startup or on gaining leadership) drift apart instead of resyncing in bursts.
/// Only upwards, so the configured period stays a minimum; on average resyncs then use
/// 1/(1 + JITTER/2) of the budget they are sized for.
pub const JITTER: f64 = 0.2;

/// The resync period for `pools` pools (pure): `max(configured, pools × calls_per_sync /
/// (describe_qps × fraction))`, where `describe_qps` is the describe rate available to the
/// operator (the account's bucket × `--budget-share`). A non-positive or non-finite rate or
/// fraction means no budget is known: the configured period.
pub fn effective_period(
    configured: Duration,
    pools: usize,
    calls_per_sync: f64,
    describe_qps: f64,
    fraction: f64,
) -> Duration {
    let rate = describe_qps * fraction;
    if !rate.is_finite() || rate <= 0.0 {
        return configured;
    }
    let needed = pools as f64 * calls_per_sync / rate;
    if !needed.is_finite() {
        return configured;
    }
    // Capped far above any real need (10^6 pools at 0.1 describe/s is 2·10^7 s).
    configured.max(Duration::from_secs_f64(needed.min(1e9)))
}

/// `period` stretched by `unit × JITTER` (`unit` in `[0, 1]`, clamped).
pub fn jittered(period: Duration, unit: f64) -> Duration {
    period.mul_f64(1.0 + JITTER * unit.clamp(0.0, 1.0))
}

/// Whether going from `old` to `new` is worth a log line (a change of more than 10 % either way).
pub fn changed_substantially(old: Duration, new: Duration) -> bool {
    let (o, n) = (old.as_secs_f64(), new.as_secs_f64());
    (n - o).abs() > LOG_CHANGE * o.max(f64::MIN_POSITIVE)
}

/// The period in force: the configured minimum, the describe rate it is sized against, and the
/// last computed value (read by every reconcile, updated from the pool count).
#[derive(Debug)]
pub struct ResyncPeriod {
    configured: Duration,
    describe_qps: Option<f64>,
    current_ms: AtomicU64,
    /// The value last reported: nodes joining one at a time move the period in small steps, and
    /// the change worth a log line is the one since the last line, not since the last step.
    reported_ms: AtomicU64,
}

impl ResyncPeriod {
    /// `configured` is the minimum; `describe_qps` the operator's describe rate (`None`: unknown,
    /// the period stays the configured one).
    pub fn new(configured: Duration, describe_qps: Option<f64>) -> Self {
        ResyncPeriod {
            configured,
            describe_qps,
            current_ms: AtomicU64::new(millis(configured)),
            reported_ms: AtomicU64::new(millis(configured)),
        }
    }

    pub fn configured(&self) -> Duration {
        self.configured
    }

    /// The period last computed (the configured one before the first [`update`](Self::update)).
    pub fn current(&self) -> Duration {
        Duration::from_millis(self.current_ms.load(Ordering::Relaxed))
    }

    /// Recompute for `pools` pools; returns the new period and, when it moved by more than 10 %
    /// since it was last reported this way, the period reported then (for a log line).
    pub fn update(&self, pools: usize) -> (Duration, Option<Duration>) {
        let new = match self.describe_qps {
            Some(qps) => {
                effective_period(self.configured, pools, CALLS_PER_SYNC, qps, RESYNC_FRACTION)
            }
            None => self.configured,
        };
        self.current_ms.store(millis(new), Ordering::Relaxed);
        let reported = Duration::from_millis(self.reported_ms.load(Ordering::Relaxed));
        if !changed_substantially(reported, new) {
            return (new, None);
        }
        // Concurrent reconciles: only the one that swaps the reported value in reports.
        let swapped = self.reported_ms.compare_exchange(
            millis(reported),
            millis(new),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        (new, swapped.is_ok().then_some(reported))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    /// The operator's describe rate with the default flags: EC2's 20/s × `--budget-share` 0.5.
    const DEFAULT_QPS: f64 = 20.0 * 0.5;

    #[test]
    fn period_table() {
        let p = |pools, qps, min: Duration| {
            effective_period(min, pools, CALLS_PER_SYNC, qps, RESYNC_FRACTION).as_secs_f64()
        };
        // (pools, describe rate, configured) → seconds.
        let table: [(usize, f64, Duration, f64); 9] = [
            (0, DEFAULT_QPS, MIN, 60.0),
            (1, DEFAULT_QPS, MIN, 60.0),
            (50, DEFAULT_QPS, MIN, 60.0), // small cluster: 40 s needed, the minimum wins
            (75, DEFAULT_QPS, MIN, 60.0), // break-even: 75 × 2 / 2.5 = 60 s
            (100, DEFAULT_QPS, MIN, 80.0),
            (1_000, DEFAULT_QPS, MIN, 800.0),   // ~13 min
            (5_000, DEFAULT_QPS, MIN, 4_000.0), // ~67 min: about an hour
            (5_000, 20.0, MIN, 2_000.0),        // --budget-share 1
            (5_000, DEFAULT_QPS, Duration::from_secs(7_200), 7_200.0), // a longer minimum holds
        ];
        for (pools, qps, min, want) in table {
            assert_eq!(p(pools, qps, min), want, "{pools} pools at {qps}/s, minimum {min:?}");
        }
    }

    #[test]
    fn resync_stays_within_its_share_of_the_describe_rate() {
        for pools in [1usize, 10, 100, 1_000, 5_000, 20_000] {
            for qps in [1.0, 2.5, 10.0, 20.0, 2_000.0] {
                let d = effective_period(MIN, pools, CALLS_PER_SYNC, qps, RESYNC_FRACTION);
                let rate = pools as f64 * CALLS_PER_SYNC / d.as_secs_f64();
                assert!(rate <= qps * RESYNC_FRACTION + 1e-9, "{pools} pools at {qps}/s: {rate}/s");
                assert!(d >= MIN);
            }
        }
    }

    #[test]
    fn unknown_or_broken_budget_keeps_the_configured_period() {
        for qps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(effective_period(MIN, 5_000, CALLS_PER_SYNC, qps, RESYNC_FRACTION), MIN);
        }
        assert_eq!(effective_period(MIN, 5_000, CALLS_PER_SYNC, 10.0, 0.0), MIN);
        let r = ResyncPeriod::new(MIN, None);
        assert_eq!(r.update(1_000_000), (MIN, None));
    }

    #[test]
    fn jitter_only_stretches_up_to_a_fifth() {
        assert_eq!(jittered(MIN, 0.0), MIN);
        assert_eq!(jittered(MIN, 1.0), Duration::from_secs(72));
        assert_eq!(jittered(MIN, 0.5), Duration::from_secs(66));
        assert_eq!(jittered(MIN, 7.0), Duration::from_secs(72), "clamped");
        assert_eq!(jittered(MIN, -1.0), MIN, "clamped");
    }

    #[test]
    fn update_tracks_the_pool_count_and_reports_substantial_changes() {
        let r = ResyncPeriod::new(MIN, Some(DEFAULT_QPS));
        assert_eq!(r.current(), MIN);
        assert_eq!(r.update(10), (MIN, None), "still the minimum: nothing to log");
        assert_eq!(r.update(1_000), (Duration::from_secs(800), Some(MIN)));
        assert_eq!(r.current(), Duration::from_secs(800));
        // Nodes joining one by one: each step is small, what counts is the change since the
        // period last reported (800 s): 840 s and 880 s are not over 10 %, 920 s is.
        assert_eq!(r.update(1_050), (Duration::from_secs(840), None));
        assert_eq!(r.update(1_100), (Duration::from_secs(880), None));
        assert_eq!(r.current(), Duration::from_secs(880));
        assert_eq!(r.update(1_150), (Duration::from_secs(920), Some(Duration::from_secs(800))));
        assert_eq!(r.update(5_000), (Duration::from_secs(4_000), Some(Duration::from_secs(920))));
        assert_eq!(r.update(0), (MIN, Some(Duration::from_secs(4_000))));
    }
}
