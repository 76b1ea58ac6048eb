//! Process wiring: leader election, the three controllers (Node, ENIPool, ENIPoolPolicy) whose
//! watch stores double as the caches, GC, and the HTTP endpoints.
//!
//! [`Operator::start`] is the library entry point: it takes a kube client and an [`Ec2Api`], so the
//! e2e tests and the benchmark run replicas in process (and kill one with
//! [`OperatorHandle::abort`]). Everything runs inside one task: aborting it drops the Lease
//! renewal, the controllers and the HTTP server together, as a crashed process would, and the
//! Lease expires. A graceful stop ([`OperatorHandle::shutdown`], SIGTERM) lets the controllers
//! finish their in-flight reconciles, keeps renewing meanwhile, then releases the Lease so that a
//! standby takes over at once.
//!
//! The controllers' Kubernetes client and EC2 are gated by [`Leadership`]: writes and EC2
//! mutations only while this replica leads, cut off when its term ends ([`crate::k8s::client`],
//! [`crate::leader::leader_only`]). The election has a client of its own, without the gate.

mod binary;
mod config;
mod controllers;
mod http;
mod wiring;

pub use config::OperatorConfig;

use crate::ec2::Ec2Api;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use http::Health;
use kube::Client;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;

pub struct Operator;

/// Handle of an operator started with [`Operator::start`].
pub struct OperatorHandle {
    task: tokio::task::JoinHandle<crate::Result<()>>,
    leadership: Leadership,
    health: Arc<Health>,
    shutdown: watch::Sender<bool>,
}

impl OperatorHandle {
    /// Whether this replica leads now (holds the Lease, and renewed it within the renew
    /// deadline).
    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    /// Whether the watch caches have synced (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.health.ready.load(Ordering::Relaxed)
    }

    /// Kill the replica at once, as a crash would: in-flight EC2 calls and writes are dropped and
    /// the Lease is no longer renewed.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Graceful stop: controllers finish in-flight reconciles, the Lease is released (when held),
    /// then the task ends.
    pub async fn shutdown(self) -> crate::Result<()> {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(crate::Error::Stopped(format!("operator task: {e}"))),
        }
    }

    /// Whether the task has ended (aborted, failed or shut down).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The replica's `/metrics` text (Prometheus text format).
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.health.registry)
            .expect("encoding metrics");
        out
    }
}

impl Operator {
    /// Start a replica on the current runtime. `registry` receives the operator's metrics (the
    /// caller registers the EC2 client's metrics in it beforehand, as [`crate::args::Args::run`] does).
    pub fn start(
        cfg: OperatorConfig,
        client: Client,
        ec2: Arc<dyn Ec2Api>,
        registry: Registry,
    ) -> OperatorHandle {
        let leadership = Leadership::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut registry = registry;
        let metrics = Metrics::new(&mut registry);
        let health = Arc::new(Health { registry, ready: false.into() });
        let task = tokio::spawn(wiring::run(
            cfg,
            client,
            ec2,
            metrics,
            leadership.clone(),
            health.clone(),
            shutdown_rx,
        ));
        OperatorHandle { task, leadership, health, shutdown }
    }
}
