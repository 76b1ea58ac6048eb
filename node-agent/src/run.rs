//! Start-up sequence: store (epoch bump), pool watch and ENI programming, the store check against
//! the published status and the host, journal drain, host reconcile of allocations (leak grace),
//! then serve CNI, HTTP and the publisher. Serving starts after the first ENIPool at the latest
//! 60 s after start; until the store is checked, requests that need it answer try-again-later.
//!
//! Stopping: SIGTERM (the kubelet stopping the pod) and SIGINT (Ctrl-C) both end the agent the
//! same way, at any point after start-up began: it stops accepting CNI connections, lets the HTTP
//! servers finish their requests (up to [`HTTP_DRAIN`]), logs `enipool-agent stopped` and exits 0.
//! A CNI request already running on its blocking thread completes before the process exits (the
//! runtime waits for blocking tasks); its reply may be lost, and the shim's retry is answered from
//! the durable store (ADD and DEL are idempotent).

use crate::agent::{Agent, CoreConfig, StoreCheck};
use crate::args::{Args, Cmd};
use crate::cniconf::CniConf;
use crate::error::{Error, Result};
use crate::hostnet::netlink::NetlinkHost;
use crate::hostnet::HostNet;
use crate::kube::PoolArrived;
use crate::metrics::Metrics;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How long the HTTP servers get to finish their requests after a stop signal.
pub const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// The signals that stop the agent gracefully: SIGTERM and SIGINT. Installed once at start-up,
/// after which neither has its default action (immediate death) any more.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).map_err(Error::io("install SIGTERM handler"))?,
            int: signal(SignalKind::interrupt()).map_err(Error::io("install SIGINT handler"))?,
        })
    }

    /// Waits for either signal; returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The start-up work that needs the pool: wait for the first usable ENIPool, check the store
/// against what it says this node's agent published and against the host, then (unless the agent
/// refuses to serve) drain the DEL journal and reconcile the host. Sets `started` when done and
/// then never returns: it returns only an error, which stops the agent.
async fn start_up(
    agent: Arc<Agent>,
    mut ready_rx: tokio::sync::watch::Receiver<Option<PoolArrived>>,
    journal_dir: PathBuf,
    rebuild_store_from_host: bool,
    started: tokio::sync::watch::Sender<bool>,
) -> Result<()> {
    let joined = |e: tokio::task::JoinError| Error::Stopped(format!("start-up task: {e}"));
    let arrived = ready_rx
        .wait_for(|r| r.is_some())
        .await
        .map_err(|_| Error::Stopped("the ENIPool watch ended before a usable pool".into()))?
        .clone()
        .unwrap_or_default();
    let a = agent.clone();
    let check = tokio::task::spawn_blocking(move || {
        a.verify_store(arrived.published.as_ref(), rebuild_store_from_host)
    })
    .await
    .map_err(joined)??;
    tracing::info!(result = ?check, "allocation store checked against this node");
    if !matches!(check, StoreCheck::Refused(_)) {
        let a = agent.clone();
        let drained = tokio::task::spawn_blocking(move || a.drain_journal(&journal_dir))
            .await
            .map_err(joined)?;
        tracing::info!(drained, "DEL journal drained");
        let a = agent.clone();
        if let Err(e) =
            tokio::task::spawn_blocking(move || a.reconcile_host()).await.map_err(joined)?
        {
            tracing::error!(error = &e as &dyn std::error::Error, "host reconcile");
        }
    }
    let _ = started.send(true);
    std::future::pending().await
}

