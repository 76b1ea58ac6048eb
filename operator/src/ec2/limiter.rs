//! The EC2 budget: one rate limiter per API class (describe / mutate), AIMD on
//! `RequestLimitExceeded`, and a bounded, jittered retry loop.
//!
//! EC2 throttles per account and per API class with token buckets (mutating calls refill at about
//! 5/s with a burst of 50). Other tools share that account budget, so enipool only spends a
//! configured share of it ([`RateConfig::share`]).
//!
//! Design (why two limiters):
//! - The configured quota is a `governor` GCRA limiter that never changes (`base`).
//! - AIMD is a second, burst-free `governor` limiter (`gate`) that exists only while the allowed
//!   rate is below the configured one. It is rebuilt with the new quota on every AIMD change; since
//!   its burst is 1, rebuilding cannot hand out a fresh burst (rebuilding the base limiter could:
//!   a new GCRA limiter starts full). When the rate has recovered the gate is dropped.
//! - Both limiters run on [`TokioClock`], a `governor` clock over `tokio::time::Instant`, and
//!   waiting is `tokio::time::sleep`, so tests with paused tokio time are deterministic (governor's
//!   own `until_ready` uses the wall clock and `futures-timer`).
//! - The SDK is configured with a single attempt (see `aws.rs`): this loop is the only retrier, so
//!   a throttled call is not retried by the SDK behind the limiter's back.

use super::metrics::{CallLabels, ClassLabels, Ec2Metrics};
use super::{Ec2Error, Ec2ErrorKind, Ec2Result};
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The two EC2 API classes EC2 throttles separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiClass {
    /// `Describe*`.
    Describe,
    /// Everything that changes state (Create/Attach/Assign/...).
    Mutate,
}

impl ApiClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiClass::Describe => "describe",
            ApiClass::Mutate => "mutate",
        }
    }
}

/// A token bucket: sustained requests per second and burst size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// Sustained requests per second (> 0).
    pub qps: f64,
    /// Bucket size (>= 1).
    pub burst: u32,
}

impl RateConfig {
    /// EC2's describe bucket per account (refill 20/s, burst 100).
    pub const EC2_DESCRIBE: RateConfig = RateConfig { qps: 20.0, burst: 100 };
    /// EC2's mutating bucket per account (refill 5/s, burst 50).
    pub const EC2_MUTATE: RateConfig = RateConfig { qps: 5.0, burst: 50 };

    /// This bucket scaled to a share of it (`0 < share <= 1`); burst never below 1.
    pub fn share(self, share: f64) -> RateConfig {
        RateConfig {
            qps: self.qps * share,
            burst: ((f64::from(self.burst) * share).floor() as u32).max(1),
        }
    }

    /// Whether the numbers are usable.
    pub fn is_valid(self) -> bool {
        self.qps.is_finite() && self.qps > 0.0 && self.burst >= 1
    }

