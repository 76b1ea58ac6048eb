//! The agent's last log lines, kept in memory for the support bundle: the node's log files are
//! the kubelet's, out of reach of `enipool-agent support` run with `kubectl exec` in the agent's
//! pod, which asks the agent for these over its loopback introspection address (`/v1/logs`).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tracing_subscriber::fmt::MakeWriter;

/// How much log text is kept: enough for the minutes before a failure at info level.
pub const KEEP_BYTES: usize = 512 << 10;

static RECENT: OnceLock<Arc<Recent>> = OnceLock::new();

/// The last `cap` bytes of log output, trimmed at line starts.
#[derive(Debug)]
pub struct Recent {
    buf: Mutex<VecDeque<u8>>,
    cap: usize,
}

impl Recent {
    pub fn new(cap: usize) -> Recent {
        Recent { buf: Mutex::new(VecDeque::with_capacity(cap.min(64 << 10))), cap }
    }

    fn push(&self, bytes: &[u8]) {
        let mut b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        b.extend(bytes.iter().copied());
        if b.len() > self.cap {
            let over = b.len() - self.cap;
            // Drop whole lines: cut after the first newline past the excess.
            let cut =
                b.iter().skip(over).position(|&c| c == b'\n').map_or(b.len(), |p| over + p + 1);
            b.drain(..cut);
        }
    }

    /// The kept lines, oldest first.
    pub fn text(&self) -> String {
        let b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let (head, tail) = b.as_slices();
        let mut v = Vec::with_capacity(b.len());
        v.extend_from_slice(head);
        v.extend_from_slice(tail);
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// A `MakeWriter` that copies every log line into the process's [`Recent`] buffer.
#[derive(Debug, Clone)]
pub struct Tap(Arc<Recent>);

/// The process's buffer, created on first use with [`KEEP_BYTES`]; logging writes to it through
/// the returned [`Tap`] (combine it with the real output, e.g. `std::io::stderr.and(tap)`).
pub fn tap() -> Tap {
    Tap(RECENT.get_or_init(|| Arc::new(Recent::new(KEEP_BYTES))).clone())
}

/// The kept log text, if this process logs through a [`Tap`].
pub fn text() -> Option<String> {
    RECENT.get().map(|r| r.text())
}

impl Write for Tap {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Tap {
    type Writer = Tap;

    fn make_writer(&'a self) -> Tap {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_whole_lines_within_the_bound() {
        let r = Recent::new(20);
        for i in 0..10 {
            r.push(format!("line {i}\n").as_bytes());
        }
        let t = r.text();
        assert!(t.len() <= 20, "{t:?}");
        assert!(t.ends_with("line 9\n"), "{t:?}");
        assert!(t.starts_with("line "), "cut at a line start: {t:?}");
        assert_eq!(t.lines().count(), 2, "{t:?}");
    }
}
