//! CNI spec versions: which ones the shim speaks, which verbs each allows, and the VERSION answer.
//!
//! Supported: `0.3.0`, `0.3.1`, `0.4.0`, `1.0.0`, `1.1.0`. All five share one result layout (interfaces,
//! ips, routes, dns); the 0.3.x/0.4.0 layout adds `"version": "4"` to each IP. `0.1.0`/`0.2.0` used a
//! different result shape (`ip4`/`ip6`) that no current runtime sends, so they are refused. CHECK
//! exists from 0.4.0, STATUS and GC from 1.1.0.

use crate::error::Error;
use crate::proto::Command;
use serde::Serialize;

/// Every version this shim accepts, oldest first. Exactly what VERSION advertises.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version: used when the caller's version is unknown or not given.
pub const LATEST: &str = "1.1.0";

/// Whether results for `version` carry the pre-1.0 `"version"` field on each IP.
pub fn ips_have_version_field(version: &str) -> bool {
    matches!(version, "0.3.0" | "0.3.1" | "0.4.0")
}

fn rank(version: &str) -> Option<usize> {
    SUPPORTED.iter().position(|v| *v == version)
}

/// Checks that `version` is supported and allows `command`.
pub fn check(version: &str, command: Command) -> Result<(), Error> {
    let min = match command {
        Command::Add | Command::Del => "0.3.0",
        Command::Check => "0.4.0",
        Command::Status | Command::Gc => "1.1.0",
    };
    let floor = rank(min).unwrap_or(0);
    match rank(version) {
        Some(r) if r >= floor => Ok(()),
        Some(_) => Err(Error::IncompatibleVersion {
            version: version.to_string(),
            what: format!("{command:?}").to_uppercase(),
            supported: SUPPORTED[floor..].join(", "),
        }),
        None => Err(Error::IncompatibleVersion {
            version: version.to_string(),
            what: "the network config".into(),
            supported: SUPPORTED.join(", "),
        }),
    }
}

/// `version` if the shim supports it, else [`LATEST`]: the version to stamp on an error object.
pub fn reply_version(version: Option<&str>) -> &'static str {
    version.and_then(|v| SUPPORTED.iter().find(|s| **s == v)).copied().unwrap_or(LATEST)
}

/// The VERSION verb's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The version the caller asked in (if supported), else [`LATEST`].
    pub cni_version: String,
    /// [`SUPPORTED`].
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// The answer to a VERSION call whose stdin named `asked` (if anything).
    pub fn answer(asked: Option<&str>) -> Self {
        VersionInfo {
            cni_version: reply_version(asked).to_string(),
            supported_versions: SUPPORTED.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verb_floors() {
        let table = [
            ("0.3.1", Command::Add, true),
            ("0.3.1", Command::Del, true),
            ("0.3.1", Command::Check, false),
            ("0.4.0", Command::Check, true),
            ("1.0.0", Command::Status, false),
            ("1.0.0", Command::Gc, false),
            ("1.1.0", Command::Gc, true),
            ("1.1.0", Command::Status, true),
            ("0.2.0", Command::Add, false),
            ("2.0.0", Command::Add, false),
            ("", Command::Add, false),
        ];
        for (v, cmd, ok) in table {
            let res = check(v, cmd);
            assert_eq!(res.is_ok(), ok, "{v} {cmd:?}: {res:?}");
            if let Err(e) = res {
                assert_eq!(e.code(), crate::error::codes::INCOMPATIBLE_VERSION);
            }
        }
    }

    #[test]
    fn version_answer_echoes_supported_versions_only() {
        assert_eq!(VersionInfo::answer(Some("0.4.0")).cni_version, "0.4.0");
        assert_eq!(VersionInfo::answer(Some("9.9.9")).cni_version, LATEST);
        assert_eq!(VersionInfo::answer(None).supported_versions, SUPPORTED);
    }
}
