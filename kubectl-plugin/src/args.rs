//! Command line of `kubectl-enipool`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Read-only view of enipool's pools, subnets and what the operator is waiting for.
#[derive(Parser, Debug)]
#[command(name = "kubectl-enipool", bin_name = "kubectl enipool", version)]
pub struct Cli {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Free addresses per zone and subnet, nodes near capacity, pools not Ready, pending growth
    /// and throttling.
    Status,
    /// One node's pool explained: ENIs, addresses and their pods, EC2 work in flight, conditions.
    Node {
        /// Node name (the ENIPool has the same name).
        name: String,
    },
}
