//! The kubelet's side of the CRI: the calls a kubelet makes to run and end a pod sandbox, over a
//! node's containerd socket, with the `k8s-cri` bindings (tonic). containerd then runs the
//! node's CNI plugins itself (its own netns, CNI_ARGS and result handling).

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StatusRequest, StopPodSandboxRequest,
};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint, Uri};

/// A CRI runtime service client on a unix socket.
#[derive(Clone)]
pub struct Cri {
    pub(crate) client: RuntimeServiceClient<Channel>,
    pub(crate) socket: PathBuf,
}

/// The pod identity a kubelet puts in the sandbox config; containerd passes it to CNI as
/// `K8S_POD_NAMESPACE`, `K8S_POD_NAME` and `K8S_POD_UID`.
#[derive(Debug, Clone)]
pub struct SandboxMeta<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    /// Retry count of the sandbox (a new attempt after a failure gets a new sandbox).
    pub attempt: u32,
}

/// What the kubelet reads back from `PodSandboxStatus`.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    /// The address containerd took from the CNI result.
    pub ip: Option<Ipv4Addr>,
    /// The sandbox's network namespace (containerd's mount of it).
    pub netns: Option<PathBuf>,
    pub ready: bool,
}

impl Cri {
    /// Connects to `socket` (the channel connects lazily: the first call fails if nothing listens).
    pub fn connect(socket: &Path) -> Result<Cri> {
        let path = socket.to_path_buf();
        // The URI is unused: every connection goes to the socket.
        let channel = Endpoint::try_from("http://[::]:0")?.connect_with_connector_lazy(
            tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }),
        );
        Ok(Cri { client: RuntimeServiceClient::new(channel), socket: socket.to_path_buf() })
    }

    /// The runtime's `NetworkReady` condition: false (with its reason) while containerd has no
    /// loadable CNI config, as the kubelet sees it before starting sandboxes.
    pub async fn network_ready(&self) -> Result<std::result::Result<(), String>> {
        let st = self
            .client
            .clone()
            .status(StatusRequest { verbose: false })
            .await
            .with_context(|| format!("CRI Status on {}", self.socket.display()))?
            .into_inner();
        let conds = st.status.map(|s| s.conditions).unwrap_or_default();
        let net = conds.iter().find(|c| c.r#type == "NetworkReady");
        Ok(match net {
            Some(c) if c.status => Ok(()),
            Some(c) => Err(format!("{}: {}", c.reason, c.message)),
            None => Err("no NetworkReady condition".into()),
        })
    }

    /// `RunPodSandbox` with a pod network namespace of its own, as the kubelet asks for a pod
    /// without hostNetwork; returns the sandbox id.
    pub async fn run_sandbox(&self, meta: &SandboxMeta<'_>, log_dir: &Path) -> Result<String> {
        self.run_sandbox_with(sandbox_config(meta, log_dir, false, false)).await
    }

    /// `RunPodSandbox` of `config`; returns the sandbox id.
    pub async fn run_sandbox_with(&self, config: PodSandboxConfig) -> Result<String> {
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let req = RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
        let resp = self
            .client
            .clone()
            .run_pod_sandbox(req)
            .await
            .map_err(|s| anyhow::anyhow!("RunPodSandbox {name}: {}", s.message()))?;
        Ok(resp.into_inner().pod_sandbox_id)
    }

    /// `PodSandboxStatus` (verbose: containerd's info carries the runtime spec, whose network
    /// namespace path is the sandbox's netns).
    pub async fn sandbox_status(&self, id: &str) -> Result<SandboxStatus> {
        let resp = self
            .client
            .clone()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await
            .map_err(|s| anyhow::anyhow!("PodSandboxStatus {id}: {}", s.message()))?
            .into_inner();
        let st = resp.status.with_context(|| format!("PodSandboxStatus {id}: no status"))?;
        let ip = st.network.as_ref().and_then(|n| n.ip.parse().ok());
        let netns = resp.info.get("info").and_then(|i| netns_of_info(i));
        Ok(SandboxStatus { ip, netns, ready: st.state == 0 })
    }

    /// `StopPodSandbox`: containerd runs CNI DEL and stops the sandbox. Repeatable.
    pub async fn stop_sandbox(&self, id: &str) -> Result<()> {
        self.client
            .clone()
            .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.into() })
            .await
            .map_err(|s| anyhow::anyhow!("StopPodSandbox {id}: {}", s.message()))?;
        Ok(())
    }

    /// `RemovePodSandbox` of a stopped sandbox. Repeatable.
    pub async fn remove_sandbox(&self, id: &str) -> Result<()> {
        self.client
            .clone()
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.into() })
            .await
            .map_err(|s| anyhow::anyhow!("RemovePodSandbox {id}: {}", s.message()))?;
        Ok(())
    }
}

/// The sandbox config a kubelet sends for a pod: its identity as labels, its log directory, the
/// node's network namespace for a hostNetwork pod (containerd then runs no CNI for it) or one of
/// its own, and `privileged` when any of its containers is (containerd refuses a privileged
/// container in a sandbox that is not).
pub fn sandbox_config(
    meta: &SandboxMeta<'_>,
    log_dir: &Path,
    host_network: bool,
    privileged: bool,
) -> PodSandboxConfig {
    let network = if host_network { NamespaceMode::Node } else { NamespaceMode::Pod };
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: meta.name.into(),
            uid: meta.uid.into(),
            namespace: meta.namespace.into(),
            attempt: meta.attempt,
        }),
        // A hostNetwork pod shares the node's UTS namespace: runc refuses to set a hostname there.
        hostname: if host_network { String::new() } else { meta.name.into() },
        log_directory: log_dir.display().to_string(),
        labels: [
            ("io.kubernetes.pod.name".to_string(), meta.name.to_string()),
            ("io.kubernetes.pod.namespace".into(), meta.namespace.into()),
            ("io.kubernetes.pod.uid".into(), meta.uid.into()),
        ]
        .into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                privileged,
                namespace_options: Some(NamespaceOption {
                    network: network as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The network namespace path in containerd's verbose sandbox info (`runtimeSpec.linux.namespaces`).
fn netns_of_info(info: &str) -> Option<PathBuf> {
    let v: serde_json::Value = serde_json::from_str(info).ok()?;
    let spaces = v["runtimeSpec"]["linux"]["namespaces"].as_array()?;
    let net = spaces.iter().find(|n| n["type"] == "network")?;
    net["path"].as_str().filter(|p| !p.is_empty()).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_from_containerd_info() {
        let info = r#"{"pid":7,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},
            {"type":"network","path":"/s/io.containerd.grpc.v1.cri/netns/cni-1"}]}}}"#;
        assert_eq!(
            netns_of_info(info),
            Some(PathBuf::from("/s/io.containerd.grpc.v1.cri/netns/cni-1"))
        );
        assert_eq!(netns_of_info(r#"{"runtimeSpec":{"linux":{"namespaces":[]}}}"#), None);
        assert_eq!(netns_of_info("not json"), None);
    }
}
