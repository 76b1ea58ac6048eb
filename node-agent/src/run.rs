//! Start-up sequence: store (epoch bump), journal drain, pool watch and ENI programming, host
//! reconcile of allocations (leak grace), then serve CNI, HTTP and the publisher.

use crate::agent::{Agent, CoreConfig};
use crate::args::{Args, Cmd};
use crate::error::{Error, Result};
use crate::hostnet::netlink::NetlinkHost;
use crate::hostnet::HostNet;
use crate::metrics::Metrics;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

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
        snat_exclude_cidrs,
        leak_grace_seconds,
        publish_debounce_ms,
        netns,
        log_format: _,
        command,
    } = args;
    if let Some(Cmd::SysctlInit) = command {
        // Before the netlink workers: it needs none, only /proc/sys in the host netns.
        let written = crate::hostnet::sysctl::init(netns.as_deref())?;
        let names: Vec<String> =
            written.iter().map(|s| format!("{}={}", s.name(), s.value)).collect();
        tracing::info!(written = ?names, "host-wide sysctls in place");
        return Ok(());
    }
    let host = Arc::new(NetlinkHost::start(netns.clone()).inspect_err(|e| {
        tracing::error!(netns = ?netns, error = e as &dyn std::error::Error, "cannot start the netlink thread in the host netns");
    })?);
    if let Some(Cmd::Uninstall) = command {
        let errs = tokio::task::spawn_blocking(move || host.uninstall()).await.unwrap_or_default();
        for e in &errs {
            tracing::warn!(error = e as &dyn std::error::Error, "uninstall");
        }
        return Ok(());
    }
    // Fail at start, with the sysctl, its value and the fix in the termination message, rather
    // than serve pods a node that does not forward.
    host.run(|_| crate::hostnet::sysctl::ensure(crate::hostnet::sysctl::HOST_WIDE))?;
    // clap requires it unless a subcommand is given, and every subcommand returned above.
    let node_name = node_name
        .ok_or_else(|| Error::Config("--node-name is required to run the agent".into()))?;
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
        "starting enipool-agent"
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let core = CoreConfig { mtu, external_snat, leak_grace_seconds };
    let store_path = state_dir.join("allocations.redb");
    let agent = Arc::new(Agent::open(&store_path, &boot_id(), host, core, metrics)?);
    let client =
        kube::Client::try_default().await.map_err(|source| Error::Kube { op: "client", source })?;
    let kcfg = crate::kube::KubeConfig {
        node_name: node_name.clone(),
        mtu,
        snat_exclude: snat_exclude_cidrs,
        external_snat,
        debounce: Duration::from_millis(publish_debounce_ms),
    };
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
    let pool_task =
        tokio::spawn(crate::kube::watch_pool(client.clone(), agent.clone(), kcfg, ready_tx));
    // Wait for the first ENIPool (ENIs programmed) before reconciling and serving, so a restart
    // never answers ADD from an empty view; do not wait forever (STATUS says why meanwhile).
    tracing::info!(pool = %node_name, "waiting for this node's ENIPool and Node (up to 60 s)");
    if tokio::time::timeout(Duration::from_secs(60), ready_rx.wait_for(|r| *r)).await.is_err() {
        tracing::warn!(pool = %node_name, "no usable ENIPool after 60 s; serving anyway (ADD answers try-again-later until it arrives)");
    }
    let a = agent.clone();
    let jdir = del_journal_dir.clone();
    let drained = tokio::task::spawn_blocking(move || a.drain_journal(&jdir)).await.unwrap_or(0);
    tracing::info!(drained, "DEL journal drained");
    let a = agent.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || a.reconcile_host()).await {
        tracing::error!(error = &e as &dyn std::error::Error, "host reconcile");
    }
    let listener = crate::cni::bind(&socket)?;
    let pending = Arc::new(AtomicUsize::new(0));
    let st = crate::http::HttpState { agent: agent.clone(), registry: Arc::new(registry) };
    let m = tokio::net::TcpListener::bind(metrics_addr).await.map_err(Error::io("bind metrics"))?;
    let i = tokio::net::TcpListener::bind(introspection_addr)
        .await
        .map_err(Error::io("bind introspection"))?;
    let http_m = axum::serve(m, crate::http::metrics_router(st.clone()));
    let http_i = axum::serve(i, crate::http::introspection_router(st));
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
    tracing::info!(socket = %socket.display(), "serving CNI");
    tokio::select! {
        r = crate::cni::serve(listener, agent.clone()) => r,
        r = crate::kube::watch_pods(client.clone(), node_name.clone(), pending.clone(), agent.clone()) => r,
        r = crate::kube::publish(client, agent.clone(), node_name, pending, Duration::from_millis(publish_debounce_ms)) => r,
        r = pool_task => r.unwrap_or_else(|e| Err(Error::Stopped(format!("pool task: {e}")))),
        r = http_m => r.map_err(Error::io("metrics server")),
        r = http_i => r.map_err(Error::io("introspection server")),
        _ = ticker => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
