//! `enipool-operator cleanup`: what `helm uninstall` runs last (the chart's `post-delete` hook),
//! and what a person runs by hand after removing the operator. Without it nothing removes the
//! finalizer `enipool.io/release` once the operator is gone: the pool of a Node deleted later stays
//! `Terminating` for good, and deleting the CRD hangs.
//!
//! 1. Wait until no operator holds the leader-election Lease (released by a stopping leader, or
//!    expired), then take it under the cleanup's own identity with the operator's own election code
//!    ([`leader::Candidate`]: resourceVersion-guarded) and keep renewing it while working, so an
//!    operator replica still around stays a standby and cannot re-add finalizers or pools.
//! 2. For every ENIPool in scope (the `--node-selector` rule: pools of selected Nodes, and pools
//!    whose Node is gone; without a selector, every pool) remove `enipool.io/release` with a merge
//!    patch guarded by the pool's resourceVersion (re-read and retried on a conflict), then delete
//!    the pool.
//! 3. Never call EC2: the ENIs stay attached (`DeleteOnTermination`) and pods keep their addresses
//!    until their nodes go; leftovers are found by their tags (docs/operations.md, section 5).
//! 4. Release the Lease and report what was done.
//!
//! The decisions (which pools, which patch) are pure functions ([`in_scope`], [`plan()`],
//! [`finalizer_patch`]), unit-tested in `cleanup/tests.rs`; [`cleanup`] does the I/O.

pub use crate::error::CleanupError;
use crate::k8s::client;
use crate::leader::{self, Candidate, LeaseConfig};
use crate::logging::LogFormat;
use enipool_crds::{ENIPool, POOL_FINALIZER};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt};
pub use plan::{finalizer_patch, in_scope, plan, NodeScope, PoolView};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

mod plan;

/// `enipool-operator cleanup` flags (the Lease and selector flags spelled as the operator's).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "enipool-operator cleanup",
    version,
    about = "Remove the enipool.io/release finalizer from every ENIPool in scope and delete the \
             pools, once no operator holds the Lease (after `helm uninstall`). Never calls EC2."
)]
pub struct CleanupArgs {
    /// Namespace of the operator's leader-election Lease.
    #[arg(long, env = "ENIPOOL_OPERATOR_LEASE_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// Name of the operator's leader-election Lease.
    #[arg(long, env = "ENIPOOL_OPERATOR_LEASE_NAME", default_value = "enipool-operator")]
    pub lease_name: String,
    /// The cleanup's identity in the Lease (default: `enipool-operator-cleanup-` and POD_NAME,
    /// else the hostname). Must not be an operator replica's identity.
    #[arg(long, env = "ENIPOOL_OPERATOR_CLEANUP_IDENTITY")]
    pub identity: Option<String>,
    /// Duration of the Lease while the cleanup holds it (renewed as the operator renews it).
    #[arg(long, env = "ENIPOOL_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// The operator's `--node-selector`: only pools of matching Nodes, and pools whose Node is
    /// gone, are released. Empty: every pool.
    #[arg(long, env = "ENIPOOL_OPERATOR_NODE_SELECTOR")]
    pub node_selector: Option<String>,
    /// How long to wait for the Lease to become free (released or expired) before giving up.
    #[arg(long, env = "ENIPOOL_OPERATOR_CLEANUP_TIMEOUT_SECONDS", default_value_t = 120)]
    pub timeout_seconds: u64,
    /// Log format.
    #[arg(long, env = "ENIPOOL_OPERATOR_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// What [`cleanup`] needs (the flags, resolved).
#[derive(Debug, Clone)]
pub struct CleanupConfig {
    /// Lease namespace.
    pub lease_namespace: String,
    /// Lease name.
    pub lease_name: String,
    /// The cleanup's identity in the Lease.
    pub identity: String,
    /// Lease duration while the cleanup holds it.
    pub lease_duration: Duration,
    /// The operator's node selector (`None`: every pool is in scope).
    pub node_selector: Option<String>,
    /// How long to wait for the Lease.
    pub timeout: Duration,
    /// Time between two attempts to take the Lease.
    pub poll: Duration,
}

impl CleanupConfig {
    /// The flag defaults, with a random identity.
    pub fn new() -> Self {
        CleanupConfig {
            lease_namespace: "kube-system".into(),
            lease_name: "enipool-operator".into(),
            identity: format!("enipool-operator-cleanup-{}", uuid::Uuid::new_v4()),
            lease_duration: Duration::from_secs(15),
            node_selector: None,
            timeout: Duration::from_secs(120),
            poll: leader::RETRY_PERIOD,
        }
    }
}

impl Default for CleanupConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl CleanupArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> CleanupConfig {
        let identity = self.identity.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| {
            let who = std::env::var("POD_NAME")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            format!("enipool-operator-cleanup-{who}")
        });
        CleanupConfig {
            lease_namespace: self.lease_namespace.clone(),
            lease_name: self.lease_name.clone(),
            identity,
            lease_duration: Duration::from_secs(self.lease_duration_seconds.max(3)),
            node_selector: crate::k8s::scope::node_selector(self.node_selector.as_deref()),
            timeout: Duration::from_secs(self.timeout_seconds),
            poll: leader::RETRY_PERIOD,
        }
    }

    /// Run the cleanup (the subcommand): exit status 0 with a summary line, else the error.
    pub async fn run(self) -> crate::Result<()> {
        crate::logging::init_tracing(self.log_format);
        let cfg = self.config();
        let report = cleanup(client::bounded(client::client().await?), &cfg).await?;
        tracing::info!(
            released = report.released,
            deleted = report.deleted,
            left_alone = report.left_alone,
            "cleanup done: {} pools released (finalizer {POOL_FINALIZER} removed), {} pools \
             deleted, {} pools outside --node-selector left alone; EC2 was not called",
            report.released,
            report.deleted,
            report.left_alone,
        );
        Ok(())
    }
}

