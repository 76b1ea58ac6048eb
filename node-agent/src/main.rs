//! `enipool-agent`: parse flags, start logging, run.
#![forbid(unsafe_code)]
use clap::Parser;
use enipool_agent::args::{Args, LogFormat};
use tracing_subscriber::fmt::writer::MakeWriterExt;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Besides stderr, the last lines stay in memory for the support bundle.
    let out = std::io::stderr.and(enipool_agent::recent_logs::tap());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(out);
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
            // Only where the kubelet provides the file: never create one in a host's /dev.
            if let Ok(mut f) =
                std::fs::OpenOptions::new().write(true).truncate(true).open("/dev/termination-log")
            {
                let _ = std::io::Write::write_all(&mut f, e.to_string().as_bytes());
            }
            std::process::ExitCode::FAILURE
        }
    }
}