/// Once the agent can serve and, the first time, has an address to give: keep the CNI config in
/// the runtime's config dir (see [`crate::cniconf`]) and remove the startup taint from this node's
/// Node. Checked every half second until then, every 10 s after.
async fn when_ready(
    agent: Arc<Agent>,
    conf: Option<CniConf>,
    mut taint: Option<(kube::Client, String, String)>,
) {
    if conf.is_none() && taint.is_none() {
        return std::future::pending().await;
    }
    let mut placed = false;
    loop {
        let ready = if placed { agent.readiness() } else { agent.can_start_pods() };
        if let Err(reason) = ready {
            if !placed {
                tracing::debug!(%reason, "not announcing readiness yet");
            }
        } else {
            if let Some(conf) = &conf {
                write_cni_conf(conf, placed);
            }
            if let Some((client, node, key)) = &taint {
                match crate::kube::remove_startup_taint(client.clone(), node, key).await {
                    Ok(removed) => {
                        if removed {
                            tracing::info!(taint = %key, "startup taint removed: the node takes pods");
                        }
                        taint = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = &e as &dyn std::error::Error, taint = %key, "removing the startup taint")
                    }
                }
            }
            placed = true;
        }
        let every = if placed { Duration::from_secs(10) } else { Duration::from_millis(500) };
        tokio::time::sleep(every).await;
    }
}

