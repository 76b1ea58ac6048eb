//! Errors of `kubectl-enipool`, by what the user has to fix.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The kubeconfig could not be read or names no usable cluster/context.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The API server refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The named node has no ENIPool.
    #[error("no ENIPool named {0:?} (is the node managed by enipool?)")]
    NoPool(String),
}

pub type Result<T> = std::result::Result<T, Error>;
