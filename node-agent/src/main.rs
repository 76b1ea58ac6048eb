//! `enipool-agent`: parse flags, start logging, run.
use clap::Parser;
use enipool_agent::args::{Args, LogFormat};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => fmt.json().init(),
        LogFormat::Text => fmt.init(),
    }
    match enipool_agent::run::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                category = e.category(),
                "agent failed"
            );
            let _ = std::fs::write("/dev/termination-log", e.to_string());
            std::process::ExitCode::FAILURE
        }
    }
}
