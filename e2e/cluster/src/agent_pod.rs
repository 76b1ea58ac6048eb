//! The agent DaemonSet's pod on a containerd node, run the way the kubelet runs it from the chart:
//! a hostNetwork sandbox, the `sysctl-init` (privileged) and `install-cni` (no capabilities)
//! init containers run to completion in order, then the agent container from its image with the
//! chart's security context (NET_ADMIN and SYS_ADMIN only, read-only root filesystem, the
//! runtime's seccomp profile) and its volumes, the netns dir with `HostToContainer` propagation.
//! A killed agent is started again as the kubelet restarts a container: a new container of the
//! next attempt in the same sandbox.
//!
//! The node's network namespace is the pod's, so the API server and the harness reach it through
//! [`crate::forward`]s: the API server's address inside the node, and the agent's metrics and
//! introspection ports from the machine's namespace.

use crate::containerd::NodeRuntime;
use crate::cri::{sandbox_config, SandboxMeta};
use crate::cri_containers::{ContainerSpec, ContainerState, MountSpec, Security};
use crate::forward::{self, Forward};
use crate::node::{NodeInfo, AGENT_KUBECONFIG, STAGED_CONFLIST};
use crate::{images, wait, Cluster};
use anyhow::{bail, Context, Result};
use k8s_cri::v1::PodSandboxConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an init container gets to finish, and the agent to come back after a restart.
const INIT: Duration = Duration::from_secs(60);
/// The chart's container paths.
const HOST_CNI_BIN: &str = "/host/cni/bin";
const HOST_CNI_CONF: &str = "/host/cni/net.d";
const INSTALL_DIR: &str = "/etc/enipool/install";
const KUBECONFIG_IN_POD: &str = "/etc/enipool/kubeconfig";

/// A pod of the platform's own (a node's agent, an operator replica) with its one long-running
/// container, as the kubelet keeps it.
pub(crate) struct CriPod {
    /// The containerd it runs on.
    pub(crate) runtime: NodeRuntime,
    pub(crate) sandbox: String,
    pub(crate) sandbox_config: PodSandboxConfig,
    /// The container's spec; `attempt` counts its restarts.
    pub(crate) spec: ContainerSpec,
    pub(crate) container: Option<String>,
    /// The agent's introspection address, as the harness reaches it.
    pub(crate) introspection_addr: Option<String>,
    pub(crate) _forwards: Vec<Forward>,
}

/// The name of a node's agent pod (its key in [`Cluster`]'s pods).
fn pod_name(node: &str) -> String {
    format!("enipool-agent-{node}")
}

impl Cluster {
    /// Runs the node's agent pod, or starts its agent container again after it ended.
    pub(crate) async fn start_agent_pod(&self, n: &NodeInfo, rt: &NodeRuntime) -> Result<()> {
        let cri = rt.cri()?;
        let mut pods = self.cri_pods.lock().await;
        if let Some(pod) = pods.get_mut(&pod_name(&n.name)) {
            if let Some(old) = pod.container.take() {
                let _ = cri.remove_container(&old).await;
                pod.spec.attempt += 1;
            }
            let id = cri.start_container(&pod.sandbox, &pod.sandbox_config, &pod.spec).await?;
            pod.container = Some(id);
            return Ok(());
        }
        let pod = self.run_agent_pod(n, rt).await?;
        pods.insert(pod_name(&n.name), pod);
        Ok(())
    }

