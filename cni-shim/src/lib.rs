//! enipool's CNI plugin: parses the runtime's request and forwards it to the local agent.
#![forbid(unsafe_code)]

pub mod proto;
