//! The test bench of `cni_chain.rs`: the EC2 simulator, the VPC fabric, the test platform's
//! Kubernetes API and real `enipool-agent` processes, with the test playing the operator by hand
//! (EC2 calls through the real SDK client, ENIPool status written with server-side apply under the
//! operator's field manager) and the container runtime (libcni driver running the node's conflist).
//!
//! Everything is torn down by `Drop` (agents, namespaces, servers), also when a test panics; a
//! panicking test first prints diagnostics (agent logs, host rules, allocations, pool status).
//!
//! The bench's parts: `operator.rs` plays the operator (instances, ENIs, the Node and ENIPool
//! objects, the status), `node.rs` plays the node (CNI install, the agent process, pods through
//! libcni), `diagnostics.rs` gathers what a failure needs, `probes.rs` waits and probes
//! (HTTP, TCP, ping).

// Loaded through `#[path]`, this file owns its directory: `mod x;` here is tests/cni_chain/x.rs.
#[path = "../common/binaries.rs"]
mod binaries;
mod diagnostics;
mod node;
mod operator;
mod probes;

use cluster::procs::{self, Supervisor};
use cluster::Platform;
use ec2sim::Ec2Sim;
use fabric::cnidriver::{self, CniDriver};
use fabric::{self, Fabric};
use kubeapi::KubeApiConfig;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use probes::{http_get, ping, sh_in, tcp_fetch, wait_for, TcpMarker};

/// The VPC of every test.
pub const VPC_CIDR: &str = "10.0.0.0/16";
/// Subnets: nodes are launched in one of them; secondary ENIs go to the node's own subnet.
pub const SUBNETS: [&str; 2] = ["10.0.1.0/24", "10.0.2.0/24"];
/// Instance type (3 ENIs x 10 addresses).
pub const INSTANCE_TYPE: &str = "m5.large";
pub const AZ: &str = "us-west-2a";
/// The agents' host repair period (`--host-repair-interval-seconds`).
pub const REPAIR_PERIOD_SECS: u64 = 2;
/// MTU of the agent's ENIs (the chart's default).
pub const MTU: u32 = 9001;
/// MTU of pod interfaces in the conflist (the chart's `agent.podMTU`), apart from the ENIs'.
pub const POD_MTU: u32 = 8500;
/// Network name of the conflist.
pub const NETWORK: &str = "enipool";
/// Cooldown the "operator" publishes (seconds).
pub const COOLDOWN_SECONDS: i32 = 1;
/// Debian's plugins chained after enipool's.
pub const DEBIAN_PLUGINS: [&str; 4] = ["portmap", "bandwidth", "tuning", "loopback"];
/// The sysctl the chained `tuning` plugin sets in the pod (`1`, not the kernel default `0`, so
/// the test can see that tuning really ran in the pod's netns).
pub const TUNING_SYSCTL: &str = "net.ipv4.conf.all.log_martians";

/// Tests share the kernel and `/run/cni`: one at a time even without `--test-threads=1`.
static SERIAL: Mutex<()> = Mutex::new(());

/// The project's binaries and the libcni driver.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `enipool-agent`.
    pub agent: PathBuf,
    /// `enipool-cni`.
    pub cni: PathBuf,
    pub driver: PathBuf,
}

impl Bins {
    /// Finds `enipool-agent` and `enipool-cni` in the workspace's target dir (they are not
    /// dependencies of this crate, so `cargo test` does not build them) and fails loudly when they
    /// are missing or older than their sources: a stale agent would test yesterday's code.
    fn locate() -> Bins {
        let build = "cargo build -p enipool-agent -p enipool-cni";
        let agent = binaries::fresh_binary(
            "enipool-agent",
            &["node-agent/src", "cni-shim/src", "crds/src"],
            build,
        );
        let cni = binaries::fresh_binary("enipool-cni", &["cni-shim/src"], build);
        let driver = cnidriver::build(&cnidriver::default_build_dir()).expect(
            "building the libcni driver (needs golang-1.19-go, golang-github-appc-cni-dev)",
        );
        Bins { agent, cni, driver }
    }
}

/// What has to go away at the end, in order: agents, namespaces, servers.
struct Base {
    rt: tokio::runtime::Runtime,
    fabric: Arc<Fabric>,
    procs: Supervisor,
    platform: Option<Platform>,
}

impl Drop for Base {
    fn drop(&mut self) {
        self.procs.stop_all();
        self.fabric.teardown();
        if let Some(p) = self.platform.take() {
            self.rt.block_on(p.shutdown());
        }
    }
}

/// A node as the test built it.
#[derive(Debug, Clone)]
pub struct Node {
    /// Short label (`a`, `b`) used in names.
    pub label: String,
    /// Node and ENIPool name.
    pub name: String,
    /// EC2 instance.
    pub instance_id: String,
    pub netns: String,
    pub primary_ip: Ipv4Addr,
    /// The public IP the fabric's "IGW" maps the primary IP to.
    pub public_ip: Ipv4Addr,
    pub primary_eni: String,
    /// Secondary ENI at device index 1, if any.
    pub secondary_eni: Option<String>,
    /// `<run dir>/nodes/<label>`.
    pub dir: PathBuf,
    /// The runtime's CNI view: the full conflist (enipool + portmap + tuning).
    pub driver: CniDriver,
    /// The same network (name and cache) with only enipool + tuning, for CHECK.
    pub check_driver: CniDriver,
    /// The agent, when the node runs one.
    pub agent: Option<AgentInfo>,
    /// The operator status last applied (server-side apply, operator field manager).
    pub status: Value,
}

