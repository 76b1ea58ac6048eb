//! The `enipool-operator` binary's side of the wiring: flags to [`OperatorConfig`], the AWS
//! client from the flags and the environment, logging, and the signals that stop it gracefully.
//! The library entry ([`super::Operator::start`]) takes a client and an EC2 API instead.

use super::http::Health;
use super::wiring::run;
use super::OperatorConfig;
use crate::args::Args;
use crate::ec2::aws::{AwsEc2, AwsEc2Config, StaticCredentials};
use crate::ec2::metrics::Ec2Metrics;
use crate::ec2::Ec2Api;
use crate::logging::init_tracing;
use crate::metrics::Metrics;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// `--termination-wait-seconds` when not given.
const DEFAULT_TERMINATION_WAIT_SECS: u64 = 3600;

impl Args {
    /// The operator configuration these flags describe.
    pub fn operator_config(&self) -> OperatorConfig {
        let identity = self
            .identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("enipool-operator-{}", uuid::Uuid::new_v4()));
        OperatorConfig {
            cluster: self.cluster_name.clone(),
            lease_namespace: self.lease_namespace.clone(),
            lease_name: self.lease_name.clone(),
            identity,
            lease_duration: Duration::from_secs(self.lease_duration_seconds.max(3)),
            resync: Duration::from_secs(self.resync_seconds.max(5)),
            gc_interval: Duration::from_secs(self.gc_interval_seconds.max(10)),
            leak_grace_secs: self.leak_grace_seconds,
            agent_stale_secs: self.agent_stale_seconds,
            workers: self.workers,
            vpc_cidrs: self.vpc_cidrs.clone(),
            metrics_addr: Some(self.metrics_addr),
            termination_wait: Duration::from_secs(
                self.termination_wait_seconds.unwrap_or(DEFAULT_TERMINATION_WAIT_SECS),
            ),
            node_selector: crate::k8s::scope::node_selector(self.node_selector.as_deref()),
            family: self.ip_family,
        }
    }

    /// Run the operator until SIGTERM/Ctrl-C (graceful) or until a watch or the lease task ends.
    pub async fn run(self) -> crate::Result<()> {
        init_tracing(self.log_format);
        tracing::info!(version = env!("CARGO_PKG_VERSION"), cluster = %self.cluster_name, "starting enipool-operator");
        let mut registry = Registry::default();
        let ec2_metrics = Ec2Metrics::default();
        ec2_metrics.register(registry.sub_registry_with_prefix("enipool"));
        let mut aws = AwsEc2Config {
            region: self.region.clone(),
            budget_share: self.budget_share,
            metrics: ec2_metrics,
            ..Default::default()
        };
        if let Some(q) = self.describe_qps {
            aws.describe.qps = q;
        }
        if let Some(b) = self.describe_burst {
            aws.describe.burst = b;
        }
        if let Some(q) = self.mutate_qps {
            aws.mutate.qps = q;
        }
        if let Some(b) = self.mutate_burst {
            aws.mutate.burst = b;
        }
        // A simulator endpoint without credentials in the environment gets the dummy pair.
        if self.ec2_endpoint.is_some() && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            aws.static_credentials = Some(StaticCredentials::test());
        }
        aws.endpoint_url = self.ec2_endpoint.clone();
        let ec2: Arc<dyn Ec2Api> = Arc::new(
            AwsEc2::new(aws).await.map_err(|e| crate::Error::Config(format!("EC2 client: {e}")))?,
        );
        let client = crate::k8s::client::client().await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("signal received; finishing in-flight reconciles");
            let _ = shutdown.send(true);
        });
        let metrics = Metrics::new(&mut registry);
        let health = Arc::new(Health { registry, ready: false.into() });
        let leadership = crate::leader::Leadership::new();
        run(self.operator_config(), client, ec2, metrics, leadership, health, shutdown_rx).await
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
