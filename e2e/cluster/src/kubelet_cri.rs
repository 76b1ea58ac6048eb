//! The kubelet's pod sandboxes on a containerd node ([`crate::Runtime::Containerd`]): the CRI calls
//! a kubelet makes (wait for `NetworkReady`, `RunPodSandbox`, `PodSandboxStatus` for the IP,
//! `StopPodSandbox`, `RemovePodSandbox`). containerd makes the netns and runs the CNI plugins; the
//! fabric names its netns `<prefix>-p-<pod>` so the platform's checks work on it as on any pod's.

use super::containerd::NodeRuntime;
use super::cri::SandboxMeta;
use super::{wait, Cluster, NodeInfo, PodInfo};
use anyhow::{Context, Result};
use std::time::Duration;

/// How long a sandbox waits for its runtime to report the network ready.
const NETWORK_READY: Duration = Duration::from_secs(90);

impl Cluster {
    /// A sandbox for `p` through `rt`'s CRI; `p` gets the sandbox id, IP and netns.
    pub(crate) async fn run_sandbox_cri(
        &self,
        p: &mut PodInfo,
        n: &NodeInfo,
        rt: &NodeRuntime,
    ) -> Result<()> {
        let cri = rt.cri()?;
        // The kubelet starts no sandbox while the runtime says its network is not ready.
        let what = format!("containerd of {} to report NetworkReady", n.name);
        wait::poll(&what, NETWORK_READY, || async {
            cri.network_ready().await?.map_err(|why| anyhow::anyhow!("{why}"))
        })
        .await?;
        // A sandbox left by a failed attempt goes first, as the kubelet removes it.
        if p.sandbox_id.is_some() {
            self.end_sandbox_cri(p, rt).await?;
            p.sandbox_id = None;
            p.ip = None;
        }
        p.attempt += 1;
        let meta = SandboxMeta {
            name: &p.name,
            namespace: self.pod_namespace(),
            uid: &p.uid,
            attempt: p.attempt - 1,
        };
        let logs = n.dir.join("pod-logs").join(&p.name);
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let id = cri.run_sandbox(&meta, &logs).await?;
        p.sandbox_id = Some(id.clone());
        p.container_id = id.clone();
        let st = cri.sandbox_status(&id).await?;
        anyhow::ensure!(st.ready, "sandbox {id} of pod {} is not ready", p.name);
        p.ip = Some(st.ip.with_context(|| format!("sandbox {id} of pod {} has no IP", p.name))?);
        let netns = st.netns.with_context(|| format!("sandbox {id}: no netns in its status"))?;
        let f = self.fabric().clone();
        let suffix = format!("p-{}", p.name);
        p.netns = wait::blocking(move || f.adopt_netns(&suffix, &netns)).await?;
        Ok(())
    }

    /// `StopPodSandbox` (containerd's CNI DEL) and `RemovePodSandbox` of `p`'s sandbox, then its
    /// netns name.
    pub(crate) async fn end_sandbox_cri(&self, p: &PodInfo, rt: &NodeRuntime) -> Result<()> {
        if let Some(id) = &p.sandbox_id {
            let cri = rt.cri()?;
            cri.stop_sandbox(id).await.with_context(|| format!("stopping pod {}", p.name))?;
            cri.remove_sandbox(id).await.with_context(|| format!("removing pod {}", p.name))?;
        }
        let f = self.fabric().clone();
        let ns = p.netns.clone();
        wait::blocking(move || f.remove_netns(&ns)).await
    }

    /// Ends every CRI sandbox the kubelet runs, so containerd unmounts what it mounted before it
    /// is stopped. Best-effort (teardown cleans up after a runtime that does not answer).
    pub(crate) async fn end_all_sandboxes_cri(&self) {
        for p in self.pods() {
            let Some(rt) = self.node(&p.node).ok().and_then(|n| n.containerd) else { continue };
            let end = self.end_sandbox_cri(&p, &rt);
            match tokio::time::timeout(Duration::from_secs(20), end).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(pod = %p.name, error = %e, "ending a sandbox"),
                Err(_) => tracing::warn!(pod = %p.name, "ending a sandbox timed out"),
            }
        }
    }
}
