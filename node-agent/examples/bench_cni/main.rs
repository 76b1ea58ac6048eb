//! CNI ADD+DEL latency and throughput through the REAL shim binary, against the agent core with a
//! warm pool, compared with Debian's `bridge` + `host-local` driven the same way in the same run.
//! Needs root: it creates network namespaces `enipb-*` (removed on exit, also on panic).
//!
//! ```sh
//! RUSTFLAGS="-C target-feature=+crt-static" \
//!   cargo build --release --target x86_64-unknown-linux-gnu -p enipool-cni --bin enipool-cni
//! cargo build --release -p enipool-agent --example bench_cni
//! target/release/examples/bench_cni [PAIRS] [CONCURRENCY]     # default 1000 1
//! BENCH_IPV6=1 target/release/examples/bench_cni [PAIRS] [CONCURRENCY]   # IPv6 pods
//! ```
//! The shim is `ENIPOOL_CNI_BIN` or the static build above, as `scripts/build-images` makes the
//! shipped plugin (a dynamically linked one pays ~0.3 ms more per exec in the loader); Debian's plugins are taken from
//! `CNI_PLUGIN_DIR` (default `/usr/lib/cni`). `BENCH_NODE_PODS=N` first adds the ip rules of N
//! other pods on a secondary ENI (a to-pod and a from-pod rule each) to the node, as on a busy
//! node: the cost of anything that lists rules grows with them. Every plugin is exec'd as a runtime does: `CNI_*`
//! env, the network config on stdin, from a thread inside the "node" netns. The agent core runs
//! in this process (store on disk with fsync, netlink workers in the node netns, the CNI socket
//! server on a 2-worker tokio runtime), so the RSS printed is the agent core plus this harness.
//! Every exec runs with `ENIPOOL_CNI_TRACE_PHASES=1`; with the server's phase tap that gives the
//! per-phase breakdown printed for the enipool run (`phases.rs`).

mod phases;
mod pool;

use enipool_agent::agent::{Agent, CoreConfig};
use enipool_agent::hostnet::netlink::NetlinkHost;
use enipool_agent::hostnet::{host_veth_name, HostNet, PodConfig};
use enipool_agent::metrics::Metrics;
use enipool_agent::program::{HostSettings, Programmer};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODE: &str = "enipb-node";
const VPC: &str = "enipb-vpc";
/// Pod netns per worker, used in turn. A runtime gives every sandbox a new netns; reusing ONE
/// netns per worker (as this harness did first) also reuses the host veth name (it is derived
/// from the netns and the ifname) at once, so every ADD had to delete the previous pod's veth
/// itself (~20 ms) instead of leaving it to the agent's batched reaper.
const NS_PER_WORKER: usize = 32;

struct Netns(String);
impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&format!("ip netns add {name} && ip -n {name} link set lo up"));
        Netns(name.into())
    }
    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

