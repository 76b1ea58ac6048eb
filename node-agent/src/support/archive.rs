//! The bundle in memory and its `.tar.gz` form, with `manifest.txt` first.

use std::io;

/// Members (archive path, contents) and the pieces that could not be collected (name, why).
#[derive(Debug, Default)]
pub struct Bundle {
    members: Vec<(String, Vec<u8>)>,
    missing: Vec<(String, String)>,
}

/// Every member sits under this directory, so unpacking never scatters files.
pub const ROOT: &str = "enipool-support";

impl Bundle {
    /// Add a text member after redaction.
    pub fn text(&mut self, name: &str, text: &str) {
        self.members.push((name.to_string(), super::redact::text(text).into_bytes()));
    }

    /// Add a member as it is (only for contents known to hold no credentials).
    pub fn raw(&mut self, name: &str, bytes: Vec<u8>) {
        self.members.push((name.to_string(), bytes));
    }

    /// Record a piece that could not be collected.
    pub fn miss(&mut self, name: &str, why: impl std::fmt::Display) {
        self.missing.push((name.to_string(), why.to_string()));
    }

    /// Take over another bundle's members and misses.
    pub fn absorb(&mut self, other: Bundle) {
        self.members.extend(other.members);
        self.missing.extend(other.missing);
    }

    pub fn members(&self) -> &[(String, Vec<u8>)] {
        &self.members
    }

    pub fn missing(&self) -> &[(String, String)] {
        &self.missing
    }

    /// What is in the archive and what could not be collected, one line each.
    pub fn manifest(&self) -> String {
        let mut out = String::from("# enipool support bundle\n# collected (bytes, member)\n");
        for (name, bytes) in &self.members {
            out.push_str(&format!("{:>10}  {name}\n", bytes.len()));
        }
        out.push_str("# not collected (piece: why)\n");
        for (name, why) in &self.missing {
            out.push_str(&format!("{name}: {why}\n"));
        }
        out
    }

    pub fn to_tar_gz(&self) -> io::Result<Vec<u8>> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let manifest = self.manifest().into_bytes();
        let all = std::iter::once(("manifest.txt", &manifest))
            .chain(self.members.iter().map(|(n, b)| (n.as_str(), b)));
        for (name, bytes) in all {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, format!("{ROOT}/{name}"), bytes.as_slice())?;
        }
        tar.into_inner()?.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_archive_holds_the_manifest_and_every_member_redacted() {
        let mut b = Bundle::default();
        b.text("host/ip-rule.txt", "0: from all lookup local\n");
        b.text("cni/net.d/10-x.conflist", r#"{"token":"abc123"}"#);
        b.miss("host/nft-table.txt", "spawn nft: not found");
        let bytes = b.to_tar_gz().unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut got = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            got.push((e.path().unwrap().display().to_string(), s));
        }
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "enipool-support/manifest.txt",
                "enipool-support/host/ip-rule.txt",
                "enipool-support/cni/net.d/10-x.conflist"
            ]
        );
        assert!(got[0].1.contains("host/nft-table.txt: spawn nft: not found"), "{}", got[0].1);
        assert!(got[0].1.contains("host/ip-rule.txt"), "{}", got[0].1);
        assert!(!got[2].1.contains("abc123"), "{}", got[2].1);
    }
}
