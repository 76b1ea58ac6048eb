//! The kubelet's container calls on the CRI: create, start, status, stop, remove and exec of the
//! containers of a sandbox, with the parts of a Pod's container spec that the chart sets (image,
//! args, env, mounts with propagation, security context).

use crate::cri::Cri;
use anyhow::{Context, Result};
use k8s_cri::v1::{
    security_profile::ProfileType, Capability, ContainerConfig, ContainerMetadata,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec, Int64Value,
    KeyValue, LinuxContainerConfig, LinuxContainerSecurityContext, Mount, MountPropagation,
    PodSandboxConfig, RemoveContainerRequest, SecurityProfile, StartContainerRequest,
    StopContainerRequest,
};
use std::path::PathBuf;

/// A Pod's container, as far as the platform's pods need one.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    /// Restart count: a container started again after it ended gets the next attempt.
    pub attempt: u32,
    pub image: String,
    /// Replaces the image's entrypoint when not empty (a Pod's `command`).
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<MountSpec>,
    /// Log file, relative to the sandbox's log directory.
    pub log_path: String,
    pub security: Security,
}

/// A hostPath (or ConfigMap) volume mount.
#[derive(Debug, Clone)]
pub struct MountSpec {
    pub host: PathBuf,
    pub container: PathBuf,
    pub readonly: bool,
    /// `mountPropagation: HostToContainer` (rslave): mounts made on the host later show up.
    pub host_to_container: bool,
}

impl MountSpec {
    pub fn rw(host: impl Into<PathBuf>, container: impl Into<PathBuf>) -> MountSpec {
        MountSpec {
            host: host.into(),
            container: container.into(),
            readonly: false,
            host_to_container: false,
        }
    }

    pub fn ro(host: impl Into<PathBuf>, container: impl Into<PathBuf>) -> MountSpec {
        MountSpec { readonly: true, ..MountSpec::rw(host, container) }
    }
}

/// A container's `securityContext`; the pod's seccomp profile is the runtime's default, as the
/// chart sets it.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub privileged: bool,
    pub run_as_user: Option<i64>,
    pub readonly_rootfs: bool,
    pub drop_all: bool,
    pub add: Vec<String>,
}

/// What the kubelet reads back from `ContainerStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running { pid: Option<u32> },
    Exited { code: i32 },
    Unknown,
}

impl Cri {
    /// `CreateContainer` then `StartContainer` of `spec` in sandbox `sandbox`; returns its id.
    pub async fn start_container(
        &self,
        sandbox: &str,
        sandbox_config: &PodSandboxConfig,
        spec: &ContainerSpec,
    ) -> Result<String> {
        let req = CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(container_config(spec)),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let id = self
            .client
            .clone()
            .create_container(req)
            .await
            .map_err(|s| anyhow::anyhow!("CreateContainer {}: {}", spec.name, s.message()))?
            .into_inner()
            .container_id;
        self.client
            .clone()
            .start_container(StartContainerRequest { container_id: id.clone() })
            .await
            .map_err(|s| anyhow::anyhow!("StartContainer {}: {}", spec.name, s.message()))?;
        Ok(id)
    }

    /// `ContainerStatus` (verbose: containerd's info has the process id).
    pub async fn container_state(&self, id: &str) -> Result<ContainerState> {
        let resp = self
            .client
            .clone()
            .container_status(ContainerStatusRequest { container_id: id.into(), verbose: true })
            .await
            .map_err(|s| anyhow::anyhow!("ContainerStatus {id}: {}", s.message()))?
            .into_inner();
        let st = resp.status.with_context(|| format!("ContainerStatus {id}: no status"))?;
        let pid = resp.info.get("info").and_then(|i| pid_of_info(i));
        Ok(match st.state {
            0 => ContainerState::Created,
            1 => ContainerState::Running { pid },
            2 => ContainerState::Exited { code: st.exit_code },
            _ => ContainerState::Unknown,
        })
    }

