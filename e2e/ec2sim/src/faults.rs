//! Fault injection and call accounting: per-action token buckets (EC2 throttles each API action
//! from its own bucket and answers `RequestLimitExceeded` with HTTP 503), injected 5xx/any errors,
//! latency, Describe lag, and per-action counters. Controlled in-process or over `/admin/faults`.

use super::Error;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A token bucket: `capacity` burst, refilled at `refill_per_sec`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenBucketSpec {
    pub capacity: f64,
    /// Tokens added per second.
    pub refill_per_sec: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRule {
    /// Action it applies to; `None` or `"*"` for every action.
    #[serde(default)]
    pub action: Option<String>,
    /// EC2 error code, e.g. `InternalError`, `ServiceUnavailable`, `RequestLimitExceeded`.
    #[serde(default = "default_code")]
    pub code: String,
    /// HTTP status; 0 derives it from the code like EC2 does.
    #[serde(default)]
    pub status: u16,
    /// Probability per matching call, 0..=1.
    #[serde(default = "one")]
    pub probability: f64,
    /// Fire at most this many more times (`None` = unlimited).
    #[serde(default)]
    pub count: Option<u32>,
    /// Send an HTML body without an EC2 error code (a load balancer's 5xx page).
    #[serde(default)]
    pub html: bool,
}

fn default_code() -> String {
    "InternalError".into()
}
fn one() -> f64 {
    1.0
}

/// All fault settings. Keys of `throttle` and `latency_ms`: an action name, `"Describe*"` (every
/// read), `"Mutate*"` (every write) or `"*"`; the most specific key wins. Each action still has
/// its own bucket, as in EC2.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultConfig {
    #[serde(default)]
    pub throttle: BTreeMap<String, TokenBucketSpec>,
    /// Injected errors, checked in order; the first that fires wins.
    #[serde(default)]
    pub errors: Vec<ErrorRule>,
    /// Added latency per call, in milliseconds.
    #[serde(default)]
    pub latency_ms: BTreeMap<String, u64>,
    /// Describe* answer from the state as it was this many milliseconds ago.
    #[serde(default)]
    pub describe_lag_ms: u64,
}

/// Calls of one action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCounters {
    pub calls: u64,
    pub ok: u64,
    /// Answered with an EC2 error from the model (limits, not found, ...).
    pub errors: u64,
    /// Rejected by a token bucket.
    pub throttled: u64,
    /// Failed by an injected error rule.
    pub injected: u64,
}

/// What the fault layer decided for one call.
pub enum Verdict {
    Pass,
    /// Answer with this EC2 error.
    Fail(Error),
    /// Answer with an HTML page and this status.
    Html(u16),
}

#[derive(Default)]
pub struct Faults {
    pub config: FaultConfig,
    buckets: HashMap<String, (f64, Instant)>,
    pub counters: BTreeMap<String, ActionCounters>,
}

fn pick<'a, T>(map: &'a BTreeMap<String, T>, action: &str, describe: bool) -> Option<&'a T> {
    let class = if describe { "Describe*" } else { "Mutate*" };
    map.get(action).or_else(|| map.get(class)).or_else(|| map.get("*"))
}

impl Faults {
    /// Replaces the settings; buckets start full again.
    pub fn set(&mut self, config: FaultConfig) {
        self.config = config;
        self.buckets.clear();
    }

    /// Makes every counted error rule that has failures left fire on its next calls, so that a
    /// run can wait for the rest without depending on how many calls chance still brings.
    pub fn fire_remaining(&mut self) {
        for rule in self.config.errors.iter_mut().filter(|r| r.count.is_some_and(|c| c > 0)) {
            rule.probability = 1.0;
        }
    }

    /// Counter entry of an action.
    pub fn counter(&mut self, action: &str) -> &mut ActionCounters {
        self.counters.entry(action.to_string()).or_default()
    }

    /// Latency to add before answering.
    pub fn latency(&self, action: &str, describe: bool) -> Duration {
        Duration::from_millis(pick(&self.config.latency_ms, action, describe).copied().unwrap_or(0))
    }

