//! The runner: plays the cluster for the end-to-end scenarios and the demo.
//!
//! `list` prints scenario names, `run [NAME...]` runs them (all when none are named) and ends with
//! the line `N passed, N failed`, exiting non-zero on any failure; `demo` is the local demo.
//! `--kubeconfig` replaces the test platform's Kubernetes API with a real cluster's: the scenarios
//! that bring up a platform cluster keep the EC2 simulator and the network-namespace nodes and
//! register those nodes in that API, under per-run names, removing everything at the end
//! (`cluster::external`). Real EC2 (`--ec2-endpoint`, or `--kubeconfig` with AWS_PROFILE,
//! AWS_REGION or AWS_DEFAULT_REGION set: [`Target::real_ec2`]) is for the scenarios that check an
//! existing cluster; the platform's scenarios refuse it, and `run` without names skips them.

mod demo;
mod scenarios;

use clap::{Parser, Subcommand};
use cluster::Target;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub use scenarios::{Scenario, SCENARIOS};

/// Command line of `enipool-e2e`.
#[derive(Parser, Debug)]
#[command(name = "enipool-e2e", version, about = "enipool end-to-end scenarios and local demo")]
pub struct Cli {
    /// Use this Kubernetes cluster instead of the test platform's API server.
    #[arg(long, env = "ENIPOOL_E2E_KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Use this EC2 endpoint (or, with "aws", the standard AWS settings) instead of the simulator.
    #[arg(long, env = "ENIPOOL_E2E_EC2_ENDPOINT", global = true)]
    pub ec2_endpoint: Option<String>,
    /// The real cluster's `--cluster-name` (its ENI tags); read from the operator's Deployment
    /// when not given.
    #[arg(long, env = "ENIPOOL_E2E_CLUSTER_NAME", global = true)]
    pub cluster_name: Option<String>,
    /// What runs the platform nodes' pod sandboxes: `libcni` (the platform's own CNI client) or
    /// `containerd` (a containerd per node, pods through the CRI API); see `list` for the
    /// scenarios that run under containerd.
    #[arg(long, env = "ENIPOOL_E2E_RUNTIME", default_value = "libcni", global = true)]
    pub runtime: cluster::Runtime,
    /// Per-scenario time limit in seconds.
    #[arg(long, env = "ENIPOOL_E2E_TIMEOUT", default_value_t = 300, global = true)]
    pub timeout_seconds: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the scenario names, one per line.
    List,
    /// Run the named scenarios (all when none are named).
    Run {
        /// Scenario names (see `list`).
        names: Vec<String>,
    },
    /// Bring up the whole system on this machine and keep it running until Ctrl-C.
    Demo {
        /// An IPv6 cluster: pods get /128s of their node's /80 and reach IPv4 destinations
        /// through the node (libcni runtime only).
        #[arg(long)]
        ipv6: bool,
    },
}

impl Cli {
    /// Run the command; the exit code says whether everything passed.
    pub fn main(self) -> ExitCode {
        let Cli { kubeconfig, ec2_endpoint, cluster_name, runtime, timeout_seconds, command } =
            self;
        let target = Target { kubeconfig, ec2_endpoint, cluster_name, runtime };
        match command {
            Command::List => {
                for s in SCENARIOS {
                    let containerd = if s.containerd { " [containerd]" } else { "" };
                    println!("{:<32} {}{containerd}", s.name, s.about);
                }
                ExitCode::SUCCESS
            }
            Command::Run { names } => run(&target, &names, Duration::from_secs(timeout_seconds)),
            Command::Demo { ipv6 } => demo::main(&target, ipv6),
        }
    }
}

fn run(target: &Target, names: &[String], timeout: Duration) -> ExitCode {
    let unknown: Vec<&String> =
        names.iter().filter(|n| !SCENARIOS.iter().any(|s| s.name == n.as_str())).collect();
    if !unknown.is_empty() {
        eprintln!("unknown scenario(s): {unknown:?}; see `enipool-e2e list`");
        return ExitCode::FAILURE;
    }
    let containerd = target.runtime == cluster::Runtime::Containerd;
    let unfit: Vec<&str> = (SCENARIOS.iter())
        .filter(|s| containerd && !s.containerd && names.iter().any(|n| n == s.name))
        .map(|s| s.name)
        .collect();
    if !unfit.is_empty() {
        eprintln!(
            "scenario(s) {unfit:?} do not run with --runtime containerd; `enipool-e2e list` marks \
             those that do [containerd]"
        );
        return ExitCode::FAILURE;
    }
    let real = target.real_ec2();
    let selected: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| match names.is_empty() {
            // Everything, except what cannot run against real EC2 when that is the target, or
            // under containerd.
            true => (real.is_none() || s.real_ec2) && (!containerd || s.containerd),
            false => names.iter().any(|n| n == s.name),
        })
        .collect();
    if let (Some(why), true) = (&real, names.is_empty()) {
        println!(
            "real EC2 ({why}): running the {} scenarios that work against it; the others need the \
             EC2 simulator's network-namespace nodes",
            selected.len()
        );
    }
    init_logging();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async { teardown_on_signal() });
    let (mut passed, mut failed) = (0, 0);
    for s in selected {
        let started = Instant::now();
        println!("=== RUN   {}", s.name);
        let outcome = rt.block_on(async {
            match tokio::time::timeout(timeout, (s.run)(target.clone())).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("timed out after {}s", timeout.as_secs())),
            }
        });
        let took = started.elapsed().as_secs_f32();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("--- PASS  {} ({took:.1}s)", s.name);
            }
            Err(e) => {
                failed += 1;
                println!("--- FAIL  {} ({took:.1}s): {e:#}", s.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The runtime the runner and demo use: the EC2 simulator and the Kubernetes API serve from it
/// while scenario code waits on processes, so it gets a few more workers than cores.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build()
}

/// Logs of the runner itself (`ENIPOOL_E2E_LOG`, default warnings only) go to stderr.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENIPOOL_E2E_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// On Ctrl-C or SIGTERM: tear down every live cluster (processes, namespaces, run directories)
/// and exit 130. Call inside the runtime.
pub(crate) fn teardown_on_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else { return };
    let Ok(mut int) = signal(SignalKind::interrupt()) else { return };
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("\ninterrupted: tearing down (processes, network namespaces, temp files)...");
        let _ = tokio::task::spawn_blocking(cluster::teardown_all).await;
        eprintln!("cleaned up.");
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_that_run_against_real_ec2() {
        let real: Vec<&str> = SCENARIOS.iter().filter(|s| s.real_ec2).map(|s| s.name).collect();
        assert_eq!(real, ["crds-served", "pools-match-ec2", "pod-gets-vpc-ip"]);
    }
}
