//! The enipool node agent: claims addresses from its node's ENIPool, wires pods over netlink and
//! nftables, and serves the CNI shim over a Unix socket. `main.rs` only parses flags and calls
//! [`run`].

#![forbid(unsafe_code)]

pub mod agent;
pub mod alloc;
pub mod annotate;
pub mod args;
pub mod cni;
pub mod cniconf;
pub mod error;
pub mod fault;
pub mod hostnet;
pub mod http;
pub mod kube;
pub mod metrics;
pub mod pool;
pub mod program;
pub mod recent_logs;
pub mod report;
pub mod run;
pub mod store;
pub mod support;

pub use error::{Error, Result};

#[cfg(test)]
pub(crate) mod testutil;
