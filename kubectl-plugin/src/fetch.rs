//! The reads: a client from the user's kubeconfig, then lists and gets, nothing written.

use crate::error::{Error, Result};
use crate::render::{ClusterView, NodeView};
use enipool_crds::{ENIPool, ENIPoolPolicy};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::Path;

/// A client as kubectl would make it: the given file, else kube's default loading
/// ($KUBECONFIG, ~/.kube/config, in-cluster), with the given context or the current one.
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<kube::Client> {
    let options = KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options).await,
        None => {
            return kube::Config::infer()
                .await
                .map_err(|e| Error::Kubeconfig(e.to_string()))
                .and_then(|c| {
                    kube::Client::try_from(c).map_err(|e| Error::Kubeconfig(e.to_string()))
                })
        }
    }
    .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))
}

fn api_err(what: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |source| Error::Api { what: what.to_string(), source }
}

/// Every pool and policy.
pub async fn cluster(client: &kube::Client) -> Result<ClusterView> {
    let lp = ListParams::default();
    let pools =
        Api::<ENIPool>::all(client.clone()).list(&lp).await.map_err(api_err("list enipools"))?;
    let policies = Api::<ENIPoolPolicy>::all(client.clone())
        .list(&lp)
        .await
        .map_err(api_err("list enipoolpolicies"))?;
    Ok(ClusterView { pools: pools.items, policies: policies.items })
}

/// One pool and the pods bound to its node.
pub async fn node(client: &kube::Client, name: &str) -> Result<NodeView> {
    let pool = Api::<ENIPool>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(api_err("get enipool"))?
        .ok_or_else(|| Error::NoPool(name.to_string()))?;
    let lp = ListParams::default().fields(&format!("spec.nodeName={name}"));
    let pods = Api::<Pod>::all(client.clone()).list(&lp).await.map_err(api_err("list pods"))?;
    Ok(NodeView { pool, pods: pods.items })
}