/// What [`cleanup`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    /// Pools whose `enipool.io/release` finalizer was removed.
    pub released: usize,
    /// Pools deleted (or already being deleted, and now gone).
    pub deleted: usize,
    /// Pools out of the `--node-selector` scope, untouched.
    pub left_alone: usize,
}

/// Conflicts tolerated per pool before giving up.
const MAX_CONFLICTS: u32 = 10;

/// Release and delete the ENIPools in scope (see the module doc). Waits up to `cfg.timeout` for
/// the Lease; never calls EC2.
pub async fn cleanup(client: Client, cfg: &CleanupConfig) -> Result<CleanupReport, CleanupError> {
    tracing::info!(
        lease = %format!("{}/{}", cfg.lease_namespace, cfg.lease_name),
        identity = %cfg.identity,
        node_selector = cfg.node_selector.as_deref().unwrap_or(""),
        "cleanup: removing the {POOL_FINALIZER} finalizer from ENIPools and deleting them, once no \
         operator holds the Lease. EC2 is not called: ENIs stay attached (DeleteOnTermination) and \
         pods keep working until their nodes go"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &cfg.lease_namespace);
    let lease_cfg = LeaseConfig {
        namespace: cfg.lease_namespace.clone(),
        name: cfg.lease_name.clone(),
        identity: cfg.identity.clone(),
        duration: cfg.lease_duration,
    };
    let candidate = acquire(&leases, &lease_cfg, cfg.timeout, cfg.poll).await?;
    tracing::info!(identity = %cfg.identity, "cleanup holds the Lease: no operator can lead meanwhile");
    let (lost_tx, lost_rx) = watch::channel(None);
    let holder = tokio::spawn(hold(candidate, lost_tx));
    let result = work(&client, cfg, &lost_rx).await;
    holder.abort();
    let _ = holder.await;
    match leader::release(&leases, &lease_cfg).await {
        Ok(true) => tracing::info!("lease released"),
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, "releasing the lease failed; it will expire"),
    }
    result
}

/// Take the Lease once it is free (absent, released or expired), waiting up to `timeout`.
async fn acquire(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    timeout: Duration,
    poll: Duration,
) -> Result<Candidate, CleanupError> {
    let start = Instant::now();
    let mut last_holder: Option<String> = None;
    let mut candidate = Candidate::new(api.clone(), cfg.clone());
    loop {
        let error = candidate.attempt().await.err();
        if candidate.is_leader() {
            return Ok(candidate);
        }
        let holder = match &error {
            Some(_) => None,
            None => Some(lease_holder(api, &cfg.name).await.unwrap_or_default()),
        };
        if start.elapsed() >= timeout {
            return Err(match error {
                Some(e) => e.into(),
                None => CleanupError::LeaseHeld {
                    namespace: cfg.namespace.clone(),
                    name: cfg.name.clone(),
                    holder: holder.unwrap_or_default(),
                    waited: start.elapsed(),
                },
            });
        }
        match (&error, &holder) {
            (Some(error), _) => tracing::warn!(%error, "reading the Lease failed; retrying"),
            (None, Some(h)) if last_holder.as_ref() != Some(h) => {
                tracing::info!(holder = %h, "waiting for the operator to release the Lease (or for it to expire)");
                last_holder = Some(h.clone());
            }
            _ => {}
        }
        let left = timeout.saturating_sub(start.elapsed());
        tokio::time::sleep(poll.min(left).max(Duration::from_millis(10))).await;
    }
}

async fn lease_holder(api: &Api<Lease>, name: &str) -> Result<String, kube::Error> {
    Ok(api.get_opt(name).await?.and_then(|l| l.spec?.holder_identity).unwrap_or_default())
}

