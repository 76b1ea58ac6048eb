//! The pod-IP annotation (`--annotate-pod-ip`): each pod the agent wires gets its address in
//! [`POD_IP_ANNOTATION`], for tools that read pod addresses from metadata (as the Amazon VPC CNI's
//! `vpc.amazonaws.com/pod-ips`). Written after the ADD answered, off the CNI path: a slow or
//! failing API server never delays or fails a pod's start, it only delays its annotation.

use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// The annotation's name; its value is the pod's IPv4 address.
pub const POD_IP_ANNOTATION: &str = "enipool.io/pod-ips";

/// How often one annotation is tried before it is given up (logged).
const ATTEMPTS: u32 = 5;

/// A pod wired with an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    pub namespace: String,
    pub name: String,
    /// The pod's address as Kubernetes knows it (its IPv6 one in an IPv6 cluster).
    pub ip: IpAddr,
}

/// Where the agent's ADD path hands wired pods to the annotator.
pub type Sink = mpsc::UnboundedSender<PodAddress>;

/// The merge patch that sets the annotation and nothing else (the chart's admission policy
/// refuses any other change by the agent).
pub fn patch(ip: IpAddr) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {POD_IP_ANNOTATION: ip.to_string()}}})
}

/// Annotate every pod that arrives, each in its own task with a few retries, until the sender
/// side (the agent) is gone.
pub async fn run(
    client: kube::Client,
    mut wired: mpsc::UnboundedReceiver<PodAddress>,
) -> Result<()> {
    while let Some(p) = wired.recv().await {
        if p.name.is_empty() {
            continue; // a runtime that names no pod (CNI_ARGS without K8S_POD_NAME)
        }
        tokio::spawn(annotate(client.clone(), p));
    }
    Err(Error::Stopped("pod-IP annotator: the agent dropped its sender".into()))
}

async fn annotate(client: kube::Client, p: PodAddress) {
    let api: Api<Pod> = Api::namespaced(client, &p.namespace);
    let body = patch(p.ip);
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        match api.patch(&p.name, &PatchParams::default(), &Patch::Merge(&body)).await {
            Ok(_) => return,
            // The pod is gone: nothing to annotate.
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(e) if attempt == ATTEMPTS => {
                tracing::warn!(pod = %format!("{}/{}", p.namespace, p.name), ip = %p.ip, error = &e as &dyn std::error::Error, "could not annotate the pod with its address");
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_sets_only_the_annotation() {
        assert_eq!(
            patch(std::net::Ipv4Addr::new(10, 0, 1, 5).into()),
            serde_json::json!({"metadata": {"annotations": {"enipool.io/pod-ips": "10.0.1.5"}}})
        );
    }
}
