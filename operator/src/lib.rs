//! enipool-operator: the only component that changes EC2. It turns Nodes and ENIPoolPolicies into
//! ENIs and addresses, and keeps each node's ENIPool a true record of them.
#![forbid(unsafe_code)]

pub mod apiclient;
pub mod args;
pub mod capacity;
pub mod cleanup;
pub mod conditions;
pub mod controller;
pub mod ec2;
pub mod error;
pub mod finalizer;
pub mod gc;
pub mod http;
pub mod journal;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod policy_status;
pub mod reconcile;
pub mod resync;
mod run;
pub mod sync;
#[cfg(test)]
pub mod testing;
pub mod vpc;

pub use error::{Error, Result};
pub use run::{Operator, OperatorConfig, OperatorHandle};
