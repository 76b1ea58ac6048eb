//! The agent core: the hot path (ADD/DEL/CHECK/STATUS/GC), release offers and the counts the
//! publisher reports. Synchronous on purpose: every request runs on a blocking thread, so the
//! store's fsync and the netlink round trips never stall the async runtime.
//!
//! Locks: `locks` serializes requests per container id (Azure #4829: concurrent ADD/DEL of one
//! sandbox must not interleave). `state` is the node allocator mutex; it is held from pick to
//! commit so two ADDs can never pick the same address, and by the offer path so an offer can never
//! include an address an in-flight ADD is committing. It is never held across netlink calls.

use crate::alloc;
use crate::error::{Error, Result};
use crate::hostnet::{self, HostNet, PodConfig};
use crate::metrics::Metrics;
use crate::pool::PoolView;
use crate::store::{now_secs, AllocKey, Allocation, Offer, State, Store};
use enipool_cni::proto::{
    AddResult, Attachment, Command, ErrorReply, Request, Response, StatusResult,
};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// CNI error codes, shared with the shim.
pub use enipool_cni::error::codes;

/// How long a refused ADD counts as pending demand (the runtime retries within seconds).
const DEMAND_WINDOW: Duration = Duration::from_secs(60);

/// The key a refused ADD is remembered under: the pod when the runtime names it, else the
/// container. Runtimes retry a failed sandbox with a NEW container id, so keying by container would
/// count one waiting pod once per retry and keep the demand after the pod got its address.
fn demand_key(req: &enipool_cni::proto::Request) -> String {
    match (req.args.get("K8S_POD_NAMESPACE"), req.args.get("K8S_POD_NAME")) {
        (Some(ns), Some(name)) if !name.is_empty() => format!("pod:{ns}/{name}"),
        _ => format!("container:{}", req.container_id),
    }
}

/// Settings the core needs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// MTU of pod interfaces (and ENIs).
    pub mtu: u32,
    /// SNAT done outside the node: secondary-ENI pods send everything by their ENI.
    pub external_snat: bool,
    /// Seconds an allocation without a host veth survives a restart before it is freed.
    pub leak_grace_seconds: u64,
}

/// What the publisher reports in `status.agent`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Epoch.
    pub epoch: u64,
    /// Boot id.
    pub boot_id: String,
    /// Operator revision applied.
    pub observed_revision: i64,
    /// Programmed ENIs.
    pub ready_enis: Vec<String>,
    /// Addresses in use.
    pub in_use: usize,
    /// Addresses cooling.
    pub cooling: usize,
    /// Allocatable now.
    pub available: usize,
    /// Refused ADDs in the demand window.
    pub refused_adds: usize,
    /// The current offer: revision and items.
    pub offer: Option<(i64, Vec<Ipv4Net>)>,
    /// Addresses in use that the pool no longer lists (alarm).
    pub orphaned: Vec<String>,
}

/// The agent core.
pub struct Agent {
    store: Store,
    state: Mutex<State>,
    view: RwLock<Arc<PoolView>>,
    host: Arc<dyn HostNet>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    cfg: CoreConfig,
    metrics: Arc<Metrics>,
    refused: Mutex<HashMap<String, Instant>>,
    /// Leak candidates found at restart → deadline (unix seconds).
    leaks: Mutex<BTreeMap<AllocKey, u64>>,
    /// The offer published last (revision, items).
    offer: Mutex<Option<(i64, Vec<Ipv4Net>)>>,
    /// Wakes the publisher at once (demand raised, offer made).
    pub urgent: tokio::sync::Notify,
    /// Wakes the publisher after its debounce (counts changed).
    pub changed: tokio::sync::Notify,
}

