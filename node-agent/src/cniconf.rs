//! The CNI network config in the runtime's config dir, written only once the agent can serve.
//! The kubelet reports a node's network ready as soon as a config exists there, and the scheduler
//! then sends pods; written before the agent has a pool view and a programmed ENI, every one of
//! them would fail its first ADD and wait out the kubelet's back-off.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Where the rendered config comes from and where the runtime reads it.
#[derive(Debug, Clone)]
pub struct CniConf {
    /// The config as rendered (the chart's ConfigMap).
    pub source: PathBuf,
    /// The runtime's CNI config dir.
    pub dir: PathBuf,
    /// File name in `dir`; runtimes use the lexically first file there.
    pub name: String,
    /// Move every other network config in `dir` aside (renamed with [`BACKUP_SUFFIX`]), so no
    /// other CNI's config can win, now or when it is installed again later.
    pub exclusive: bool,
}

/// Appended to the name of another CNI's config moved aside in exclusive mode.
pub const BACKUP_SUFFIX: &str = ".enipool-bak";

/// The shim's file name in the CNI bin dir (the chart's install-cni puts it there).
pub const SHIM_BINARY: &str = "enipool-cni";

/// What one [`CniConf::ensure`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ensured {
    /// The config was (re)written.
    pub written: bool,
    /// Other configs moved aside (their old names).
    pub moved: Vec<String>,
}

/// The files in a config dir a runtime would read as network configs, other than `ours`.
pub fn foreign_configs<'a>(names: impl IntoIterator<Item = &'a str>, ours: &str) -> Vec<String> {
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|n| *n != ours && !n.starts_with('.'))
        .filter(|n| [".conf", ".conflist", ".json"].iter().any(|ext| n.ends_with(ext)))
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

/// Whether the file in the config dir must be (re)written: missing, or not what was rendered.
pub fn needs_write(current: Option<&[u8]>, want: &[u8]) -> bool {
    current != Some(want)
}

impl CniConf {
    /// Put the rendered config in place unless it already is (and, in exclusive mode, move the
    /// others aside). The file appears whole (a temporary file renamed over it), so a runtime
    /// never reads half a config.
    pub fn ensure(&self) -> Result<Ensured> {
        let want = std::fs::read(&self.source).map_err(Error::io("reading the CNI config"))?;
        let target = self.dir.join(&self.name);
        let current = std::fs::read(&target).ok();
        let mut done = Ensured::default();
        if needs_write(current.as_deref(), &want) {
            write_atomic(&self.dir, &self.name, &want)?;
            done.written = true;
        }
        if self.exclusive {
            let entries = std::fs::read_dir(&self.dir).map_err(Error::io("listing CNI configs"))?;
            let names: Vec<String> =
                entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
            for n in foreign_configs(names.iter().map(String::as_str), &self.name) {
                let to = self.dir.join(format!("{n}{BACKUP_SUFFIX}"));
                std::fs::rename(self.dir.join(&n), to).map_err(Error::io("moving a CNI config"))?;
                done.moved.push(n);
            }
        }
        Ok(done)
    }
}

