//! The enipool test platform: an EC2 simulator, a Kubernetes API for tests, a VPC fabric made of
//! network namespaces, a libcni driver, and the end-to-end scenarios and demo built on them.
//!
//! Each piece can be replaced by the real thing (`--kubeconfig`, `--ec2-endpoint`), so the scenarios
//! run unchanged against a real cluster and real EC2.

pub mod cluster;
pub mod cnidriver;
pub mod ec2sim;
pub mod fabric;
pub mod kubeapi;
pub mod runner;
