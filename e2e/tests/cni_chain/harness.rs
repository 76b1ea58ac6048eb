//! The test bench of `cni_chain.rs`: the EC2 simulator, the VPC fabric, the test platform's
//! Kubernetes API and real `enipool-agent` processes, with the test playing the operator by hand
//! (EC2 calls through the real SDK client, ENIPool status written with server-side apply under the
//! operator's field manager) and the container runtime (libcni driver running the node's conflist).
//!
//! Everything is torn down by `Drop` (agents, namespaces, servers), also when a test panics; a
//! panicking test first prints diagnostics (agent logs, host rules, allocations, pool status).

#[path = "../common/binaries.rs"]
mod binaries;
#[path = "../common/teardown.rs"]
mod teardown;

use anyhow::{bail, Context, Result};
use enipool_crds::settings::{CapacitySource, InstanceLimits};
use enipool_crds::{ENIPool, ENIPoolSpec, OPERATOR_FIELD_MANAGER};
use enipool_e2e::cluster::procs::{self, ProcSpec, Supervisor};
use enipool_e2e::cnidriver::{self, CniDriver};
use enipool_e2e::ec2sim::state::AttachState;
use enipool_e2e::ec2sim::{self, Ec2Sim, RunReq};
use enipool_e2e::fabric::{self, Fabric};
use enipool_e2e::kubeapi::{KubeApi, KubeApiConfig};
use k8s_openapi::api::core::v1::Node as KubeNode;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The VPC of every test.
pub const VPC_CIDR: &str = "10.0.0.0/16";
/// Subnets: nodes are launched in one of them; secondary ENIs go to the node's own subnet.
pub const SUBNETS: [&str; 2] = ["10.0.1.0/24", "10.0.2.0/24"];
/// Instance type (3 ENIs x 10 addresses).
pub const INSTANCE_TYPE: &str = "m5.large";
/// Availability zone.
pub const AZ: &str = "us-west-2a";
/// MTU of the conflist and the agent (the chart's default).
pub const MTU: u32 = 9001;
/// Network name of the conflist.
pub const NETWORK: &str = "enipool";
/// Cooldown the "operator" publishes (seconds).
pub const COOLDOWN_SECONDS: i32 = 1;
/// Debian's plugins chained after enipool's.
pub const DEBIAN_PLUGINS: [&str; 3] = ["portmap", "tuning", "loopback"];
/// The sysctl the chained `tuning` plugin sets in the pod (`1`, not the kernel default `0`, so
/// the test can see that tuning really ran in the pod's netns).
pub const TUNING_SYSCTL: &str = "net.ipv4.conf.all.log_martians";

/// Tests share the kernel and `/run/cni`: one at a time even without `--test-threads=1`.
static SERIAL: Mutex<()> = Mutex::new(());

/// Polls `f` until it returns `Ok` or `timeout` passes; the error names what was awaited and the
/// last failure seen.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => {
                bail!("timed out after {:?} waiting for {what}; last seen: {e:#}", timeout)
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A minimal HTTP/1.1 GET (the agent's endpoints): `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).with_context(|| format!("reading GET {path} from {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("HTTP response without a body")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP status line in {head:?}"))?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A free port on 127.0.0.1 (for the agent's HTTP endpoints).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local addr").port()
}

/// The project's binaries and the libcni driver.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `enipool-agent`.
    pub agent: PathBuf,
    /// `enipool-cni`.
    pub cni: PathBuf,
    /// The libcni driver.
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
    sim: Option<Ec2Sim>,
    kube: Option<KubeApi>,
}