    fn quota(self) -> Quota {
        let period = Duration::from_secs_f64(1.0 / self.qps).max(Duration::from_nanos(1));
        Quota::with_period(period)
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(self.burst.max(1)).expect("burst >= 1"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdConfig {
    /// Multiplier applied to the allowed rate on `RequestLimitExceeded` (e.g. 0.5).
    pub decrease_factor: f64,
    /// Floor of the allowed rate as a fraction of the configured rate.
    pub min_fraction: f64,
    /// Additive recovery step as a fraction of the configured rate.
    pub increase_fraction: f64,
    /// Quiet time (no throttle, no other change) before each recovery step.
    pub quiet_period: Duration,
    /// Throttles within this time of the last decrease do not decrease again: a burst of
    /// concurrent calls that all hit the same empty bucket is one congestion signal, not many.
    pub decrease_holdoff: Duration,
}

impl Default for AimdConfig {
    fn default() -> Self {
        Self {
            decrease_factor: 0.5,
            // 1/8, not lower: recovery needs a quiet period, which a sustained partial storm never
            // gives, so a lower floor left the operator crawling (0.3 describe/s starved a joining
            // node for over a minute in the throttling-storm scenario). EC2's own buckets still
            // refuse what is over budget and those calls back off.
            min_fraction: 1.0 / 8.0,
            increase_fraction: 0.1,
            quiet_period: Duration::from_secs(10),
            decrease_holdoff: Duration::from_secs(2),
        }
    }
}

/// The AIMD arithmetic, pure: time is passed in.
#[derive(Debug, Clone)]
pub struct Aimd {
    cfg: AimdConfig,
    configured: f64,
    current: f64,
    last_throttle: Option<Instant>,
    last_decrease: Option<Instant>,
    last_change: Option<Instant>,
}

impl Aimd {
    /// Starts at the configured rate.
    pub fn new(configured: f64, cfg: AimdConfig) -> Self {
        Self {
            cfg,
            configured,
            current: configured,
            last_throttle: None,
            last_decrease: None,
            last_change: None,
        }
    }

    /// The rate currently allowed (requests/s).
    pub fn rate(&self) -> f64 {
        self.current
    }

    /// The configured (maximum) rate.
    pub fn configured(&self) -> f64 {
        self.configured
    }

    /// The lowest rate AIMD goes down to.
    pub fn floor(&self) -> f64 {
        self.configured * self.cfg.min_fraction
    }

    /// A `RequestLimitExceeded` at `now`. Returns whether the rate changed.
    pub fn on_throttle(&mut self, now: Instant) -> bool {
        self.last_throttle = Some(now);
        if let Some(d) = self.last_decrease {
            if now.saturating_duration_since(d) < self.cfg.decrease_holdoff {
                return false;
            }
        }
        let next = (self.current * self.cfg.decrease_factor).max(self.floor());
        self.last_decrease = Some(now);
        self.set(next, now)
    }

    /// Called whenever the limiter is used: one additive step back toward the configured rate once
    /// a quiet period has passed since the last throttle and the last change. Returns whether the
    /// rate changed.
    pub fn on_tick(&mut self, now: Instant) -> bool {
        if self.current >= self.configured {
            return false;
        }
        let quiet = |t: Option<Instant>| {
            t.is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.quiet_period)
        };
        if !quiet(self.last_throttle) || !quiet(self.last_change) {
            return false;
        }
        let next =
            (self.current + self.configured * self.cfg.increase_fraction).min(self.configured);
        self.set(next, now)
    }

    fn set(&mut self, next: f64, now: Instant) -> bool {
        if next == self.current {
            return false;
        }
        self.current = next;
        self.last_change = Some(now);
        true
    }
}

/// Delay schedule of one error category: exponential from `base`, capped, "equal jitter" (half
/// fixed, half random) so concurrent callers spread out but never retry immediately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay scale of the first retry.
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// Delay before retry number `retry` (1 = the first retry); `jitter` in `[0, 1]`.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let half = full / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Bounded retries of retryable errors ([`Ec2ErrorKind::is_retryable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (>= 1).
    pub max_attempts: u32,
    /// Schedule after `Transient` errors.
    pub transient: Backoff,
    /// Schedule after `Throttled` errors (longer: the bucket needs time to refill).
    pub throttled: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            transient: Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(10) },
            throttled: Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(20) },
        }
    }
}

/// Whether a call may be repeated after an error whose outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Describes, and mutations that are safe to repeat (ClientToken, unassign, tags, detach,
    /// delete, DeleteOnTermination): retried on `Throttled` and `Transient`.
    Idempotent,
    /// Mutations that are not (AssignPrivateIpAddresses by count, AttachNetworkInterface): a
    /// timeout or 5xx may have been applied, so only `Throttled` (EC2 rejected the request before
    /// doing anything) is retried here; a `Transient` goes back to the caller, whose journal
    /// describes the ENI and compares before trying again.
    ThrottleOnly,
}

/// A `governor` clock over tokio's clock (so paused-time tests are deterministic).
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(Instant::now().saturating_duration_since(self.origin))
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

async fn wait_for(bucket: &Bucket, clock: &TokioClock) {
    loop {
        match bucket.check() {
            Ok(()) => return,
            Err(not_until) => {
                let wait = not_until.wait_time_from(clock.now());
                tokio::time::sleep(wait.max(Duration::from_micros(50))).await;
            }
        }
    }
}

struct GateState {
    aimd: Aimd,
    gate: Option<Arc<Bucket>>,
}

/// The limiter of one API class.
pub struct ClassLimiter {
    class: ApiClass,
    configured: RateConfig,
    clock: TokioClock,
    base: Bucket,
    state: Mutex<GateState>,
    metrics: Ec2Metrics,
}

impl std::fmt::Debug for ClassLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassLimiter")
            .field("class", &self.class)
            .field("configured", &self.configured)
            .field("rate", &self.rate())
            .finish()
    }
}

impl ClassLimiter {
    /// A limiter allowing `rate`, adapting with `aimd`.
    pub fn new(class: ApiClass, rate: RateConfig, aimd: AimdConfig, metrics: Ec2Metrics) -> Self {
        let clock = TokioClock::default();
        let base = Bucket::direct_with_clock(rate.quota(), clock.clone());
        let this = Self {
            class,
            configured: rate,
            clock,
            base,
            state: Mutex::new(GateState { aimd: Aimd::new(rate.qps, aimd), gate: None }),
            metrics,
        };
        this.rate_gauge().set(rate.qps);
        this
    }

    fn labels(&self) -> ClassLabels {
        ClassLabels { class: self.class.as_str() }
    }

    fn rate_gauge(
        &self,
    ) -> prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64> {
        self.metrics.limiter_rate.get_or_create(&self.labels()).clone()
    }

