//! The bench of `rbac_audit.rs` (servers, fabric, the agent process and the in-process operator,
//! torn down by `Drop`), the components' credentials (a ServiceAccount token each), and the
//! pool polling that drives the lifecycle from step to step.

use super::{binaries, NAMESPACE, T};
use cluster::procs::{self, Supervisor};
use cluster::Platform;
use ec2sim::Ec2Sim;
use enipool_crds::ENIPool;
use enipool_operator::OperatorHandle;
use fabric::Fabric;
use kube::api::Api;
use kubeapi::KubeApi;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What must go away at the end, in order: operator, agent, fabric namespaces, servers.
pub(super) struct Bench {
    pub(super) rt: Arc<tokio::runtime::Runtime>,
    pub(super) fabric: Arc<Fabric>,
    pub(super) procs: Supervisor,
    pub(super) platform: Option<Platform>,
    pub(super) operator: Option<OperatorHandle>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(op) = self.operator.take() {
            op.abort();
        }
        if std::thread::panicking() {
            eprintln!("===== rbac_audit: process logs =====\n{}", self.procs.log_tails(60));
        }
        self.procs.stop_all();
        self.fabric.teardown();
        if let Some(p) = self.platform.take() {
            self.rt.block_on(p.shutdown());
        }
    }
}

impl Bench {
    pub(super) fn kube(&self) -> &KubeApi {
        self.platform.as_ref().expect("platform").kube()
    }
    pub(super) fn sim(&self) -> &Ec2Sim {
        &self.platform.as_ref().expect("platform").sim
    }
}

/// `target/debug/enipool-agent`, refusing one older than its sources.
pub(super) fn agent_binary() -> PathBuf {
    binaries::fresh_binary(
        "enipool-agent",
        &["node-agent/src", "cni-shim/src", "crds/src"],
        "cargo build -p enipool-agent",
    )
}

pub(super) fn token_client(url: &str, token: &str) -> kube::Client {
    let mut cfg = kube::Config::new(url.parse().expect("url"));
    cfg.auth_info.token = Some(token.to_string().into());
    // As in the pod: the ServiceAccount's namespace is the client's default.
    cfg.default_namespace = NAMESPACE.into();
    kube::Client::try_from(cfg).expect("kube client")
}

pub(super) fn write_kubeconfig(path: &Path, url: &str, token: &str) {
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {url}\n\
         users:\n- name: agent\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    \
         cluster: e2e\n    user: agent\n    namespace: {NAMESPACE}\ncurrent-context: e2e\n"
    );
    std::fs::write(path, cfg).expect("writing the agent kubeconfig");
}

/// Poll the pool until `pred` holds; the panic names the step and shows the pool and agent log.
pub(super) async fn wait_pool(
    pools: &Api<ENIPool>,
    procs: &Supervisor,
    name: &str,
    what: &str,
    pred: impl Fn(Option<&ENIPool>) -> bool,
) -> Option<ENIPool> {
    let start = Instant::now();
    loop {
        let p = pools.get_opt(name).await.expect("get pool");
        if pred(p.as_ref()) {
            return p;
        }
        if start.elapsed() > T {
            panic!(
                "lifecycle step not reached in {T:?}: {what}\npool: {}\nagent log:\n{}",
                serde_json::to_string_pretty(&p).unwrap(),
                procs.log_path("agent").map(|l| procs::tail(&l, 40)).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) fn allocated(p: &ENIPool) -> usize {
    p.status
        .as_ref()
        .map_or(0, |s| s.enis.iter().map(|e| e.ips.len() + 16 * e.prefixes.len()).sum())
}

pub(super) fn ready(p: &ENIPool) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
