//! The agent's one error enum. Every variant names the failing operation and keeps its cause; the
//! `category()` is the stable label used in metrics and logs.

/// Everything the agent can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The durable store could not be opened or written.
    #[error("allocation store: {0}")]
    Store(#[from] redb::Error),
    /// A record in the store could not be (de)serialized.
    #[error("allocation store record: {0}")]
    StoreRecord(#[source] serde_json::Error),
    /// The store refused a write that would break an invariant (address given twice, ...).
    #[error("allocation store invariant: {0}")]
    StoreInvariant(String),
    /// The store file cannot be opened: truncated, altered, or not a store at all. Left as it is.
    #[error("allocation store {path}: {source}; the file is left as it is (see the troubleshooting guide on a lost or damaged store)", path = path.display())]
    StoreFile {
        path: std::path::PathBuf,
        #[source]
        source: redb::Error,
    },
    /// The store has not been checked against the node yet: the agent waits for its ENIPool.
    #[error("the allocation store is not checked against this node yet (waiting for this node's ENIPool)")]
    StoreUnchecked,
    /// The store has forgotten allocations running pods hold (the message says how it knows);
    /// the agent refuses every request that needs it.
    #[error("{0}")]
    StoreMismatch(String),
    /// No address is allocatable right now; the shim reports "try again later".
    #[error("no address available on this node (pool empty or not yet programmed)")]
    PoolEmpty,
    /// The request was malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The shim speaks another version of the shim-agent protocol (one was upgraded without the
    /// other); the runtime gets CNI's "incompatible version" code.
    #[error(
        "shim protocol {shim} but agent speaks {agent}: upgrade the shim and the agent together"
    )]
    IncompatibleProtocol {
        /// The version the request carried.
        shim: u32,
        /// The version this agent speaks.
        agent: u32,
    },
    /// The agent's configuration is unusable (a missing or malformed flag).
    #[error("configuration: {0}")]
    Config(String),
    /// A task the agent cannot run without ended (a watch stream closed, a task panicked); the
    /// agent exits so that its pod restarts.
    #[error("stopped: {0}")]
    Stopped(String),
    /// The container has no allocation (CHECK of an unknown container).
    #[error("unknown container {0}")]
    UnknownContainer(String),
    /// Programming the host or the pod's network failed.
    #[error("host networking: {0}")]
    HostNet(#[from] crate::hostnet::HostError),
    /// The ENIPool status holds a value the agent refuses to use (malformed, misplaced, listed
    /// twice); the agent keeps the pool view it had.
    #[error("ENIPool status refused: {0}")]
    InvalidPool(#[from] crate::pool::check::Invalid),
    /// A Kubernetes API call failed.
    #[error("kubernetes {op}: {source}")]
    Kube {
        op: &'static str,
        #[source]
        source: kube::Error,
    },
    /// Local I/O (socket, journal, files).
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Stable label for metrics and the CNI error mapping.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Store(_) | Error::StoreRecord(_) => "store",
            Error::StoreInvariant(_) => "store_invariant",
            Error::StoreFile { .. } => "store",
            Error::StoreUnchecked => "store_unchecked",
            Error::StoreMismatch(_) => "store_mismatch",
            Error::PoolEmpty => "pool_empty",
            Error::InvalidRequest(_) => "invalid_request",
            Error::IncompatibleProtocol { .. } => "incompatible_protocol",
            Error::Config(_) => "config",
            Error::Stopped(_) => "stopped",
            Error::UnknownContainer(_) => "unknown_container",
            Error::HostNet(_) => "hostnet",
            Error::InvalidPool(_) => "invalid_pool",
            Error::Kube { .. } => "kube",
            Error::Io { .. } => "io",
        }
    }

    /// Wrap an I/O error with the operation that failed.
    pub fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { op, source }
    }
}

macro_rules! store_err {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.into())
            }
        }
    )*};
}
store_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T, E = Error> = std::result::Result<T, E>;
