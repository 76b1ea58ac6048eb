//! containerd as a node's container runtime: Debian's containerd started inside the node's network
//! namespace with its own root, state, sockets and config under the node's directory, its CRI
//! plugin pointed at the node's CNI dirs and at a pause image imported from an OCI archive (no
//! registry). The kubelet then runs pods through [`crate::cri`].

use super::procs::{ProcSpec, Supervisor};
use crate::cri::Cri;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The sandbox image's name, as `scripts/build-pause-image` tags it.
pub const PAUSE_IMAGE: &str = "localhost/enipool-pause:1";
/// How long a containerd gets to serve its socket.
const START: Duration = Duration::from_secs(30);
/// The tools this runtime needs, with the Debian packages that have them.
const TOOLS: &[(&str, &str)] =
    &[("containerd", "containerd"), ("ctr", "containerd"), ("runc", "runc")];

/// One node's containerd.
#[derive(Debug, Clone)]
pub struct NodeRuntime {
    /// `<node dir>/containerd`: config, root, state, sockets.
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// Supervisor name of the process.
    pub proc_name: String,
}

impl NodeRuntime {
    /// containerd's state dir; the CRI plugin mounts sandbox netns under it.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Where the CRI plugin mounts the sandboxes' network namespaces (the chart's `/run/netns`
    /// on a node with containerd's defaults).
    pub fn netns_dir(&self) -> PathBuf {
        self.state_dir().join("io.containerd.grpc.v1.cri/netns")
    }

    pub fn cri(&self) -> Result<Cri> {
        Cri::connect(&self.socket)
    }
}

/// Fails, naming the package, when a tool is missing.
pub fn check_tools() -> Result<()> {
    for (tool, pkg) in TOOLS {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            bail!(
                "{tool} not found: the containerd runtime needs Debian's {pkg} \
                 (apt-get install containerd runc, or scripts/install-deps)"
            );
        }
    }
    Ok(())
}

/// Builds (or reuses) the pause image archive in `dir` with `scripts/build-pause-image`.
pub fn build_pause_image(dir: &Path) -> Result<PathBuf> {
    let out = dir.join("enipool-pause.oci.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-pause-image");
    let o = Command::new(&script)
        .arg(&out)
        .arg(PAUSE_IMAGE)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !o.status.success() {
        bail!(
            "building the pause image failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(out)
}

/// containerd's config (version 2) for a node.
pub fn config(dir: &Path, cni_bin: &Path, cni_conf: &Path) -> String {
    let d = |s: &str| dir.join(s).display().to_string();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"

# Without its own path this plugin creates /opt/containerd on the host.
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Root here lacks CAP_SYS_RESOURCE: a sandbox must not lower its oom_score_adj below ours.
  restrict_oom_score_adj = true
  # Sandbox netns under the state dir, not /var/run/netns: every run keeps its own.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  # runc's state with the rest, not in /run/containerd/runc (the shims' sockets stay in
  # /run/containerd/s: containerd 1.6 has no setting for them).
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
"#,
        root = d("root"),
        state = d("state"),
        sock = d("containerd.sock"),
        opt = d("opt"),
        runc = d("runc"),
        pause = PAUSE_IMAGE,
        bin = cni_bin.display(),
        conf = cni_conf.display(),
    )
}

/// Starts a node's containerd in its network namespace (supervised as `containerd-<node>`; `None`:
/// the machine's own, for the control plane's pods), waits
/// for its socket and imports the image archives (the pause image first) into the CRI's `k8s.io`
/// namespace.
pub async fn start(
    procs: &Supervisor,
    node: &str,
    node_dir: &Path,
    netns_path: Option<&Path>,
    cni_bin: &Path,
    cni_conf: &Path,
    images: &[PathBuf],
) -> Result<NodeRuntime> {
    let dir = node_dir.join("containerd");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config(&dir, cni_bin, cni_conf))?;
    let rt = NodeRuntime {
        socket: dir.join("containerd.sock"),
        dir: dir.clone(),
        proc_name: format!("containerd-{node}"),
    };
    share(&rt.netns_dir())?;
    // nsenter, not `ip netns exec`: that one remounts /sys and hides the cgroup mounts runc needs.
    let config_args = vec!["--config".to_string(), cfg.display().to_string()];
    let (program, args) = match netns_path {
        Some(ns) => {
            let enter = vec![format!("--net={}", ns.display()), "containerd".into()];
            ("nsenter", [enter, config_args].concat())
        }
        None => ("containerd", config_args),
    };
    let spec = ProcSpec {
        program: program.into(),
        args,
        env: Vec::new(),
        log: node_dir.join("containerd.log"),
    };
    procs.start(&rt.proc_name, spec)?;
    let what = format!("containerd of {node} to serve {}", rt.socket.display());
    let ctr = |args: &[&str]| {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&rt.socket).args(["--namespace", "k8s.io"]).args(args);
        c
    };
    crate::wait::poll(&what, START, || async {
        anyhow::ensure!(procs.running(&rt.proc_name), "containerd exited (see its log)");
        let o = ctr(&["version"]).output()?;
        anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr).trim());
        Ok(())
    })
    .await?;
    for image in images {
        let o = ctr(&["images", "import"]).arg(image).output()?;
        if !o.status.success() {
            bail!(
                "importing {} into containerd of {node}: {}",
                image.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
    }
    Ok(rt)
}

/// Makes `dir` a mount of its own with shared propagation, as systemd makes a node's `/`: the
/// netns mounts containerd makes there reach a hostNetwork container that mounts the dir with
/// `HostToContainer` propagation (containerd refuses that mount over a private one). The
/// machine's `/` here is private. The fabric unmounts everything under the run dir at teardown.
fn share(dir: &Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("bind-mounting {} onto itself", dir.display()))?;
    mount(None::<&str>, dir, None::<&str>, MsFlags::MS_SHARED, None::<&str>)
        .with_context(|| format!("making {} a shared mount", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_cri_at_the_node() {
        let c = config(Path::new("/r/n/containerd"), Path::new("/r/n/bin"), Path::new("/r/n/conf"));
        for want in [
            "root = \"/r/n/containerd/root\"",
            "state = \"/r/n/containerd/state\"",
            "address = \"/r/n/containerd/containerd.sock\"",
            "path = \"/r/n/containerd/opt\"",
            "bin_dir = \"/r/n/bin\"",
            "conf_dir = \"/r/n/conf\"",
            "sandbox_image = \"localhost/enipool-pause:1\"",
            "restrict_oom_score_adj = true",
            "Root = \"/r/n/containerd/runc\"",
        ] {
            assert!(c.contains(want), "{want} missing from\n{c}");
        }
    }
}
