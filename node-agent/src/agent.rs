//! The agent core: the hot path (ADD/DEL/CHECK/STATUS/GC), release offers and the counts the
//! publisher reports. Synchronous on purpose: every request runs on a blocking thread, so the
//! store's fsync and the netlink round trips never stall the async runtime.
//!
//! Locks: `locks` serializes requests per container id (Azure #4829: concurrent ADD/DEL of one
//! sandbox must not interleave). `state` is the node allocator mutex; it is held from pick to
//! commit so two ADDs can never pick the same address, and by the offer path so an offer can never
//! include an address an in-flight ADD is committing. It is never held across netlink calls.
//!
//! The methods are split by caller: [`Agent::handle`] and STATUS here, the per-pod requests in
//! `pods`, restart and periodic work in `housekeeping`, offers and the report in `publish`.

mod housekeeping;
mod pods;
mod publish;

use crate::alloc;
use crate::error::{Error, Result};
use crate::hostnet::{self, HostNet, PodConfig};
use crate::metrics::Metrics;
use crate::pool::PoolView;
use crate::store::{now_secs, AllocKey, Allocation, State, Store};
use enipool_cni::proto::{Command, ErrorReply, Request, Response, StatusResult};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// CNI error codes, shared with the shim.
pub use enipool_cni::error::codes;
pub use publish::Report;

/// How long a refused ADD counts as pending demand (the runtime retries within seconds).
const DEMAND_WINDOW: Duration = Duration::from_secs(60);

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

/// The agent core.
pub struct Agent {
    store: Store,
    state: Mutex<State>,
    view: RwLock<Arc<PoolView>>,
    /// A view from the ENIPool has been set (the initial one is an empty placeholder).
    has_view: AtomicBool,
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
            has_view: AtomicBool::new(false),
            host,
            locks: Mutex::new(HashMap::new()),
            cfg,
            metrics,
            refused: Mutex::new(HashMap::new()),
            leaks: Mutex::new(BTreeMap::new()),
            offer: Mutex::new(None),
            pool_uid: Mutex::new(String::new()),
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
        self.has_view.store(true, Ordering::SeqCst);
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
                Command::Gc => {
                    self.gc(&req.valid_attachments).map(|released| Response::Done { released })
                }
                Command::Add | Command::Del | Command::Check => {
                    if req.container_id.is_empty() || req.if_name.is_empty() {
                        Err(Error::InvalidRequest("containerId and ifName are required".into()))
                    } else {
                        self.with_container_lock(&req.container_id, || match cmd {
                            Command::Add => self.add(&req).map(Response::Added),
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

    /// STATUS (CNI semantics, for the runtime): ready when an ADD would get an address now.
    /// Not the agent's own readiness: see [`Agent::readiness`].
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

    /// Readiness of the agent itself (`/readyz`, the pod's readiness probe): whether it can serve
    /// CNI requests. It needs its store (open, or there is no `Agent`), the pool view from its
    /// ENIPool, and at least one ENI of that view programmed on the host. A pool without a free
    /// address right now is *not* a readiness failure: ADD answers try-again-later and raises
    /// demand, STATUS reports it to the runtime and the ENIPool's status to people. Otherwise a
    /// node whose pods use every address would turn its agent NotReady (stalling DaemonSet
    /// rollouts through `maxUnavailable`). `Ok` carries a one-line summary, `Err` the reason.
    pub fn readiness(&self) -> std::result::Result<String, String> {
        if !self.has_view.load(Ordering::SeqCst) {
            return Err("no pool view yet (waiting for this node's ENIPool)".into());
        }
        if self.view().enis.iter().all(|e| !e.ready) {
            return Err("no ENI programmed yet (waiting for the ENIPool's ENIs to be programmed on this host)".into());
        }
        let st = self.status();
        Ok(if st.ready {
            format!("ready: {} available", st.available)
        } else {
            format!("ready: 0 available ({})", st.reason)
        })
    }
}

/// Map an error to the CNI error the shim prints.
pub fn to_reply(e: &Error) -> ErrorReply {
    let code = match e {
        Error::PoolEmpty => codes::TRY_AGAIN_LATER,
        Error::IncompatibleProtocol { .. } => codes::INCOMPATIBLE_VERSION,
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
