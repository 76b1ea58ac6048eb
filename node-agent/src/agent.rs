//! The agent core: the hot path (ADD/DEL/CHECK/STATUS/GC), release offers and the counts the
//! publisher reports. Synchronous on purpose: every request runs on a blocking thread, so the
//! store's fsync and the netlink round trips never stall the async runtime.
//!
//! Locks: `locks` serializes requests per container id (Azure #4829: concurrent ADD/DEL of one
//! sandbox must not interleave). `state` is the node allocator mutex; it is held from pick to
//! commit so two ADDs can never pick the same address, and by the offer path so an offer can never
//! include an address an in-flight ADD is committing. It is never held across netlink calls.
//!
//! Nothing that needs the store is served before the start-up check has compared it with the node
//! ([`Agent::verify_store`]); a store that forgot allocations keeps the agent refusing.
//!
//! The methods are split by caller: [`Agent::handle`] and STATUS here, the per-pod requests in
//! `pods`, restart and periodic work in `housekeeping`, offers and the report in `publish`, the
//! start-up store check in `verify`.

mod housekeeping;
mod pods;
mod publish;
mod repair;
mod verify;

use crate::alloc;
use crate::error::{Error, Result};
use crate::hostnet::{self, HostNet, PodConfig};
use crate::metrics::Metrics;
use crate::pool::PoolView;
use crate::store::verify::Opened;
use crate::store::{now_secs, AllocKey, Allocation, State, Store};
use enipool_cni::proto::{Command, ErrorReply, Request, Response, StatusResult};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// CNI error codes, shared with the shim.
pub use enipool_cni::error::codes;
pub use verify::StoreCheck;

/// How long a refused ADD counts as pending demand (the runtime retries within seconds).
const DEMAND_WINDOW: Duration = Duration::from_secs(60);

/// Settings the core needs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// MTU of pod interfaces (and ENIs).
    pub mtu: u32,
    /// SNAT done outside the node: secondary-ENI pods send everything by their ENI.
    pub external_snat: bool,
    /// Seconds an allocation without a host veth survives a restart before it is freed (none
    /// after a reboot).
    pub leak_grace_seconds: u64,
}

/// Whether requests that need the store are served.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Serving {
    /// The start-up check has not run yet.
    Unchecked,
    /// The store matches the node.
    Yes,
    /// The store does not match the node: the reason.
    Refused(String),
}

pub struct Agent {
    store: Store,
    state: Mutex<State>,
    /// What the store held before this start.
    opened: Opened,
    /// This boot's id (empty when unknown).
    boot_id: String,
    serving: RwLock<Serving>,
    view: RwLock<Arc<PoolView>>,
    /// A view from the ENIPool has been set (the initial one is an empty placeholder).
    has_view: AtomicBool,
    /// Counts views set, and wakes ADDs waiting for the pool to grow.
    view_gen: (Mutex<u64>, Condvar),
    /// How long an ADD that finds the pool empty waits for growth (milliseconds; 0 = fail at once).
    add_wait_ms: AtomicU64,
    /// The shim's DEL journal, drained on every tick once serving: a DEL journaled while the
    /// socket was not open yet (start-up) must not wait for the next restart.
    del_journal: Mutex<Option<std::path::PathBuf>>,
    host: Arc<dyn HostNet>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    cfg: CoreConfig,
    metrics: Arc<Metrics>,
    refused: Mutex<HashMap<String, Instant>>,
    /// Leak candidates found at restart → deadline (unix seconds).
    leaks: Mutex<BTreeMap<AllocKey, u64>>,
    /// The offer published last (revision, items).
    offer: Mutex<Option<(i64, Vec<Ipv4Net>)>>,
    /// Uid of the ENIPool the view came from ("" before the first): its release revisions are
    /// that pool's, and start again at 1 in a pool created anew under the node's name.
    pool_uid: Mutex<String>,
    /// Where wired pods go to be annotated with their address (`--annotate-pod-ip`).
    pod_ips: Mutex<Option<crate::annotate::Sink>>,
    /// Wakes the publisher at once (demand raised, offer made).
    pub urgent: tokio::sync::Notify,
    /// Wakes the publisher after its debounce (counts changed).
    pub changed: tokio::sync::Notify,
}