    /// `StopContainer`: SIGTERM, then SIGKILL after `grace_secs`. Repeatable.
    pub async fn stop_container(&self, id: &str, grace_secs: i64) -> Result<()> {
        self.client
            .clone()
            .stop_container(StopContainerRequest { container_id: id.into(), timeout: grace_secs })
            .await
            .map_err(|s| anyhow::anyhow!("StopContainer {id}: {}", s.message()))?;
        Ok(())
    }

    /// `RemoveContainer` of an ended container.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        self.client
            .clone()
            .remove_container(RemoveContainerRequest { container_id: id.into() })
            .await
            .map_err(|s| anyhow::anyhow!("RemoveContainer {id}: {}", s.message()))?;
        Ok(())
    }

    /// `ExecSync` (`kubectl exec` without a terminal): exit code, stdout, stderr.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout_secs: i64,
    ) -> Result<(i32, Vec<u8>, Vec<u8>)> {
        let req =
            ExecSyncRequest { container_id: id.into(), cmd: cmd.to_vec(), timeout: timeout_secs };
        let r = self
            .client
            .clone()
            .exec_sync(req)
            .await
            .map_err(|s| anyhow::anyhow!("ExecSync in {id}: {}", s.message()))?
            .into_inner();
        Ok((r.exit_code, r.stdout, r.stderr))
    }
}

fn container_config(spec: &ContainerSpec) -> ContainerConfig {
    let s = &spec.security;
    let capabilities = Capability {
        add_capabilities: s.add.clone(),
        drop_capabilities: if s.drop_all { vec!["ALL".into()] } else { Vec::new() },
        ..Default::default()
    };
    let security_context = LinuxContainerSecurityContext {
        capabilities: Some(capabilities),
        privileged: s.privileged,
        run_as_user: s.run_as_user.map(|value| Int64Value { value }),
        readonly_rootfs: s.readonly_rootfs,
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    let mounts = spec
        .mounts
        .iter()
        .map(|m| Mount {
            container_path: m.container.display().to_string(),
            host_path: m.host.display().to_string(),
            readonly: m.readonly,
            propagation: if m.host_to_container {
                MountPropagation::PropagationHostToContainer as i32
            } else {
                MountPropagation::PropagationPrivate as i32
            },
            ..Default::default()
        })
        .collect();
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: spec.name.clone(), attempt: spec.attempt }),
        image: Some(ImageSpec { image: spec.image.clone(), ..Default::default() }),
        command: spec.command.clone(),
        args: spec.args.clone(),
        envs: spec.env.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect(),
        mounts,
        log_path: spec.log_path.clone(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(security_context),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The process id in containerd's verbose container info.
fn pid_of_info(info: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(info).ok()?;
    v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_from_containerd_info() {
        assert_eq!(pid_of_info(r#"{"pid":4242,"sandboxID":"s"}"#), Some(4242));
        assert_eq!(pid_of_info(r#"{"pid":0}"#), None);
        assert_eq!(pid_of_info("not json"), None);
    }

    #[test]
    fn security_context_as_the_chart_sets_it() {
        let spec = ContainerSpec {
            name: "agent".into(),
            security: Security {
                readonly_rootfs: true,
                drop_all: true,
                add: vec!["NET_ADMIN".into(), "SYS_ADMIN".into()],
                ..Default::default()
            },
            mounts: vec![MountSpec {
                host_to_container: true,
                ..MountSpec::ro("/h/netns", "/run/netns")
            }],
            ..Default::default()
        };
        let c = container_config(&spec);
        let sc = c.linux.unwrap().security_context.unwrap();
        assert!(sc.readonly_rootfs && !sc.privileged);
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.drop_capabilities, ["ALL"]);
        assert_eq!(caps.add_capabilities, ["NET_ADMIN", "SYS_ADMIN"]);
        assert_eq!(sc.seccomp.unwrap().profile_type, ProfileType::RuntimeDefault as i32);
        let m = &c.mounts[0];
        assert_eq!((m.host_path.as_str(), m.container_path.as_str()), ("/h/netns", "/run/netns"));
        assert!(m.readonly);
        assert_eq!(m.propagation, MountPropagation::PropagationHostToContainer as i32);
    }
}
