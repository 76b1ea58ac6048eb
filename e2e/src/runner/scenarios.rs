//! The scenario registry. Each scenario is a named async function over a [`Target`]; it builds what
//! it needs on the test platform (or uses the real cluster / EC2 the target names) and cleans up.

use super::Target;
use futures::future::BoxFuture;

/// One end-to-end scenario.
pub struct Scenario {
    /// Name used by `run NAME`.
    pub name: &'static str,
    /// One line saying what it proves.
    pub about: &'static str,
    /// The scenario itself.
    pub run: fn(Target) -> BoxFuture<'static, anyhow::Result<()>>,
}

/// Every scenario, in the order `run` executes them.
pub static SCENARIOS: &[Scenario] = &[Scenario {
    name: "crds-install",
    about: "the generated CRDs parse as apiextensions.k8s.io/v1 with both kinds",
    run: |_t| Box::pin(crds_install()),
}];

async fn crds_install() -> anyhow::Result<()> {
    for (name, yaml) in enipool_crds::generate::rendered()? {
        let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_saphyr::from_str(&yaml)?;
        anyhow::ensure!(crd.spec.group == "enipool.io", "{name}: wrong group {}", crd.spec.group);
    }
    Ok(())
}