/// What the agent does with the node's CNI files when it is stopped: with `uninstall`
/// (`--cni-uninstall`), remove the config it writes and, given the bin dir, the shim binary, so a
/// node whose agent is gone for good takes no more pods with enipool (pods already running keep
/// their networking); otherwise leave both, so pods start again as soon as an agent is back.
/// Returns the paths removed; a file already gone is not an error.
pub fn on_stop(
    conf: Option<&CniConf>,
    uninstall: bool,
    bin_dir: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    if !uninstall {
        return Ok(Vec::new());
    }
    // The config first: from then on the runtime no longer calls a binary about to go.
    let conf_file = conf.map(|c| c.dir.join(&c.name));
    let shim = bin_dir.map(|d| d.join(SHIM_BINARY));
    let mut removed = Vec::new();
    for path in conf_file.into_iter().chain(shim) {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing a CNI file on uninstall")(e)),
        }
    }
    Ok(removed)
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(Error::io("writing the CNI config"))?;
    f.write_all(bytes).map_err(Error::io("writing the CNI config"))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(Error::io("writing the CNI config"))?;
    f.sync_all().map_err(Error::io("writing the CNI config"))?;
    std::fs::rename(&tmp, dir.join(name)).map_err(Error::io("writing the CNI config"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_when_missing_or_different_and_left_alone_when_equal() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("rendered.json");
        let dir = d.path().join("net.d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&src, b"{\"name\":\"enipool\"}").unwrap();
        std::fs::write(dir.join("10-aws.conflist"), b"{}").unwrap();
        let c = CniConf {
            source: src.clone(),
            dir: dir.clone(),
            name: "05-enipool.conflist".into(),
            exclusive: false,
        };
        assert!(c.ensure().unwrap().written, "missing: written");
        let ours = dir.join("05-enipool.conflist");
        assert_eq!(std::fs::read(&ours).unwrap(), b"{\"name\":\"enipool\"}");
        assert_eq!(c.ensure().unwrap(), Ensured::default(), "same content: left alone");
        std::fs::write(&ours, b"{}").unwrap();
        assert!(c.ensure().unwrap().written, "changed on the host: put back");
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["05-enipool.conflist", "10-aws.conflist"],
            "others left alone without exclusive mode, no temporary file left"
        );
    }

    #[test]
    fn exclusive_mode_moves_every_other_network_config_aside() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("rendered.json");
        std::fs::write(&src, b"{}").unwrap();
        let dir = d.path().join("net.d");
        std::fs::create_dir(&dir).unwrap();
        for n in ["10-aws.conflist", "99-loopback.conf", "87-podman.json", "README", ".x.conf"] {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        let c = CniConf {
            source: src,
            dir: dir.clone(),
            name: "05-enipool.conflist".into(),
            exclusive: true,
        };
        let done = c.ensure().unwrap();
        assert_eq!(done.moved, ["10-aws.conflist", "87-podman.json", "99-loopback.conf"]);
        assert!(dir.join("10-aws.conflist.enipool-bak").exists() && dir.join("README").exists());
        // Installed again later (aws-node's init container): moved aside again.
        std::fs::write(dir.join("10-aws.conflist"), b"y").unwrap();
        assert_eq!(c.ensure().unwrap().moved, ["10-aws.conflist"]);
        assert_eq!(c.ensure().unwrap(), Ensured::default(), "nothing left to do");
    }

    /// A node as the chart leaves it: our conflist, another CNI's, the shim and another plugin.
    fn node_files() -> (tempfile::TempDir, CniConf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let (dir, bin) = (d.path().join("net.d"), d.path().join("bin"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(d.path().join("rendered.json"), b"{}").unwrap();
        for f in [dir.join("05-enipool.conflist"), dir.join("10-aws.conflist")] {
            std::fs::write(f, b"{}").unwrap();
        }
        for f in [bin.join(SHIM_BINARY), bin.join("portmap")] {
            std::fs::write(f, b"\x7fELF").unwrap();
        }
        let c = CniConf {
            source: d.path().join("rendered.json"),
            dir,
            name: "05-enipool.conflist".into(),
            exclusive: false,
        };
        (d, c, bin)
    }

    #[test]
    fn stopping_with_uninstall_removes_our_config_and_shim_only() {
        let (_d, c, bin) = node_files();
        let removed = on_stop(Some(&c), true, Some(&bin)).unwrap();
        assert_eq!(removed, [c.dir.join("05-enipool.conflist"), bin.join(SHIM_BINARY)]);
        assert!(!c.dir.join("05-enipool.conflist").exists() && !bin.join(SHIM_BINARY).exists());
        assert!(c.dir.join("10-aws.conflist").exists(), "another CNI's config is not ours");
        assert!(bin.join("portmap").exists(), "other plugins stay");
        // Stopped again (a second signal, a restart loop): nothing left, not an error.
        assert_eq!(on_stop(Some(&c), true, Some(&bin)).unwrap(), Vec::<PathBuf>::new());
        // Without a bin dir only the config goes.
        let (_d, c, bin) = node_files();
        assert_eq!(on_stop(Some(&c), true, None).unwrap(), [c.dir.join("05-enipool.conflist")]);
        assert!(bin.join(SHIM_BINARY).exists());
    }

    #[test]
    fn stopping_without_uninstall_leaves_every_file() {
        let (_d, c, bin) = node_files();
        assert!(on_stop(Some(&c), false, Some(&bin)).unwrap().is_empty());
        assert!(c.dir.join("05-enipool.conflist").exists() && bin.join(SHIM_BINARY).exists());
    }
}
