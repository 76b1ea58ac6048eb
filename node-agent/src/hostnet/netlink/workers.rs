//! The netlink worker threads and the veth reaper thread: each enters the host netns once and
//! keeps a current-thread runtime with its own rtnetlink connection.

use super::{gone_ok, Ctx, Job, NetlinkHost, REAP_GROUP, WORKERS};
use crate::hostnet::HostError;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::Handle;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

/// Move the calling thread into the netns `f`.
pub(in crate::hostnet) fn setns(f: &File) -> Result<(), HostError> {
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| HostError::Io { op: "setns", source: e.into() })
}

pub(super) fn open_ns(path: &Path) -> Result<File, HostError> {
    File::open(path).map_err(|_| HostError::NotFound(format!("netns {}", path.display())))
}

/// Enter `netns` (if any) and open a runtime + rtnetlink connection on this thread.
fn init_ctx(ns: Option<&Path>) -> Result<Ctx, HostError> {
    if let Some(p) = ns {
        setns(&open_ns(p)?)?;
    }
    let host_ns = File::open("/proc/thread-self/ns/net")
        .map_err(|e| HostError::Io { op: "open own netns", source: e })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HostError::Io { op: "netlink runtime", source: e })?;
    let (conn, h, _) = rt
        .block_on(async { rtnetlink::new_connection() })
        .map_err(|e| HostError::Io { op: "netlink socket", source: e })?;
    rt.spawn(conn);
    Ok(Ctx { rt, h, host_ns })
}

/// Delete every link marked for deletion, in one request. "None marked" is success.
pub(super) async fn reap(h: &Handle) -> Result<(), HostError> {
    let mut req = h.link().del(0);
    req.message_mut().attributes.push(LinkAttribute::Group(REAP_GROUP));
    gone_ok(req.execute().await, "delete torn-down veths")
}

impl NetlinkHost {
    /// Start the netlink workers and the reaper in `netns` (or the agent's own).
    pub fn start(netns: Option<PathBuf>) -> Result<NetlinkHost, HostError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = mpsc::channel();
        for i in 0..WORKERS {
            let (ns, rx, ready_tx) = (netns.clone(), rx.clone(), ready_tx.clone());
            std::thread::Builder::new()
                .name(format!("enipool-netlink-{i}"))
                .spawn(move || match init_ctx(ns.as_deref()) {
                    Ok(ctx) => {
                        let _ = ready_tx.send(Ok(()));
                        loop {
                            // The lock is held only while waiting: one idle worker takes the next job.
                            let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            match job {
                                Ok(job) => job(&ctx),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|e| HostError::Io { op: "spawn netlink thread", source: e })?;
        }
        let (reap_tx, reap_rx) = mpsc::channel::<()>();
        let ns = netns.clone();
        std::thread::Builder::new()
            .name("enipool-reaper".into())
            .spawn(move || match init_ctx(ns.as_deref()) {
                Ok(ctx) => {
                    let _ = ready_tx.send(Ok(()));
                    while reap_rx.recv().is_ok() {
                        // Coalesce: every mark made before this point is in this batch; a mark
                        // made during the delete sends another wake-up and gets the next batch.
                        // No extra wait to grow batches: measured, 20 or 100 ms of gathering
                        // made bigger deletes that hold the RTNL longer and stall ADDs (p99 ADD
                        // 5 -> 30 ms, conc-1 pairs/s 240 -> 90-180).
                        while reap_rx.try_recv().is_ok() {}
                        if let Err(e) = ctx.block(reap(&ctx.h)) {
                            tracing::warn!(
                                error = &e as &dyn std::error::Error,
                                "deleting torn-down veths (retried on the next DEL and at start)"
                            );
                        }
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| HostError::Io { op: "spawn reaper thread", source: e })?;
        for _ in 0..=WORKERS {
            ready_rx.recv().map_err(|_| HostError::NotFound("netlink thread died".into()))??;
        }
        Ok(NetlinkHost { tx, reap_tx, netns })
    }

    /// Run `f` on an idle netlink worker and wait for it.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce(&Ctx) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Box::new(move |c: &Ctx| {
                let _ = tx.send(f(c));
            }))
            .expect("netlink thread alive");
        rx.recv().expect("netlink job answered")
    }

    /// The netns path the host lives in.
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }
}

impl Ctx {
    /// Run a netlink / sysctl / nft step inside the host netns (this thread is already there).
    pub fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}
