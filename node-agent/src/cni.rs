//! The CNI server: a Unix socket (mode 0600) where the shim sends one JSON request line and reads
//! one JSON response line. Each request runs on a blocking thread ([`Agent::handle`]).

use crate::agent::Agent;
use crate::error::{Error, Result};
use enipool_cni::error::codes;
use enipool_cni::proto::{ErrorReply, Request, Response, MAX_MESSAGE_BYTES};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

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

/// Serve until the listener fails.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>) -> Result<()> {
    loop {
        let (stream, _) = listener.accept().await.map_err(Error::io("accept on CNI socket"))?;
        let agent = agent.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, agent).await {
                tracing::debug!(error = &e as &dyn std::error::Error, "CNI connection");
            }
        });
    }
}

async fn connection(stream: UnixStream, agent: Arc<Agent>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(r).take(MAX_MESSAGE_BYTES as u64 + 1);
    reader.read_until(b'\n', &mut line).await?;
    let resp = if line.len() > MAX_MESSAGE_BYTES {
        bad("request too large")
    } else {
        match serde_json::from_slice::<Request>(&line) {
            Ok(req) => tokio::task::spawn_blocking(move || agent.handle(req))
                .await
                .unwrap_or_else(|e| bad(&format!("agent task failed: {e}"))),
            Err(e) => Response::Error(ErrorReply {
                code: codes::DECODING_FAILURE,
                msg: format!("cannot decode request: {e}"),
                details: String::new(),
            }),
        }
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

fn bad(msg: &str) -> Response {
    Response::Error(ErrorReply {
        code: codes::INVALID_NETWORK_CONFIG,
        msg: msg.to_string(),
        details: String::new(),
    })
}