impl Drop for Base {
    fn drop(&mut self) {
        teardown::teardown(&self.rt, &self.procs, &self.fabric, self.kube.take(), self.sim.take());
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
    /// Its network namespace.
    pub netns: String,
    /// Primary private IP.
    pub primary_ip: Ipv4Addr,
    /// The public IP the fabric's "IGW" maps the primary IP to.
    pub public_ip: Ipv4Addr,
    /// Primary ENI.
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
    /// Supervisor name.
    pub proc_name: String,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: SocketAddr,
    /// `/v1/allocations`, `/v1/enis`.
    pub introspection: SocketAddr,
    /// CNI socket.
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
    /// Pod name.
    pub name: String,
    /// Sandbox netns name.
    pub netns: String,
    /// `/run/netns/<netns>`.
    pub path: PathBuf,
    /// Sandbox (container) id.
    pub container_id: String,
    /// Its address from the ADD result.
    pub ip: Ipv4Addr,
    /// The ADD result.
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

/// The bench.
pub struct Env {
    /// Runner's Kubernetes client.
    pub client: kube::Client,
    /// The "operator's" EC2 client (real SDK against the simulator).
    pub ec2: aws_sdk_ec2::Client,
    /// VPC id.
    pub vpc_id: String,
    /// Subnet ids, as [`SUBNETS`].
    pub subnet_ids: Vec<String>,
    /// Security group of the nodes.
    pub sg_id: String,
    /// Kubeconfig the agents use.
    pub kubeconfig: PathBuf,
    /// Binaries.
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
        let mut base = Base { rt, fabric, procs: Supervisor::default(), sim: None, kube: None };
        // From here a panic drops `base`, which tears down what exists.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let sim = base
            .rt
            .block_on(Ec2Sim::start(ec2sim::Config::default()))
            .expect("starting the EC2 simulator");
        sim.set_fabric_hook(base.fabric.clone());
        let vpc_id = sim.create_vpc(VPC_CIDR, &[("Name", "cni-chain")]).expect("VPC");
        let subnet_ids: Vec<String> = SUBNETS
            .iter()
            .map(|c| sim.create_subnet(&vpc_id, c, AZ, &[]).expect("subnet"))
            .collect();
        let sg_id = sim.create_security_group(&vpc_id, "nodes", &[]).expect("security group");
        for s in sim.subnets() {
            base.fabric.add_subnet(&s.id, s.cidr).expect("declaring a subnet in the fabric");
        }
        let endpoint = sim.endpoint_url();
        base.sim = Some(sim);
        let kubeconfig = base.fabric.run_dir().join("kubeconfig");
        let (kube, client) = base.rt.block_on(async {
            let api = KubeApi::start(KubeApiConfig::default()).await.expect("starting kubeapi");
            api.write_kubeconfig(&kubeconfig).expect("writing the kubeconfig");
            let client = api.client().expect("kube client");
            (api, client)
        });
        base.kube = Some(kube);
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
        base.rt.block_on(install_crds(&client)).expect("installing the CRDs");
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

    /// The fabric.
    pub fn fabric(&self) -> &Fabric {
        &self.base.fabric
    }

    /// The simulator.
    pub fn sim(&self) -> &Ec2Sim {
        self.base.sim.as_ref().expect("simulator")
    }

    /// Runs a future on the bench's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.base.rt.block_on(f)
    }

    /// Launches an instance and plays the operator for it: addresses and ENIs through the real
    /// SDK client, Node and ENIPool objects, the ENIPool status as the operator writes it. Then
    /// installs the CNI config (shim + Debian plugins + conflist) and starts the agent.
    pub fn launch(&self, spec: NodeSpec) -> Node {
        self.try_launch(&spec).unwrap_or_else(|e| panic!("launching node {}: {e:#}", spec.label))
    }

    fn try_launch(&self, spec: &NodeSpec) -> Result<Node> {
        let subnet_id = self.subnet_ids[spec.subnet].clone();
        let ids = self.sim().run_instances(&RunReq {
            image_id: "ami-0123456789abcdef0".into(),
            instance_type: INSTANCE_TYPE.into(),
            count: 1,
            subnet_id: subnet_id.clone(),
            groups: vec![self.sg_id.clone()],
            delete_on_termination: true,
            ..Default::default()
        })?;
        let instance_id = ids.first().context("RunInstances returned no instance")?.clone();
        let f = self.fabric();
        let netns = f.node_netns(&instance_id).context("fabric made no node netns")?;
        let primary_ip = f.primary_ip(&instance_id).context("fabric has no primary IP")?;
        let public_ip = f.public_ip(&instance_id).context("fabric has no public IP")?;
        let snap = self.sim().snapshot();
        let primary_eni = snap.instances[&instance_id].primary_eni.clone();
        let secondary_eni = self.block_on(async {
            if spec.primary_ips > 0 {
                self.ec2
                    .assign_private_ip_addresses()
                    .network_interface_id(&primary_eni)
                    .secondary_private_ip_address_count(spec.primary_ips)
                    .send()
                    .await
                    .context("AssignPrivateIpAddresses on the primary ENI")?;
            }
            let Some(n) = spec.secondary_eni_ips else { return Ok::<_, anyhow::Error>(None) };
            let out = self
                .ec2
                .create_network_interface()
                .subnet_id(&subnet_id)
                .groups(&self.sg_id)
                .secondary_private_ip_address_count(n)
                .description("enipool-e2e cni_chain secondary ENI")
                .send()
                .await
                .context("CreateNetworkInterface")?;
            let eni = out
                .network_interface()
                .and_then(|e| e.network_interface_id())
                .context("CreateNetworkInterface returned no id")?
                .to_string();
            self.ec2
                .attach_network_interface()
                .network_interface_id(&eni)
                .instance_id(&instance_id)
                .device_index(1)
                .send()
                .await
                .context("AttachNetworkInterface")?;
            Ok(Some(eni))
        })?;
        if let Some(eni) = &secondary_eni {
            wait_for("the secondary ENI to be attached", Duration::from_secs(10), || {
                let snap = self.sim().snapshot();
                match snap.enis[eni].attachment.as_ref().map(|a| a.state) {
                    Some(AttachState::Attached) => Ok(()),
                    s => bail!("attachment {s:?}"),
                }
            })?;
            wait_for("eth1 in the node netns", Duration::from_secs(10), || {
                fabric::run_in(&netns, &["ip", "link", "show", "eth1"]).map(drop)
            })?;
        }
        let name =
            format!("ip-{}.us-west-2.compute.internal", primary_ip.to_string().replace('.', "-"));
        let status = self.operator_status(&instance_id, 1)?;
        let dir = f.run_dir().join("nodes").join(spec.label);
        let (driver, check_driver) = self.install_cni(&dir, &netns)?;
        let mut node = Node {
            label: spec.label.to_string(),
            name,
            instance_id,
            netns,
            primary_ip,
            public_ip,
            primary_eni,
            secondary_eni,
            dir,
            driver,
            check_driver,
            agent: None,
            status,
        };
        self.block_on(self.register(&node))?;
        if spec.agent {
            node.agent = Some(self.start_agent(&node)?);
        }
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).push(node.clone());
        if spec.agent {
            let enis = 1 + usize::from(node.secondary_eni.is_some());
            self.wait_agent_ready(&node, enis, None)?;
        }
        Ok(node)
    }

