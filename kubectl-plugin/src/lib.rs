//! `kubectl enipool`: reads ENIPools, ENIPoolPolicies and the pods of a node with the user's own
//! kubeconfig and renders what an on-call engineer asks first. Fetching ([`fetch`]) is apart from
//! rendering ([`render`]), which is a pure function of the fetched objects.

pub mod args;
pub mod error;
pub mod fetch;
pub mod render;

pub use args::{Cli, Command};
pub use error::{Error, Result};

/// Connect as the kubeconfig says, fetch what the subcommand needs and render it.
pub async fn run(cli: &Cli) -> Result<String> {
    let client = fetch::client(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    match &cli.command {
        Command::Status => {
            let view = fetch::cluster(&client).await?;
            Ok(render::status::render(&view, &render::Thresholds::default()))
        }
        Command::Node { name } => {
            let view = fetch::node(&client, name).await?;
            Ok(render::node::render(&view))
        }
    }
}
