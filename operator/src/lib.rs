//! enipool-operator: the only component that changes EC2. It turns Nodes and ENIPoolPolicies into
//! ENIs and addresses, and keeps each node's ENIPool a true record of them.
//!
//! Layers, each depending only on those below it: `run` wires the process; [`k8s`] holds the
//! controllers and every Kubernetes write; [`round`] is one pool's EC2 round (observe → replay →
//! plan → act → report); [`plan`] decides sizing, placement and release without I/O; [`journal`]
//! records EC2 mutations before they are made; [`leader`] holds the Lease and gates EC2 on it;
//! [`ec2`] is the EC2 adapter.
#![forbid(unsafe_code)]

pub mod args;
pub mod cleanup;
pub mod ec2;
pub mod error;
pub mod journal;
pub mod k8s;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod plan;
pub mod round;
mod run;

pub use error::{Error, Result};
pub use run::{Operator, OperatorConfig, OperatorHandle};