    /// The operator part of `status` for an instance, from the simulator's state (EC2's truth).
    fn operator_status(&self, instance_id: &str, revision: i64) -> Result<Value> {
        let snap = self.sim().snapshot();
        let inst = snap.instances.get(instance_id).context("instance")?;
        let vpc = snap.vpcs.get(&inst.vpc_id).context("vpc")?;
        let mut enis: Vec<_> = snap
            .enis
            .values()
            .filter_map(|e| {
                let a = e.attachment.as_ref()?;
                (a.instance_id == instance_id && a.state == AttachState::Attached).then_some((a, e))
            })
            .collect();
        enis.sort_by_key(|(a, _)| a.device_index);
        let enis: Vec<Value> = enis
            .iter()
            .map(|(a, e)| {
                json!({
                    "id": e.id,
                    "deviceIndex": a.device_index,
                    "mac": e.mac,
                    "subnetID": e.subnet_id,
                    "subnetCIDR": snap.subnets[&e.subnet_id].cidr.to_string(),
                    "securityGroups": e.groups,
                    "primaryIP": e.primary_ip.to_string(),
                    "ips": e.secondary.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                    "attachmentId": a.id,
                    "state": "Attached",
                    "managed": a.device_index > 0,
                })
            })
            .collect();
        let limits = ec2sim::limits::lookup(&inst.instance_type).context("instance type limits")?;
        let mut effective = enipool_crds::settings::resolve(
            None,
            None,
            InstanceLimits {
                max_enis: limits.max_enis as i32,
                ips_per_eni: limits.ipv4_per_eni as i32,
            },
            CapacitySource::Static,
        );
        effective.cooldown_seconds = COOLDOWN_SECONDS;
        Ok(json!({
            "instance": {
                "type": inst.instance_type,
                "zone": inst.az,
                "vpcID": inst.vpc_id,
                "subnetID": inst.subnet_id,
                "primaryENI": inst.primary_eni,
                "primaryIP": inst.private_ip.to_string(),
                "vpcCIDRs": [vpc.cidr.to_string()],
                "state": "running",
            },
            "policy": "",
            "effective": effective,
            "enis": enis,
            "revision": revision,
        }))
    }

