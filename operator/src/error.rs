//! The operator's one error type. Every variant has a stable [`Error::category`]: it is the
//! `category` label of `enipool_operator_reconcile_failures_total`, the reason of the Warning
//! Event a failed pool reconcile publishes (at most one per pool and category every
//! [`FAILURE_EVENT_EVERY`](crate::round::FAILURE_EVENT_EVERY)) and of the `EC2Synced=False`
//! it sets on the pool ([`verdicts`](crate::round::conditions::verdicts)). Whether it is
//! transient is what `error_policy` branches on (transient → backoff, permanent → wait longer).

use crate::ec2::{Ec2Error, Ec2ErrorKind};
use std::time::Duration;

/// Errors of the operator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An EC2 call failed.
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
    /// A Kubernetes API call failed.
    #[error("kubernetes {op}: {source}")]
    Kube {
        /// What was being done, e.g. `PatchPoolStatus`.
        op: &'static str,
        #[source]
        source: kube::Error,
    },
    /// A Node's providerID is not `aws:///<az>/<instance-id>`.
    #[error("node {node}: providerID {provider_id:?} is not an AWS instance")]
    ProviderId { node: String, provider_id: String },
    /// EC2 does not know the instance (yet, or any more).
    #[error("instance {0} not found in EC2")]
    InstanceNotFound(String),
    /// An object lacks a field the API guarantees (name, uid).
    #[error("object is missing {0}")]
    MissingField(&'static str),
    /// The finalizer helper failed (boxed: it embeds this type).
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// Serializing a patch failed.
    #[error("serializing {0}")]
    Serialize(#[from] serde_json::Error),
    /// The process cannot start as configured (a flag the API server or AWS refuses, no
    /// kubeconfig or in-cluster credentials).
    #[error("configuration: {0}")]
    Config(String),
    /// A part that must run until shutdown ended (a controller, a watch, the HTTP endpoints, the
    /// Lease task): the process exits so that its restart starts it again.
    #[error("{0}")]
    Stopped(String),
    /// The `cleanup` subcommand failed.
    #[error(transparent)]
    Cleanup(#[from] CleanupError),
}

impl Error {
    /// Wrap a kube error with the operation that failed.
    pub fn kube(op: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { op, source }
    }

    /// Stable category for metrics labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Ec2(e) => e.kind.as_str(),
            Error::Kube { source: kube::Error::Api(s), .. } if s.code == 409 => "Conflict",
            Error::Kube { .. } => "KubeApi",
            Error::ProviderId { .. } => "InvalidProviderID",
            Error::InstanceNotFound(_) => "InstanceNotFound",
            Error::MissingField(_) => "InvalidObject",
            Error::Finalizer(_) => "Finalizer",
            Error::Serialize(_) => "Serialize",
            Error::Config(_) => "Config",
            Error::Stopped(_) => "Stopped",
            Error::Cleanup(_) => "Cleanup",
        }
    }

    /// Whether trying again later, unchanged, may succeed (transient → backoff; otherwise the
    /// controller waits for the object to change).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Ec2(e) => e.kind.is_retryable() || e.kind == Ec2ErrorKind::NotFound,
            Error::Kube { .. } | Error::InstanceNotFound(_) | Error::Finalizer(_) => true,
            Error::ProviderId { .. } | Error::MissingField(_) | Error::Serialize(_) => false,
            Error::Config(_) | Error::Stopped(_) | Error::Cleanup(_) => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the operator's own Kubernetes client cut a call short (`k8s/client.rs`, the Lease calls in
/// `leader.rs`). It comes back inside `kube::Error::Service`, so a reconcile sees an
/// [`Error::Kube`] (category `KubeApi`).
#[derive(Debug, thiserror::Error)]
pub enum Cut {
    /// No answer within the call's deadline: abandoned.
    #[error("no answer from the Kubernetes API within {0:?}")]
    NoAnswer(std::time::Duration),
    /// A write not sent, or abandoned unanswered, because this replica does not lead (any more).
    #[error("not sent: this replica does not hold the leader Lease")]
    NotLeader,
}

/// Why the `cleanup` subcommand failed ([`crate::cleanup`]).
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// An operator (or another cleanup) kept the Lease for the whole timeout; nothing changed.
    #[error(
        "the Lease {namespace}/{name} is still held by {holder:?} after {waited:?}: an enipool \
         operator is still running (uninstall it, or scale its Deployment to 0, and run the \
         cleanup again); no ENIPool was changed"
    )]
    LeaseHeld {
        namespace: String,
        name: String,
        /// Its holder at the end of the wait.
        holder: String,
        /// How long the cleanup waited.
        waited: Duration,
    },
    /// The Lease could not be renewed while working (another holder took it, or the API failed
    /// for most of a lease duration): the cleanup stopped before its next write.
    #[error(
        "lost the Lease {namespace}/{name} while working ({why}); stopped after {released} \
         pools released and {deleted} deleted: run the cleanup again"
    )]
    LeaseLost {
        namespace: String,
        name: String,
        why: String,
        /// Pools released before stopping.
        released: usize,
        /// Pools deleted before stopping.
        deleted: usize,
    },
    /// The API server refused the node selector.
    #[error("--node-selector {selector:?} is not a valid label selector: {message}")]
    InvalidSelector {
        selector: String,
        /// The API server's message.
        message: String,
    },
    /// A pool kept changing under the cleanup.
    #[error("ENIPool {0}: the finalizer patch conflicted {1} times in a row")]
    Conflicts(String, u32),
    /// Any other Kubernetes API error.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}
