//! The crate's single error type and its mapping onto CNI spec error codes.
//!
//! Every failure the shim can hit is one [`Error`] variant; [`Error::code`] classifies it into a CNI
//! error code and [`Error::to_reply`] renders the CNI error object the runtime reads from stdout.
//! Messages say what to fix, not just what failed.

use serde::Serialize;
use std::path::PathBuf;

/// CNI spec error codes (spec 1.0.0 "Error" section, plus the 1.1.0 STATUS codes).
///
/// Codes 1-99 are reserved by the spec; 100+ are plugin specific.
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables, like `CNI_COMMAND` or `CNI_CONTAINERID`.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (malformed JSON, oversized input).
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later: a transient condition (agent restarting, agent busy).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// CNI 1.1 STATUS: the plugin is not available (cannot serve ADD).
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// CNI 1.1 STATUS: not available, and existing containers may have limited connectivity.
    pub const PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY: u32 = 51;
    /// enipool-specific: CHECK found the agent's allocation disagrees with the prevResult.
    pub const CHECK_MISMATCH: u32 = 100;
}

/// Everything that can go wrong in the shim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config's `cniVersion` (or the verb for that version) is not supported.
    #[error("CNI version {version:?} not supported for {what}; supported: {supported}")]
    IncompatibleVersion {
        /// The version asked for.
        version: String,
        /// What needed it (a verb or "network config").
        what: String,
        /// Comma-separated list of what would work.
        supported: String,
    },
    /// The config asks for something enipool does not do (e.g. an `ipam` section).
    #[error("unsupported field {field:?} in network config: {hint}")]
    UnsupportedField {
        field: String,
        /// What to do instead.
        hint: String,
    },
    /// A required `CNI_*` variable is missing or malformed.
    #[error("invalid environment variable {var}: {reason}")]
    InvalidEnv {
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The network config is syntactically JSON but semantically wrong.
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    /// Input could not be decoded (malformed JSON, wrong types, too large).
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded ("network config on stdin", "agent response", ...).
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// Reading stdin or another local I/O step failed.
    #[error("I/O error {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Nobody listens on the agent socket (missing file or connection refused).
    #[error("enipool agent not running: cannot connect to {socket}: {source}")]
    AgentNotRunning {
        /// The socket path tried.
        socket: PathBuf,
        /// The OS error (ENOENT, ECONNREFUSED).
        #[source]
        source: std::io::Error,
    },
    /// The agent did not answer within the configured timeout.
    #[error("enipool agent at {socket} did not answer within {timeout_ms} ms")]
    AgentTimeout {
        socket: PathBuf,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The connection to the agent failed mid-way.
    #[error("talking to the enipool agent at {socket}: {source}")]
    AgentIo {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent answered with a classified failure.
    #[error("{}", .0.msg)]
    Agent(crate::proto::ErrorReply),
    /// STATUS: the agent is up but cannot serve ADD yet.
    #[error("enipool agent not ready: {0}")]
    NotReady(String),
    /// CHECK: what the agent holds differs from the runtime's prevResult.
    #[error("CHECK mismatch: {0}")]
    CheckMismatch(String),
    /// Writing the DEL journal failed.
    #[error("cannot write DEL journal entry in {dir}: {source}")]
    Journal {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The CNI error code for this failure.
    pub fn code(&self) -> u32 {
        use codes::*;
        match self {
            Error::IncompatibleVersion { .. } => INCOMPATIBLE_VERSION,
            Error::UnsupportedField { .. } => UNSUPPORTED_FIELD,
            Error::InvalidEnv { .. } => INVALID_ENV,
            Error::InvalidConfig(_) => INVALID_NETWORK_CONFIG,
            Error::Decode { .. } => DECODING_FAILURE,
            Error::Io { .. } | Error::AgentIo { .. } | Error::Journal { .. } => IO_FAILURE,
            // The agent is a DaemonSet pod: absent or slow is normally a restart in progress.
            Error::AgentNotRunning { .. } | Error::AgentTimeout { .. } => TRY_AGAIN_LATER,
            Error::Agent(reply) => reply.code,
            Error::NotReady(_) => PLUGIN_NOT_AVAILABLE,
            Error::CheckMismatch(_) => CHECK_MISMATCH,
        }
    }

    /// What the operator should check or do, for the error object's `details`.
    pub fn details(&self) -> String {
        match self {
            Error::AgentNotRunning { .. } => "check that the enipool-agent DaemonSet pod on this \
                node is running and that agentSocket in the CNI config matches its socket"
                .into(),
            Error::AgentTimeout { .. } => "the agent is overloaded or stuck; check its logs, or \
                raise timeoutMs in the CNI config"
                .into(),
            Error::Agent(reply) => reply.details.clone(),
            Error::IncompatibleVersion { .. } => "set cniVersion in the network config to one \
                of the supported versions"
                .into(),
            Error::Journal { .. } => "the agent is down and the release could not be recorded; \
                check the delJournalDir filesystem (space, permissions)"
                .into(),
            Error::Decode { what: "agent response", .. } => "the agent's answer did not parse; \
                check that the shim and agent come from the same enipool release"
                .into(),
            Error::Decode { .. } | Error::InvalidConfig(_) | Error::UnsupportedField { .. } => {
                "fix the enipool entry of the CNI network config (conflist) on this node".into()
            }
            Error::InvalidEnv { .. } => "the container runtime must set CNI_COMMAND, \
                CNI_CONTAINERID, CNI_IFNAME and (except for DEL) CNI_NETNS per the CNI spec"
                .into(),
            Error::NotReady(_) => "the agent cannot hand out an address yet; check the node's \
                ENIPool status and the agent's logs"
                .into(),
            Error::CheckMismatch(_) => "the pod's network does not match what the runtime \
                recorded; recreate the pod sandbox"
                .into(),
            other => match std::error::Error::source(other) {
                Some(source) => source.to_string(),
                None => String::new(),
            },
        }
    }

    /// The CNI error object for this failure, stamped with `cni_version`.
    pub fn to_reply(&self, cni_version: &str) -> ErrorObject {
        ErrorObject {
            cni_version: cni_version.to_string(),
            code: self.code(),
            msg: self.to_string(),
            details: self.details(),
        }
    }

    /// Shorthand for [`Error::Decode`].
    pub fn decode(what: &'static str, reason: impl ToString) -> Self {
        Error::Decode { what, reason: reason.to_string() }
    }

    /// Shorthand for [`Error::InvalidEnv`].
    pub fn env(var: &'static str, reason: impl ToString) -> Self {
        Error::InvalidEnv { var, reason: reason.to_string() }
    }
}

/// The CNI error object printed on stdout (spec 1.0.0 "Error").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorObject {
    /// The version the runtime asked for (or the newest supported one if unknown).
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    /// Longer explanation: what to fix.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn codes_match_the_spec_table() {
        let cases: Vec<(Error, u32)> = vec![
            (
                Error::IncompatibleVersion {
                    version: "0.1.0".into(),
                    what: "x".into(),
                    supported: "1.0.0".into(),
                },
                1,
            ),
            (Error::UnsupportedField { field: "ipam".into(), hint: String::new() }, 2),
            (
                Error::Agent(crate::proto::ErrorReply {
                    code: 3,
                    msg: "unknown".into(),
                    details: String::new(),
                }),
                3,
            ),
            (Error::env("CNI_COMMAND", "missing"), 4),
            (Error::Io { context: "x".into(), source: io::Error::other("y") }, 5),
            (Error::decode("stdin", "bad"), 6),
            (Error::InvalidConfig("x".into()), 7),
            (
                Error::AgentNotRunning {
                    socket: "/x".into(),
                    source: io::ErrorKind::NotFound.into(),
                },
                11,
            ),
            (Error::AgentTimeout { socket: "/x".into(), timeout_ms: 5 }, 11),
            (Error::NotReady("no addresses".into()), 50),
            (Error::CheckMismatch("x".into()), 100),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
            let reply = err.to_reply("1.0.0");
            assert_eq!(reply.code, code);
            assert!(!reply.msg.is_empty());
        }
    }

    #[test]
    fn agent_not_running_says_what_to_fix() {
        let err = Error::AgentNotRunning {
            socket: "/run/x.sock".into(),
            source: io::ErrorKind::NotFound.into(),
        };
        let reply = err.to_reply("1.1.0");
        assert!(reply.msg.contains("agent not running"), "{}", reply.msg);
        assert!(reply.details.contains("agentSocket"), "{}", reply.details);
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["cniVersion"], "1.1.0");
    }
}
