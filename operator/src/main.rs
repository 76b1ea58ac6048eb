//! enipool-operator binary: parse flags, install the TLS provider, run (the operator, or the
//! `cleanup` subcommand).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    enipool_operator::ec2::aws::install_crypto_provider();
    let invocation =
        enipool_operator::args::parse_invocation(std::env::args_os()).unwrap_or_else(|e| e.exit());
    Ok(invocation.run().await?)
}