    /// Node object (Ready, InternalIP) and ENIPool (spec + operator status).
    async fn register(&self, n: &Node) -> Result<()> {
        let nodes: Api<KubeNode> = Api::all(self.client.clone());
        let obj: KubeNode = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n.name, "labels": {
                "kubernetes.io/hostname": n.name,
                enipool_crds::ZONE_LABEL: AZ,
                enipool_crds::INSTANCE_TYPE_LABEL: INSTANCE_TYPE,
            }},
            "spec": {"providerID": format!("aws:///{AZ}/{}", n.instance_id)},
        }))?;
        nodes.create(&PostParams::default(), &obj).await.context("creating the Node")?;
        let st = json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "cni_chain", "lastHeartbeatTime": now(),
                            "lastTransitionTime": now()}],
            "addresses": [{"type": "InternalIP", "address": n.primary_ip.to_string()},
                          {"type": "Hostname", "address": n.name}],
        }});
        nodes
            .patch_status(&n.name, &PatchParams::default(), &Patch::Merge(&st))
            .await
            .context("Node status")?;
        let pools: Api<ENIPool> = Api::all(self.client.clone());
        let pool = ENIPool::new(
            &n.name,
            ENIPoolSpec {
                node_name: n.name.clone(),
                instance_id: n.instance_id.clone(),
                ..Default::default()
            },
        );
        pools.create(&PostParams::default(), &pool).await.context("creating the ENIPool")?;
        self.apply_status(&n.name, &n.status).await
    }

    /// Server-side apply of the operator's status fields (forced, operator field manager).
    pub async fn apply_status(&self, name: &str, status: &Value) -> Result<()> {
        let pools: Api<ENIPool> = Api::all(self.client.clone());
        let patch = json!({
            "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool",
            "metadata": {"name": name},
            "status": status,
        });
        pools
            .patch_status(
                name,
                &PatchParams::apply(OPERATOR_FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .with_context(|| format!("applying the operator status of ENIPool {name}"))?;
        Ok(())
    }

    /// Changes the node's operator status (`edit`), bumps `revision`, applies it and waits until
    /// the agent reports that revision as observed.
    pub fn update_status(&self, node: &mut Node, edit: impl FnOnce(&mut Value)) {
        edit(&mut node.status);
        let rev = node.status["revision"].as_i64().unwrap_or(0) + 1;
        node.status["revision"] = json!(rev);
        self.block_on(self.apply_status(&node.name, &node.status)).expect("applying status");
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = nodes.iter_mut().find(|n| n.name == node.name) {
            n.status = node.status.clone();
        }
        drop(nodes);
        wait_for(
            &format!("agent of {} to observe revision {rev}", node.label),
            Duration::from_secs(20),
            || {
                let p = self.pool(node)?;
                let seen = p["status"]["agent"]["observedRevision"].as_i64();
                if seen == Some(rev) {
                    Ok(())
                } else {
                    bail!("status.agent.observedRevision = {seen:?}")
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// The ENIPool as JSON.
    pub fn pool(&self, node: &Node) -> Result<Value> {
        let pools: Api<ENIPool> = Api::all(self.client.clone());
        let p = self.block_on(pools.get(&node.name)).context("getting the ENIPool")?;
        Ok(serde_json::to_value(p)?)
    }

    /// The shim in a bin dir with Debian's plugins, the conflist (enipool + portmap + tuning),
    /// and a CHECK variant of the same network without portmap (see the test module docs).
    fn install_cni(&self, dir: &Path, netns: &str) -> Result<(CniDriver, CniDriver)> {
        let (bin, conf, check) = (dir.join("cni-bin"), dir.join("cni-conf"), dir.join("cni-check"));
        for d in [&bin, &conf, &check, &dir.join("run"), &dir.join("state"), &dir.join("journal")] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::copy(&self.bins.cni, bin.join("enipool-cni")).context("installing enipool-cni")?;
        for p in DEBIAN_PLUGINS {
            std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(p), bin.join(p))?;
        }
        let enipool = json!({
            "type": "enipool-cni",
            "agentSocket": dir.join("run/cni.sock"),
            "delJournalDir": dir.join("journal"),
            "mtu": MTU,
            "logFile": dir.join("cni.log"),
        });
        let tuning = json!({
            "type": "tuning",
            "sysctl": {TUNING_SYSCTL: "1"},
            "dataDir": dir.join("tuning"),
        });
        let full = json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [
                enipool,
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                tuning,
            ],
        });
        let check_list = json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [enipool, tuning],
        });
        std::fs::write(conf.join("10-enipool.conflist"), serde_json::to_string_pretty(&full)?)?;
        let check_path = check.join("10-enipool-check.conflist");
        std::fs::write(&check_path, serde_json::to_string_pretty(&check_list)?)?;
        let driver = CniDriver {
            bin: self.bins.driver.clone(),
            conf_dir: conf,
            cni_bin_dirs: vec![bin],
            cache_dir: dir.join("cni-cache"),
            network: NETWORK.into(),
            host_netns: Some(netns.to_string()),
        };
        let check_driver =
            CniDriver { network: check_path.display().to_string(), ..driver.clone() };
        Ok((driver, check_driver))
    }

    /// Starts the node's agent in the root netns, programming the node netns.
    fn start_agent(&self, n: &Node) -> Result<AgentInfo> {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let introspection: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let d = |s: &str| n.dir.join(s).display().to_string();
        let socket = n.dir.join("run/cni.sock");
        let args: Vec<String> = vec![
            "--node-name".into(),
            n.name.clone(),
            "--netns".into(),
            n.netns_path().display().to_string(),
            "--socket".into(),
            socket.display().to_string(),
            "--state-dir".into(),
            d("state"),
            "--del-journal-dir".into(),
            d("journal"),
            "--metrics-addr".into(),
            metrics.to_string(),
            "--introspection-addr".into(),
            introspection.to_string(),
            "--mtu".into(),
            MTU.to_string(),
            "--publish-debounce-ms".into(),
            "100".into(),
            "--leak-grace-seconds".into(),
            "30".into(),
            "--log-format".into(),
            "text".into(),
        ];
        let proc_name = format!("agent-{}", n.label);
        let spec = ProcSpec {
            program: self.bins.agent.clone(),
            args,
            env: vec![
                ("KUBECONFIG".into(), self.kubeconfig.clone().into()),
                (
                    "RUST_LOG".into(),
                    std::env::var_os("ENIPOOL_E2E_AGENT_LOG").unwrap_or("info".into()),
                ),
                ("NO_COLOR".into(), "1".into()),
            ],
            log: self.fabric().run_dir().join("logs").join(format!("{proc_name}.log")),
        };
        self.base.procs.start(&proc_name, spec)?;
        Ok(AgentInfo { proc_name, metrics, introspection, socket })
    }

    /// `kill -9` of a node's agent.
    pub fn kill_agent(&self, n: &Node) {
        self.base.procs.kill9(&n.agent().proc_name).expect("kill -9 of the agent");
    }

    /// Starts a killed agent again with the same command line.
    pub fn restart_agent(&self, n: &Node) {
        self.base.procs.restart(&n.agent().proc_name).expect("restarting the agent");
    }

    /// Waits until the agent runs, answers `/readyz` 200, has programmed `enis` ENIs, and has
    /// published `status.agent` for the current revision (and an epoch above `after_epoch`).
    /// Returns the epoch.
    pub fn wait_agent_ready(&self, n: &Node, enis: usize, after_epoch: Option<i64>) -> Result<i64> {
        let a = n.agent();
        let rev = n.status["revision"].as_i64().unwrap_or(0);
        let socket = a.socket.clone();
        wait_for(&format!("agent of node {} to be ready", n.label), Duration::from_secs(60), || {
            if !self.base.procs.running(&a.proc_name) {
                let log = self.base.procs.log_path(&a.proc_name).map(|p| procs::tail(&p, 40));
                panic!(
                    "agent of node {} exited: {:?}\n{}",
                    n.label,
                    self.base.procs.exited(),
                    log.unwrap_or_default()
                );
            }
            let (code, body) = http_get(a.metrics, "/readyz")?;
            if code != 200 {
                bail!("/readyz {code}: {body}");
            }
            let (_, body) = http_get(a.introspection, "/v1/enis")?;
            let v: Value = serde_json::from_str(&body)?;
            let ready = v["enis"]
                .as_array()
                .map_or(0, |e| e.iter().filter(|e| e["ready"].as_bool() == Some(true)).count());
            if ready != enis {
                bail!("{ready}/{enis} ENIs ready: {body}");
            }
            if !socket.exists() {
                bail!("no CNI socket at {}", socket.display());
            }
            let p = self.pool(n)?;
            let agent = &p["status"]["agent"];
            let epoch = agent["epoch"].as_i64().unwrap_or(0);
            if agent["observedRevision"].as_i64() != Some(rev)
                || agent["readyENIs"].as_array().map_or(0, |r| r.len()) != enis
                || after_epoch.is_some_and(|e| epoch <= e)
            {
                bail!("status.agent = {agent}");
            }
            Ok(epoch)
        })
    }

    /// `/v1/allocations` of a node's agent.
    pub fn allocations(&self, n: &Node) -> Value {
        let (code, body) =
            http_get(n.agent().introspection, "/v1/allocations").expect("GET /v1/allocations");
        assert_eq!(code, 200, "/v1/allocations: {body}");
        serde_json::from_str(&body).expect("allocations JSON")
    }

    /// The allocation of a container, if the agent has one.
    pub fn allocation_of(&self, n: &Node, container_id: &str) -> Option<Value> {
        self.allocations(n)["allocations"]
            .as_array()?
            .iter()
            .find(|a| a["containerId"].as_str() == Some(container_id))
            .cloned()
    }

    /// A new sandbox netns for a pod.
    pub fn sandbox(&self, name: &str) -> (String, PathBuf) {
        let ns = self.fabric().add_netns(&format!("p-{name}")).expect("pod netns");
        let path = Path::new(fabric::sh::NETNS_DIR).join(&ns);
        (ns, path)
    }

    /// CNI ADD of a new pod through libcni on `node` (with capability args, e.g. port mappings).
    pub fn add_pod(&self, node: &Node, name: &str, caps: Option<&Value>) -> Result<Pod> {
        let (netns, path) = self.sandbox(name);
        let container_id = format!("{}{}", uuid::Uuid::new_v4().simple(), name.len());
        let mut pod = Pod {
            name: name.into(),
            netns,
            path,
            container_id,
            ip: Ipv4Addr::UNSPECIFIED,
            result: Value::Null,
        };
        let result = node.driver.add(&pod.container_id, &pod.path, "eth0", &pod.args(), caps)?;
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("ADD result without an IPv4 address: {result}"))?;
        pod.ip = ip;
        pod.result = result;
        Ok(pod)
    }

    /// Everything useful after a failure: per node, agent log, host rules and routes, nftables,
    /// allocations, ENIs, pool status; the fabric's hook errors.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "VPC {} subnets {:?}; fabric hook errors: {:?}\n",
            self.vpc_id,
            self.subnet_ids,
            self.fabric().hook_errors()
        ));
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for n in &nodes {
            out.push_str(&format!(
                "===== node {} ({}, {}, netns {}, primary {}) =====\n",
                n.label, n.name, n.instance_id, n.netns, n.primary_ip
            ));
            for argv in [
                &["ip", "-br", "link"][..],
                &["ip", "-4", "-br", "addr"],
                &["ip", "rule"],
                &["ip", "-4", "route", "show", "table", "all"],
                &["nft", "list", "table", "ip", "enipool"],
                &["iptables-save", "-t", "nat"],
            ] {
                let o = fabric::exec_in(&n.netns, argv)
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_else(|e| format!("{e:#}"));
                out.push_str(&format!("--- {}\n{o}", argv.join(" ")));
            }
            if let Some(a) = &n.agent {
                for (addr, path) in [
                    (a.introspection, "/v1/allocations"),
                    (a.introspection, "/v1/enis"),
                    (a.metrics, "/readyz"),
                ] {
                    let r = http_get(addr, path)
                        .map(|(c, b)| format!("{c} {b}"))
                        .unwrap_or_else(|e| format!("{e:#}"));
                    out.push_str(&format!("--- GET {path}\n{r}\n"));
                }
                if let Some(log) = self.base.procs.log_path(&a.proc_name) {
                    out.push_str(&format!(
                        "--- agent log {}\n{}",
                        log.display(),
                        procs::tail(&log, 80)
                    ));
                }
            }
            out.push_str(&format!("--- cni.log\n{}", procs::tail(&n.dir.join("cni.log"), 30)));
            match self.pool(n) {
                Ok(p) => out.push_str(&format!(
                    "--- ENIPool status\n{}\n",
                    serde_json::to_string_pretty(&p["status"]).unwrap_or_default()
                )),
                Err(e) => out.push_str(&format!("--- ENIPool: {e:#}\n")),
            }
        }
        out
    }
}

