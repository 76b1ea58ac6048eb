//! Free 127.0.0.1 ports for the HTTP endpoints of processes a test starts (agents, operators).
//!
//! A port picked with bind(0) and released is in the kernel's ephemeral range
//! (`ip_local_port_range`, 32768 and up by default), where any outgoing connection (to the API
//! server, the simulator) can take it before the process binds it: an agent once failed with
//! EADDRINUSE in CI. So ports come from [`PORTS`], below that range, walked from an offset that
//! depends on the process id (concurrent test processes start apart), skipping taken ones.

use anyhow::{bail, Result};
use std::sync::Mutex;

/// Ports handed out: below the default ephemeral range (32768-60999).
pub const PORTS: std::ops::Range<u16> = 20000..32000;

/// The next port to try, process-wide (0: not started yet).
static NEXT: Mutex<u16> = Mutex::new(0);

/// A 127.0.0.1 port nobody listens on now, from [`PORTS`].
pub fn free_local_port() -> Result<u16> {
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let span = PORTS.end - PORTS.start;
    if *next == 0 {
        *next = PORTS.start + (std::process::id() % 97) as u16 * (span / 97);
    }
    for _ in 0..span {
        let p = *next;
        *next = if p + 1 >= PORTS.end { PORTS.start } else { p + 1 };
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free port in {PORTS:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_distinct_and_free() {
        let a = free_local_port().unwrap();
        let b = free_local_port().unwrap();
        assert!(PORTS.contains(&a) && PORTS.contains(&b));
        assert_ne!(a, b, "the walk moves on");
        let _held = std::net::TcpListener::bind(("127.0.0.1", a + 2)).ok();
        let c = free_local_port().unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", c)).is_ok(), "{c} is free");
    }
}
