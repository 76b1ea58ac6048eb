//! The CNI server: a Unix socket (mode 0600) where the shim sends one JSON request line and reads
//! one JSON response line. Each connection is served on a blocking thread ([`Agent::handle`]).

use crate::agent::Agent;
use crate::error::{Error, Result};
use enipool_cni::error::codes;
use enipool_cni::proto::{Command, ErrorReply, Request, Response, MAX_MESSAGE_BYTES};
use enipool_cni::trace::unix_nanos;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;

/// Bind the socket: remove a stale one, create the directory, restrict to root (0600).
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("create socket dir"))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove stale socket")(e)),
    }
    let l = UnixListener::bind(path).map_err(Error::io("bind CNI socket"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io("chmod CNI socket"))?;
    Ok(l)
}

/// When each step of one connection ended (wall-clock nanoseconds since the Unix epoch, the
/// shim's trace clock), for benchmarks that break a call down.
#[derive(Debug, Clone, Default)]
pub struct ServerPhases {
    pub command: Option<Command>,
    pub container_id: String,
    pub accepted: u64,
    /// The request line read and decoded; [`Agent::handle`] starts on the same thread at once.
    pub read: u64,
    /// [`Agent::handle`] returned.
    pub handled: u64,
    /// The response written.
    pub written: u64,
}

/// Receives the phases of every connection when serving with [`serve_traced`].
pub type PhaseTap = Arc<dyn Fn(ServerPhases) + Send + Sync>;

/// How long a connection may take to send its request line or to take the answer. The shim
/// writes its request as soon as it is connected and reads at once; past its own deadline
/// (10 s by default) nobody waits for the answer any more.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve until the listener fails.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>) -> Result<()> {
    serve_traced(listener, agent, None).await
}

/// [`serve`], handing each connection's [`ServerPhases`] to `tap`.
///
/// Each accepted connection is served whole (read, [`Agent::handle`], write) on one blocking
/// thread: the handler blocks on the store's fsync and netlink anyway, and reading and writing
/// there too saves two thread hops per request over doing them on the runtime.
pub async fn serve_traced(
    listener: UnixListener,
    agent: Arc<Agent>,
    tap: Option<PhaseTap>,
) -> Result<()> {
    loop {
        let (stream, _) = listener.accept().await.map_err(Error::io("accept on CNI socket"))?;
        let accepted = if tap.is_some() { unix_nanos() } else { 0 };
        let (agent, tap) = (agent.clone(), tap.clone());
        let stream = match stream.into_std().and_then(|s| s.set_nonblocking(false).map(|()| s)) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = &e as &dyn std::error::Error, "CNI connection");
                continue;
            }
        };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = connection(stream, &agent, tap, accepted) {
                tracing::debug!(error = &e as &dyn std::error::Error, "CNI connection");
            }
        });
    }
}

fn connection(
    mut stream: StdUnixStream,
    agent: &Agent,
    tap: Option<PhaseTap>,
    accepted: u64,
) -> std::io::Result<()> {
    let now = || if tap.is_some() { unix_nanos() } else { 0 };
    let mut ph = ServerPhases { accepted, ..Default::default() };
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = Vec::new();
    BufReader::new(&stream).take(MAX_MESSAGE_BYTES as u64 + 1).read_until(b'\n', &mut line)?;
    let resp = if line.len() > MAX_MESSAGE_BYTES {
        bad("request too large")
    } else {
        match serde_json::from_slice::<Request>(&line) {
            Ok(req) => {
                ph.read = now();
                if tap.is_some() {
                    ph.command = Some(req.command);
                    ph.container_id = req.container_id.clone();
                }
                let resp = std::panic::catch_unwind(AssertUnwindSafe(|| agent.handle(req)))
                    .unwrap_or_else(|_| bad("agent task failed: panicked"));
                ph.handled = now();
                resp
            }
            Err(e) => Response::Error(ErrorReply {
                code: codes::DECODING_FAILURE,
                msg: format!("cannot decode request: {e}"),
                details: String::new(),
            }),
        }
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    stream.write_all(&out)?;
    ph.written = now();
    if let Some(tap) = tap {
        tap(ph);
    }
    stream.shutdown(std::net::Shutdown::Write)
}

fn bad(msg: &str) -> Response {
    Response::Error(ErrorReply {
        code: codes::INVALID_NETWORK_CONFIG,
        msg: msg.to_string(),
        details: String::new(),
    })
}

#[cfg(test)]
mod tests;
