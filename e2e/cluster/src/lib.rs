//! The platform plays the cluster: EC2 simulator + VPC fabric + Kubernetes API, the CRDs and a
//! policy, the operator (two replicas) and one agent per node as real processes, nodes that join
//! (RunInstances, a Node object, the shim and conflist installed the way the chart's installer
//! does), and a kubelet for pods (Pod object, sandbox netns, CNI ADD/DEL through libcni, pod IP in
//! the Pod status).
//!
//! A [`Cluster`] tears everything down when it is finished or dropped (timeouts drop the scenario
//! future), and on SIGINT/SIGTERM through [`teardown_all`]: processes first, then what the run
//! created in an external Kubernetes API ([`external`]), then namespaces (links and nftables tables
//! go with them), then the servers and the run directory.
//!
//! The simulator, its VPC and the fabric's subnets come from [`platform`], the builder the tests
//! that run enipool's processes themselves use too.
//!
//! With `--kubeconfig` the Kubernetes API is an external one (a real cluster's) instead of the
//! platform's; EC2 stays simulated and nodes stay network namespaces. See [`external`].

mod agent_pod;
pub mod bridge;
pub mod containerd;
pub mod cri;
pub mod cri_containers;
pub mod diag;
pub mod external;
pub mod flags;
pub mod forward;
pub mod identity;
pub mod images;
pub mod kube;
pub mod kubelet;
mod kubelet_cri;
pub mod node;
mod operator_pod;
pub mod platform;
pub mod ports;
pub mod procs;
mod spec;
mod target;
mod teardown;
pub mod wait;

use anyhow::{bail, Context, Result};
use ec2sim::Ec2Sim;
use enipool_crds::ENIPool;
use external::{ExternalRun, KubeNames};
use fabric::{cnidriver, Fabric};
use identity::AgentIdentity;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use kubelet::PodInfo;
pub use node::NodeInfo;
pub use platform::{Platform, PlatformBuilder};
pub use spec::{aws_like_faults, Bins, Runtime, Spec, SubnetSpec, DESCRIBE_LAG};
pub use target::{Target, AWS_SETTINGS};
use teardown::TeardownGuard;
pub use teardown::{teardown_all, Core};

/// Region and zones of the simulated VPC.
pub const REGION: &str = "us-west-2";
/// The access key the operator signs its EC2 calls with: the principal the IAM policy binds.
pub const OPERATOR_ACCESS_KEY: &str = "enipool-operator";
/// The operator's IAM policy as users get it, with its placeholders.
pub const IAM_POLICY_DOC: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/iam-policy.json"));
/// Tag key the policies select subnets and security groups by.
pub const ROLE_TAG: &str = "enipool-e2e/role";
/// Namespace of the pods the kubelet runs, on the platform's API ([`KubeNames`] has the run's).
pub const POD_NAMESPACE: &str = "default";
pub use ports::PORTS;
/// Namespace of the operator's Lease, on the platform's API.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// A running platform cluster.
pub struct Cluster {
    /// The spec it was built from.
    pub spec: Spec,
    /// Cluster name (tags, `--cluster-name`).
    pub name: String,
    pub core: Arc<Core>,
    /// The EC2 simulator.
    pub sim: Option<Arc<Ec2Sim>>,
    pub kube: kube::KubeEnv,
    /// What the run is called in that API.
    pub names: KubeNames,
    pub bins: Bins,
    /// The libcni driver binary.
    pub cni_driver: PathBuf,
    /// The image archives the nodes' containerd import ([`Runtime::Containerd`]): the pause
    /// image first, then enipool's agent and CNI images.
    pub node_images: Vec<PathBuf>,
    /// VPC id, subnet ids by role, security group id.
    pub vpc_id: String,
    /// Subnet ids, in spec order.
    pub subnet_ids: Vec<String>,
    /// Security group of the nodes.
    pub sg_id: String,
    /// The agents' ServiceAccount, RBAC and admission policy, when the platform installed them
    /// (its own API); the agents then authenticate with tokens bound to a Pod on their node.
    pub agent_identity: Option<identity::AgentIdentity>,
    nodes: Mutex<BTreeMap<String, NodeInfo>>,
    pods: Mutex<BTreeMap<String, PodInfo>>,
    /// The platform's own pods on containerd (agents, operators), by pod name.
    cri_pods: tokio::sync::Mutex<BTreeMap<String, agent_pod::CriPod>>,
    /// The containerd of the control plane (the machine's own network namespace), where the
    /// operator replicas run from their image on a containerd platform.
    control_plane: tokio::sync::OnceCell<containerd::NodeRuntime>,
    finished: bool,
}

