//! The start-up store check and what follows from it (the decision is
//! [`crate::store::verify::check`]): serve; raise the epoch after a reboot; rebuild from the host
//! when the operator allowed it; or refuse every request that needs the store. Also the adoption
//! of records rebuilt from the host by the requests that name them, and the leak watch on those
//! no request named.

use super::{Agent, Serving};
use crate::error::Result;
use crate::hostnet;
use crate::store::verify::{self, Published, Verdict};
use crate::store::{now_secs, AllocKey, Allocation, Origin};
use enipool_cni::proto::Request;
use std::collections::BTreeSet;

/// What the start-up check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCheck {
    /// The store matches the node.
    Consistent,
    /// The store was lost or behind, but the node rebooted since and no pod is wired: the epoch
    /// was raised above the published one.
    Reseeded,
    /// Rebuilt from the host (`--rebuild-store-from-host`): how many records the host added.
    Rebuilt {
        /// Records added for pods the store did not hold.
        added: usize,
    },
    /// The agent refuses to serve: why.
    Refused(String),
}

impl Agent {
    /// Check the store against what the agent last published (`published`, from its ENIPool's
    /// `status.agent`; `None` when there is none) and the pods wired on the host, then serve
    /// (starting the new epoch), reseed, rebuild (only with `allow_rebuild`) or refuse (the
    /// epoch stays). Call once at start, after the pool
    /// view arrived (a rebuild names each address's ENI from it) and before the journal drain and
    /// the host reconcile. An error (the host cannot be listed, the store cannot be written)
    /// leaves the agent unchecked.
    pub fn verify_store(
        &self,
        published: Option<&Published>,
        allow_rebuild: bool,
    ) -> Result<StoreCheck> {
        let host = self.host.pod_wiring()?;
        let view = self.view();
        let mut st = self.state.lock().unwrap();
        let published_epoch = published.map(|p| p.epoch);
        let out = match verify::check(&self.opened, &st, published, &host, &self.boot_id) {
            Verdict::Consistent => {
                if allow_rebuild {
                    tracing::info!("--rebuild-store-from-host is set but the allocation store matches this node: nothing rebuilt (unset the flag)");
                }
                let epoch = self.store.bump_epoch(&mut st, &self.boot_id)?;
                tracing::info!(epoch, "new agent epoch");
                StoreCheck::Consistent
            }
            Verdict::Reseed => {
                let plan = verify::plan_rebuild(&st, &[], published, &view, now_secs());
                self.store.rebuild(&mut st, &plan, &self.boot_id)?;
                for w in &plan.warnings {
                    tracing::warn!("{w}");
                }
                tracing::warn!(
                    epoch = plan.epoch,
                    published_epoch,
                    kept_offered = plan.offer.len(),
                    "the allocation store was missing or behind the published status, but the node rebooted since and no pod is wired: starting from it above the published epoch"
                );
                StoreCheck::Reseeded
            }
            Verdict::Mismatch(m) if allow_rebuild => {
                let plan = verify::plan_rebuild(&st, &m.untracked, published, &view, now_secs());
                self.store.rebuild(&mut st, &plan, &self.boot_id)?;
                self.metrics.store_rebuilt();
                for w in &plan.warnings {
                    tracing::warn!("{w}");
                }
                tracing::warn!(
                    added = plan.add.len(),
                    dropped = plan.remove.len(),
                    kept_offered = plan.offer.len(),
                    epoch = plan.epoch,
                    published_epoch,
                    found = %m,
                    "allocation store rebuilt from the host (--rebuild-store-from-host)"
                );
                StoreCheck::Rebuilt { added: plan.add.len() }
            }
            Verdict::Mismatch(m) => {
                tracing::error!(
                    untracked_pods = m.untracked.len(),
                    store_epoch = m.store_epoch,
                    published_epoch,
                    "refusing to serve: {m}"
                );
                StoreCheck::Refused(m.to_string())
            }
        };
        drop(st);
        if let StoreCheck::Refused(reason) = &out {
            self.metrics.store_mismatch(true);
            *self.serving.write().unwrap() = Serving::Refused(reason.clone());
            return Ok(out);
        }
        self.metrics.store_mismatch(false);
        *self.serving.write().unwrap() = Serving::Yes;
        if self.has_view.load(std::sync::atomic::Ordering::SeqCst) {
            if let Err(e) = self.settle_offers() {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "settling release offers failed"
                );
            }
        }
        self.update_gauges();
        self.urgent.notify_one();
        Ok(out)
    }

    /// The allocation of the request's attachment: its own record or, failing that, a record
    /// rebuilt from the host for the veth its netns and interface name (so the same sandbox),
    /// which it adopts: from then on it is an ordinary record of that container.
    pub(super) fn allocation_for(&self, req: &Request) -> Result<Option<Allocation>> {
        let key = AllocKey::new(&req.container_id, &req.if_name);
        let mut st = self.state.lock().unwrap();
        if let Some(a) = st.allocations.get(&key) {
            return Ok(Some(a.clone()));
        }
        if req.netns.is_empty() {
            return Ok(None);
        }
        let host_if = hostnet::host_veth_name(&req.netns, &req.if_name);
        let Some(old) = st
            .allocations
            .values()
            .find(|a| a.origin == Origin::Host && a.host_if == host_if)
            .cloned()
        else {
            return Ok(None);
        };
        let arg = |k: &str| req.args.get(k).cloned().unwrap_or_default();
        let adopted = Allocation {
            container_id: req.container_id.clone(),
            if_name: req.if_name.clone(),
            netns: req.netns.clone(),
            pod_namespace: arg("K8S_POD_NAMESPACE"),
            pod_name: arg("K8S_POD_NAME"),
            network: req.network.clone(),
            origin: Origin::Cni,
            ..old.clone()
        };
        self.store.replace(&mut st, &old.key(), adopted.clone())?;
        drop(st);
        self.leaks.lock().unwrap().remove(&old.key());
        tracing::info!(container = %req.container_id, ip = %adopted.ip, host_if = %adopted.host_if, "adopted an allocation rebuilt from the host");
        Ok(Some(adopted))
    }

    /// Records rebuilt from the host whose veth is gone (the pod was deleted and no DEL named its
    /// netns) become leak candidates, freed after the leak grace like those found at restart.
    pub(super) fn watch_rebuilt(&self) -> Result<()> {
        let rebuilt: Vec<(AllocKey, String)> = self
            .state
            .lock()
            .unwrap()
            .allocations
            .values()
            .filter(|a| a.origin == Origin::Host)
            .map(|a| (a.key(), a.host_if.clone()))
            .collect();
        if rebuilt.is_empty() {
            return Ok(());
        }
        let links: BTreeSet<String> = self.host.host_links()?.into_iter().collect();
        let deadline = now_secs() + self.cfg.leak_grace_seconds;
        let mut leaks = self.leaks.lock().unwrap();
        for (k, host_if) in rebuilt {
            if !links.contains(&host_if) {
                leaks.entry(k).or_insert(deadline);
            }
        }
        Ok(())
    }
}
