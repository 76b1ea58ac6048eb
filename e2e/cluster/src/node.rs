//! Nodes: launch an instance in the simulator (the fabric makes its netns), register the Node
//! object (providerID, labels, Ready), install the shim and conflist into the node's CNI dirs the
//! way the chart's installer does, start its agent. Also the operator replicas, and node
//! termination.

use super::procs::ProcSpec;
use super::{wait, Cluster, REGION};
use anyhow::{ensure, Context, Result};
use ec2sim::RunReq;
use fabric::cnidriver::CniDriver;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Debian's plugins chained after (or next to) enipool's, linked into every node's CNI bin dir.
pub const CHAINED_PLUGINS: &[&str] = &["portmap", "tuning", "loopback"];
/// Name of the network list the installer writes.
pub const NETWORK_NAME: &str = "enipool";
/// MTU the agent and shim use (the chart's default).
pub const MTU: u32 = 9001;
/// The rendered conflist in a node's `cni-install` dir, as the chart mounts it for the agent.
pub(crate) const STAGED_CONFLIST: &str = "conflist.json";
/// The taint nodes register with until their agent can serve (the chart's default key).
pub const STARTUP_TAINT: &str = "enipool.io/agent-not-ready";
/// The conflist's name in the node's CNI config dir (the chart's default).
pub const CONFLIST_NAME: &str = "05-enipool.conflist";
/// The agent's kubeconfig in its node's directory, with its pod-bound token.
pub(crate) const AGENT_KUBECONFIG: &str = "agent.kubeconfig";

/// How [`Cluster::join_node_with`] joins a node.
#[derive(Debug, Clone, Copy)]
pub struct Join {
    /// Start its agent now (else [`Cluster::start_agent`] later, as a DaemonSet landing on it).
    pub start_agent: bool,
    /// Register the Node with the startup taint (a node group configured for enipool).
    pub startup_taint: bool,
    /// Its runtime picks the network config as containerd and CRI-O do (the first in its config
    /// dir; a pod's DEL with the config of its ADD) instead of enipool's by name.
    pub runtime_choice: bool,
}

impl Default for Join {
    fn default() -> Self {
        Join { start_agent: true, startup_taint: true, runtime_choice: false }
    }
}

#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node (and ENIPool) name.
    pub name: String,
    /// EC2 instance.
    pub instance_id: String,
    pub az: String,
    pub netns: String,
    pub primary_ip: Ipv4Addr,
    /// `<run dir>/nodes/<name>`.
    pub dir: PathBuf,
    /// The runtime's CNI view of this node.
    pub driver: CniDriver,
    /// Supervisor name of its agent.
    pub agent: String,
    /// Its containerd, when the platform runs [`crate::Runtime::Containerd`]; the kubelet then
    /// creates pods through the CRI instead of [`NodeInfo::driver`].
    pub containerd: Option<crate::containerd::NodeRuntime>,
}

impl NodeInfo {
    /// `/run/netns/<netns>`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(fabric::sh::NETNS_DIR).join(&self.netns)
    }
}

