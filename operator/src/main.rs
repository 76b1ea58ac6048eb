//! enipool-operator binary: parse flags, install the TLS provider, run.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    enipool_operator::ec2::aws::install_crypto_provider();
    enipool_operator::args::Args::parse().run().await
}