impl Cluster {
    /// Brings the whole platform up for `spec`, on the platform's Kubernetes API or the external
    /// one of `target.kubeconfig`; fails (saying so) against real EC2, which cannot host the
    /// fabric's nodes.
    pub async fn up(target: &crate::Target, mut spec: Spec) -> Result<Cluster> {
        if let Some(why) = target.real_ec2() {
            bail!(
                "scenario needs the EC2 simulator (its nodes are network namespaces the simulator's \
                 instances are mirrored into) and cannot run against real EC2 ({why}); drop \
                 --ec2-endpoint and unset AWS_PROFILE/AWS_REGION/AWS_DEFAULT_REGION (--kubeconfig \
                 alone runs it against a real Kubernetes API)"
            );
        }
        if target.runtime != Runtime::Libcni {
            spec.runtime = target.runtime;
        }
        if spec.runtime == Runtime::Containerd {
            containerd::check_tools()?;
        }
        let step = |msg: &str| {
            if spec.progress {
                eprintln!("==> {msg}");
            }
        };
        let bins = Bins::locate()?;
        step("building the VPC (network namespaces: a VPC router, an internet host)");
        let stale = wait::blocking(procs::kill_stale_processes).await;
        if !stale.is_empty() {
            tracing::warn!(?stale, "killed processes of interrupted runs");
        }
        let fabric = Arc::new(wait::blocking(Fabric::new).await?);
        let core = Core::register(fabric.clone());
        // From here on a failure drops `core`, which tears the fabric down.
        let mut guard = TeardownGuard(Some(core.clone()));
        let run_dir = fabric.run_dir().to_path_buf();
        let driver_dir = cnidriver::default_build_dir();
        step("building the libcni driver (the container runtime's CNI client)");
        let cni_driver = wait::blocking(move || cnidriver::build(&driver_dir)).await?;
        let node_images = match spec.runtime {
            Runtime::Libcni => Vec::new(),
            Runtime::Containerd => {
                step("building the pause image and enipool's images for the nodes' containerd");
                let dir = cnidriver::default_build_dir();
                let pause = wait::blocking(move || containerd::build_pause_image(&dir)).await?;
                let b = bins.clone();
                let built = wait::blocking(move || images::archives(&b)).await?;
                let ours = ["agent", "cni"].map(|i| built.join(format!("enipool-{i}.oci.tar")));
                [vec![pause], ours.to_vec()].concat()
            }
        };
        step("starting the EC2 simulator");

        let (primary, secondary) = spec.vpc_blocks.split_first().context("no VPC block")?;
        let mut vpc = Platform::builder(primary)
            .ec2(ec2sim::Config {
                timing: spec.timing,
                faults: spec.faults.clone(),
                ..Default::default()
            })
            .fabric(fabric.clone())
            .vpc_tag("Name", "enipool-e2e")
            .sg_tag(ROLE_TAG, "nodes");
        for b in secondary {
            vpc = vpc.secondary_block(b);
        }
        for s in &spec.subnets {
            vpc = vpc.subnet(s.cidr, s.az, &[(ROLE_TAG, s.role)]);
        }
        if spec.ip_family == enipool_crds::IpFamily::IPv6 {
            vpc = vpc.ipv6();
        }
        let Platform { sim, vpc_id, subnet_ids, sg_id, .. } = vpc.start().await?;

        let names = match &target.kubeconfig {
            Some(k) => {
                step(&format!("using the Kubernetes API of {}", k.display()));
                KubeNames::external(fabric.prefix())
            }
            None => {
                step("starting the Kubernetes API");
                KubeNames::local()
            }
        };
        let mut kube = match kube::KubeEnv::start(target.kubeconfig.as_deref(), &run_dir).await {
            Ok(k) => k,
            Err(e) => {
                sim.shutdown().await;
                return Err(e);
            }
        };
        if !kube.is_local() {
            let _ = core.external.set(Arc::new(ExternalRun::new(&kube.kubeconfig, names.clone())));
        }
        step("installing the CRDs from crds/ and an ENIPoolPolicy");
        let setup = async {
            names.scope_policy(&mut spec.policy)?;
            match core.external.get() {
                Some(x) => x.prepare(&kube.client).await?,
                None => {
                    kube::ensure_namespaces(&kube.client, &[POD_NAMESPACE, LEASE_NAMESPACE]).await?
                }
            }
            kube::install_crds(&kube.client).await?;
            kube::apply_policy(&kube.client, &names.policy, &spec.policy).await?;
            // On the platform's own API the agents run as the chart makes them: their
            // ServiceAccount, with pod-bound tokens, under the chart's admission policy.
            match kube.is_local() {
                true => {
                    let set: &[&str] =
                        if spec.annotate_pod_ip { &["agent.annotatePodIP=true"] } else { &[] };
                    AgentIdentity::install(&kube.client, "enipool", LEASE_NAMESPACE, set, None)
                        .await
                        .map(Some)
                }
                false => Ok(None),
            }
        };
        let agent_identity = match setup.await {
            Ok(id) => id,
            Err(e) => {
                kube.shutdown().await;
                sim.shutdown().await;
                return Err(e);
            }
        };
        let name = format!("e2e-{}", fabric.prefix());
        // Every EC2 call of the operator is held to the IAM document users attach to its role.
        let vars = [
            ("CLUSTER_NAME", name.as_str()),
            ("REGION", REGION),
            ("ACCOUNT_ID", ec2sim::ACCOUNT_ID),
            ("VPC_ID", vpc_id.as_str()),
        ];
        let policy = ec2sim::iam::Policy::parse(IAM_POLICY_DOC, &vars)
            .map_err(|e| anyhow::anyhow!("docs/iam-policy.json: {e}"))?;
        sim.enforce_iam(Some(policy), REGION, OPERATOR_ACCESS_KEY);
        let c = Cluster {
            name,
            core,
            sim: Some(Arc::new(sim)),
            kube,
            names,
            bins,
            cni_driver,
            node_images,
            vpc_id,
            subnet_ids,
            sg_id,
            agent_identity,
            nodes: Mutex::new(BTreeMap::new()),
            pods: Mutex::new(BTreeMap::new()),
            cri_pods: tokio::sync::Mutex::new(BTreeMap::new()),
            control_plane: tokio::sync::OnceCell::new(),
            finished: false,
            spec,
        };
        guard.0 = None;
        let start = async {
            c.step(&format!("starting enipool-operator ({} replicas)", c.spec.operator_replicas));
            for i in 0..c.spec.operator_replicas {
                c.start_operator(i).await?;
            }
            for i in 0..c.spec.nodes {
                c.step(&format!(
                    "node {}/{}: launching an {} instance, registering the Node, installing the \
                     CNI plugin, starting enipool-agent",
                    i + 1,
                    c.spec.nodes,
                    c.spec.instance_type
                ));
                c.join_node().await?;
            }
            Ok::<(), anyhow::Error>(())
        };
        if let Err(e) = start.await {
            return Err(c.finish(Err(e)).await.unwrap_err());
        }
        Ok(c)
    }