/// Environment of the operator: its kubeconfig and the credentials its IAM policy is bound to.
fn operator_env(kubeconfig: PathBuf) -> Vec<(String, OsString)> {
    vec![
        ("KUBECONFIG".into(), kubeconfig.into()),
        ("AWS_ACCESS_KEY_ID".into(), super::OPERATOR_ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ("AWS_REGION".into(), REGION.into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("RUST_LOG".into(), std::env::var_os("ENIPOOL_E2E_LOG").unwrap_or("info".into())),
        ("NO_COLOR".into(), "1".into()),
    ]
}

impl Cluster {
    /// Starts operator replica `i` (`operator-<i>`): the chart's flags ([`crate::flags`])
    /// with test timings.
    /// On the platform's own API each replica is a user of its own, named as its identity (the
    /// Lease holder), so that one replica can be cut off from the API
    /// ([`super::kube::KubeEnv::freeze_user`]).
    /// On a containerd platform the replica is a pod from the operator's image instead of a
    /// process ([`crate::Runtime::Containerd`]).
    pub async fn start_operator(&self, i: usize) -> Result<()> {
        use crate::flags::{operator_args, operator_flags};
        let identity = format!("operator-{i}");
        let kubeconfig = match self.kube.is_local() {
            true => {
                let path = self.run_dir().join(format!("{identity}.kubeconfig"));
                self.kube.write_kubeconfig_for_user(&path, &identity)?;
                path
            }
            false => self.kube.kubeconfig.clone(),
        };
        let mut f = operator_flags(&self.name, &identity);
        f.ec2_endpoint = Some(self.sim().endpoint_url());
        f.region = Some(REGION.into());
        f.metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.free_port()?));
        f.lease_namespace = self.names.lease_namespace.clone();
        f.lease_name = self.names.lease_name.clone();
        // On an external API: the run's Nodes only, never the cluster's own.
        let selectors = [self.names.selector(), self.spec.managed_node_selector.clone()];
        let selectors: Vec<String> = selectors.into_iter().flatten().collect();
        f.node_selector = (!selectors.is_empty()).then(|| selectors.join(","));
        // Test timings: quick failover, resync, GC and staleness.
        f.lease_duration_seconds = 6;
        f.resync_seconds = 10;
        f.gc_interval_seconds = 10;
        f.leak_grace_seconds = 20;
        f.agent_stale_seconds = 60;
        f.workers = 4;
        f.ip_family = self.spec.ip_family;
        let mut args = operator_args(&f);
        args.extend(self.spec.operator_args.iter().cloned());
        if self.spec.runtime == crate::Runtime::Containerd {
            return self.start_operator_pod(&identity, args, operator_env(kubeconfig)).await;
        }
        let spec = ProcSpec {
            program: self.bins.operator.clone(),
            args,
            env: operator_env(kubeconfig),
            log: self.run_dir().join("logs").join(format!("{identity}.log")),
        };
        self.core.procs.start(&identity, spec).map(drop)
    }

    /// Launches an instance, registers its Node, installs CNI, starts its agent. Returns the node.
    pub async fn join_node(&self) -> Result<NodeInfo> {
        self.join_node_with(Join::default()).await
    }

    /// [`Cluster::join_node`] with choices a node that runs another CNI first needs.
    pub async fn join_node_with(&self, how: Join) -> Result<NodeInfo> {
        let homes: Vec<usize> = (self.spec.subnets.iter().enumerate())
            .filter(|(_, s)| s.role == "nodes")
            .map(|(i, _)| i)
            .collect();
        ensure!(!homes.is_empty(), "no subnet of role nodes");
        let joined = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).len();
        let home = homes[joined % homes.len()];
        let subnet = self.subnet_ids[home].clone();
        let az = self.spec.subnets[home].az.to_string();
        let req = RunReq {
            image_id: "ami-0e2e0e2e0e2e0e2e0".into(),
            instance_type: self.spec.instance_type.clone(),
            count: 1,
            subnet_id: subnet,
            groups: vec![self.sg_id.clone()],
            delete_on_termination: true,
            tags: [("enipool-e2e/cluster".to_string(), self.name.clone())].into(),
            ..Default::default()
        };
        let sim = self.sim.clone().context("simulator")?;
        let ids = wait::blocking(move || sim.run_instances(&req)).await?;
        let instance_id = ids.first().context("RunInstances returned no instance")?.clone();
        let f = self.fabric().clone();
        let netns = f.node_netns(&instance_id).with_context(|| {
            format!("the fabric made no netns for {instance_id}: {:?}", f.hook_errors())
        })?;
        let primary_ip = f.primary_ip(&instance_id).context("primary IP of the new instance")?;
        let name = self.names.node_name(primary_ip, REGION);
        let dir = self.run_dir().join("nodes").join(&name);
        let mut driver = self.install_cni(&name, &dir, &netns, self.node_images.is_empty())?;
        if how.runtime_choice {
            driver.network = fabric::cnidriver::RUNTIME_CHOICE.into();
        }
        let containerd = match self.node_images.is_empty() {
            false => Some(
                crate::containerd::start(
                    &self.core.procs,
                    &name,
                    &dir,
                    Some(&PathBuf::from(fabric::sh::NETNS_DIR).join(&netns)),
                    &driver.cni_bin_dirs[0],
                    &driver.conf_dir,
                    &self.node_images,
                )
                .await?,
            ),
            true => None,
        };
        self.register_node(&name, &instance_id, &az, primary_ip, how.startup_taint).await?;
        let info = NodeInfo {
            name: name.clone(),
            instance_id,
            az,
            netns,
            primary_ip,
            dir,
            driver,
            agent: format!("agent-{name}"),
            containerd,
        };
        if let Some(id) = &self.agent_identity {
            let pod = format!("enipool-agent-{name}");
            let token = id.token_on(&self.kube.client, &name, &pod, None).await?;
            self.kube.write_kubeconfig_with_token(&info.dir.join(AGENT_KUBECONFIG), &token)?;
        }
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).insert(name, info.clone());
        if how.start_agent {
            self.start_agent(&info).await?;
        }
        Ok(info)
    }

    /// The node's CNI directories, the chained plugins linked in as the node image would have
    /// them, and the chart's ConfigMap (the rendered conflist and the install script) where the
    /// agent pod mounts it. With `copy_shim` the platform installs the shim itself, as the
    /// install-cni init container does on a containerd node; the agent writes the conflist into
    /// the CNI config dir once it can serve.
    fn install_cni(
        &self,
        node: &str,
        dir: &std::path::Path,
        netns: &str,
        copy_shim: bool,
    ) -> Result<CniDriver> {
        let (bin, conf) = (dir.join("cni-bin"), dir.join("cni-conf"));
        let staged = dir.join("cni-install");
        for d in
            [&bin, &conf, &staged, &dir.join("run"), &dir.join("state"), &dir.join("del-journal")]
        {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        if copy_shim {
            std::fs::copy(&self.bins.cni, bin.join("enipool-cni"))
                .context("installing enipool-cni")?;
        }
        std::fs::copy(crate::agent_pod::install_script(), staged.join("install-cni.sh"))
            .context("staging install-cni.sh")?;
        for p in CHAINED_PLUGINS {
            let src = PathBuf::from("/usr/lib/cni").join(p);
            if !src.exists() {
                anyhow::bail!(
                    "{} missing: install Debian's containernetworking-plugins (scripts/install-deps)",
                    src.display()
                );
            }
            // Files, as a node image has them (a symlink to the machine's /usr/lib/cni would
            // dangle in the install-cni container, which sees only this dir).
            let dst = bin.join(p);
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
            }
        }
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "plugins": [
                {
                    "type": "enipool-cni",
                    "agentSocket": dir.join("run/cni.sock"),
                    "mtu": MTU,
                    "delJournalDir": dir.join("del-journal"),
                    // Not in the chart's conflist: the shim's log, for failure reports.
                    "logFile": dir.join("cni.log"),
                },
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            ]
        });
        std::fs::write(staged.join(STAGED_CONFLIST), serde_json::to_string_pretty(&conflist)?)?;
        tracing::debug!(node, "CNI installed");
        Ok(CniDriver {
            bin: self.cni_driver.clone(),
            conf_dir: conf,
            cni_bin_dirs: vec![bin],
            cache_dir: dir.join("cni-cache"),
            network: NETWORK_NAME.into(),
            host_netns: Some(netns.to_string()),
        })
    }

    /// Creates the Node object as the kubelet registers it, and marks it Ready.
    async fn register_node(
        &self,
        name: &str,
        instance: &str,
        az: &str,
        ip: Ipv4Addr,
        startup_taint: bool,
    ) -> Result<()> {
        let api: Api<Node> = Api::all(self.kube.client.clone());
        let mut labels = serde_json::json!({
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            enipool_crds::ZONE_LABEL: az,
            "topology.kubernetes.io/region": REGION,
            enipool_crds::INSTANCE_TYPE_LABEL: self.spec.instance_type,
            "enipool-e2e/cluster": self.name,
        });
        labels.as_object_mut().context("labels")?.extend(self.names.labels());
        // Ready once, no heartbeats: on a real API the node lifecycle controller marks the Node
        // NotReady later and taints it; the kubelet's Pods tolerate that, and neither the
        // operator nor the agent looks at Node readiness.
        // Registered with the startup taint, as a node group configured for enipool does.
        let mut taints = self.names.node_taints();
        if let Some(t) = taints.as_array_mut().filter(|_| startup_taint) {
            t.push(serde_json::json!({"key": STARTUP_TAINT, "effect": "NoSchedule"}));
        }
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"providerID": format!("aws:///{az}/{instance}"), "taints": taints},
        }))?;
        api.create(&PostParams::default(), &node)
            .await
            .with_context(|| format!("creating Node {name}"))?;
        let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let status = serde_json::json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "enipool-e2e kubelet", "lastHeartbeatTime": now,
                            "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": ip.to_string()},
                          {"type": "Hostname", "address": name}],
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("marking Node {name} Ready"))?;
        Ok(())
    }

    /// Starts (or starts again after a kill) the agent of a node, with the chart's flags: as a
    /// process of the platform, or on a containerd node as the DaemonSet's pod from its image.
    pub async fn start_agent(&self, n: &NodeInfo) -> Result<()> {
        if let Some(rt) = &n.containerd {
            return self.start_agent_pod(n, rt).await;
        }
        if self.core.procs.names().contains(&n.agent) {
            return self.core.procs.restart(&n.agent).map(drop);
        }
        let mut f = self.agent_flags(n)?;
        f.netns = Some(n.netns_path().display().to_string());
        f.cni_conf_source =
            Some(n.dir.join("cni-install").join(STAGED_CONFLIST).display().to_string());
        f.cni_conf_dir = Some(n.driver.conf_dir.display().to_string());
        let mut args = crate::flags::agent_args(&f);
        args.extend(self.spec.agent_args.iter().cloned());
        let own = n.dir.join(AGENT_KUBECONFIG);
        let kubeconfig = if own.exists() { own } else { self.kube.kubeconfig.clone() };
        let env = vec![
            ("KUBECONFIG".into(), kubeconfig.into()),
            ("RUST_LOG".into(), std::env::var_os("ENIPOOL_E2E_LOG").unwrap_or("info".into())),
            ("NO_COLOR".into(), "1".into()),
            (crate::flags::MALLOC_ARENA_MAX.0.into(), crate::flags::MALLOC_ARENA_MAX.1.into()),
        ];
        let spec = ProcSpec {
            program: self.bins.agent.clone(),
            args,
            env,
            log: self.run_dir().join("logs").join(format!("{}.log", n.agent)),
        };
        self.core.procs.start(&n.agent, spec).map(drop)
    }

    /// The chart's agent flags with the node's paths and test timings; the caller says where the
    /// host netns and the CNI config are, which differ between a process and a pod.
    pub(crate) fn agent_flags(&self, n: &NodeInfo) -> Result<crate::flags::AgentFlags> {
        let d = |s: &str| n.dir.join(s).display().to_string();
        let mut f = crate::flags::AgentFlags::new(&n.name);
        f.socket = d("run/cni.sock");
        f.state_dir = d("state");
        f.del_journal_dir = d("del-journal");
        f.metrics_addr = format!("127.0.0.1:{}", self.free_port()?);
        f.introspection_addr = format!("127.0.0.1:{}", self.free_port()?);
        f.mtu = MTU;
        f.leak_grace_seconds = 30;
        f.publish_debounce_ms = 200;
        f.cni_conf_name = CONFLIST_NAME.into();
        f.startup_taint = Some(STARTUP_TAINT.into());
        f.annotate_pod_ip = self.spec.annotate_pod_ip;
        f.ip_family = self.spec.ip_family.as_str().into();
        Ok(f)
    }

    /// `kill -9` of a node's agent (the container's process on a containerd node).
    pub async fn kill9_agent(&self, n: &NodeInfo) -> Result<()> {
        match n.containerd {
            Some(_) => self.kill9_agent_pod(n).await,
            None => self.core.procs.kill9(&n.agent),
        }
    }

    /// Stops a node's agent gracefully, as when its DaemonSet pod leaves the node.
    pub async fn stop_agent(&self, n: &NodeInfo) -> Result<()> {
        match n.containerd {
            Some(_) => self.stop_agent_pod(n).await,
            None => {
                self.core.procs.stop(&n.agent);
                Ok(())
            }
        }
    }

    /// The `host:port` of a node's agent's introspection endpoint (`/v1/allocations`, ...), as
    /// its current process was started with.
    pub async fn agent_introspection_addr(&self, node: &str) -> Result<String> {
        let n = self.node(node)?;
        if n.containerd.is_some() {
            let addr = self.agent_pod_introspection_addr(node).await;
            return addr.with_context(|| format!("no agent pod on {node}"));
        }
        let spec = self.core.procs.spec(&n.agent).with_context(|| format!("no {}", n.agent))?;
        let addr = spec.args.iter().find_map(|a| a.strip_prefix("--introspection-addr="));
        addr.map(str::to_string)
            .with_context(|| format!("{} runs without --introspection-addr", n.agent))
    }

    /// Terminates a node's instance (as an ASG scale-in would), stops its agent and deletes its
    /// Node object (as the cloud node controller would).
    pub async fn terminate_node(&self, name: &str) -> Result<()> {
        let n = self.node(name)?;
        self.stop_agent(&n).await?;
        if let Some(rt) = &n.containerd {
            self.core.procs.stop(&rt.proc_name);
        }
        let sim = self.sim.clone().context("simulator")?;
        let id = n.instance_id.clone();
        wait::blocking(move || sim.terminate_instances(&[id])).await?;
        let api: Api<Node> = Api::all(self.kube.client.clone());
        api.delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting Node {name}"))?;
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        self.forget_pods_of(name);
        Ok(())
    }

    /// Runs `enipool-agent support` for node `name` as `kubectl exec` into its agent pod would
    /// (the agent's own flags, the node's network namespace) and unpacks the archive into a
    /// fresh directory, which it returns.
    pub async fn support_bundle(&self, name: &str) -> Result<PathBuf> {
        let n = self.node(name)?;
        let out = n.dir.join("support");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out)?;
        let archive = out.join("bundle.tgz");
        if n.containerd.is_some() {
            let bytes = self.exec_in_agent_pod(&n, &["support", "--output", "-"]).await?;
            std::fs::write(&archive, bytes)?;
        } else {
            let spec =
                self.core.procs.spec(&n.agent).context("the node's agent was never started")?;
            let mut cmd = std::process::Command::new(&spec.program);
            cmd.args(&spec.args).arg("support").arg("--output").arg(&archive);
            let o = wait::blocking(move || cmd.output())
                .await
                .context("running enipool-agent support")?;
            ensure!(o.status.success(), "support: {}", String::from_utf8_lossy(&o.stderr));
        }
        let mut tar = std::process::Command::new("tar");
        tar.arg("-xzf").arg(&archive).arg("-C").arg(&out);
        let o = wait::blocking(move || tar.output()).await.context("tar")?;
        ensure!(o.status.success(), "unpacking: {}", String::from_utf8_lossy(&o.stderr));
        Ok(out)
    }

    /// The bearer token the node's agent uses, if it has its own.
    pub fn agent_token(&self, name: &str) -> Result<Option<String>> {
        let path = self.node(name)?.dir.join(AGENT_KUBECONFIG);
        let Ok(text) = std::fs::read_to_string(path) else { return Ok(None) };
        Ok(text.lines().find_map(|l| l.trim().strip_prefix("token:")).map(|t| t.trim().to_string()))
    }
}
