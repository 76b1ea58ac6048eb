//! Prometheus metrics of the controller (`enipool_operator_*`). Labels are categories and states,
//! never node names. The ec2 module registers its call metrics in the same registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// `category` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    /// Error category (`Error::category`).
    pub category: String,
}

/// `state` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Pool state: Ready, NotReady, Paused, Terminating.
    pub state: String,
}

/// Controller metrics.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Counter,
    failures: Family<CategoryLabels, Counter>,
    duration: Histogram,
    pools: Family<StateLabels, Gauge>,
    resync_period: Gauge<f64, AtomicU64>,
    states: Mutex<HashMap<String, &'static str>>,
}

impl Metrics {
    /// Create and register under the `enipool_operator` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            reconciles: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            pools: Family::default(),
            resync_period: Gauge::default(),
            states: Mutex::new(HashMap::new()),
        };
        let r = registry.sub_registry_with_prefix("enipool_operator");
        r.register("reconcile", "Pool reconciles", m.reconciles.clone());
        r.register(
            "reconcile_failures",
            "Failed pool reconciles by error category",
            m.failures.clone(),
        );
        r.register("reconcile_duration_seconds", "Pool reconcile duration", m.duration.clone());
        r.register("pools", "ENIPools by state", m.pools.clone());
        r.register(
            "resync_period_seconds",
            "Period of each pool's EC2 resync: --resync-seconds, grown with the number of pools to \
             fit the describe budget",
            m.resync_period.clone(),
        );
        m
    }

    /// Count one reconcile and its duration.
    pub fn reconciled(&self, seconds: f64) {
        self.reconciles.inc();
        self.duration.observe(seconds);
    }

    /// Record the resync period in force.
    pub fn resync_period(&self, period: std::time::Duration) {
        self.resync_period.set(period.as_secs_f64());
    }

    /// Count a failure.
    pub fn failed(&self, category: &str) {
        self.failures.get_or_create(&CategoryLabels { category: category.into() }).inc();
    }

    /// Record a pool's state (`None` = the pool is gone).
    pub fn pool_state(&self, pool: &str, state: Option<&'static str>) {
        let mut states = self.states.lock().expect("metrics lock");
        let old = match state {
            Some(s) => states.insert(pool.to_string(), s),
            None => states.remove(pool),
        };
        if old == state {
            return;
        }
        if let Some(o) = old {
            self.pools.get_or_create(&StateLabels { state: o.into() }).dec();
        }
        if let Some(s) = state {
            self.pools.get_or_create(&StateLabels { state: s.into() }).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_period_is_exposed_in_seconds() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.resync_period(std::time::Duration::from_secs(4_000));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("\nenipool_operator_resync_period_seconds 4000.0\n"), "{out}");
    }
}
