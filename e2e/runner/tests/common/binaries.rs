//! The workspace's own binaries that tests run. They are not dependencies of the e2e crate, so
//! `cargo test` does not build them: they are looked up in the target dir and refused when older
//! than their sources, because a stale binary would test yesterday's code.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// `<dir>/<name>`, where dir is `ENIPOOL_E2E_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`, else the
/// workspace's `target/debug`. Panics, naming the `build` command, when the binary is missing or
/// older than the newest file under any of `srcs` (folders relative to the workspace root).
pub fn fresh_binary(name: &str, srcs: &[&str], build: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var_os("ENIPOOL_E2E_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("debug")
    });
    let p = dir.join(name);
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{} missing ({e}); build it first: {build}", p.display()));
    for src in srcs {
        if let Some((newest, t)) = newest_file(&root.join(src)) {
            assert!(
                t <= built,
                "{} is older than {} (changed after the last build): rebuild with `{build}`",
                p.display(),
                newest.display()
            );
        }
    }
    p
}

/// The newest regular file under `dir` and its mtime.
pub fn newest_file(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut best: Option<(PathBuf, SystemTime)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let (p, Ok(m)) = (e.path(), e.metadata()) else { continue };
            if m.is_dir() {
                stack.push(p);
            } else if let Ok(t) = m.modified() {
                if best.as_ref().is_none_or(|(_, b)| t > *b) {
                    best = Some((p, t));
                }
            }
        }
    }
    best
}
