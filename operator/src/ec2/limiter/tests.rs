use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

fn err(kind: Ec2ErrorKind) -> Ec2Error {
    Ec2Error { kind, action: "Test", code: String::new(), message: String::new() }
}

#[test]
fn share_scales_rate_and_burst() {
    assert_eq!(RateConfig::EC2_MUTATE.share(0.5), RateConfig { qps: 2.5, burst: 25 });
    assert_eq!(RateConfig::EC2_DESCRIBE.share(0.5), RateConfig { qps: 10.0, burst: 50 });
    assert_eq!(RateConfig::EC2_MUTATE.share(0.001).burst, 1, "burst never 0");
    assert!(!RateConfig { qps: 0.0, burst: 1 }.is_valid());
}

#[test]
fn aimd_halves_once_per_holdoff_and_stops_at_the_floor() {
    let t0 = Instant::now();
    let cfg = AimdConfig::default();
    let mut a = Aimd::new(8.0, cfg);
    assert!(a.on_throttle(t0));
    assert_eq!(a.rate(), 4.0);
    // Concurrent throttles of the same burst: one signal.
    assert!(!a.on_throttle(t0 + Duration::from_millis(500)));
    assert_eq!(a.rate(), 4.0);
    let mut t = t0;
    for _ in 0..20 {
        t += cfg.decrease_holdoff;
        a.on_throttle(t);
    }
    assert_eq!(a.rate(), 8.0 / 8.0, "floor = configured × min_fraction");
    assert!(!a.on_throttle(t + cfg.decrease_holdoff), "at the floor: no change");
}

#[test]
fn aimd_recovers_additively_after_quiet_periods() {
    let t0 = Instant::now();
    let cfg = AimdConfig::default();
    let mut a = Aimd::new(10.0, cfg);
    assert!(!a.on_tick(t0), "nothing to recover at the configured rate");
    a.on_throttle(t0);
    assert_eq!(a.rate(), 5.0);
    assert!(!a.on_tick(t0 + cfg.quiet_period - Duration::from_millis(1)));
    let mut t = t0 + cfg.quiet_period;
    assert!(a.on_tick(t));
    assert_eq!(a.rate(), 6.0);
    assert!(!a.on_tick(t + Duration::from_secs(1)), "one step per quiet period");
    for _ in 0..10 {
        t += cfg.quiet_period;
        a.on_tick(t);
    }
    assert_eq!(a.rate(), 10.0, "never above the configured rate");
    // A throttle during recovery resets the quiet period.
    a.on_throttle(t);
    assert!(!a.on_tick(t + cfg.quiet_period / 2));
}

#[test]
fn backoff_is_exponential_capped_and_equal_jittered() {
    let b = Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(2) };
    assert_eq!(b.delay(1, 0.0), Duration::from_millis(100));
    assert_eq!(b.delay(1, 1.0), Duration::from_millis(200));
    assert_eq!(b.delay(2, 0.0), Duration::from_millis(200));
    assert_eq!(b.delay(3, 0.5), Duration::from_millis(600));
    assert_eq!(b.delay(4, 1.0), Duration::from_millis(1600));
    assert_eq!(b.delay(5, 1.0), Duration::from_secs(2), "capped");
    assert_eq!(b.delay(500, 0.0), Duration::from_secs(1), "no overflow");
    assert_eq!(b.delay(2, 7.0), b.delay(2, 1.0), "jitter clamped");
}