    pub fn configured(&self) -> RateConfig {
        self.configured
    }

    /// The rate AIMD currently allows.
    pub fn rate(&self) -> f64 {
        self.state.lock().expect("limiter lock").aimd.rate()
    }

    /// Waits until one request may be sent.
    pub async fn acquire(&self) {
        let start = Instant::now();
        wait_for(&self.base, &self.clock).await;
        let gate = {
            let mut s = self.state.lock().expect("limiter lock");
            if s.aimd.on_tick(Instant::now()) {
                self.rebuild(&mut s);
            }
            s.gate.clone()
        };
        if let Some(gate) = gate {
            wait_for(&gate, &self.clock).await;
        }
        let waited = start.elapsed();
        if !waited.is_zero() {
            self.metrics.limiter_wait.get_or_create(&self.labels()).inc_by(waited.as_secs_f64());
        }
    }

    /// EC2 answered `RequestLimitExceeded`.
    pub fn on_throttle(&self) {
        self.metrics.throttled.get_or_create(&self.labels()).inc();
        let mut s = self.state.lock().expect("limiter lock");
        if s.aimd.on_throttle(Instant::now()) {
            self.rebuild(&mut s);
            tracing::warn!(
                class = self.class.as_str(),
                rate = s.aimd.rate(),
                "EC2 throttled: lowering the request rate"
            );
        }
    }

    fn rebuild(&self, s: &mut GateState) {
        let rate = s.aimd.rate();
        s.gate = if rate >= self.configured.qps {
            None
        } else {
            let quota = RateConfig { qps: rate, burst: 1 }.quota();
            Some(Arc::new(Bucket::direct_with_clock(quota, self.clock.clone())))
        };
        self.rate_gauge().set(rate);
    }
}

/// Both class limiters plus the retry loop every EC2 call goes through.
#[derive(Debug)]
pub struct Ec2Limiter {
    describe: ClassLimiter,
    mutate: ClassLimiter,
    retry: RetryPolicy,
    metrics: Ec2Metrics,
}

impl Ec2Limiter {
    /// Limiters for the two classes.
    pub fn new(
        describe: RateConfig,
        mutate: RateConfig,
        aimd: AimdConfig,
        retry: RetryPolicy,
        metrics: Ec2Metrics,
    ) -> Self {
        Self {
            describe: ClassLimiter::new(ApiClass::Describe, describe, aimd, metrics.clone()),
            mutate: ClassLimiter::new(ApiClass::Mutate, mutate, aimd, metrics.clone()),
            retry: RetryPolicy { max_attempts: retry.max_attempts.max(1), ..retry },
            metrics,
        }
    }

    /// The limiter of `class`.
    pub fn class(&self, class: ApiClass) -> &ClassLimiter {
        match class {
            ApiClass::Describe => &self.describe,
            ApiClass::Mutate => &self.mutate,
        }
    }

    /// Runs `op` (one EC2 request, already classified into [`Ec2Error`]) under the class limiter,
    /// recording metrics per attempt and retrying retryable errors as `retry` allows.
    pub async fn call<T, F, Fut>(
        &self,
        action: &'static str,
        class: ApiClass,
        retry: Retry,
        mut op: F,
    ) -> Ec2Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Ec2Result<T>>,
    {
        let limiter = self.class(class);
        let mut attempt = 1u32;
        loop {
            limiter.acquire().await;
            let started = Instant::now();
            let result = op().await;
            self.metrics
                .duration
                .get_or_create(&super::metrics::ActionLabels { action })
                .observe(started.elapsed().as_secs_f64());
            let err: Ec2Error = match result {
                Ok(v) => {
                    self.metrics.calls.get_or_create(&CallLabels { action, result: "ok" }).inc();
                    return Ok(v);
                }
                Err(e) => e,
            };
            self.metrics
                .calls
                .get_or_create(&CallLabels { action, result: err.kind.label() })
                .inc();
            if err.kind == Ec2ErrorKind::Throttled {
                limiter.on_throttle();
            }
            let may_retry = match retry {
                Retry::Idempotent => err.kind.is_retryable(),
                Retry::ThrottleOnly => err.kind == Ec2ErrorKind::Throttled,
            };
            if !may_retry || attempt >= self.retry.max_attempts {
                return Err(err);
            }
            let schedule = if err.kind == Ec2ErrorKind::Throttled {
                self.retry.throttled
            } else {
                self.retry.transient
            };
            let delay = schedule.delay(attempt, rand::random::<f64>());
            tracing::debug!(
                action,
                attempt,
                kind = err.kind.as_str(),
                delay_ms = delay.as_millis() as u64,
                error = &err as &dyn std::error::Error,
                "retrying EC2 call"
            );
            self.metrics
                .retries
                .get_or_create(&CallLabels { action, result: err.kind.label() })
                .inc();
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests;