/// A node's agent process.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub proc_name: String,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: SocketAddr,
    /// `/v1/allocations`, `/v1/enis`.
    pub introspection: SocketAddr,
    pub socket: PathBuf,
}

impl Node {
    /// The agent (panics for a node without one).
    pub fn agent(&self) -> &AgentInfo {
        self.agent.as_ref().unwrap_or_else(|| panic!("node {} runs no agent", self.label))
    }

    /// Secondary addresses the "operator" listed for an ENI (device index).
    pub fn pool_ips(&self, device_index: i64) -> Vec<Ipv4Addr> {
        self.status["enis"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["deviceIndex"].as_i64() == Some(device_index))
            .flat_map(|e| e["ips"].as_array().cloned().unwrap_or_default())
            .filter_map(|ip| ip.as_str().and_then(|s| s.parse().ok()))
            .collect()
    }

    /// `/run/netns/<netns>`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new(fabric::sh::NETNS_DIR).join(&self.netns)
    }
}

/// What to build for a node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Short label (`a`, `b`).
    pub label: &'static str,
    /// Index into [`SUBNETS`].
    pub subnet: usize,
    /// Secondary addresses assigned to the primary ENI.
    pub primary_ips: i32,
    /// A secondary ENI (device index 1, same subnet) with this many secondary addresses.
    pub secondary_eni_ips: Option<i32>,
    /// Run an agent (a node used only as a traffic source needs none).
    pub agent: bool,
}

/// A pod sandbox wired through libcni.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub netns: String,
    /// `/run/netns/<netns>`.
    pub path: PathBuf,
    /// Sandbox (container) id.
    pub container_id: String,
    /// Its address from the ADD result.
    pub ip: Ipv4Addr,
    pub result: Value,
}

impl Pod {
    /// `CNI_ARGS` of this pod, as the kubelet passes them.
    pub fn args(&self) -> Vec<(&str, &str)> {
        vec![
            ("K8S_POD_NAMESPACE", "default"),
            ("K8S_POD_NAME", self.name.as_str()),
            ("K8S_POD_INFRA_CONTAINER_ID", self.container_id.as_str()),
        ]
    }
}

pub struct Env {
    /// Runner's Kubernetes client.
    pub client: kube::Client,
    /// The "operator's" EC2 client (real SDK against the simulator).
    pub ec2: aws_sdk_ec2::Client,
    pub vpc_id: String,
    /// Subnet ids, as [`SUBNETS`].
    pub subnet_ids: Vec<String>,
    /// Security group of the nodes.
    pub sg_id: String,
    /// Kubeconfig the agents use.
    pub kubeconfig: PathBuf,
    pub bins: Bins,
    nodes: Mutex<Vec<Node>>,
    base: Base,
    _serial: MutexGuard<'static, ()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== cni_chain diagnostics (before teardown) =====\n{}",
                self.diagnostics()
            );
        }
    }
}

impl Env {
    /// Builds the bench: fails loudly (never skips) without root or Debian's CNI plugins.
    pub fn new() -> Env {
        assert!(
            nix::unistd::geteuid().is_root(),
            "cni_chain needs root (network namespaces, veths, nftables, iptables): run it as root"
        );
        for p in DEBIAN_PLUGINS {
            let path = Path::new("/usr/lib/cni").join(p);
            assert!(
                path.is_file(),
                "{} missing: install Debian's containernetworking-plugins",
                path.display()
            );
        }
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("ENIPOOL_E2E_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let bins = Bins::locate();
        let _ = procs::kill_stale_processes();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let fabric = Arc::new(Fabric::new().expect("building the VPC fabric"));
        let mut base = Base { rt, fabric, procs: Supervisor::default(), platform: None };
        // From here a panic drops `base`, which tears down what exists.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut platform =
            Platform::builder(VPC_CIDR).fabric(base.fabric.clone()).vpc_tag("Name", "cni-chain");
        for cidr in SUBNETS {
            platform = platform.subnet(cidr, AZ, &[]);
        }
        let platform = base
            .rt
            .block_on(platform.kube(KubeApiConfig::default()).crds().start())
            .expect("starting the platform (EC2 simulator, VPC, fabric subnets, Kubernetes API)");
        let kubeconfig = base.fabric.run_dir().join("kubeconfig");
        platform.kube().write_kubeconfig(&kubeconfig).expect("writing the kubeconfig");
        let client = base.rt.block_on(async { platform.kube().client().expect("kube client") });
        let endpoint = platform.sim.endpoint_url();
        let (vpc_id, subnet_ids, sg_id) =
            (platform.vpc_id.clone(), platform.subnet_ids.clone(), platform.sg_id.clone());
        base.platform = Some(platform);
        let ec2 = base.rt.block_on(async {
            use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
            let conf = aws_config::defaults(BehaviorVersion::latest())
                .endpoint_url(&endpoint)
                .region(Region::new("us-west-2"))
                .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "static"))
                .load()
                .await;
            aws_sdk_ec2::Client::new(&conf)
        });
        Env {
            client,
            ec2,
            vpc_id,
            subnet_ids,
            sg_id,
            kubeconfig,
            bins,
            nodes: Mutex::new(Vec::new()),
            base,
            _serial: serial,
        }
    }

    pub fn fabric(&self) -> &Fabric {
        &self.base.fabric
    }

    pub fn sim(&self) -> &Ec2Sim {
        &self.base.platform.as_ref().expect("platform").sim
    }

    /// Runs a future on the bench's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.base.rt.block_on(f)
    }
}
