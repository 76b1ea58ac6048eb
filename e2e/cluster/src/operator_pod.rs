//! Operator replicas on a containerd platform: pods from the operator's image, run as the chart's
//! Deployment runs them (user 65532, read-only root filesystem, no capabilities, the runtime's
//! seccomp profile), by a containerd of the control plane. That containerd runs in the machine's
//! own network namespace, where the EC2 endpoint and the API server listen, as a control-plane
//! node reaches both; a hostNetwork pod there needs no forwards.

use crate::agent_pod::{end_pod, CriPod};
use crate::containerd::{self, NodeRuntime};
use crate::cri::{sandbox_config, SandboxMeta};
use crate::cri_containers::{ContainerSpec, MountSpec, Security};
use crate::{images, wait, Cluster};
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::time::Duration;

const KUBECONFIG_IN_POD: &str = "/etc/enipool/kubeconfig";
/// The chart's `runAsUser`.
const NONROOT: i64 = 65532;

impl Cluster {
    /// Runs operator replica `identity` as a pod with `args` and the environment a process would
    /// get (its kubeconfig is mounted into the pod).
    pub(crate) async fn start_operator_pod(
        &self,
        identity: &str,
        args: Vec<String>,
        env: Vec<(String, OsString)>,
    ) -> Result<()> {
        let rt = self.control_plane().await?;
        let cri = rt.cri()?;
        let uid = uuid::Uuid::new_v4().to_string();
        let meta = SandboxMeta { name: identity, namespace: "kube-system", uid: &uid, attempt: 0 };
        let config = sandbox_config(&meta, &self.run_dir().join("logs"), true, false);
        let sandbox = cri.run_sandbox_with(config.clone()).await?;
        let mut kubeconfig = None;
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| match k.as_str() {
                "KUBECONFIG" => {
                    kubeconfig = Some(v);
                    None
                }
                _ => Some((k, v.to_string_lossy().into_owned())),
            })
            .collect();
        let kubeconfig = kubeconfig.context("the operator's environment has no KUBECONFIG")?;
        // The user must read the file the platform wrote as root.
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
        std::fs::set_permissions(&kubeconfig, mode).context("making the kubeconfig readable")?;
        env.push(("KUBECONFIG".into(), KUBECONFIG_IN_POD.into()));
        // Names the run, so that a run's leftover containers can be found and killed.
        env.push(("ENIPOOL_E2E_RUN_DIR".into(), self.run_dir().display().to_string()));
        let spec = ContainerSpec {
            name: "operator".into(),
            image: images::reference("operator"),
            args,
            env,
            mounts: vec![MountSpec::ro(kubeconfig, KUBECONFIG_IN_POD)],
            log_path: format!("{identity}.log"),
            security: Security {
                run_as_user: Some(NONROOT),
                readonly_rootfs: true,
                drop_all: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let container = cri.start_container(&sandbox, &config, &spec).await?;
        let pod = CriPod {
            runtime: rt.clone(),
            sandbox,
            sandbox_config: config,
            spec,
            container: Some(container),
            introspection_addr: None,
            _forwards: Vec::new(),
        };
        self.cri_pods.lock().await.insert(identity.to_string(), pod);
        Ok(())
    }

    /// The control plane's containerd, started at the first call with the pause and operator
    /// images.
    async fn control_plane(&self) -> Result<&NodeRuntime> {
        self.control_plane
            .get_or_try_init(|| async {
                let dir = self.run_dir().join("control-plane");
                let (bin, conf) = (dir.join("cni-bin"), dir.join("cni-conf"));
                for d in [&bin, &conf] {
                    std::fs::create_dir_all(d)?;
                }
                let b = self.bins.clone();
                let built = wait::blocking(move || images::archives(&b)).await?;
                let pause = self.node_images.first().context("no pause image")?.clone();
                let images = [pause, built.join("enipool-operator.oci.tar")];
                let procs = &self.core.procs;
                containerd::start(procs, "control-plane", &dir, None, &bin, &conf, &images).await
            })
            .await
    }

    /// Ends the operator pods before the control plane's containerd stops. Best-effort.
    pub(crate) async fn end_operator_pods(&self) {
        let Some(rt) = self.control_plane.get() else { return };
        let Ok(cri) = rt.cri() else { return };
        let mut pods = self.cri_pods.lock().await;
        let names: Vec<String> =
            pods.keys().filter(|k| k.starts_with("operator-")).cloned().collect();
        for name in names {
            let Some(pod) = pods.remove(&name) else { continue };
            match tokio::time::timeout(Duration::from_secs(20), end_pod(&cri, &pod)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(pod = %name, error = %e, "ending an operator pod"),
                Err(_) => tracing::warn!(pod = %name, "ending an operator pod timed out"),
            }
        }
    }
}