fn rss_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// One exec of a CNI plugin; returns the time from spawn to exit and the trace.
fn exec(
    bin: &Path,
    cmd: &str,
    cid: &str,
    netns: &str,
    conf: &str,
) -> Result<(Duration, phases::Traced), String> {
    let spawned = enipool_cni::trace::unix_nanos();
    let start = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env(enipool_cni::trace::TRACE_ENV, "1")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", std::env::var("CNI_PLUGIN_DIR").unwrap_or("/usr/lib/cni".into()))
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    child.stdin.take().unwrap().write_all(conf.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let took = start.elapsed();
    let exited = enipool_cni::trace::unix_nanos();
    if out.status.success() {
        let command = match cmd {
            "ADD" => enipool_cni::proto::Command::Add,
            _ => enipool_cni::proto::Command::Del,
        };
        let shim = phases::shim_marks(&out.stderr);
        Ok((took, phases::Traced { command, container_id: cid.into(), spawned, exited, shim }))
    } else {
        Err(format!(
            "{cmd} {cid}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Whether the ELF file at `path` names a program interpreter (is dynamically linked).
fn has_interpreter(path: &Path) -> bool {
    let elf = std::fs::read(path).unwrap();
    let u = |at: usize, n: usize| -> usize {
        elf[at..at + n].iter().rev().fold(0, |v, b| (v << 8) | *b as usize)
    };
    let (phoff, phentsize, phnum) = (u(0x20, 8), u(0x36, 2), u(0x38, 2));
    const PT_INTERP: usize = 3;
    (0..phnum).any(|i| u(phoff + i * phentsize, 4) == PT_INTERP)
}

/// Spawn-to-exit of `n` execs of `bin` answering VERSION (no agent): the exec floor.
fn exec_only(bin: &Path, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let start = Instant::now();
            let out = Command::new(bin)
                .env_clear()
                .env("CNI_COMMAND", "VERSION")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .unwrap();
            assert!(out.status.success(), "VERSION: {}", String::from_utf8_lossy(&out.stderr));
            start.elapsed()
        })
        .collect()
}

#[derive(Default)]
struct Run {
    add: Vec<Duration>,
    del: Vec<Duration>,
    wall: Duration,
    errors: Vec<String>,
    traced: Vec<phases::Traced>,
}

/// `pairs` ADD+DEL pairs split over `conc` workers, each with its own pod netns, each worker a
/// thread inside the node netns (exec'd plugins inherit it).
fn drive(name: &str, bin: &Path, conf: &str, pairs: usize, conc: usize) -> Run {
    let pods: Vec<Vec<Netns>> = (0..conc)
        .map(|w| (0..NS_PER_WORKER).map(|k| Netns::new(&format!("enipb-{name}-{w}-{k}"))).collect())
        .collect();
    let start = Instant::now();
    type Worker = (Vec<Duration>, Vec<Duration>, Vec<String>, Vec<phases::Traced>);
    let results: Vec<Worker> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(w, pods)| {
                let netns: Vec<String> = pods.iter().map(Netns::path).collect();
                s.spawn(move || {
                    let f = std::fs::File::open(format!("/var/run/netns/{NODE}")).unwrap();
                    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    let (mut add, mut del, mut errs) = (Vec::new(), Vec::new(), Vec::new());
                    let mut traced = Vec::new();
                    let n = pairs / conc + usize::from(w < pairs % conc);
                    for i in 0..n {
                        let cid = format!("{name}-{w}-{i:06}");
                        let netns = &netns[i % NS_PER_WORKER];
                        match exec(bin, "ADD", &cid, netns, conf) {
                            Ok((t, tr)) => {
                                add.push(t);
                                traced.push(tr);
                            }
                            Err(e) => errs.push(e),
                        }
                        match exec(bin, "DEL", &cid, netns, conf) {
                            Ok((t, tr)) => {
                                del.push(t);
                                traced.push(tr);
                            }
                            Err(e) => errs.push(e),
                        }
                    }
                    (add, del, errs, traced)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed();
    // Veths still in the node netns when the last DEL was answered (enipool deletes them in the
    // background) and 1 s later: a reaper that fell behind would show here. Counted before the
    // pod netns are removed (that would delete the pairs by itself).
    let left_now = node_veths();
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "{name}: veths left in the node netns: {left_now} at the end, {} 1 s later",
        node_veths()
    );
    let mut run = Run { wall, ..Default::default() };
    for (a, d, e, t) in results {
        run.add.extend(a);
        run.del.extend(d);
        run.errors.extend(e);
        run.traced.extend(t);
    }
    run
}

/// Veth links in the node netns other than the harness's own uplink.
fn node_veths() -> usize {
    let out = Command::new("ip").args(["-n", NODE, "-o", "link", "show", "type", "veth"]).output();
    let out = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    out.lines().filter(|l| !l.contains(": eth0@")).count()
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn report(name: &str, r: &mut Run, pairs: usize) -> f64 {
    let p50a = pct(&mut r.add, 0.50);
    println!(
        "{name:<22} ADD p50 {:>7.2} ms  p99 {:>7.2} ms | DEL p50 {:>7.2} ms  p99 {:>7.2} ms | {:>6.1} pairs/s | errors {}",
        p50a,
        pct(&mut r.add, 0.99),
        pct(&mut r.del, 0.50),
        pct(&mut r.del, 0.99),
        pairs as f64 / r.wall.as_secs_f64(),
        r.errors.len()
    );
    for e in r.errors.iter().take(3) {
        println!("  error: {e}");
    }
    p50a
}

fn main() {
    assert!(nix::unistd::Uid::effective().is_root(), "needs root (network namespaces)");
    let pairs: usize = std::env::args().nth(1).map(|s| s.parse().expect("PAIRS")).unwrap_or(1000);
    let conc: usize =
        std::env::args().nth(2).map(|s| s.parse().expect("CONCURRENCY")).unwrap_or(1).max(1);
    let shim = std::env::var_os("ENIPOOL_CNI_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
        let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        target.join(triple).join("release").join("enipool-cni")
    });
    assert!(
        shim.exists(),
        "{} not found: build it statically (see the module docs) or set ENIPOOL_CNI_BIN",
        shim.display()
    );
    let plugins = PathBuf::from(std::env::var("CNI_PLUGIN_DIR").unwrap_or("/usr/lib/cni".into()));

    // The node: eth0 = primary ENI (a veth whose peer sits in a "vpc" netns).
    let node = Netns::new(NODE);
    let _vpc = Netns::new(VPC);
    sh(&format!(
        "ip -n {NODE} link add eth0 address 02:00:00:88:00:00 type veth peer name n0 netns {VPC} && \
         ip -n {NODE} addr add 10.88.0.10/16 dev eth0 && ip -n {NODE} link set eth0 up && \
         ip -n {VPC} link set n0 up"
    ));
    let node_pods: usize = std::env::var("BENCH_NODE_PODS").map_or(0, |s| s.parse().expect("N"));
    if node_pods > 0 {
        let batch: String = (0..node_pods)
            .map(|i| {
                let ip = format!("10.89.{}.{}", i / 250, 1 + i % 250);
                format!(
                    "rule add prio 512 to {ip} lookup main\nrule add prio 1536 from {ip} to 10.88.0.0/16 lookup 2\n"
                )
            })
            .collect();
        let mut ip = Command::new("ip")
            .args(["-n", NODE, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        ip.stdin.take().unwrap().write_all(batch.as_bytes()).unwrap();
        assert!(ip.wait().unwrap().success(), "adding the other pods' rules");
    }
    let dir = tempfile::tempdir().unwrap();

    // The agent core, warm: one primary ENI with 64 /28 prefixes (1024 addresses), programmed.
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let host = Arc::new(NetlinkHost::start(Some(node.path().into())).unwrap());
    let cfg = CoreConfig { mtu: 9001, external_snat: false, leak_grace_seconds: 600 };
    let agent = Arc::new(
        Agent::open(
            &dir.path().join("allocations.redb"),
            "bench",
            host.clone(),
            cfg,
            Arc::new(Metrics::unregistered()),
        )
        .unwrap(),
    );
    let ipv6 = matches!(std::env::var("BENCH_IPV6").as_deref(), Ok("1"));
    let view = pool::view(ipv6);
    println!("{}", pool::describe(ipv6));
    Programmer::new(HostSettings { mtu: 9001, ..Default::default() }).apply_to(&agent, &view, None);
    agent.verify_store(None, false).unwrap();
    let socket = dir.path().join("cni.sock");
    let listener = {
        let _g = rt.enter();
        enipool_agent::cni::bind(&socket).unwrap()
    };
    let server_log = phases::ServerLog::default();
    rt.spawn(enipool_agent::cni::serve_traced(listener, agent.clone(), Some(server_log.tap())));
    let (rss0, _) = rss_kib();

    let enipool_conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "enipool", "type": "enipool-cni",
        "agentSocket": socket, "mtu": 9001,
        "delJournalDir": dir.path().join("del-journal"),
    })
    .to_string();
    let bridge_conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "benchbr", "type": "bridge", "bridge": "cni0",
        "isGateway": true, "ipMasq": false, "mtu": 9001,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]],
                 "dataDir": dir.path().join("host-local")},
    })
    .to_string();

    println!(
        "bench_cni: {pairs} ADD+DEL pairs, concurrency {conc}, {node_pods} other pods' rules, shim {}, plugins {}",
        shim.display(),
        plugins.display()
    );
    println!(
        "shim linked {}",
        if has_interpreter(&shim) { "DYNAMICALLY (not as shipped)" } else { "statically" }
    );
    // Warm-up (page cache, bridge creation), not measured.
    let _ = drive("warm-e", &shim, &enipool_conf, 20, 1);
    let _ = drive("warm-b", &plugins.join("bridge"), &bridge_conf, 20, 1);
    let mut e = drive("enipool", &shim, &enipool_conf, pairs, conc);
    let mut b = drive("bridge", &plugins.join("bridge"), &bridge_conf, pairs, conc);
    // Breakdown: the same ADD+DEL straight into the core (no exec, no socket).
    let mut core = Run::default();
    {
        let pods: Vec<Netns> =
            (0..NS_PER_WORKER).map(|k| Netns::new(&format!("enipb-core-{k}"))).collect();
        let start = Instant::now();
        for i in 0..pairs.min(200) {
            for cmd in [enipool_cni::proto::Command::Add, enipool_cni::proto::Command::Del] {
                let req = enipool_cni::proto::Request {
                    protocol: enipool_cni::proto::PROTOCOL_VERSION,
                    command: cmd,
                    container_id: format!("core-{i}"),
                    if_name: "eth0".into(),
                    netns: pods[i % NS_PER_WORKER].path(),
                    args: Default::default(),
                    mtu: None,
                    network: "enipool".into(),
                    valid_attachments: None,
                };
                let t = Instant::now();
                let r = agent.handle(req);
                let took = t.elapsed();
                if let enipool_cni::proto::Response::Error(e) = r {
                    core.errors.push(e.msg);
                } else if cmd == enipool_cni::proto::Command::Add {
                    core.add.push(took);
                } else {
                    core.del.push(took);
                }
            }
        }
        core.wall = start.elapsed();
    }
    // Host wiring alone: NetlinkHost::setup_pod + teardown_pod (no store, no socket, no agent
    // locks), a pod on a secondary ENI (to-pod and from-pod rule): the netlink part of ADD/DEL.
    let mut wire = Run::default();
    {
        let pods: Vec<Netns> =
            (0..NS_PER_WORKER).map(|k| Netns::new(&format!("enipb-wire-{k}"))).collect();
        let start = Instant::now();
        for i in 0..pairs.min(200) {
            let netns = pods[i % NS_PER_WORKER].path();
            let p = PodConfig {
                host_if: host_veth_name(&netns, "eth0"),
                netns,
                if_name: "eth0".into(),
                ip: std::net::Ipv4Addr::new(10, 88, 40, (i % 250) as u8 + 1),
                ipv6: None,
                table: 2,
                from_rule_dsts: vec!["10.88.0.0/16".parse().unwrap()],
                mtu: 9001,
            };
            let t = Instant::now();
            match host.setup_pod(&p) {
                Ok(_) => wire.add.push(t.elapsed()),
                Err(e) => wire.errors.push(e.to_string()),
            }
            let t = Instant::now();
            let errs = host.teardown_pod(&p);
            wire.del.push(t.elapsed());
            wire.errors.extend(errs.iter().map(|e| e.to_string()));
        }
        wire.wall = start.elapsed();
    }
    let mut version = exec_only(&shim, pairs.min(1000));
    let (rss, hwm) = rss_kib();
    println!();
    let pv = pct(&mut version, 0.50);
    println!(
        "{:<22} p50 {pv:>7.2} ms  p99 {:>7.2} ms ({} execs)",
        "shim exec only",
        pct(&mut version, 0.99),
        version.len()
    );
    let pc = report("agent core, no exec", &mut core, pairs.min(200));
    report("host wiring only", &mut wire, pairs.min(200));
    let pe = report("enipool (shim+agent)", &mut e, pairs);
    let pb = report("bridge+host-local", &mut b, pairs);
    println!(
        "enipool ADD p50 / bridge ADD p50 = {:.2}; agent core RSS {:.1} MiB (peak {:.1} MiB, {:.1} MiB before the runs)",
        pe / pb,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss0 as f64 / 1024.0
    );
    println!("enipool ADD p50 - (exec only + agent core ADD p50) = {:.2} ms", pe - pv - pc);
    println!();
    for cmd in [enipool_cni::proto::Command::Add, enipool_cni::proto::Command::Del] {
        phases::report("enipool (shim+agent)", cmd, &e.traced, &server_log);
    }
    let st = agent.state();
    let last = st.cooling.keys().next_back().map(|ip| (*ip, agent.view().ipv6_of(*ip)));
    println!(
        "allocations left: {}, cooling: {} (the highest: {last:?}: IPv4 pod address, or the \
         node-local one and the /128 it maps to)",
        st.allocations.len(),
        st.cooling.len()
    );
    drop(agent);
    rt.shutdown_timeout(Duration::from_secs(1));
    for (name, r) in [("enipool", &e), ("bridge", &b), ("core", &core), ("wiring", &wire)] {
        if let Some(first) = r.errors.first() {
            println!("{name}: {} errors, first: {first}", r.errors.len());
        }
    }
    if !e.errors.is_empty()
        || !b.errors.is_empty()
        || !core.errors.is_empty()
        || !wire.errors.is_empty()
    {
        std::process::exit(1);
    }
}
