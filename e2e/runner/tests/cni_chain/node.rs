//! The test as the node: the CNI install (shim, Debian's plugins, the conflist), the agent
//! process (start, kill, restart, readiness, its introspection endpoints), and pods wired
//! through libcni.

use super::probes::{http_get, wait_for};
use super::TUNING_SYSCTL;
use super::{AgentInfo, Env, Node, Pod, DEBIAN_PLUGINS, MTU, NETWORK, POD_MTU, REPAIR_PERIOD_SECS};
use anyhow::{bail, Context, Result};
use cluster::procs::{self, ProcSpec};
use fabric::cnidriver::CniDriver;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A free port on 127.0.0.1 for the agent's HTTP endpoints, below the ephemeral range (see
/// `cluster::ports` for why not bind(0)).
fn free_port() -> u16 {
    cluster::ports::free_local_port().expect("a free port")
}

impl Env {
    /// The shim in a bin dir with Debian's plugins, the conflist (enipool + portmap + tuning),
    /// and a CHECK variant of the same network without portmap (see the test module docs).
    pub(super) fn install_cni(&self, dir: &Path, netns: &str) -> Result<(CniDriver, CniDriver)> {
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
            "mtu": POD_MTU,
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
                {"type": "bandwidth", "capabilities": {"bandwidth": true}},
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
    pub(super) fn start_agent(&self, n: &Node) -> Result<AgentInfo> {
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
            // Short, so the repair of state that no netlink event announces (the nftables table)
            // is seen within a test, and every other test runs with repairs going on.
            "--host-repair-interval-seconds".into(),
            REPAIR_PERIOD_SECS.to_string(),
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
}
