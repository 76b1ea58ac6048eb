//! A real CNI client: a small Go program over libcni (the library containerd and CRI-O use), so the
//! platform wires pods the way a container runtime does — conflist from the node's CNI config dir,
//! plugins from its bin dirs, chained plugins run in order, results cached by libcni.
//!
//! The driver (`e2e/cni-driver/main.go`) is built offline from Debian's packages
//! (`golang-1.19-go`, `golang-github-appc-cni-dev`) by `e2e/cni-driver/build.sh`; [`build`] runs
//! it once per source version.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Directory holding the driver's source and build script.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cni-driver")
}

/// Where [`build`] puts the driver by default: `<target dir>/enipool-e2e`.
pub fn default_build_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("enipool-e2e")
}

/// Builds the driver into `out_dir` (named after a hash of its source and build script) unless that
/// binary already exists, and returns its path. Concurrent callers are safe: each builds to a
/// temporary name and renames into place.
pub fn build(out_dir: &Path) -> Result<PathBuf> {
    let src = source_dir();
    let mut hash = Fnv64::default();
    for file in ["main.go", "build.sh"] {
        let path = src.join(file);
        hash.write(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    let bin = out_dir.join(format!("enipool-cni-driver-{:016x}", hash.0));
    if bin.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let tmp = out_dir.join(format!(".enipool-cni-driver.{}.tmp", std::process::id()));
    let out = Command::new("sh")
        .arg(src.join("build.sh"))
        .arg(&tmp)
        .stdin(Stdio::null())
        .output()
        .context("running cni-driver/build.sh")?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "building the libcni driver failed ({}); it needs Debian's golang-1.19-go and \
             golang-github-appc-cni-dev:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::rename(&tmp, &bin).with_context(|| format!("installing {}", bin.display()))?;
    Ok(bin)
}

/// 64-bit FNV-1a: a stable content hash for the build cache key (no extra dependency).
#[derive(Clone, Copy)]
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// [`CniDriver::network`] that picks the network as a container runtime does: ADD runs the first
/// `*.conflist` of the config dir by file name, CHECK and DEL the config cached at the
/// container's ADD (else the first).
pub const RUNTIME_CHOICE: &str = "-";

/// A container runtime's view of one node's CNI setup.
#[derive(Debug, Clone)]
pub struct CniDriver {
    /// The driver binary ([`build`]).
    pub bin: PathBuf,
    /// The node's CNI config dir (`NETCONFPATH`, like `/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Plugin search path (`CNI_PATH`, like `/opt/cni/bin`), in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// libcni's result cache (instead of `/var/lib/cni`), so teardown removes it.
    pub cache_dir: PathBuf,
    /// The network list to run: its `name` (looked up in `conf_dir`), a path to a conflist, or
    /// [`RUNTIME_CHOICE`].
    pub network: String,
    /// The node's namespace, where the runtime — and so every plugin — runs. `None` runs in the
    /// caller's namespace, which must never be the root one (plugins change the host side).
    pub host_netns: Option<String>,
}

/// Pod identity passed to plugins as `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, …).
pub type PodArgs<'a> = &'a [(&'a str, &'a str)];

impl CniDriver {
    /// CNI ADD of the whole list; returns the final result (the last plugin's).
    pub fn add(
        &self,
        container_id: &str,
        netns_path: &Path,
        if_name: &str,
        pod_args: PodArgs<'_>,
        cap_args: Option<&Value>,
    ) -> Result<Value> {
        self.call("add", container_id, netns_path, if_name, pod_args, cap_args)
    }

    /// CNI CHECK of the whole list (libcni feeds the cached ADD result as `prevResult`).
    pub fn check(
        &self,
        container_id: &str,
        netns_path: &Path,
        if_name: &str,
        pod_args: PodArgs<'_>,
        cap_args: Option<&Value>,
    ) -> Result<Value> {
        self.call("check", container_id, netns_path, if_name, pod_args, cap_args)
    }

    /// CNI DEL of the whole list, in reverse order. Repeatable.
    pub fn del(
        &self,
        container_id: &str,
        netns_path: &Path,
        if_name: &str,
        pod_args: PodArgs<'_>,
        cap_args: Option<&Value>,
    ) -> Result<Value> {
        self.call("del", container_id, netns_path, if_name, pod_args, cap_args)
    }

    /// Runs the driver; stdout is the result JSON (`null` when empty, as for CHECK and DEL).
    fn call(
        &self,
        verb: &str,
        container_id: &str,
        netns_path: &Path,
        if_name: &str,
        pod_args: PodArgs<'_>,
        cap_args: Option<&Value>,
    ) -> Result<Value> {
        let mut cmd = match &self.host_netns {
            Some(ns) => crate::command_in(ns, &self.bin),
            None => Command::new(&self.bin),
        };
        let cni_path = std::env::join_paths(&self.cni_bin_dirs).context("CNI_PATH")?;
        let args: Vec<String> = pod_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        cmd.arg(verb)
            .arg(&self.network)
            .arg(container_id)
            .arg(netns_path)
            .arg(if_name)
            .env("NETCONFPATH", &self.conf_dir)
            .env("CNI_PATH", cni_path)
            .env("CNI_CACHEDIR", &self.cache_dir)
            .env("CNI_ARGS", args.join(";"))
            .stdin(Stdio::null());
        match cap_args {
            Some(v) => cmd.env("CAP_ARGS", v.to_string()),
            None => cmd.env_remove("CAP_ARGS"),
        };
        let out = cmd.output().with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "CNI {verb} {container_id} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout).with_context(|| format!("CNI {verb} result: {stdout}"))
    }
}
