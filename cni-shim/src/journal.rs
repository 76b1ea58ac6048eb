//! The on-host DEL journal: releases recorded while the agent was down, drained by the agent at start.
//!
//! One file per attachment, named `<containerID>@<ifname>.json` (container IDs cannot contain `@`,
//! so the name is unambiguous), holding the [`Request`] JSON. Writes are atomic and durable: temp
//! file, fsync, rename, fsync of the directory. Recording the same attachment twice overwrites, which
//! is harmless because DEL is idempotent.
//!
//! The agent calls [`drain`], processes each entry like a DEL from the shim, then [`remove`]s it.

use crate::config::{valid_id, valid_if_name};
use crate::proto::{Request, MAX_MESSAGE_BYTES};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".json";

/// Suffix given to entries [`drain`] cannot parse, so they are kept for inspection but not retried.
pub const CORRUPT_SUFFIX: &str = ".corrupt";

/// Records `request` (a DEL) in `dir`, creating `dir` (mode 0700) if needed.
///
/// Rejects attachment keys that are not valid CNI container IDs / interface names, so a request can
/// never name a file outside `dir`.
pub fn record(dir: &Path, request: &Request) -> io::Result<PathBuf> {
    if !valid_id(&request.container_id) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid container ID"));
    }
    if let Err(reason) = valid_if_name(&request.if_name) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, reason));
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let name = format!("{}@{}{SUFFIX}", request.container_id, request.if_name);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let body = serde_json::to_vec(request).map_err(io::Error::other)?;
    let write = || -> io::Result<()> {
        let mut f =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(path)
}

/// Every pending entry in `dir`, sorted by path. A missing `dir` is an empty journal.
///
/// Entries that cannot be read or parsed are renamed with [`CORRUPT_SUFFIX`] and skipped; leftover
/// temp files (dot-files) of a crashed [`record`] are ignored.
pub fn drain(dir: &Path) -> io::Result<Vec<(PathBuf, Request)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(SUFFIX) {
            continue;
        }
        let path = entry.path();
        match read_entry(&path) {
            Ok(req) => out.push((path, req)),
            Err(_) => {
                let mut bad = path.clone().into_os_string();
                bad.push(CORRUPT_SUFFIX);
                fs::rename(&path, bad)?;
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn read_entry(path: &Path) -> io::Result<Request> {
    let mut buf = Vec::new();
    File::open(path)?.take(MAX_MESSAGE_BYTES as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > MAX_MESSAGE_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "journal entry too large"));
    }
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Deletes a processed entry; an already-removed entry is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Command, PROTOCOL_VERSION};

    fn del(id: &str, ifname: &str) -> Request {
        Request {
            protocol: PROTOCOL_VERSION,
            command: Command::Del,
            container_id: id.into(),
            if_name: ifname.into(),
            netns: "/var/run/netns/x".into(),
            args: [("K8S_POD_NAME".to_string(), "web".to_string())].into(),
            mtu: None,
            network: "enipool".into(),
            valid_attachments: None,
        }
    }

    #[test]
    fn record_drain_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/journal");
        assert!(drain(&dir).unwrap().is_empty());
        record(&dir, &del("b", "eth0")).unwrap();
        record(&dir, &del("a", "eth0")).unwrap();
        record(&dir, &del("a", "eth0")).unwrap(); // idempotent overwrite
        fs::write(dir.join(".x.tmp"), b"partial").unwrap();
        fs::write(dir.join("junk@eth0.json"), b"{not json").unwrap();
        let got = drain(&dir).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, del("a", "eth0"));
        assert!(dir.join("junk@eth0.json.corrupt").exists());
        for (p, _) in &got {
            remove(p).unwrap();
            remove(p).unwrap();
        }
        assert!(drain(&dir).unwrap().is_empty());
    }

    #[test]
    fn rejects_names_that_escape_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(record(tmp.path(), &del("../etc", "eth0")).is_err());
        assert!(record(tmp.path(), &del("a", "x/y")).is_err());
        assert!(record(tmp.path(), &del("a", "..")).is_err());
    }
}
