//! Prometheus metrics (`enipool_agent_` prefix). Labels are commands, results and error
//! categories — never pod or node names.

use crate::report::Report;
use enipool_cni::proto::Command;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CniLabels {
    cmd: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

pub struct Metrics {
    cni_requests: Family<CniLabels, Counter>,
    add_seconds: Histogram,
    del_seconds: Histogram,
    available: Gauge,
    in_use: Gauge,
    cooling: Gauge,
    offered: Gauge,
    ready_enis: Gauge,
    epoch: Gauge,
    status_patches: Family<ResultLabel, Counter>,
    pool_status_refusals: Counter,
    store_mismatch: Gauge,
    store_rebuilds: Counter,
    host_repairs: Family<KindLabel, Counter>,
}

fn latency() -> Histogram {
    // 100 µs .. ~3 s: the hot path is a few netlink round trips and one fsync.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    /// Create the metrics and register them under `enipool_agent`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            cni_requests: Family::default(),
            add_seconds: latency(),
            del_seconds: latency(),
            available: Gauge::default(),
            in_use: Gauge::default(),
            cooling: Gauge::default(),
            offered: Gauge::default(),
            ready_enis: Gauge::default(),
            epoch: Gauge::default(),
            status_patches: Family::default(),
            pool_status_refusals: Counter::default(),
            store_mismatch: Gauge::default(),
            store_rebuilds: Counter::default(),
            host_repairs: Family::default(),
        };
        register_build_info(registry, "agent");
        let r = registry.sub_registry_with_prefix("enipool_agent");
        r.register("cni_requests", "CNI requests by command and result", m.cni_requests.clone());
        r.register(
            "cni_add_duration_seconds",
            "CNI ADD latency in the agent",
            m.add_seconds.clone(),
        );
        r.register(
            "cni_del_duration_seconds",
            "CNI DEL latency in the agent",
            m.del_seconds.clone(),
        );
        r.register("pool_available_addresses", "Addresses allocatable now", m.available.clone());
        r.register("pool_in_use_addresses", "Addresses assigned to sandboxes", m.in_use.clone());
        r.register(
            "pool_cooling_addresses",
            "Freed addresses resting before reuse",
            m.cooling.clone(),
        );
        r.register(
            "pool_offered_items",
            "Addresses/prefixes offered for release",
            m.offered.clone(),
        );
        r.register("ready_enis", "ENIs programmed on the host", m.ready_enis.clone());
        r.register("epoch", "Agent epoch (bumped every start)", m.epoch.clone());
        r.register("status_patches", "status.agent patches by result", m.status_patches.clone());
        r.register(
            "pool_status_refusals",
            "ENIPool statuses refused as invalid (the previous pool view was kept)",
            m.pool_status_refusals.clone(),
        );
        r.register(
            "store_mismatch",
            "1 while the agent refuses to serve because its allocation store does not match the node",
            m.store_mismatch.clone(),
        );
        r.register(
            "store_rebuilds",
            "Allocation stores rebuilt from the host (--rebuild-store-from-host)",
            m.store_rebuilds.clone(),
        );
        r.register(
            "host_repairs",
            "Host state found missing and put back, by kind (node, eni, pod)",
            m.host_repairs.clone(),
        );
        m
    }

    /// Metrics not registered anywhere (tests).
    pub fn unregistered() -> Metrics {
        Metrics::new(&mut Registry::default())
    }

    /// Count a CNI request.
    pub fn cni_request(&self, cmd: Command, result: &'static str, took: Duration) {
        let cmd_s = match cmd {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        };
        self.cni_requests.get_or_create(&CniLabels { cmd: cmd_s, result }).inc();
        match cmd {
            Command::Add => self.add_seconds.observe(took.as_secs_f64()),
            Command::Del => self.del_seconds.observe(took.as_secs_f64()),
            _ => {}
        }
    }

    /// Set the pool gauges.
    pub fn set_pool(&self, r: &Report, offered: usize) {
        self.available.set(r.available as i64);
        self.in_use.set(r.in_use as i64);
        self.cooling.set(r.cooling as i64);
        self.offered.set(offered as i64);
        self.ready_enis.set(r.ready_enis.len() as i64);
        self.epoch.set(r.epoch as i64);
    }

    /// Count a status patch.
    pub fn status_patch(&self, result: &'static str) {
        self.status_patches.get_or_create(&ResultLabel { result }).inc();
    }

    /// Whether the agent refuses to serve because of its store.
    pub fn store_mismatch(&self, refused: bool) {
        self.store_mismatch.set(i64::from(refused));
    }

    /// Count a store rebuilt from the host.
    pub fn store_rebuilt(&self) {
        self.store_rebuilds.inc();
    }

    /// Count a node, ENI or pod whose host state was found missing and put back.
    pub fn host_repaired(&self, kind: &'static str) {
        self.host_repairs.get_or_create(&KindLabel { kind }).inc();
    }

    /// Count an ENIPool status refused by validation.
    pub fn pool_status_refused(&self) {
        self.pool_status_refusals.inc();
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
pub(crate) const COMMIT: &str = match option_env!("ENIPOOL_GIT_COMMIT") {
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
