//! Waiting and probing: polling with a deadline, HTTP GET of the agent's endpoints, a TCP
//! server and client inside network namespaces (the pods' stand-ins), ping, commands in a netns.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Polls `f` until it returns `Ok` or `timeout` passes; the error names what was awaited and the
/// last failure seen.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => {
                bail!("timed out after {:?} waiting for {what}; last seen: {e:#}", timeout)
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A minimal HTTP/1.1 GET (the agent's endpoints): `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).with_context(|| format!("reading GET {path} from {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("HTTP response without a body")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP status line in {head:?}"))?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A TCP server inside a netns that answers each connection with `<marker> <peer address>\n`:
/// the stand-in for a pod's container listening on a port. Stopped on drop.
pub struct TcpMarker {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpMarker {
    /// Listens on `0.0.0.0:port` inside `netns`.
    pub fn start(netns: &str, port: u16, marker: &str) -> TcpMarker {
        use std::sync::atomic::{AtomicBool, Ordering};
        let file = std::fs::File::open(Path::new(fabric::sh::NETNS_DIR).join(netns))
            .expect("opening the pod netns");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let (st, marker) = (stop.clone(), marker.to_string());
        let thread = std::thread::spawn(move || {
            let bound = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
                .and_then(|()| std::net::TcpListener::bind(("0.0.0.0", port)))
                .and_then(|l| l.set_nonblocking(true).map(|()| l));
            let listener = match bound {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = writeln!(s, "{marker} {}", peer.ip());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        rx.recv().expect("listener thread").expect("binding the pod's listener");
        TcpMarker { stop, thread: Some(thread) }
    }
}

impl Drop for TcpMarker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from `netns` to `to:port` and returns the line the server sent (None when the
/// connection fails or nothing comes back within 2 s).
pub fn tcp_fetch(netns: &str, to: Ipv4Addr, port: u16) -> Option<String> {
    fabric::in_netns(netns, || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_secs(2))
                .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut line = String::new();
        s.read_to_string(&mut line).ok()?;
        Some(line.trim().to_string())
    })
    .ok()
    .flatten()
}

/// `ping` from `netns` with up to 3 tries (the first packet may wait for neighbour resolution).
pub fn ping(netns: &str, to: Ipv4Addr) -> bool {
    (0..3).any(|_| fabric::ping(netns, to))
}

/// Output of a command in a netns (stdout; panics on failure with stderr).
pub fn sh_in(netns: &str, argv: &[&str]) -> String {
    fabric::run_in(netns, argv).unwrap_or_else(|e| panic!("{e:#}"))
}