    /// Prints a bring-up step when the spec asks for progress.
    pub fn step(&self, msg: &str) {
        if self.spec.progress {
            eprintln!("==> {msg}");
        }
    }

    /// The run directory (removed at teardown).
    pub fn run_dir(&self) -> &Path {
        self.core.fabric.run_dir()
    }

    pub fn fabric(&self) -> &Arc<Fabric> {
        &self.core.fabric
    }

    pub fn sim(&self) -> &Ec2Sim {
        self.sim.as_ref().expect("simulator running")
    }

    /// Namespace of the kubelet's Pods.
    pub fn pod_namespace(&self) -> &str {
        &self.names.pod_namespace
    }

    /// The runner's Kubernetes client.
    pub fn client(&self) -> &::kube::Client {
        &self.kube.client
    }

    /// `kubectl` against the cluster (blocking; fine for short calls).
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kube.kubectl(args)
    }

    /// A free 127.0.0.1 port for a process's HTTP endpoints ([`ports::free_local_port`]: below
    /// the kernel's ephemeral range, see there why).
    pub fn free_port(&self) -> Result<u16> {
        ports::free_local_port()
    }

    /// Joined nodes by name.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn node(&self, name: &str) -> Result<NodeInfo> {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .with_context(|| format!("no node {name}"))
    }

    /// Running pods by name.
    pub fn pods(&self) -> Vec<PodInfo> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// The ENIPool of a node.
    pub async fn pool(&self, node: &str) -> Result<ENIPool> {
        let api: ::kube::Api<ENIPool> = ::kube::Api::all(self.kube.client.clone());
        api.get_opt(node).await?.with_context(|| format!("no ENIPool {node} yet"))
    }

    /// Ends the scenario: on error, prints diagnostics; then tears everything down. Returns `r`.
    pub async fn finish(mut self, r: Result<()>) -> Result<()> {
        let r = match r {
            Ok(()) => self.check_health().await,
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            let report = self.diagnose();
            eprintln!("===== diagnostics for {} ({e:#}) =====\n{report}", self.spec.name);
            // For debugging by hand: keep the failed cluster up for a while.
            if let Some(secs) =
                std::env::var("ENIPOOL_E2E_PAUSE_ON_FAIL").ok().and_then(|s| s.parse().ok())
            {
                eprintln!(
                    "ENIPOOL_E2E_PAUSE_ON_FAIL: keeping the cluster for {secs}s (KUBECONFIG={})",
                    self.kube.kubeconfig.display()
                );
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
        }
        if let Some(x) = self.core.external.get().cloned() {
            x.drain(&self).await;
        }
        self.finished = true;
        self.shutdown().await;
        let left = self.core.external.get().map(|x| x.leftovers()).unwrap_or_default();
        match r {
            Ok(()) if !left.is_empty() => bail!("the run left objects in the cluster: {left:?}"),
            r => r,
        }
    }

    /// Checks that nothing went wrong behind the scenario's back: every process still runs (unless
    /// the scenario stopped it) and the fabric mirrored every EC2 change.
    async fn check_health(&self) -> Result<()> {
        let exited = self.core.procs.exited();
        if !exited.is_empty() {
            bail!("processes exited during the scenario: {exited:?}");
        }
        let errs = self.fabric().hook_errors();
        if !errs.is_empty() {
            bail!("the VPC fabric could not mirror EC2: {errs:?}");
        }
        // A denied call the operator tolerated still means the document lacks a grant.
        if let Some(sim) = &self.sim {
            let denied = sim.iam_denials();
            if !denied.is_empty() {
                bail!(
                    "the operator made EC2 calls docs/iam-policy.json does not allow: {denied:#?}"
                );
            }
        }
        Ok(())
    }

    async fn shutdown(&mut self) {
        self.end_all_sandboxes_cri().await;
        self.end_all_agent_pods().await;
        self.end_operator_pods().await;
        let core = self.core.clone();
        wait::blocking(move || core.teardown()).await;
        if let Some(sim) = self.sim.take() {
            if let Ok(sim) = Arc::try_unwrap(sim) {
                sim.shutdown().await;
            }
        }
        self.kube.shutdown().await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped mid-scenario (timeout, panic): report what we can, synchronously.
            if self.spec.report_on_drop {
                eprintln!(
                    "===== diagnostics for {} (scenario did not finish) =====\n{}",
                    self.spec.name,
                    self.diagnose()
                );
            }
            self.core.teardown();
            // The servers stop on the runtime (they are async); the runtime outlives us.
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                if let Some(Ok(sim)) = self.sim.take().map(Arc::try_unwrap) {
                    h.spawn(sim.shutdown());
                }
                let mut kube = self.kube.take_local();
                h.spawn(async move { kube.shutdown().await });
            }
        }
    }
}