/// Renew the Lease every retry period until aborted; on losing it (another holder, or no
/// renewal within the renew deadline, even while one hangs), say why on `lost`.
async fn hold(mut candidate: Candidate, lost: watch::Sender<Option<String>>) {
    let retry = candidate.timing().retry_period;
    let why = loop {
        let Some(until) = candidate.leading_until() else {
            break "another holder took it".to_string();
        };
        let renew = async {
            tokio::time::sleep(retry).await;
            candidate.attempt().await
        };
        tokio::select! {
            r = renew => if let Err(error) = r {
                tracing::warn!(%error, "lease renewal failed");
            },
            _ = tokio::time::sleep_until(until) => {
                break "not renewed within the renew deadline".to_string();
            }
        }
    };
    lost.send_replace(Some(why));
}

/// The pool-by-pool part, under the Lease.
async fn work(
    client: &Client,
    cfg: &CleanupConfig,
    lost: &watch::Receiver<Option<String>>,
) -> Result<CleanupReport, CleanupError> {
    let pools: Api<ENIPool> = Api::all(client.clone());
    let listed = pools.list_metadata(&ListParams::default()).await?;
    let views: Vec<PoolView> = listed.items.iter().map(PoolView::of).collect();
    let scope = node_scope(client, cfg.node_selector.as_deref()).await?;
    let (todo, skipped) = plan(&views, &scope);
    for name in &skipped {
        tracing::info!(pool = %name, "left alone: its Node exists and is not selected");
    }
    let mut report = CleanupReport { left_alone: skipped.len(), ..Default::default() };
    for pool in todo {
        let check = |report: &CleanupReport| match lost.borrow().clone() {
            Some(why) => Err(CleanupError::LeaseLost {
                namespace: cfg.lease_namespace.clone(),
                name: cfg.lease_name.clone(),
                why,
                released: report.released,
                deleted: report.deleted,
            }),
            None => Ok(()),
        };
        check(&report)?;
        let Some(current) = release(&pools, pool.clone()).await? else {
            report.deleted += 1; // gone meanwhile (it was being deleted: the finalizer was the last)
            continue;
        };
        if current.1 {
            report.released += 1;
            tracing::info!(pool = %pool.name, "finalizer {POOL_FINALIZER} removed");
        }
        check(&report)?;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: current.0.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pools.delete(&pool.name, &dp).await {
            Ok(_) => {
                report.deleted += 1;
                tracing::info!(pool = %pool.name, "deleted");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => report.deleted += 1,
            // A pool recreated under the same name since the list: not the one planned.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::warn!(pool = %pool.name, "recreated meanwhile; left alone")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// Remove the finalizer from one pool, re-reading it on a conflict. `None` when the pool is gone;
/// else the pool as last seen and whether a patch removed the finalizer.
async fn release(
    pools: &Api<ENIPool>,
    mut pool: PoolView,
) -> Result<Option<(PoolView, bool)>, CleanupError> {
    for _ in 0..MAX_CONFLICTS {
        let rv = pool.resource_version.clone().unwrap_or_default();
        let Some(patch) = finalizer_patch(&pool.finalizers, &rv) else {
            return Ok(Some((pool, false)));
        };
        match pools.patch_metadata(&pool.name, &PatchParams::default(), &Patch::Merge(&patch)).await
        {
            Ok(p) => {
                let mut seen = PoolView::of(&p);
                seen.uid = seen.uid.or(pool.uid);
                return Ok(Some((seen, true)));
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Changed since read: read it again (list by name: the hook may only list).
                let lp = ListParams::default().fields(&format!("metadata.name={}", pool.name));
                match pools.list_metadata(&lp).await?.items.first() {
                    Some(p) if p.metadata.uid == pool.uid || pool.uid.is_none() => {
                        pool = PoolView::of(p)
                    }
                    Some(_) => {
                        tracing::warn!(pool = %pool.name, "recreated meanwhile; left alone");
                        return Ok(Some((pool, false)));
                    }
                    None => return Ok(None),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(CleanupError::Conflicts(pool.name, MAX_CONFLICTS))
}

/// The Nodes in scope: with a selector, those it matches and those that exist (metadata only).
async fn node_scope(client: &Client, selector: Option<&str>) -> Result<NodeScope, CleanupError> {
    let Some(sel) = selector else { return Ok(NodeScope::All) };
    let nodes: Api<Node> = Api::all(client.clone());
    let names = |l: kube::core::ObjectList<PartialObjectMeta<Node>>| {
        l.items.iter().map(|n| n.name_any()).collect::<BTreeSet<_>>()
    };
    let selected = match nodes.list_metadata(&ListParams::default().labels(sel)).await {
        Ok(l) => names(l),
        Err(kube::Error::Api(e)) if e.code == 400 => {
            return Err(CleanupError::InvalidSelector {
                selector: sel.to_string(),
                message: e.message,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let existing = names(nodes.list_metadata(&ListParams::default()).await?);
    Ok(NodeScope::Selected { selected, existing })
}

#[cfg(test)]
mod tests;