fn write_cni_conf(conf: &CniConf, placed_before: bool) {
    let path = conf.dir.join(&conf.name);
    match conf.ensure() {
        Ok(done) => {
            if done.written && placed_before {
                tracing::warn!(path = %path.display(), "CNI config was missing or changed; put back");
            } else if done.written {
                tracing::info!(
                    path = %path.display(),
                    "CNI config written: the agent can serve, the runtime may start pods"
                );
            }
            for other in &done.moved {
                tracing::info!(config = %other, suffix = crate::cniconf::BACKUP_SUFFIX, "another CNI config moved aside (exclusive mode)");
            }
        }
        Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, "CNI config"),
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Run the agent (or a subcommand).
pub async fn run(args: Args) -> Result<()> {
    let Args {
        node_name,
        socket,
        state_dir,
        del_journal_dir,
        metrics_addr,
        introspection_addr,
        mtu,
        external_snat,
        snat_port_randomization,
        snat_exclude_cidrs,
        leak_grace_seconds,
        add_wait_ms,
        publish_debounce_ms,
        netns,
        rebuild_store_from_host,
        host_repair_interval_seconds,
        cni_conf_source,
        cni_conf_dir,
        cni_conf_name,
        cni_exclusive,
        cni_uninstall,
        cni_bin_dir,
        startup_taint,
        annotate_pod_ip,
        ip_family,
        ipv4_egress_cidr,
        log_format: _,
        command,
    } = args;
    if let Some(Cmd::SysctlInit) = command {
        // Before the netlink workers: it needs none, only /proc/sys in the host netns.
        let written = crate::hostnet::sysctl::init(netns.as_deref(), ip_family)?;
        let names: Vec<String> =
            written.iter().map(|s| format!("{}={}", s.name(), s.value)).collect();
        tracing::info!(written = ?names, "host-wide sysctls in place");
        return Ok(());
    }
    if let Some(Cmd::Support { output, shim_log }) = &command {
        let opts = crate::support::Options {
            introspection_addr,
            metrics_addr,
            state_dir,
            del_journal_dir,
            cni_conf_dir: cni_conf_dir.unwrap_or_else(crate::support::default_cni_conf_dir),
            cni_bin_dir: cni_bin_dir.unwrap_or_else(|| PathBuf::from("/opt/cni/bin")),
            shim_log: shim_log.clone(),
            netns,
        };
        let output = output.clone();
        return tokio::task::spawn_blocking(move || crate::support::run(&opts, &output))
            .await
            .map_err(|e| Error::Stopped(format!("support task: {e}")))?;
    }
    let host = Arc::new(NetlinkHost::start(netns.clone()).inspect_err(|e| {
        tracing::error!(netns = ?netns, error = e as &dyn std::error::Error, "cannot start the netlink thread in the host netns");
    })?);
    if let Some(Cmd::Uninstall) = &command {
        let mut errs = tokio::task::spawn_blocking(move || host.uninstall())
            .await
            .map_err(|e| Error::Stopped(format!("uninstall task: {e}")))?;
        for e in &errs {
            tracing::warn!(error = e as &dyn std::error::Error, "uninstall");
        }
        // Exit non-zero when something could not be removed: a script or Job running it must
        // not report a clean host that is not.
        return match errs.is_empty() {
            true => Ok(()),
            false => Err(Error::HostNet(errs.remove(0))),
        };
    }
    // Fail at start, with the sysctl, its value and the fix in the termination message, rather
    // than serve pods a node that does not forward.
    host.run(move |_| crate::hostnet::sysctl::ensure(&crate::hostnet::sysctl::wanted(ip_family)))?;
    // clap requires it unless a subcommand is given, and every subcommand returned above.
    let node_name = node_name
        .ok_or_else(|| Error::Config("--node-name is required to run the agent".into()))?;
    let mut stop = StopSignals::install()?;
    let cni_conf = cni_conf_source.zip(cni_conf_dir).map(|(source, dir)| CniConf {
        source,
        dir,
        name: cni_conf_name,
        exclusive: cni_exclusive,
    });
    let uninstall_cni = |sig: &str| match crate::cniconf::on_stop(
        cni_conf.as_ref(),
        cni_uninstall,
        cni_bin_dir.as_deref(),
    ) {
        Ok(removed) if cni_uninstall => tracing::info!(
            signal = sig,
            removed = ?removed,
            "CNI config and binary removed (--cni-uninstall): running pods keep their networking, new pods cannot start here"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            error = &e as &dyn std::error::Error,
            "removing the CNI files (--cni-uninstall)"
        ),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %node_name,
        host_netns = %netns.as_deref().map_or("<own>".into(), |p| p.display().to_string()),
        socket = %socket.display(),
        state_dir = %state_dir.display(),
        del_journal_dir = %del_journal_dir.display(),
        metrics = %metrics_addr,
        introspection = %introspection_addr,
        mtu,
        external_snat,
        rebuild_store_from_host,
        "starting enipool-agent"
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let core = CoreConfig { mtu, external_snat, leak_grace_seconds };
    let store_path = state_dir.join("allocations.redb");
    let agent = Arc::new(Agent::open(&store_path, &boot_id(), host, core, metrics)?);
    agent.set_add_wait(Duration::from_millis(add_wait_ms));
    agent.set_del_journal(&del_journal_dir);
    let client =
        kube::Client::try_default().await.map_err(|source| Error::Kube { op: "client", source })?;
    let kcfg = crate::kube::KubeConfig {
        node_name: node_name.clone(),
        mtu,
        snat_exclude: snat_exclude_cidrs,
        external_snat,
        snat_ports: snat_port_randomization,
        ipv4_egress: ipv4_egress_cidr,
        debounce: Duration::from_millis(publish_debounce_ms),
        repair_interval: Duration::from_secs(host_repair_interval_seconds),
    };
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(None);
    let mut pool_task =
        tokio::spawn(crate::kube::watch_pool(client.clone(), agent.clone(), kcfg, ready_tx));
    let (started_tx, mut started_rx) = tokio::sync::watch::channel(false);
    let startup = start_up(
        agent.clone(),
        ready_rx,
        del_journal_dir.clone(),
        rebuild_store_from_host,
        started_tx,
    );
    tokio::pin!(startup);
    // Wait for the first ENIPool (ENIs programmed, the store checked, the host reconciled) before
    // serving, so a restart never answers ADD from an empty view or an unchecked store; do not
    // wait forever (STATUS says why meanwhile, and the start-up goes on in the background).
    tracing::info!(pool = %node_name, "waiting for this node's ENIPool and Node (up to 60 s)");
    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(60), started_rx.wait_for(|s| *s)) => {
            if r.is_err() {
                tracing::warn!(pool = %node_name, "no usable ENIPool after 60 s; serving anyway (requests answer try-again-later until it arrives and the allocation store is checked)");
            }
        }
        r = &mut startup => {
            pool_task.abort();
            return r;
        }
        sig = stop.recv() => {
            tracing::info!(signal = sig, "stop signal received before serving; shutting down");
            uninstall_cni(sig);
            pool_task.abort();
            tracing::info!("enipool-agent stopped");
            return Ok(());
        }
    }
    let listener = crate::cni::bind(&socket)?;
    let pending = crate::kube::WaitingPods::default();
    let st = crate::http::HttpState { agent: agent.clone(), registry: Arc::new(registry) };
    let m = tokio::net::TcpListener::bind(metrics_addr).await.map_err(Error::io("bind metrics"))?;
    let i = tokio::net::TcpListener::bind(introspection_addr)
        .await
        .map_err(Error::io("bind introspection"))?;
    // Spawned, so that after a stop signal they can finish their requests (graceful shutdown)
    // while everything else is dropped.
    let (http_stop_tx, http_stop_rx) = tokio::sync::watch::channel(false);
    let http_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut http_m = tokio::spawn(
        axum::serve(m, crate::http::metrics_router(st.clone()))
            .with_graceful_shutdown(http_stopped(http_stop_rx.clone()))
            .into_future(),
    );
    let mut http_i = tokio::spawn(
        axum::serve(i, crate::http::introspection_router(st))
            .with_graceful_shutdown(http_stopped(http_stop_rx))
            .into_future(),
    );
    let ticker = {
        let a = agent.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let a = a.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || a.tick()).await {
                    tracing::warn!(error = &e as &dyn std::error::Error, "housekeeping");
                }
            }
        }
    };
    let joined = |r: std::result::Result<std::io::Result<()>, tokio::task::JoinError>,
                  op: &'static str| {
        r.unwrap_or_else(|e| Err(std::io::Error::other(e))).map_err(Error::io(op))
    };
    let taint = startup_taint.map(|key| (client.clone(), node_name.clone(), key));
    let annotator = {
        let (client, agent) = (client.clone(), agent.clone());
        async move {
            if !annotate_pod_ip {
                return std::future::pending().await;
            }
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            agent.set_pod_ip_sink(tx);
            crate::annotate::run(client, rx).await
        }
    };
    tracing::info!(socket = %socket.display(), "serving CNI");
    let r = tokio::select! {
        r = crate::cni::serve(listener, agent.clone()) => r,
        r = crate::kube::watch_pods(client.clone(), node_name.clone(), pending.clone(), agent.clone()) => r,
        r = crate::kube::publish(client, agent.clone(), node_name, pending, Duration::from_millis(publish_debounce_ms)) => r,
        r = &mut pool_task => r.unwrap_or_else(|e| Err(Error::Stopped(format!("pool task: {e}")))),
        r = &mut startup => r,
        r = annotator => r,
        r = &mut http_m => joined(r, "metrics server"),
        r = &mut http_i => joined(r, "introspection server"),
        _ = ticker => Ok(()),
        _ = when_ready(agent.clone(), cni_conf.clone(), taint) => Ok(()),
        sig = stop.recv() => {
            tracing::info!(signal = sig, "stop signal received; no new CNI connections, draining HTTP");
            uninstall_cni(sig);
            Ok(())
        }
    };
    // Whatever ended the loop: the CNI listener is closed (its future dropped above), the pool
    // watch stops, the HTTP servers finish what they are answering.
    pool_task.abort();
    let _ = http_stop_tx.send(true);
    let drained = tokio::time::timeout(HTTP_DRAIN, async {
        // A handle that already ended the loop above must not be polled again.
        for h in [&mut http_m, &mut http_i] {
            if !h.is_finished() {
                let _ = h.await;
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(grace = ?HTTP_DRAIN, "HTTP servers still busy after the grace; closing them");
        http_m.abort();
        http_i.abort();
    }
    if r.is_ok() {
        tracing::info!("enipool-agent stopped");
    }
    r
}
