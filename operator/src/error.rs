//! The operator's one error type. Every variant has a stable [`Error::category`]: it is the
//! `category` label of `enipool_operator_reconcile_failures_total`, the reason of the Warning
//! Event a failed pool reconcile publishes (at most one per pool and category every
//! [`FAILURE_EVENT_EVERY`](crate::reconcile::FAILURE_EVENT_EVERY)) and of the `EC2Synced=False`
//! it sets on the pool ([`verdicts`](crate::reconcile::failure::verdicts)). Whether it is
//! transient is what `error_policy` branches on (transient → backoff, permanent → wait longer).

use crate::ec2::{Ec2Error, Ec2ErrorKind};

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
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// A Node's providerID is not `aws:///<az>/<instance-id>`.
    #[error("node {node}: providerID {provider_id:?} is not an AWS instance")]
    ProviderId {
        /// Node name.
        node: String,
        /// The providerID.
        provider_id: String,
    },
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
    Cleanup(#[from] crate::cleanup::CleanupError),
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

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the operator's own Kubernetes client cut a call short (`apiclient.rs`, the Lease calls in
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
