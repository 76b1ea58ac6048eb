//! Run directories and the clean-up of runs that ended without tearing down.
//!
//! Every fabric owns a run prefix `ep<4 hex>` and a directory `/tmp/enipool-e2e-<prefix>/` created
//! before its first namespace. The directory holds `owner` (`<pid> <start time>` of the process
//! that owns the run) and scratch space (CNI cache, IPAM data). All the run's namespaces are named
//! `<prefix>-…`. A run is stale when its owner is gone (or its directory is missing while
//! namespaces with its prefix exist): [`cleanup_stale`] then ends the processes left in its
//! namespaces, deletes them and removes the directory.

use super::sh;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Parent of the run directories.
pub const RUN_ROOT: &str = "/tmp";
/// File name prefix of a run directory under [`RUN_ROOT`].
pub const RUN_DIR_PREFIX: &str = "enipool-e2e-";

/// True for a run prefix: `ep` and four lowercase hex digits.
pub fn is_run_prefix(s: &str) -> bool {
    s.len() == 6
        && s.starts_with("ep")
        && s[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The run prefix of a namespace name created by a fabric (`ep1a2b-vpc` → `ep1a2b`).
pub fn prefix_of_netns(name: &str) -> Option<&str> {
    let (prefix, _) = name.split_once('-')?;
    is_run_prefix(prefix).then_some(prefix)
}

/// Run directory of `prefix`.
pub fn run_dir(prefix: &str) -> PathBuf {
    Path::new(RUN_ROOT).join(format!("{RUN_DIR_PREFIX}{prefix}"))
}

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`); with the pid it
/// identifies a process even after pid reuse.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    // `rest` starts at field 3 (state); the start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Picks an unused prefix, creates its run directory and records this process as the owner.
pub fn claim_run_dir() -> Result<(String, PathBuf)> {
    let pid = std::process::id();
    let started = start_time(pid).context("reading this process's start time")?;
    let taken = sh::list_netns();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(pid) << 20);
    for _ in 0..64 {
        // splitmix64 step: good enough to spread concurrent runs over 65536 prefixes.
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let prefix = format!("ep{:04x}", (z ^ (z >> 31)) & 0xffff);
        if taken.iter().any(|n| prefix_of_netns(n) == Some(&prefix)) {
            continue;
        }
        let dir = run_dir(&prefix);
        // create_dir (not _all) fails if the directory exists: that is the lock.
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::write(dir.join("owner"), format!("{pid} {started}\n"))
                    .with_context(|| format!("writing {}/owner", dir.display()))?;
                return Ok((prefix, dir));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    anyhow::bail!("no free run prefix after 64 tries")
}

/// True while the process that owns run `prefix` is running (same pid and start time), or while
/// its run directory is still being created. For other clean-up code (e.g. processes whose command
/// line names a run directory) that must agree with [`cleanup_stale`] on what is stale.
pub fn run_is_live(prefix: &str) -> bool {
    owner_alive(&run_dir(prefix))
}

/// True if the run directory's owner process is still running.
fn owner_alive(dir: &Path) -> bool {
    let Ok(owner) = std::fs::read_to_string(dir.join("owner")) else {
        // A directory without an owner file is being created right now (or is garbage): only
        // treat it as stale once it is old.
        return std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default() < std::time::Duration::from_secs(60))
            .unwrap_or(false);
    };
    let mut parts = owner.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(pid)), Some(Ok(started))) => {
            u32::try_from(pid).ok().and_then(start_time) == Some(started)
        }
        _ => false,
    }
}

/// Removes what interrupted runs left behind: the namespaces (and the processes in them) and run
/// directories of every run whose owner process is gone, and namespaces with a run prefix but no
/// run directory. Runs whose owner is alive (other tests in progress) are left alone. Returns the
/// namespaces it deleted.
pub fn cleanup_stale() -> Vec<String> {
    let mut live = Vec::new();
    let mut stale = Vec::new();
    if let Ok(entries) = std::fs::read_dir(RUN_ROOT) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(prefix) = name.strip_prefix(RUN_DIR_PREFIX) else { continue };
            if !is_run_prefix(prefix) {
                continue;
            }
            if owner_alive(&e.path()) {
                live.push(prefix.to_string());
            } else {
                stale.push(prefix.to_string());
            }
        }
    }
    let mut removed = Vec::new();
    for netns in sh::list_netns() {
        let Some(prefix) = prefix_of_netns(&netns) else { continue };
        if live.iter().any(|p| p == prefix) {
            continue;
        }
        match sh::delete_netns(&netns) {
            Ok(()) => removed.push(netns),
            Err(e) => tracing::warn!(%netns, error = %e, "fabric: could not delete stale netns"),
        }
    }
    for prefix in stale {
        // What a killed container runtime left mounted there (sandbox netns, root filesystems).
        sh::unmount_under(&run_dir(&prefix));
        let _ = std::fs::remove_dir_all(run_dir(&prefix));
    }
    removed
}