/// Applies the CRDs generated from `enipool_crds` and waits until ENIPools can be listed.
async fn install_crds(client: &kube::Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in enipool_crds::generate::crds() {
        let name = crd.metadata.name.clone().context("CRD name")?;
        api.patch(&name, &PatchParams::apply("cni-chain").force(), &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
    }
    let pools: Api<ENIPool> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        match pools.list(&Default::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() > Duration::from_secs(20) => {
                return Err(e).context("ENIPools never became listable")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A TCP server inside a netns that answers each connection with `<marker> <peer address>\n`:
/// the stand-in for a pod's container listening on a port. Stopped on drop.
pub struct TcpMarker {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpMarker {
    /// Listens on `0.0.0.0:port` inside `netns`.
    pub fn start(netns: &str, port: u16, marker: &str) -> TcpMarker {
        use std::sync::atomic::{AtomicBool, Ordering};
        let file = std::fs::File::open(Path::new(fabric::sh::NETNS_DIR).join(netns))
            .expect("opening the pod netns");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let (st, marker) = (stop.clone(), marker.to_string());
        let thread = std::thread::spawn(move || {
            let bound = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
                .and_then(|()| std::net::TcpListener::bind(("0.0.0.0", port)))
                .and_then(|l| l.set_nonblocking(true).map(|()| l));
            let listener = match bound {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = writeln!(s, "{marker} {}", peer.ip());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        rx.recv().expect("listener thread").expect("binding the pod's listener");
        TcpMarker { stop, thread: Some(thread) }
    }
}

impl Drop for TcpMarker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from `netns` to `to:port` and returns the line the server sent (None when the
/// connection fails or nothing comes back within 2 s).
pub fn tcp_fetch(netns: &str, to: Ipv4Addr, port: u16) -> Option<String> {
    fabric::in_netns(netns, || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_secs(2))
                .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut line = String::new();
        s.read_to_string(&mut line).ok()?;
        Some(line.trim().to_string())
    })
    .ok()
    .flatten()
}

/// `ping` from `netns` with up to 3 tries (the first packet may wait for neighbour resolution).
pub fn ping(netns: &str, to: Ipv4Addr) -> bool {
    (0..3).any(|_| fabric::ping(netns, to))
}

/// Output of a command in a netns (stdout; panics on failure with stderr).
pub fn sh_in(netns: &str, argv: &[&str]) -> String {
    fabric::run_in(netns, argv).unwrap_or_else(|e| panic!("{e:#}"))
}
