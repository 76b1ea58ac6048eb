//! `enipool-agent support`: one `.tar.gz` with what an on-call engineer needs about this node's
//! pod networking. Each piece is collected on its own; a piece that cannot be collected is named
//! in `manifest.txt` with the reason, never fatal. Nothing that may hold credentials is included:
//! only CNI config files by their extension, no file whose name suggests a kubeconfig or token,
//! and every text passes [`redact`].

pub mod archive;
pub mod gather;
pub mod redact;

use crate::error::{Error, Result};
use archive::Bundle;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where each piece is read from (the agent's own flags, with the chart's paths as fallbacks).
#[derive(Debug, Clone)]
pub struct Options {
    pub introspection_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub state_dir: PathBuf,
    pub del_journal_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    /// The shim's log, besides the `logFile` the enipool conflist names.
    pub shim_log: Option<PathBuf>,
    pub netns: Option<PathBuf>,
}

/// The CNI config dir as the agent pod mounts it, else the host's usual one.
pub fn default_cni_conf_dir() -> PathBuf {
    ["/host/cni/net.d", "/etc/cni/net.d"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("/etc/cni/net.d"))
}

/// Collect everything into one bundle.
pub fn collect(opts: &Options) -> Bundle {
    let mut b = Bundle::default();
    // HTTP first, from this thread: the agent's listeners are in its own netns, not in --netns.
    gather::agent_endpoints(&mut b, opts);
    gather::versions(&mut b, opts);
    gather::store_files(&mut b, opts);
    gather::cni_conf(&mut b, opts);
    gather::del_journal(&mut b, opts);
    gather::host(&mut b, opts.netns.as_deref());
    b
}

/// `enipool-agent support --output FILE` (`-`: standard output, never a terminal).
pub fn run(opts: &Options, output: &std::path::Path) -> Result<()> {
    let stdout = output.as_os_str() == "-";
    if stdout && std::io::stdout().is_terminal() {
        return Err(Error::Config(
            "refusing to write a gzip archive to a terminal: redirect it (`> bundle.tgz`) or pass --output FILE".into(),
        ));
    }
    let bundle = collect(opts);
    let bytes = bundle.to_tar_gz().map_err(Error::io("write the support archive"))?;
    if stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .map_err(Error::io("write the support archive to stdout"))?;
    } else {
        std::fs::write(output, &bytes).map_err(Error::io("write the support archive"))?;
    }
    tracing::info!(
        output = %output.display(),
        members = bundle.members().len(),
        missing = bundle.missing().len(),
        "support bundle written"
    );
    Ok(())
}