impl Agent {
    /// Open the store. Nothing that needs it is served, and the new epoch is not started, until
    /// [`Agent::verify_store`] has checked it against the node: a refused start must leave the
    /// epoch where it was, or the next start would take a lost store for a current one.
    pub fn open(
        path: &std::path::Path,
        boot_id: &str,
        host: Arc<dyn HostNet>,
        cfg: CoreConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Agent> {
        let (store, st) = Store::open(path)?;
        let opened =
            Opened { created: store.created(), epoch: st.epoch, boot_id: st.boot_id.clone() };
        tracing::info!(
            epoch = st.epoch,
            allocations = st.allocations.len(),
            new_file = opened.created,
            "opened allocation store"
        );
        Ok(Agent {
            store,
            state: Mutex::new(st),
            opened,
            boot_id: boot_id.to_string(),
            serving: RwLock::new(Serving::Unchecked),
            view: RwLock::new(Arc::new(PoolView::default())),
            has_view: AtomicBool::new(false),
            view_gen: (Mutex::new(0), Condvar::new()),
            add_wait_ms: AtomicU64::new(0),
            del_journal: Mutex::new(None),
            host,
            locks: Mutex::new(HashMap::new()),
            cfg,
            metrics,
            refused: Mutex::new(HashMap::new()),
            leaks: Mutex::new(BTreeMap::new()),
            offer: Mutex::new(None),
            pool_uid: Mutex::new(String::new()),
            pod_ips: Mutex::new(None),
            urgent: tokio::sync::Notify::new(),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Send every pod wired from now on to `sink` (the pod-IP annotator).
    pub fn set_pod_ip_sink(&self, sink: crate::annotate::Sink) {
        *self.pod_ips.lock().unwrap() = Some(sink);
    }

    /// Hand a newly wired pod to the annotator, when there is one.
    fn announce(&self, a: &Allocation) {
        if let Some(sink) = self.pod_ips.lock().unwrap().as_ref() {
            let _ = sink.send(crate::annotate::PodAddress {
                namespace: a.pod_namespace.clone(),
                name: a.pod_name.clone(),
                ip: a.ipv6.map_or(IpAddr::V4(a.ip), IpAddr::V6),
            });
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn host(&self) -> &Arc<dyn HostNet> {
        &self.host
    }

    pub fn view(&self) -> Arc<PoolView> {
        self.view.read().unwrap().clone()
    }

    /// Whether requests that need the store are served; the error says why not.
    fn serving(&self) -> Result<()> {
        match &*self.serving.read().unwrap() {
            Serving::Yes => Ok(()),
            Serving::Unchecked => Err(Error::StoreUnchecked),
            Serving::Refused(reason) => Err(Error::StoreMismatch(reason.clone())),
        }
    }

    /// Whether `status.agent` may be published: not before the store was checked (a store that
    /// forgot allocations would publish an epoch that hides it from the next start's check).
    pub fn publishable(&self) -> bool {
        self.serving().is_ok()
    }

    /// Replace the pool view (after the ENIs were programmed) and settle offers (once the store
    /// is checked: an offer planned from a store that forgot allocations could name them).
    pub fn set_view(&self, v: PoolView) {
        *self.view.write().unwrap() = Arc::new(v);
        self.has_view.store(true, Ordering::SeqCst);
        *self.view_gen.0.lock().unwrap() += 1;
        self.view_gen.1.notify_all();
        if self.serving().is_ok() {
            if let Err(e) = self.settle_offers() {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "settling release offers failed"
                );
            }
        }
        self.update_gauges();
        self.changed.notify_one();
    }

    /// A copy of the store state (introspection, tests).
    pub fn state(&self) -> State {
        self.state.lock().unwrap().clone()
    }

    /// Runs `f` holding container `id`'s lock (requests for one container are serialized), and
    /// drops the lock's map entry afterwards when nobody else waits on it, whatever `f` returned:
    /// an early `?` inside must not leave the entry behind for good.
    fn with_container_lock<T>(&self, id: &str, f: impl FnOnce() -> T) -> T {
        let lock = self.locks.lock().unwrap().entry(id.to_string()).or_default().clone();
        let out = {
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            f()
        };
        let mut m = self.locks.lock().unwrap();
        // Map + ours = 2: nobody else waits on it, drop the entry so the map stays small.
        if Arc::strong_count(&lock) == 2 {
            m.remove(id);
        }
        out
    }

    /// Handle one shim request. Never panics on bad input; every failure becomes an ErrorReply.
    pub fn handle(&self, req: Request) -> Response {
        let start = Instant::now();
        let cmd = req.command;
        let resp = if req.protocol != enipool_cni::proto::PROTOCOL_VERSION {
            Err(Error::IncompatibleProtocol {
                shim: req.protocol,
                agent: enipool_cni::proto::PROTOCOL_VERSION,
            })
        } else {
            match cmd {
                Command::Status => Ok(Response::Status(self.status())),
                Command::Gc => self
                    .serving()
                    .and_then(|()| self.gc(&req.network, req.valid_attachments.as_deref()))
                    .map(|released| Response::Done { released }),
                Command::Add | Command::Del | Command::Check => {
                    if req.container_id.is_empty() || req.if_name.is_empty() {
                        Err(Error::InvalidRequest("containerId and ifName are required".into()))
                    } else if let Err(e) = self.serving() {
                        Err(e)
                    } else {
                        self.with_container_lock(&req.container_id, || match cmd {
                            Command::Add => self.add_or_wait(&req).map(Response::Added),
                            Command::Del => self.del(&req).map(|_| Response::Done { released: 0 }),
                            _ => self.check(&req).map(Response::Added),
                        })
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

    /// Where the shim journals DELs it could not deliver; [`Agent::tick`] drains it.
    pub fn set_del_journal(&self, dir: &std::path::Path) {
        *self.del_journal.lock().unwrap() = Some(dir.to_path_buf());
    }

    /// Let an ADD that finds the pool empty wait up to `wait` for the pool to grow (the
    /// operator is asked at once), instead of failing into the runtime's back-off, which retries
    /// many seconds later. Keep `wait` well under the shim's timeout.
    pub fn set_add_wait(&self, wait: Duration) {
        self.add_wait_ms.store(wait.as_millis() as u64, Ordering::Relaxed);
    }

    /// ADD; when the pool is empty and the operator has not said it cannot grow, each new pool
    /// view is tried until the wait bound.
    fn add_or_wait(&self, req: &Request) -> Result<enipool_cni::proto::AddResult> {
        let wait = Duration::from_millis(self.add_wait_ms.load(Ordering::Relaxed));
        let deadline = Instant::now() + wait;
        loop {
            let seen = *self.view_gen.0.lock().unwrap();
            match self.add(req) {
                Err(Error::PoolEmpty) if !self.view().growth_blocked => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::PoolEmpty);
                    }
                    let gen = self.view_gen.0.lock().unwrap();
                    let _ = self.view_gen.1.wait_timeout_while(gen, left, |g| *g == seen);
                }
                r => return r,
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
            ipv6: a.ipv6,
            table: a.table,
            from_rule_dsts,
            mtu: self.cfg.mtu,
        }
    }

    /// Why the agent cannot serve CNI requests at all, if it cannot: its store is not checked
    /// against the node (or was refused), it has no pool view from its ENIPool yet, or no ENI of
    /// that view is programmed on the host. A pool without a free address right now is not such
    /// a reason (ADD answers try-again-later and raises demand).
    fn cannot_serve(&self) -> Option<String> {
        if let Err(e) = self.serving() {
            return Some(e.to_string());
        }
        if !self.has_view.load(Ordering::SeqCst) {
            return Some("no pool view yet (waiting for this node's ENIPool)".into());
        }
        if self.view().enis.iter().all(|e| !e.ready) {
            return Some("no ENI programmed yet (waiting for the ENIPool's ENIs to be programmed on this host)".into());
        }
        None
    }

    /// STATUS (CNI semantics, for the runtime): ready while the agent can serve at all
    /// (see `cannot_serve`), with the addresses available now. A runtime takes a failed
    /// STATUS for a broken pod network (containerd reports NetworkReady=false and the node stops
    /// taking pods), so an exhausted pool or subnet is reported in `reason` but stays ready.
    pub fn status(&self) -> StatusResult {
        if let Some(reason) = self.cannot_serve() {
            return StatusResult { ready: false, available: 0, reason };
        }
        let view = self.view();
        let available = alloc::available(&view, &self.state.lock().unwrap(), now_secs());
        let reason = if available > 0 {
            String::new()
        } else {
            "no free address in the pool; the operator is asked for more".into()
        };
        StatusResult { ready: true, available: available as u32, reason }
    }

    /// Readiness of the agent itself (`/readyz`, the pod's readiness probe): whether it can serve
    /// CNI requests, the same judgement as STATUS. A pool without a free address right now is
    /// *not* a readiness failure: otherwise a node whose pods use every address would turn its
    /// agent NotReady (stalling DaemonSet rollouts through `maxUnavailable`). `Ok` carries a
    /// one-line summary, `Err` the reason.
    pub fn readiness(&self) -> std::result::Result<String, String> {
        let st = self.status();
        match (st.ready, st.available) {
            (false, _) => Err(st.reason),
            (true, 0) => Ok(format!("ready: 0 available ({})", st.reason)),
            (true, n) => Ok(format!("ready: {n} available")),
        }
    }

    /// Whether a node that has not taken pods yet may announce it takes them (the CNI config, the
    /// startup taint): it can serve and has an address to give. A joining node whose first
    /// addresses are still on their way (EC2 takes seconds to assign and to show them) would
    /// otherwise fail its first pods' ADDs into the kubelet's back-off.
    pub fn can_start_pods(&self) -> std::result::Result<String, String> {
        let ready = self.readiness()?;
        match self.status().available {
            0 => Err(format!("no address to give yet ({ready})")),
            _ => Ok(ready),
        }
    }
}

/// Map an error to the CNI error the shim prints.
pub fn to_reply(e: &Error) -> ErrorReply {
    let code = match e {
        Error::PoolEmpty => codes::TRY_AGAIN_LATER,
        Error::IncompatibleProtocol { .. } => codes::INCOMPATIBLE_VERSION,
        Error::InvalidRequest(_) => codes::INVALID_NETWORK_CONFIG,
        Error::UnknownContainer(_) => codes::UNKNOWN_CONTAINER,
        Error::HostNet(_)
        | Error::Store(_)
        | Error::StoreRecord(_)
        | Error::StoreFile { .. }
        | Error::StoreMismatch(_)
        | Error::Io { .. } => codes::IO_FAILURE,
        _ => codes::TRY_AGAIN_LATER,
    };
    let details = match e {
        Error::PoolEmpty => "the node's pool has no free address yet; pending demand was raised and the operator adds addresses. Retry shortly.".into(),
        Error::StoreMismatch(_) => "category store_mismatch: the node agent refuses to serve until its allocation store is rebuilt (docs/operations.md, troubleshooting: the allocation store does not match this node)".into(),
        _ => format!("category {}", e.category()),
    };
    ErrorReply { code, msg: e.to_string(), details }
}

#[cfg(test)]
mod tests;