    /// Takes a token and checks the error rules; counts the call.
    pub fn admit(&mut self, action: &str, describe: bool, now: Instant) -> Verdict {
        self.counter(action).calls += 1;
        if let Some(spec) = pick(&self.config.throttle, action, describe).copied() {
            let (tokens, last) =
                self.buckets.entry(action.to_string()).or_insert((spec.capacity, now));
            let refill = now.saturating_duration_since(*last).as_secs_f64() * spec.refill_per_sec;
            *tokens = (*tokens + refill).min(spec.capacity);
            *last = now;
            if *tokens < 1.0 {
                self.counter(action).throttled += 1;
                return Verdict::Fail(Error::api(
                    "RequestLimitExceeded",
                    "Request limit exceeded.",
                ));
            }
            *tokens -= 1.0;
        }
        for rule in self.config.errors.iter_mut() {
            let applies = rule.action.as_deref().is_none_or(|a| a == "*" || a == action);
            if !applies
                || rule.count == Some(0)
                || !rand::random_bool(rule.probability.clamp(0.0, 1.0))
            {
                continue;
            }
            if let Some(c) = rule.count.as_mut() {
                *c -= 1;
            }
            let mut err =
                Error::api(rule.code.clone(), "Injected fault: an internal error has occurred.");
            if let Error::Api { status, .. } = &mut err {
                if rule.status != 0 {
                    *status = rule.status;
                }
                let s = *status;
                let html = rule.html;
                self.counter(action).injected += 1;
                return if html { Verdict::Html(s) } else { Verdict::Fail(err) };
            }
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills() {
        let mut f = Faults::default();
        let mut cfg = FaultConfig::default();
        cfg.throttle
            .insert("Mutate*".into(), TokenBucketSpec { capacity: 2.0, refill_per_sec: 10.0 });
        f.set(cfg);
        let t0 = Instant::now();
        assert!(matches!(f.admit("CreateTags", false, t0), Verdict::Pass));
        assert!(matches!(f.admit("CreateTags", false, t0), Verdict::Pass));
        assert!(matches!(f.admit("CreateTags", false, t0), Verdict::Fail(_)));
        // A different action has its own bucket; reads are not covered by Mutate*.
        assert!(matches!(f.admit("DeleteTags", false, t0), Verdict::Pass));
        assert!(matches!(f.admit("DescribeSubnets", true, t0), Verdict::Pass));
        assert!(matches!(
            f.admit("CreateTags", false, t0 + Duration::from_millis(100)),
            Verdict::Pass
        ));
        assert_eq!(f.counters["CreateTags"].throttled, 1);
        assert_eq!(f.counters["CreateTags"].calls, 4);
    }

    #[test]
    fn counted_error_rule() {
        let mut f = Faults::default();
        f.set(FaultConfig {
            errors: vec![ErrorRule {
                action: Some("DescribeSubnets".into()),
                code: "ServiceUnavailable".into(),
                status: 0,
                probability: 1.0,
                count: Some(1),
                html: false,
            }],
            ..Default::default()
        });
        let now = Instant::now();
        match f.admit("DescribeSubnets", true, now) {
            Verdict::Fail(Error::Api { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (503, "ServiceUnavailable"))
            }
            _ => panic!("expected injected error"),
        }
        assert!(matches!(f.admit("DescribeSubnets", true, now), Verdict::Pass));
    }

    #[test]
    fn remaining_failures_fire_on_the_next_calls() {
        let mut f = Faults::default();
        let rule = |action: &str, count| ErrorRule {
            action: Some(action.into()),
            code: "InternalError".into(),
            status: 0,
            probability: 0.0,
            count,
            html: false,
        };
        f.set(FaultConfig {
            errors: vec![rule("DescribeInstances", Some(2)), rule("DescribeSubnets", None)],
            ..Default::default()
        });
        let now = Instant::now();
        assert!(matches!(f.admit("DescribeInstances", true, now), Verdict::Pass));
        f.fire_remaining();
        for _ in 0..2 {
            assert!(matches!(f.admit("DescribeInstances", true, now), Verdict::Fail(_)));
        }
        assert!(matches!(f.admit("DescribeInstances", true, now), Verdict::Pass));
        // A rule without a count would fail forever: it keeps its probability.
        assert!(matches!(f.admit("DescribeSubnets", true, now), Verdict::Pass));
        assert_eq!(f.counters["DescribeInstances"].injected, 2);
    }
}
