//! EC2 simulator: an HTTP server on 127.0.0.1 speaking the EC2 query protocol, so the operator's
//! real `aws-sdk-ec2` client talks to it through `endpoint_url`.
//!
//! It exists because moto does not enforce what enipool needs: per-type ENI and per-ENI address
//! limits, subnet-wide unique addresses with the 5 reserved ones, /28 prefix alignment, the real
//! exhaustion and limit errors, ENI in-use rules, detach taking time, DeleteOnTermination at
//! termination and ClientToken idempotency. On top it injects the faults real EC2 shows under load:
//! per-action throttling (`RequestLimitExceeded`, HTTP 503), 5xx, latency and Describe results that
//! lag writes; and it counts calls per action for benchmarks.
//!
//! Layout: `state.rs` + `ops.rs` are the pure model (no I/O; `subnet.rs` its address accounting,
//! `lifecycle.rs` instances and the timed transitions, `resources.rs` seeding, ClientTokens and
//! tags), `limits.rs` the instance-type table, `describe.rs` the Describe actions,
//! `params.rs`/`actions.rs`/`render.rs`/`xml.rs` the wire protocol, `faults.rs` the fault
//! injection, `iam.rs` + `authz.rs` the evaluation of an IAM policy for each call, `server.rs` the
//! axum server and the [`Ec2Sim`] handle (`server/admin.rs` its JSON admin endpoints),
//! `hooks.rs` the VPC fabric observer.

mod account;
mod actions;
mod authz;
mod describe;
mod faults;
pub mod hooks;
pub mod iam;
pub mod ipv6;
mod lifecycle;
pub mod limits;
mod ops;
mod params;
mod render;
mod resources;
mod server;
pub mod state;
#[cfg(test)]
mod state_tests;
mod subnet;
mod xml;

pub use account::Account;
pub use faults::{ActionCounters, ErrorRule, FaultConfig, TokenBucketSpec};
pub use hooks::{FabricHook, HookEvent};
pub use ops::{CreateEniReq, RunReq};
pub use render::OWNER as ACCOUNT_ID;
pub use server::{serve_forever, Config, Ec2Sim, SubnetInfo};
pub use state::Timing;

/// Tags of a resource. Here, below `state` and `subnet`, because both use it.
pub type Tags = std::collections::BTreeMap<String, String>;

/// Errors of the simulator: EC2 API errors (returned on the wire with their code) and local failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An EC2 error as the API reports it (`<Code>`, `<Message>`), with its HTTP status.
    #[error("{code}: {message}")]
    Api {
        /// EC2 error code, e.g. `InsufficientFreeAddressesInSubnet`.
        code: String,
        message: String,
        /// HTTP status (400 for client errors, 5xx for throttling and server errors).
        status: u16,
    },
    /// The server could not bind or serve.
    #[error("ec2sim I/O: {0}")]
    Io(String),
}

impl Error {
    /// An EC2 API error; the HTTP status follows from the code as in EC2.
    pub fn api(code: impl Into<String>, message: impl Into<String>) -> Error {
        let code = code.into();
        let status = match code.as_str() {
            "RequestLimitExceeded" | "ServiceUnavailable" | "Unavailable" => 503,
            "InternalError" | "InternalFailure" => 500,
            _ => 400,
        };
        Error::Api { code, message: message.into(), status }
    }

    /// The EC2 error code (`""` for local failures).
    pub fn code(&self) -> &str {
        match self {
            Error::Api { code, .. } => code,
            Error::Io(_) => "",
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

/// Result of simulator operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