    async fn run_agent_pod(&self, n: &NodeInfo, rt: &NodeRuntime) -> Result<CriPod> {
        let cri = rt.cri()?;
        let name = pod_name(&n.name);
        let uid = uuid::Uuid::new_v4().to_string();
        let meta = SandboxMeta { name: &name, namespace: "kube-system", uid: &uid, attempt: 0 };
        let logs = self.run_dir().join("logs");
        // Privileged for sysctl-init.
        let config = sandbox_config(&meta, &logs, true, true);
        let sandbox = cri.run_sandbox_with(config.clone()).await?;

        let mut f = self.agent_flags(n)?;
        f.cni_conf_source = Some(format!("{INSTALL_DIR}/{STAGED_CONFLIST}"));
        f.cni_conf_dir = Some(HOST_CNI_CONF.into());
        let d = |s: &str| n.dir.join(s);
        let kubeconfig = match d(AGENT_KUBECONFIG) {
            own if own.exists() => own,
            _ => self.kube.kubeconfig.clone(),
        };
        let mut forwards = vec![self.api_forward(n, &kubeconfig).await?];
        for addr in [&f.metrics_addr, &f.introspection_addr] {
            let a: SocketAddr = addr.parse().with_context(|| format!("agent address {addr}"))?;
            forwards.push(forward::start(None, a, Some(&n.netns), a)?);
        }
        let mut args = crate::flags::agent_args(&f);
        args.extend(self.spec.agent_args.iter().cloned());
        let image = images::reference("agent");

        let sysctl = ContainerSpec {
            name: "sysctl-init".into(),
            image: image.clone(),
            args: vec!["sysctl-init".into()],
            env: vec![("NO_COLOR".into(), "1".into())],
            log_path: format!("{name}-sysctl-init.log"),
            security: Security { privileged: true, readonly_rootfs: true, ..Default::default() },
            ..Default::default()
        };
        self.run_to_completion(&cri, &sandbox, &config, &sysctl).await?;
        let install = ContainerSpec {
            name: "install-cni".into(),
            image: images::reference("cni"),
            command: vec!["/busybox/sh".into(), format!("{INSTALL_DIR}/install-cni.sh")],
            env: vec![
                ("PLUGIN".into(), "/opt/enipool/bin/enipool-cni".into()),
                ("HOST_BIN_DIR".into(), HOST_CNI_BIN.into()),
                ("REQUIRE".into(), "portmap".into()),
            ],
            mounts: vec![
                MountSpec::rw(&n.driver.cni_bin_dirs[0], HOST_CNI_BIN),
                MountSpec::ro(n.dir.join("cni-install"), INSTALL_DIR),
            ],
            log_path: format!("{name}-install-cni.log"),
            security: Security {
                run_as_user: Some(0),
                readonly_rootfs: true,
                drop_all: true,
                ..Default::default()
            },
            ..Default::default()
        };
        self.run_to_completion(&cri, &sandbox, &config, &install).await?;

        let spec = ContainerSpec {
            name: "agent".into(),
            image,
            args,
            env: vec![
                ("KUBECONFIG".into(), KUBECONFIG_IN_POD.into()),
                ("RUST_LOG".into(), std::env::var("ENIPOOL_E2E_LOG").unwrap_or("info".into())),
                ("NO_COLOR".into(), "1".into()),
                (crate::flags::MALLOC_ARENA_MAX.0.into(), crate::flags::MALLOC_ARENA_MAX.1.into()),
            ],
            mounts: vec![
                MountSpec::rw(d("run"), d("run")),
                MountSpec::rw(d("state"), d("state")),
                MountSpec::rw(d("del-journal"), d("del-journal")),
                MountSpec::rw(&n.driver.conf_dir, HOST_CNI_CONF),
                MountSpec::ro(d("cni-install"), INSTALL_DIR),
                MountSpec::ro(kubeconfig, KUBECONFIG_IN_POD),
                MountSpec {
                    host_to_container: true,
                    ..MountSpec::rw(rt.netns_dir(), rt.netns_dir())
                },
            ],
            log_path: format!("{}.log", n.agent),
            security: Security {
                readonly_rootfs: true,
                drop_all: true,
                add: vec!["NET_ADMIN".into(), "SYS_ADMIN".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let container = cri.start_container(&sandbox, &config, &spec).await?;
        Ok(CriPod {
            runtime: rt.clone(),
            sandbox,
            sandbox_config: config,
            spec,
            container: Some(container),
            introspection_addr: Some(f.introspection_addr),
            _forwards: forwards,
        })
    }

    /// The API server of the agent's kubeconfig, reachable inside the node's namespace at the
    /// address the kubeconfig names (so TLS names still match): a loopback address is the node's
    /// own; any other gets a /32 on the node's `lo`, as a route to the endpoint would carry it.
    /// The kubeconfig is mounted alone: on an external cluster it must hold its credentials
    /// inline (no files, no exec plugin).
    async fn api_forward(&self, n: &NodeInfo, kubeconfig: &Path) -> Result<Forward> {
        let (host, port) = crate::kube::server_of(kubeconfig).await?;
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving the API server {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to nothing"))?;
        if !addr.ip().is_loopback() {
            let (ns, ip) = (n.netns.clone(), addr.ip());
            let cidr = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
            wait::blocking(move || {
                fabric::run_in(&ns, &["ip", "addr", "replace", &cidr, "dev", "lo"])
            })
            .await
            .with_context(|| format!("adding the API server's {ip} to the node's lo"))?;
        }
        forward::start(Some(&n.netns), addr, None, addr)
    }

    /// Starts an init container and waits for it to exit 0, as the kubelet does before the next.
    async fn run_to_completion(
        &self,
        cri: &crate::cri::Cri,
        sandbox: &str,
        config: &PodSandboxConfig,
        spec: &ContainerSpec,
    ) -> Result<()> {
        let id = cri.start_container(sandbox, config, spec).await?;
        let what = format!("init container {} to finish", spec.name);
        let code = wait::poll(&what, INIT, || async {
            match cri.container_state(&id).await? {
                ContainerState::Exited { code } => Ok(code),
                s => bail!("{s:?}"),
            }
        })
        .await?;
        if code != 0 {
            let log = self.run_dir().join("logs").join(&spec.log_path);
            bail!(
                "init container {} exited with {code}: {}",
                spec.name,
                crate::procs::tail(&log, 10).trim()
            );
        }
        Ok(())
    }

    /// `kill -9` of the agent container's process; the container ends, as after an OOM kill.
    pub(crate) async fn kill9_agent_pod(&self, n: &NodeInfo) -> Result<()> {
        let rt = n.containerd.as_ref().context("not a containerd node")?;
        let cri = rt.cri()?;
        let pods = self.cri_pods.lock().await;
        let id = pods.get(&pod_name(&n.name)).and_then(|p| p.container.clone());
        let id = id.with_context(|| format!("no agent container on {}", n.name))?;
        let ContainerState::Running { pid: Some(pid) } = cri.container_state(&id).await? else {
            bail!("the agent container of {} is not running", n.name);
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL)
            .with_context(|| format!("kill -9 {pid}"))?;
        wait::poll("the killed agent container to exit", INIT, || async {
            match cri.container_state(&id).await? {
                ContainerState::Exited { .. } => Ok(()),
                s => bail!("{s:?}"),
            }
        })
        .await
    }

    /// Ends the node's agent pod, as when the DaemonSet's pod leaves the node.
    pub(crate) async fn stop_agent_pod(&self, n: &NodeInfo) -> Result<()> {
        let rt = n.containerd.as_ref().context("not a containerd node")?;
        let Some(pod) = self.cri_pods.lock().await.remove(&pod_name(&n.name)) else {
            return Ok(());
        };
        end_pod(&rt.cri()?, &pod).await
    }

    /// Ends every agent pod before the runtimes stop. Best-effort (teardown cleans up after a
    /// runtime that does not answer).
    pub(crate) async fn end_all_agent_pods(&self) {
        for n in self.nodes().into_iter().filter(|n| n.containerd.is_some()) {
            match tokio::time::timeout(Duration::from_secs(20), self.stop_agent_pod(&n)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(node = %n.name, error = %e, "ending the agent pod"),
                Err(_) => tracing::warn!(node = %n.name, "ending the agent pod timed out"),
            }
        }
    }

    /// The running containers of the platform's own pods: `(pod, container, pid)`.
    pub async fn platform_containers(&self) -> Result<Vec<(String, String, u32)>> {
        let mut out = Vec::new();
        for (name, pod) in self.cri_pods.lock().await.iter() {
            let Some(id) = &pod.container else { continue };
            let ContainerState::Running { pid: Some(pid) } =
                pod.runtime.cri()?.container_state(id).await?
            else {
                bail!("container {} of pod {name} is not running", pod.spec.name);
            };
            out.push((name.clone(), pod.spec.name.clone(), pid));
        }
        Ok(out)
    }

    /// The agent pod's introspection address, as the harness reaches it.
    pub(crate) async fn agent_pod_introspection_addr(&self, node: &str) -> Option<String> {
        self.cri_pods.lock().await.get(&pod_name(node)).and_then(|p| p.introspection_addr.clone())
    }

    /// `kubectl exec <agent pod> -- enipool-agent <its flags> <cmd...>`: exit code and stdout.
    pub(crate) async fn exec_in_agent_pod(&self, n: &NodeInfo, cmd: &[&str]) -> Result<Vec<u8>> {
        let rt = n.containerd.as_ref().context("not a containerd node")?;
        let pods = self.cri_pods.lock().await;
        let pod = pods.get(&pod_name(&n.name));
        let pod = pod.with_context(|| format!("no agent pod on {}", n.name))?;
        let id = pod.container.clone().context("the agent container is not running")?;
        let mut argv = vec!["/usr/local/bin/enipool-agent".to_string()];
        argv.extend(pod.spec.args.iter().cloned());
        argv.extend(cmd.iter().map(|s| s.to_string()));
        drop(pods);
        let (code, out, err) = rt.cri()?.exec_sync(&id, &argv, 60).await?;
        if code != 0 {
            bail!("{argv:?} exited with {code}: {}", String::from_utf8_lossy(&err));
        }
        Ok(out)
    }
}

/// Stops a pod's container with the chart's grace period (SIGTERM first), then its sandbox.
pub(crate) async fn end_pod(cri: &crate::cri::Cri, pod: &CriPod) -> Result<()> {
    if let Some(id) = &pod.container {
        cri.stop_container(id, 5).await?;
    }
    cri.stop_sandbox(&pod.sandbox).await?;
    cri.remove_sandbox(&pod.sandbox).await
}

/// Where the chart's install script lives in the repository; the platform stages it with the
/// conflist, as the chart's ConfigMap holds both.
pub(crate) fn install_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/enipool/files/install-cni.sh")
}
