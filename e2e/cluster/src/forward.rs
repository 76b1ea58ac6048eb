//! TCP between network namespaces: a listener in one netns whose connections are joined to an
//! address in another. A hostNetwork pod lives in its node's namespace, while the platform's API
//! server and the test harness live in the machine's own: forwards stand in for the routes a real
//! node has to its API server endpoint, and the harness's route to a node's ports.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One netns side of a forward: `None` is the machine's own namespace.
pub type Side<'a> = Option<&'a str>;

/// A running forward; it stops when dropped.
#[derive(Debug)]
pub struct Forward {
    task: JoinHandle<()>,
    pub listen: SocketAddr,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `listen` in netns `from` and joins each connection to `to` in netns `into`.
/// Must run on a tokio runtime.
pub fn start(from: Side, listen: SocketAddr, into: Side, to: SocketAddr) -> Result<Forward> {
    let std_listener = match from {
        None => std::net::TcpListener::bind(listen),
        Some(ns) => fabric::in_netns(ns, || std::net::TcpListener::bind(listen))?,
    }
    .with_context(|| format!("listening on {listen} in netns {}", from.unwrap_or("<own>")))?;
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    let listen = listener.local_addr()?;
    let into = into.map(str::to_string);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { continue };
            let into = into.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = connect(into, to).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    Ok(Forward { task, listen })
}

/// Connects to `to` from netns `ns`: the socket is made on a thread of its own that enters the
/// namespace (a socket stays in the namespace it was made in; a pool thread must not move).
async fn connect(ns: Option<String>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(ns) = ns else { return TcpStream::connect(to).await };
    let s = tokio::task::spawn_blocking(move || {
        fabric::in_netns(&ns, || {
            std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(5))
        })
        .map_err(std::io::Error::other)?
    })
    .await
    .map_err(std::io::Error::other)??;
    s.set_nonblocking(true)?;
    TcpStream::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn joins_both_directions() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = upstream.local_addr().unwrap();
        let fwd = start(None, "127.0.0.1:0".parse().unwrap(), None, to).unwrap();
        let listen = fwd.listen;
        let echo = tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let mut c = TcpStream::connect(listen).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        echo.await.unwrap();
        drop(fwd);
    }
}
