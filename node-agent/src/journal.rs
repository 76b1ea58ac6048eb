//! Reading the shim's on-host DEL journal (entries written while the agent was down).
//!
//! TODO: switch to `enipool_cni::journal::{drain, remove}` once the shim crate exports it; until
//! then this reads the agreed format: one file per DEL, holding one JSON `proto::Request`.
//! Unreadable files are logged and left in place for a person to look at.

use enipool_cni::proto::Request;
use std::path::{Path, PathBuf};

/// Every journaled request, oldest first (by file name).
pub fn drain(dir: &Path) -> Vec<(PathBuf, Request)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> =
        rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "tmp"))
        .filter_map(|p| match std::fs::read(&p).map(|b| serde_json::from_slice::<Request>(&b)) {
            Ok(Ok(r)) => Some((p, r)),
            Ok(Err(e)) => {
                tracing::warn!(path = %p.display(), error = &e as &dyn std::error::Error, "unreadable DEL journal entry");
                None
            }
            Err(e) => {
                tracing::warn!(path = %p.display(), error = &e as &dyn std::error::Error, "reading DEL journal entry");
                None
            }
        })
        .collect()
}

/// Remove a processed entry (already gone is fine).
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = &e as &dyn std::error::Error, "removing DEL journal entry");
        }
    }
}