fn limiter(mutate: RateConfig) -> Ec2Limiter {
    Ec2Limiter::new(
        RateConfig::EC2_DESCRIBE,
        mutate,
        AimdConfig::default(),
        RetryPolicy::default(),
        Ec2Metrics::default(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_mutations_stays_within_the_configured_rate() {
    let rate = RateConfig::EC2_MUTATE.share(0.5); // 2.5/s, burst 25
    let l = Arc::new(limiter(rate));
    let start = Instant::now();
    let n = 75usize;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            l.call("AssignPrivateIpAddresses", ApiClass::Mutate, Retry::ThrottleOnly, || async {
                Ok(Instant::now())
            })
            .await
            .unwrap()
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.push(t.await.unwrap().duration_since(start));
    }
    times.sort();
    // The burst passes at once, then one call per 1/qps.
    assert!(times[rate.burst as usize - 1] < Duration::from_millis(1));
    for (i, t) in times.iter().enumerate() {
        let allowed = (i + 1).saturating_sub(rate.burst as usize) as f64 / rate.qps;
        assert!(t.as_secs_f64() + 1e-6 >= allowed, "call {i} at {t:?}, allowed from {allowed}s");
    }
    let last = times.last().unwrap().as_secs_f64();
    let expected = (n - rate.burst as usize) as f64 / rate.qps; // 20 s
    assert!(
        (expected..expected + 0.5).contains(&last),
        "last call at {last}s, expected ~{expected}s"
    );
    // Describe calls are not slowed by the mutate bucket.
    let t = Instant::now();
    l.call("DescribeNetworkInterfaces", ApiClass::Describe, Retry::Idempotent, || async { Ok(()) })
        .await
        .unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn throttles_are_retried_and_halve_the_rate_once() {
    let rate = RateConfig { qps: 4.0, burst: 4 };
    let l = limiter(rate);
    let attempts = AtomicU32::new(0);
    let out = l
        .call("AttachNetworkInterface", ApiClass::Mutate, Retry::ThrottleOnly, || {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(err(Ec2ErrorKind::Throttled))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(out, Ok(2));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    // Throttled backoff 1 s base: the second throttle came within the 2 s holdoff.
    assert_eq!(l.class(ApiClass::Mutate).rate(), 2.0);
    assert_eq!(l.class(ApiClass::Describe).rate(), RateConfig::EC2_DESCRIBE.qps);

    // While reduced, calls are paced at the reduced rate with no burst.
    let start = Instant::now();
    for _ in 0..5 {
        l.call("AssignPrivateIpAddresses", ApiClass::Mutate, Retry::Idempotent, || async {
            Ok(())
        })
        .await
        .unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    assert!(took >= 4.0 / 2.0 - 1e-6, "5 calls at 2/s take >= 2 s, took {took}");

    // And the rate recovers after quiet periods.
    tokio::time::sleep(Duration::from_secs(60)).await;
    for _ in 0..20 {
        l.class(ApiClass::Mutate).acquire().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    assert_eq!(l.class(ApiClass::Mutate).rate(), 4.0);
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_only_when_idempotent() {
    let l = limiter(RateConfig::EC2_MUTATE);
    let attempts = AtomicU32::new(0);
    let out: Ec2Result<()> = l
        .call("AssignPrivateIpAddresses", ApiClass::Mutate, Retry::ThrottleOnly, || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err(err(Ec2ErrorKind::Transient)) }
        })
        .await;
    assert_eq!(out.unwrap_err().kind, Ec2ErrorKind::Transient);
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "ambiguous mutation not repeated");

    attempts.store(0, Ordering::SeqCst);
    let out: Ec2Result<()> = l
        .call("DescribeSubnets", ApiClass::Describe, Retry::Idempotent, || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err(err(Ec2ErrorKind::Transient)) }
        })
        .await;
    assert_eq!(out.unwrap_err().kind, Ec2ErrorKind::Transient);
    assert_eq!(attempts.load(Ordering::SeqCst), RetryPolicy::default().max_attempts);

    attempts.store(0, Ordering::SeqCst);
    let out: Ec2Result<()> = l
        .call("DescribeSubnets", ApiClass::Describe, Retry::Idempotent, || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err(err(Ec2ErrorKind::NotFound)) }
        })
        .await;
    assert_eq!(out.unwrap_err().kind, Ec2ErrorKind::NotFound);
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "permanent errors are not retried");
}
