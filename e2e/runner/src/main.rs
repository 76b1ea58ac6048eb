//! `enipool-e2e`: list and run the end-to-end scenarios, or start the local demo.
use clap::Parser;

fn main() -> std::process::ExitCode {
    enipool_e2e::Cli::parse().main()
}