impl Agent {
    /// Open the store, start a new epoch.
    pub fn open(
        path: &std::path::Path,
        boot_id: &str,
        host: Arc<dyn HostNet>,
        cfg: CoreConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Agent> {
        let (store, mut st) = Store::open(path)?;
        let epoch = store.bump_epoch(&mut st, boot_id)?;
        tracing::info!(epoch, allocations = st.allocations.len(), "opened allocation store");
        Ok(Agent {
            store,
            state: Mutex::new(st),
            view: RwLock::new(Arc::new(PoolView::default())),
            host,
            locks: Mutex::new(HashMap::new()),
            cfg,
            metrics,
            refused: Mutex::new(HashMap::new()),
            leaks: Mutex::new(BTreeMap::new()),
            offer: Mutex::new(None),
            urgent: tokio::sync::Notify::new(),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The host implementation.
    pub fn host(&self) -> &Arc<dyn HostNet> {
        &self.host
    }

    /// Current pool view.
    pub fn view(&self) -> Arc<PoolView> {
        self.view.read().unwrap().clone()
    }

    /// Replace the pool view (after the ENIs were programmed) and settle offers.
    pub fn set_view(&self, v: PoolView) {
        *self.view.write().unwrap() = Arc::new(v);
        if let Err(e) = self.settle_offers() {
            tracing::warn!(error = &e as &dyn std::error::Error, "settling release offers failed");
        }
        self.update_gauges();
        self.changed.notify_one();
    }

    /// A copy of the store state (introspection, tests).
    pub fn state(&self) -> State {
        self.state.lock().unwrap().clone()
    }

    fn container_lock(&self, id: &str) -> Arc<Mutex<()>> {
        self.locks.lock().unwrap().entry(id.to_string()).or_default().clone()
    }

    fn release_container_lock(&self, id: &str, lock: Arc<Mutex<()>>) {
        let mut m = self.locks.lock().unwrap();
        // Map + ours = 2: nobody else waits on it, drop the entry so the map stays small.
        if Arc::strong_count(&lock) == 2 {
            m.remove(id);
        }
    }

    /// Handle one shim request. Never panics on bad input; every failure becomes an ErrorReply.
    pub fn handle(&self, req: Request) -> Response {
        let start = Instant::now();
        let cmd = req.command;
        let resp = if req.protocol != enipool_cni::proto::PROTOCOL_VERSION {
            Err(Error::InvalidRequest(format!(
                "shim protocol {} but agent speaks {}",
                req.protocol,
                enipool_cni::proto::PROTOCOL_VERSION
            )))
        } else {
            match cmd {
                Command::Status => Ok(Response::Status(self.status())),
                Command::Gc => {
                    self.gc(&req.valid_attachments).map(|released| Response::Done { released })
                }
                Command::Add | Command::Del | Command::Check => {
                    if req.container_id.is_empty() || req.if_name.is_empty() {
                        Err(Error::InvalidRequest("containerId and ifName are required".into()))
                    } else {
                        let lock = self.container_lock(&req.container_id);
                        let r = {
                            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
                            match cmd {
                                Command::Add => self.add(&req).map(Response::Added),
                                Command::Del => {
                                    self.del(&req).map(|_| Response::Done { released: 0 })
                                }
                                _ => self.check(&req).map(Response::Added),
                            }
                        };
                        self.release_container_lock(&req.container_id, lock);
                        r
                    }
                }
            }
        };
        let elapsed = start.elapsed();
        let result = match &resp {
            Ok(_) => "ok",
            Err(e) => e.category(),
        };
        self.metrics.cni_request(cmd, result, elapsed);
        match resp {
            Ok(r) => r,
            Err(e) => {
                if !matches!(e, Error::PoolEmpty) {
                    tracing::warn!(command = ?cmd, container = %req.container_id, error = &e as &dyn std::error::Error, "CNI request failed");
                }
                Response::Error(to_reply(&e))
            }
        }
    }

    fn pod_config(&self, a: &Allocation, view: &PoolView) -> PodConfig {
        let from_rule_dsts = if a.table == hostnet::MAIN_TABLE || self.cfg.external_snat {
            Vec::new()
        } else {
            view.vpc_cidrs.clone()
        };
        PodConfig {
            netns: a.netns.clone(),
            if_name: a.if_name.clone(),
            host_if: a.host_if.clone(),
            ip: a.ip,
            table: a.table,
            from_rule_dsts,
            mtu: self.cfg.mtu,
        }
    }

    fn add(&self, req: &Request) -> Result<AddResult> {
        if req.netns.is_empty() {
            return Err(Error::InvalidRequest("ADD needs a netns".into()));
        }
        let key = AllocKey::new(&req.container_id, &req.if_name);
        let view = self.view();
        let existing = self.state.lock().unwrap().allocations.get(&key).cloned();
        let mtu = req.mtu.unwrap_or(self.cfg.mtu);
        if let Some(a) = existing {
            // Repeated ADD: same address; re-wire only if the wiring is gone.
            let pod = self.pod_config(&a, &view);
            let wired = match self.host.check_pod(&pod) {
                Ok(w) => w,
                Err(_) => {
                    self.host.teardown_pod(&pod);
                    self.host.setup_pod(&pod)?
                }
            };
            return Ok(result(&a, wired, mtu));
        }
        let a = {
            let mut st = self.state.lock().unwrap();
            let now = now_secs();
            let Some(p) = alloc::pick(&view, &st, now) else {
                drop(st);
                self.refused.lock().unwrap().insert(demand_key(req), Instant::now());
                self.urgent.notify_one();
                return Err(Error::PoolEmpty);
            };
            crate::fault::point("add-after-pick");
            let a = Allocation {
                container_id: req.container_id.clone(),
                if_name: req.if_name.clone(),
                ip: p.ip,
                eni_id: p.eni_id,
                table: p.table,
                netns: req.netns.clone(),
                host_if: hostnet::host_veth_name(&req.netns, &req.if_name),
                pod_namespace: req.args.get("K8S_POD_NAMESPACE").cloned().unwrap_or_default(),
                pod_name: req.args.get("K8S_POD_NAME").cloned().unwrap_or_default(),
                created_at: now,
                epoch: st.epoch,
            };
            // Durable before the netns is touched (invariant 5).
            self.store.add(&mut st, a.clone())?;
            a
        };
        crate::fault::point("add-after-commit");
        self.refused.lock().unwrap().remove(&demand_key(req));
        let mut pod = self.pod_config(&a, &view);
        pod.mtu = mtu;
        match self.host.setup_pod(&pod) {
            Ok(wired) => {
                crate::fault::point("add-after-wire");
                self.update_gauges();
                self.changed.notify_one();
                Ok(result(&a, wired, mtu))
            }
            Err(e) => {
                for te in self.host.teardown_pod(&pod) {
                    tracing::warn!(error = &te as &dyn std::error::Error, "rollback teardown");
                }
                // Never served traffic: free at once, no cooldown.
                let mut st = self.state.lock().unwrap();
                self.store.remove(&mut st, &key, 0)?;
                Err(e.into())
            }
        }
    }

    fn del(&self, req: &Request) -> Result<()> {
        let key = AllocKey::new(&req.container_id, &req.if_name);
        let view = self.view();
        let existing = self.state.lock().unwrap().allocations.get(&key).cloned();
        let Some(a) = existing else {
            // Unknown container: success (CNI DEL is idempotent). Clean a stray veth if we can name it.
            if !req.netns.is_empty() {
                let host_if = hostnet::host_veth_name(&req.netns, &req.if_name);
                if self.host.host_links().map(|l| l.contains(&host_if)).unwrap_or(false) {
                    let pod = PodConfig {
                        netns: req.netns.clone(),
                        if_name: req.if_name.clone(),
                        host_if,
                        ip: std::net::Ipv4Addr::UNSPECIFIED,
                        table: hostnet::MAIN_TABLE,
                        from_rule_dsts: Vec::new(),
                        mtu: self.cfg.mtu,
                    };
                    self.host.teardown_pod(&pod);
                }
            }
            return Ok(());
        };
        self.release(&a, &view)
    }

    /// Tear down and free one allocation (DEL, GC, leak). Teardown is best effort; the address
    /// cools for the pool's cooldown before reuse.
    fn release(&self, a: &Allocation, view: &PoolView) -> Result<()> {
        for e in self.host.teardown_pod(&self.pod_config(a, view)) {
            tracing::warn!(container = %a.container_id, error = &e as &dyn std::error::Error, "teardown (continuing)");
        }
        crate::fault::point("del-after-teardown");
        let mut st = self.state.lock().unwrap();
        self.store.remove(&mut st, &a.key(), now_secs() + view.cooldown_seconds)?;
        drop(st);
        crate::fault::point("del-after-commit");
        self.leaks.lock().unwrap().remove(&a.key());
        self.update_gauges();
        self.changed.notify_one();
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<AddResult> {
        let key = AllocKey::new(&req.container_id, &req.if_name);
        let a = self.state.lock().unwrap().allocations.get(&key).cloned();
        let a = a.ok_or_else(|| Error::UnknownContainer(req.container_id.clone()))?;
        let view = self.view();
        let wired = self.host.check_pod(&self.pod_config(&a, &view))?;
        Ok(result(&a, wired, req.mtu.unwrap_or(self.cfg.mtu)))
    }

    /// STATUS: ready when an ADD would get an address now.
    pub fn status(&self) -> StatusResult {
        let view = self.view();
        let st = self.state.lock().unwrap();
        let available = alloc::available(&view, &st, now_secs());
        let reason = if available > 0 {
            String::new()
        } else if view.enis.iter().all(|e| !e.ready) {
            "no ENI programmed yet (waiting for the ENIPool)".into()
        } else {
            "no free address in the pool; the operator is asked for more".into()
        };
        StatusResult { ready: available > 0, available: available as u32, reason }
    }

    fn gc(&self, valid: &[Attachment]) -> Result<u32> {
        let valid: BTreeSet<AllocKey> =
            valid.iter().map(|a| AllocKey::new(&a.container_id, &a.if_name)).collect();
        let stale: Vec<Allocation> = self
            .state
            .lock()
            .unwrap()
            .allocations
            .values()
            .filter(|a| !valid.contains(&a.key()))
            .cloned()
            .collect();
        let view = self.view();
        let mut n = 0;
        for a in stale {
            let lock = self.container_lock(&a.container_id);
            {
                let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
                // Re-check under the container lock: an ADD may have raced us.
                if self.state.lock().unwrap().allocations.get(&a.key()) == Some(&a) {
                    self.release(&a, &view)?;
                    n += 1;
                }
            }
            self.release_container_lock(&a.container_id, lock);
        }
        Ok(n)
    }

    /// DEL every journaled request the shim recorded while the agent was down.
    /// Uses the shim's own journal reader, so both sides share one format; entries that cannot be
    /// parsed are renamed `*.corrupt` by it and kept for a person to look at.
    pub fn drain_journal(&self, dir: &std::path::Path) -> usize {
        let entries = match enipool_cni::journal::drain(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = &e as &dyn std::error::Error, "reading the DEL journal");
                return 0;
            }
        };
        let mut n = 0;
        for (path, req) in entries {
            if req.command != Command::Del {
                tracing::warn!(path = %path.display(), command = ?req.command, "DEL journal entry is not a DEL; ignored");
                continue;
            }
            let resp = self.handle(req);
            if matches!(resp, Response::Error(_)) {
                tracing::warn!(path = %path.display(), ?resp, "journaled DEL failed; kept for the next start");
                continue;
            }
            if let Err(e) = enipool_cni::journal::remove(&path) {
                tracing::warn!(path = %path.display(), error = &e as &dyn std::error::Error, "removing DEL journal entry");
            }
            n += 1;
        }
        n
    }

    /// Restart reconcile: torn-down veths are deleted; allocations whose host veth exists are
    /// re-programmed (host side);
    /// the others become leak candidates freed after the grace (unless the runtime DELs or
    /// re-ADDs them first).
    pub fn reconcile_host(&self) -> Result<()> {
        // Veths a DEL tore down before the last exit but did not delete yet (a crash between the
        // DEL's reply and the reaper): delete them first, so they count as absent below.
        if let Err(e) = self.host.reap_links() {
            tracing::warn!(error = &e as &dyn std::error::Error, "deleting torn-down veths");
        }
        let links: BTreeSet<String> = self.host.host_links()?.into_iter().collect();
        let view = self.view();
        let allocs: Vec<Allocation> =
            self.state.lock().unwrap().allocations.values().cloned().collect();
        let deadline = now_secs() + self.cfg.leak_grace_seconds;
        for a in allocs {
            if links.contains(&a.host_if) {
                if let Err(e) = self.host.ensure_pod_host(&self.pod_config(&a, &view)) {
                    tracing::warn!(container = %a.container_id, error = &e as &dyn std::error::Error, "re-programming pod host side");
                }
            } else {
                tracing::info!(container = %a.container_id, ip = %a.ip, "allocation without host veth: leak candidate");
                self.leaks.lock().unwrap().insert(a.key(), deadline);
            }
        }
        self.free_leaks()?;
        Ok(())
    }

    /// Free leak candidates whose grace passed and whose veth is still absent.
    pub fn free_leaks(&self) -> Result<usize> {
        let now = now_secs();
        let due: Vec<AllocKey> = self
            .leaks
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let links: BTreeSet<String> = self.host.host_links()?.into_iter().collect();
        let view = self.view();
        let mut n = 0;
        for k in due {
            let lock = self.container_lock(&k.container_id);
            {
                let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
                let a = self.state.lock().unwrap().allocations.get(&k).cloned();
                match a {
                    Some(a) if !links.contains(&a.host_if) => {
                        tracing::info!(container = %k.container_id, ip = %a.ip, "freeing leaked allocation");
                        self.release(&a, &view)?;
                        n += 1;
                    }
                    _ => {
                        self.leaks.lock().unwrap().remove(&k);
                    }
                }
            }
            self.release_container_lock(&k.container_id, lock);
        }
        Ok(n)
    }

    /// Periodic housekeeping: expire cooldowns, free due leaks, forget old refusals.
    pub fn tick(&self) -> Result<()> {
        {
            let mut st = self.state.lock().unwrap();
            if self.store.expire_cooling(&mut st, now_secs())? > 0 {
                self.changed.notify_one();
            }
        }
        self.free_leaks()?;
        let expired = {
            let mut refused = self.refused.lock().unwrap();
            let before = refused.len();
            refused.retain(|_, t| t.elapsed() < DEMAND_WINDOW);
            refused.len() != before
        };
        if expired {
            // The published pending count fell: tell the operator so the target can shrink.
            self.changed.notify_one();
        }
        self.update_gauges();
        Ok(())
    }

    /// Answer the operator's release request (if new) and forget finished offers.
    fn settle_offers(&self) -> Result<()> {
        let view = self.view();
        let mut st = self.state.lock().unwrap();
        let done = alloc::offers_done(&view, &st);
        self.store.forget_offers(&mut st, &done)?;
        let mut cur = self.offer.lock().unwrap();
        if let Some((rev, count, prefer)) = &view.release_request {
            let answered = cur.as_ref().is_some_and(|(r, _)| r >= rev);
            if !answered && *rev > view.released_revision {
                let items =
                    alloc::plan_offer(&view, &st, (*count).max(0) as usize, prefer, now_secs());
                let offer = Offer { revision: *rev, epoch: st.epoch };
                self.store.offer(&mut st, &items, offer)?;
                tracing::info!(
                    revision = rev,
                    items = items.len(),
                    "offered addresses for release"
                );
                *cur = Some((*rev, items));
                self.urgent.notify_one();
            }
        }
        if let Some((_, items)) = cur.as_mut() {
            items.retain(|n| st.offered.contains_key(n));
        }
        Ok(())
    }

    /// What to publish.
    pub fn report(&self) -> Report {
        let view = self.view();
        let st = self.state.lock().unwrap();
        let now = now_secs();
        let orphaned = st
            .by_ip
            .keys()
            .filter(|ip| view.eni_of(**ip).is_none())
            .map(|ip| ip.to_string())
            .collect();
        Report {
            epoch: st.epoch,
            boot_id: st.boot_id.clone(),
            observed_revision: view.revision,
            ready_enis: view.enis.iter().filter(|e| e.ready).map(|e| e.id.clone()).collect(),
            in_use: st.allocations.len(),
            cooling: st.cooling.values().filter(|t| **t > now).count(),
            available: alloc::available(&view, &st, now),
            refused_adds: self
                .refused
                .lock()
                .unwrap()
                .values()
                .filter(|t| t.elapsed() < DEMAND_WINDOW)
                .count(),
            offer: self.offer.lock().unwrap().clone(),
            orphaned,
        }
    }

    fn update_gauges(&self) {
        let r = self.report();
        self.metrics.set_pool(&r, self.state.lock().unwrap().offered.len());
    }
}

fn result(a: &Allocation, w: hostnet::PodWired, mtu: u32) -> AddResult {
    AddResult {
        ip: a.ip,
        gateway: hostnet::POD_GATEWAY,
        host_if_name: a.host_if.clone(),
        host_mac: w.host_mac,
        pod_if_name: a.if_name.clone(),
        pod_mac: w.pod_mac,
        eni_id: a.eni_id.clone(),
        mtu,
    }
}

/// Map an error to the CNI error the shim prints.
pub fn to_reply(e: &Error) -> ErrorReply {
    let code = match e {
        Error::PoolEmpty => codes::TRY_AGAIN_LATER,
        Error::InvalidRequest(m) if m.contains("protocol") => codes::INCOMPATIBLE_VERSION,
        Error::InvalidRequest(_) => codes::INVALID_NETWORK_CONFIG,
        Error::UnknownContainer(_) => codes::UNKNOWN_CONTAINER,
        Error::HostNet(_) | Error::Store(_) | Error::StoreRecord(_) | Error::Io { .. } => {
            codes::IO_FAILURE
        }
        _ => codes::TRY_AGAIN_LATER,
    };
    let details = match e {
        Error::PoolEmpty => "the node's pool has no free address yet; pending demand was raised and the operator adds addresses. Retry shortly.".into(),
        _ => format!("category {}", e.category()),
    };
    ErrorReply { code, msg: e.to_string(), details }
}

#[cfg(test)]
mod tests;
