//! Minimal logging for a process that lives a few milliseconds: one line per event, appended to
//! `logFile` or written to stderr. Never stdout, which belongs to the CNI result.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where log lines go.
#[derive(Debug)]
pub struct Logger {
    file: Option<std::fs::File>,
}

impl Logger {
    /// A logger writing to stderr.
    pub fn stderr() -> Self {
        Logger { file: None }
    }

    /// A logger appending to `path`, falling back to stderr if it cannot be opened.
    pub fn to_file(path: Option<&Path>) -> Self {
        let file = path.and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
        Logger { file }
    }

    /// Writes one line: `<unix seconds.millis> <level> enipool-cni: <msg>`. Failures are ignored.
    pub fn log(&mut self, level: &str, msg: &str) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let line =
            format!("{}.{:03} {level} enipool-cni: {msg}\n", now.as_secs(), now.subsec_millis());
        let _ = match &mut self.file {
            Some(f) => f.write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
    }
}
