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
    /// Pool state: Ready, NotReady or Paused (a pool being deleted is not counted).
    pub state: String,
}

/// `kind`, `outcome` labels of journal replays.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplayLabels {
    /// Operation kind (`CreateENI`, `DetachENI`, ...).
    pub kind: String,
    /// `finished`, `dropped`, `retry` or `waiting`.
    pub outcome: String,
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Deleted ENIs: `leaked` (GC) or `node_deleted` (a deleted node's pool finalizer). Rejected
    /// journal entries: `journal::validate::Reason`.
    pub reason: String,
}

#[derive(Debug)]
pub struct Metrics {
    reconciles: Counter,
    failures: Family<CategoryLabels, Counter>,
    duration: Histogram,
    pools: Family<StateLabels, Gauge>,
    resync_period: Gauge<f64, AtomicU64>,
    leader: Gauge,
    journal_replays: Family<ReplayLabels, Counter>,
    journal_rejected: Family<ReasonLabels, Counter>,
    enis_deleted: Family<ReasonLabels, Counter>,
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
            leader: Gauge::default(),
            journal_replays: Family::default(),
            journal_rejected: Family::default(),
            enis_deleted: Family::default(),
            states: Mutex::new(HashMap::new()),
        };
        register_build_info(registry, "operator");
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
        r.register(
            "leader",
            "1 while this replica holds the leader Lease, else 0",
            m.leader.clone(),
        );
        r.register(
            "journal_replays",
            "Journal entries replayed against EC2 (after a failure or a restart) by kind and outcome",
            m.journal_replays.clone(),
        );
        r.register(
            "journal_rejected",
            "Journal entries and releasing intents read back from a pool's status that EC2 did not \
             confirm as the pool's own, dropped without acting, by reason",
            m.journal_rejected.clone(),
        );
        r.register(
            "enis_deleted",
            "ENIs the operator deleted outside a planned release: leaked (GC) or of a deleted node",
            m.enis_deleted.clone(),
        );
        m
    }

    /// Count a journal entry's replay.
    pub fn journal_replay(&self, kind: &str, outcome: &str) {
        let labels = ReplayLabels { kind: kind.into(), outcome: outcome.into() };
        self.journal_replays.get_or_create(&labels).inc();
    }

    /// Count an entry read back from a pool's status and rejected for `reason`.
    pub fn journal_rejected(&self, reason: &str) {
        self.journal_rejected.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    /// Count `n` ENIs deleted for `reason` (`leaked`, `node_deleted`).
    pub fn enis_deleted(&self, reason: &str, n: usize) {
        if n > 0 {
            self.enis_deleted
                .get_or_create(&ReasonLabels { reason: reason.into() })
                .inc_by(n as u64);
        }
    }

    /// Record a leadership change. A replica that is no longer the leader forgets its pool states
    /// (`enipool_operator_pools` is the leader's view; a standby must not report stale values),
    /// and rebuilds them from its reconciles when it leads again.
    pub fn leadership(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        if !leader {
            let mut states = self.states.lock().expect("metrics lock");
            states.clear();
            self.pools.clear();
        }
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

    /// Count a failed reconcile by its error category (`Error::category`, a PascalCase
    /// Kubernetes reason), labelled in snake_case like every category across enipool's metrics.
    pub fn failed(&self, category: &str) {
        self.failures.get_or_create(&CategoryLabels { category: label_case(category) }).inc();
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

/// `PascalCase` (acronyms included: `InvalidProviderID`) → `snake_case` (`invalid_provider_id`);
/// snake_case stays as it is.
pub fn label_case(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            // A word starts at an upper-case letter after a lower-case one or a digit, or at the
            // last upper-case letter of an acronym followed by a lower-case one (`IDMismatch`).
            let starts = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if starts && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
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

    /// Replays by kind and outcome; deleted ENIs by reason, and no series for nothing deleted
    /// (a GC run that found no leak must not make a `leaked` series appear at 0).
    #[test]
    fn replays_and_deleted_enis_are_counted_by_their_labels() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.journal_replay("CreateENI", "finished");
        m.journal_replay("DeleteENI", "dropped");
        m.journal_replay("DeleteENI", "dropped");
        m.journal_rejected("eni_not_this_pool");
        m.enis_deleted("leaked", 0);
        m.enis_deleted("node_deleted", 3);
        let out = encode(&registry);
        for line in [
            r#"enipool_operator_journal_replays_total{kind="CreateENI",outcome="finished"} 1"#,
            r#"enipool_operator_journal_replays_total{kind="DeleteENI",outcome="dropped"} 2"#,
            r#"enipool_operator_enis_deleted_total{reason="node_deleted"} 3"#,
            r#"enipool_operator_journal_rejected_total{reason="eni_not_this_pool"} 1"#,
        ] {
            assert!(out.contains(line), "{line} missing in:\n{out}");
        }
        assert!(!out.contains(r#"reason="leaked""#), "{out}");
    }

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn leader_gauge_and_losing_leadership_clears_the_pool_states() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        assert!(encode(&registry).contains("\nenipool_operator_leader 0\n"), "0 before leading");

        m.leadership(true);
        m.pool_state("a", Some("Ready"));
        m.pool_state("b", Some("Ready"));
        m.pool_state("c", Some("NotReady"));
        let out = encode(&registry);
        assert!(out.contains("\nenipool_operator_leader 1\n"), "{out}");
        assert!(out.contains("enipool_operator_pools{state=\"Ready\"} 2\n"), "{out}");
        assert!(out.contains("enipool_operator_pools{state=\"NotReady\"} 1\n"), "{out}");

        // Lost the Lease without restarting: no stale pool series.
        m.leadership(false);
        let out = encode(&registry);
        assert!(out.contains("\nenipool_operator_leader 0\n"), "{out}");
        assert!(!out.contains("enipool_operator_pools{"), "stale pool series: {out}");

        // Leading again: the states are rebuilt from scratch by the reconciles (same states as
        // before are counted again, not skipped as unchanged).
        m.leadership(true);
        m.pool_state("a", Some("Ready"));
        m.pool_state("c", Some("Ready"));
        let out = encode(&registry);
        assert!(out.contains("enipool_operator_pools{state=\"Ready\"} 2\n"), "{out}");
        assert!(!out.contains("state=\"NotReady\""), "{out}");
        m.pool_state("a", None);
        assert!(encode(&registry).contains("enipool_operator_pools{state=\"Ready\"} 1\n"));
    }

    #[test]
    fn label_case_turns_categories_into_snake_case() {
        for (from, to) in [
            ("KubeApi", "kube_api"),
            ("InvalidProviderID", "invalid_provider_id"),
            ("Conflict", "conflict"),
            ("NoCidrBlocks", "no_cidr_blocks"),
            ("EC2Synced", "ec2_synced"),
            ("IDMismatch", "id_mismatch"),
            ("already_snake", "already_snake"),
        ] {
            assert_eq!(label_case(from), to, "{from}");
        }
    }

    #[test]
    fn ec2_result_labels_are_the_categories_in_snake_case() {
        use crate::ec2::Ec2ErrorKind;
        for k in Ec2ErrorKind::ALL {
            assert_eq!(k.label(), label_case(k.as_str()), "{k:?}");
        }
    }
}

/// Labels of `enipool_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: &'static str,
    version: &'static str,
    commit: &'static str,
}

/// The commit the binary was built from: `ENIPOOL_GIT_COMMIT` at build time (the image build sets
/// it), else `unknown`.
const COMMIT: &str = match option_env!("ENIPOOL_GIT_COMMIT") {
    Some(c) if !c.is_empty() => c,
    _ => "unknown",
};

/// `enipool_build_info{component, version, commit} 1`: which build each process runs, to join
/// with its other series.
fn register_build_info(registry: &mut Registry, component: &'static str) {
    let info = Family::<BuildLabels, Gauge>::default();
    let labels = BuildLabels { component, version: env!("CARGO_PKG_VERSION"), commit: COMMIT };
    info.get_or_create(&labels).set(1);
    registry.register("enipool_build_info", "The running build (constant 1)", info);
}
