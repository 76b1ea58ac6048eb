//! enipool's CNI plugin: parses the runtime's request and forwards it to the local agent.
//!
//! Layout: [`config`] parses stdin (and, via [`env`](mod@env), the `CNI_*` variables), [`client`] talks to
//! the agent over [`proto`], [`result`] renders CNI results, [`journal`] records DELs while the
//! agent is down, [`plugin`] ties the verbs together. The agent reuses [`proto`], [`journal`] and [`error::codes`].
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod env;
pub mod error;
pub mod journal;
pub mod log;
pub mod plugin;
pub mod proto;
pub mod result;
pub mod trace;
pub mod version;

pub use error::Error;
