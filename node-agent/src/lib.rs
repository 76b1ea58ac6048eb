//! The enipool node agent: claims addresses from its node's ENIPool, wires pods over netlink and
//! nftables, and serves the CNI shim over a Unix socket. `main.rs` only parses flags and calls
//! [`run`].

pub mod agent;
pub mod alloc;
pub mod cni;
pub mod error;
pub mod fault;
pub mod hostnet;
pub mod journal;
pub mod metrics;
pub mod pool;
pub mod store;

pub use error::{Error, Result};

#[cfg(test)]
pub(crate) mod testutil;
