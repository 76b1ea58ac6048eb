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
}

/// Whether the file in the config dir must be (re)written: missing, or not what was rendered.
pub fn needs_write(current: Option<&[u8]>, want: &[u8]) -> bool {
    current != Some(want)
}

impl CniConf {
    /// Put the rendered config in place unless it already is; `true` when it was written. The
    /// file appears whole (a temporary file renamed over it), so a runtime never reads half a
    /// config.
    pub fn ensure(&self) -> Result<bool> {
        let want = std::fs::read(&self.source).map_err(Error::io("reading the CNI config"))?;
        let target = self.dir.join(&self.name);
        let current = std::fs::read(&target).ok();
        if !needs_write(current.as_deref(), &want) {
            return Ok(false);
        }
        write_atomic(&self.dir, &self.name, &want)?;
        Ok(true)
    }
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
        let c =
            CniConf { source: src.clone(), dir: dir.clone(), name: "10-enipool.conflist".into() };
        assert!(c.ensure().unwrap(), "missing: written");
        assert_eq!(
            std::fs::read(dir.join("10-enipool.conflist")).unwrap(),
            b"{\"name\":\"enipool\"}"
        );
        assert!(!c.ensure().unwrap(), "same content: left alone");
        std::fs::write(dir.join("10-enipool.conflist"), b"{}").unwrap();
        assert!(c.ensure().unwrap(), "changed on the host: put back");
        let left: Vec<_> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "no temporary file left behind: {left:?}");
    }
}
