//! enipool's images for nodes that run containerd: built once per process by
//! `scripts/build-images` around the binaries the platform runs (so a containerized agent is the
//! code under test, not a release build of another commit).

use crate::spec::Bins;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Registry and tag the platform builds its images under (`<REGISTRY>/enipool-<name>:<TAG>`).
const REGISTRY: &str = "localhost";
const TAG: &str = "e2e";

/// The reference of image `name` (`agent`, `cni`, `operator`) as containerd knows it after import.
pub fn reference(name: &str) -> String {
    format!("{REGISTRY}/enipool-{name}:{TAG}")
}

/// The directory with `enipool-{operator,agent,cni}.oci.tar`.
static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The OCI archives of the three images, built at the first call of this process.
pub fn archives(bins: &Bins) -> Result<PathBuf> {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = built.as_ref() {
        return Ok(dir.clone());
    }
    let bin_dir = bins.agent.parent().context("the agent binary's directory")?;
    // Next to the binaries' profile dir, apart from `make images`' and the image tests' archives.
    let out = bin_dir.parent().unwrap_or(bin_dir).join("images-e2e");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-images");
    let o = Command::new(&script)
        .arg("--binaries")
        .arg(bin_dir)
        .args(["--out"])
        .arg(&out)
        .args(["--registry", REGISTRY, "--tag", TAG])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !o.status.success() {
        bail!(
            "building the images failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    *built = Some(out.clone());
    Ok(out)
}
