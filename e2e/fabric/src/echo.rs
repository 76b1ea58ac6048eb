//! The "internet host": a UDP echo server that answers every datagram with the source address it
//! saw (`<ip>:<port>`, `[<ipv6>]:<port>`), so a test can tell whether a node's egress was
//! translated (IPv4) or left with the pod's own address (IPv6). ICMP echo is answered by the
//! internet netns' kernel.

use super::sh;
use anyhow::{Context, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// UDP port of the echo server (the classic echo port).
pub const ECHO_PORT: u16 = 7;

/// A running echo server; [`EchoServer::stop`] (or drop) ends its thread.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds `addr:ECHO_PORT` inside `netns` and serves on a dedicated thread. An IPv6 `addr`
    /// must not be tentative (assign it with `nodad`).
    pub fn start(netns: &str, addr: impl Into<IpAddr>) -> Result<Self> {
        let addr: IpAddr = addr.into();
        let path = format!("{}/{netns}", sh::NETNS_DIR);
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("echo-{netns}"))
            .spawn(move || {
                let socket = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("setns")
                    .and_then(|()| Ok(UdpSocket::bind((addr, ECHO_PORT))?))
                    .and_then(|s| {
                        // Short timeouts so the loop notices `stop` promptly.
                        s.set_read_timeout(Some(Duration::from_millis(100)))?;
                        Ok(s)
                    });
                let socket = match socket {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut buf = [0u8; 1500];
                while !thread_stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(from.to_string().as_bytes(), from);
                    }
                }
            })
            .context("spawning the echo thread")?;
        let ready = ready_rx.recv().context("echo thread died before binding")?;
        let mut server = EchoServer { stop, thread: Some(thread) };
        if let Err(e) = ready {
            server.stop();
            return Err(e).context(format!("starting the UDP echo in {netns}"));
        }
        Ok(server)
    }

    /// Stops the server and waits for its thread (idempotent).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one datagram from `netns` (from `src`, or the address routing picks) to the echo server at
/// `to` and returns the source address the server saw, or `None` if no answer came within about 2 s.
pub fn udp_echo(netns: &str, src: Option<Ipv4Addr>, to: Ipv4Addr) -> Result<Option<SocketAddrV4>> {
    let src = IpAddr::V4(src.unwrap_or(Ipv4Addr::UNSPECIFIED));
    match echo_once(netns, src, to.into())? {
        Some(SocketAddr::V4(a)) => Ok(Some(a)),
        Some(other) => anyhow::bail!("an IPv4 echo reported {other}"),
        None => Ok(None),
    }
}

/// [`udp_echo`] over IPv6.
pub fn udp_echo6(netns: &str, src: Option<Ipv6Addr>, to: Ipv6Addr) -> Result<Option<SocketAddrV6>> {
    let src = IpAddr::V6(src.unwrap_or(Ipv6Addr::UNSPECIFIED));
    match echo_once(netns, src, to.into())? {
        Some(SocketAddr::V6(a)) => Ok(Some(a)),
        Some(other) => anyhow::bail!("an IPv6 echo reported {other}"),
        None => Ok(None),
    }
}

fn echo_once(netns: &str, src: IpAddr, to: IpAddr) -> Result<Option<SocketAddr>> {
    sh::in_netns(netns, || -> Result<Option<SocketAddr>> {
        let socket = UdpSocket::bind((src, 0)).with_context(|| format!("binding {src}"))?;
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut buf = [0u8; 64];
        for _ in 0..2 {
            // Sending can fail transiently (e.g. neighbour resolution); try again once.
            if socket.send_to(b"enipool", (to, ECHO_PORT)).is_err() {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                let seen = std::str::from_utf8(&buf[..n])?;
                return Ok(Some(seen.parse().with_context(|| format!("echo reply {seen:?}"))?));
            }
        }
        Ok(None)
    })?
}
