//! containerd as the node's container runtime: a one-node platform cluster whose node runs
//! Debian's containerd (in the node's network namespace, its own root, state and socket), pods
//! created through the CRI API as a kubelet does, so that containerd's own CNI code calls
//! enipool-cni with its netns and CNI_ARGS. Checks the addresses, the agent's records of the pods,
//! reachability between the sandboxes and from the node, and that ending a sandbox frees its
//! address.
//!
//! Needs root, containerd and runc, gcc with libc6-dev and buildah for the pause image
//! (scripts/install-deps), and the platform's binaries next to the test (`cargo build -p
//! enipool-operator -p enipool-agent -p enipool-cni`; a workspace `cargo test` builds them).
//! Never skips: a missing piece fails the test saying what is missing.

#[path = "common/binaries.rs"]
mod binaries;

use anyhow::{ensure, Context, Result};
use cluster::{wait, Cluster, Runtime, Spec, Target};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SETTLE: Duration = Duration::from_secs(120);

/// The agent's allocation records (`GET /v1/allocations` on its introspection endpoint).
async fn allocations(c: &Cluster, node: &str) -> Result<Vec<Value>> {
    let addr = c.agent_introspection_addr(node).await?;
    let mut s = tokio::net::TcpStream::connect(&addr).await.with_context(|| addr.clone())?;
    let req = format!("GET /v1/allocations HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).await?;
    let (head, body) = resp.split_once("\r\n\r\n").context("HTTP response without a body")?;
    ensure!(head.starts_with("HTTP/1.") && head.contains(" 200 "), "GET /v1/allocations: {head}");
    let v: Value = serde_json::from_str(body).with_context(|| format!("allocations: {body}"))?;
    let list = v.as_array().or_else(|| v["allocations"].as_array()).cloned();
    list.with_context(|| format!("allocations: not a list: {v}"))
}

fn allocation_of(allocs: &[Value], ip: Ipv4Addr) -> Option<&Value> {
    allocs.iter().find(|a| a["ip"].as_str() == Some(ip.to_string().as_str()))
}

/// (device, inode) of a network namespace file: the same pair is the same namespace.
fn ns_id(path: &std::path::Path) -> Result<(u64, u64)> {
    let m = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok((m.dev(), m.ino()))
}

/// Effective uid, effective capabilities and whether `/` is read-only, of process `pid`.
fn process_view(pid: u32) -> Result<(u32, u64, bool)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).map(str::to_string)
    };
    let uid = field("Uid:").context("no Uid")?;
    let uid: u32 = uid.split_whitespace().nth(1).context("Uid")?.parse()?;
    let caps = u64::from_str_radix(&field("CapEff:").context("no CapEff")?, 16)?;
    // mountinfo: id parent dev root mountpoint options ...
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    let root =
        mounts.lines().map(|l| l.split(' ').collect::<Vec<_>>()).find(|f| f.get(4) == Some(&"/"));
    let ro = root.and_then(|f| f.get(5).map(|o| o.split(',').any(|x| x == "ro")));
    Ok((uid, caps, ro.context("no / in the process's mounts")?))
}

/// The agent and the operator run from their images under containerd, as the chart runs them.
async fn platform_pods(c: &Cluster, node: &str) -> Result<()> {
    const NET_ADMIN: u64 = 1 << 12;
    const SYS_ADMIN: u64 = 1 << 21;
    let running = c.platform_containers().await?;
    let agent = running.iter().find(|(pod, ..)| pod.ends_with(node));
    let (_, name, pid) = agent.context("no agent pod")?;
    ensure!(name == "agent", "agent pod runs {name}");
    let (uid, caps, ro) = process_view(*pid)?;
    ensure!(
        uid == 0 && caps == NET_ADMIN | SYS_ADMIN && ro,
        "agent: uid {uid} caps {caps:#x} ro {ro}"
    );
    let op = running.iter().find(|(pod, ..)| pod.starts_with("operator-"));
    let (_, _, pid) = op.context("no operator pod")?;
    let (uid, caps, ro) = process_view(*pid)?;
    ensure!(uid == 65532 && caps == 0 && ro, "operator: uid {uid} caps {caps:#x} ro {ro}");
    // The shim on the node is the one install-cni copied from the CNI image: linked statically,
    // not the platform's own (dynamic) build.
    let shim = c.node(node)?.driver.cni_bin_dirs[0].join("enipool-cni");
    let o = std::process::Command::new("readelf").arg("-lW").arg(&shim).output()?;
    ensure!(
        o.status.success(),
        "readelf {}: {}",
        shim.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    ensure!(
        !String::from_utf8_lossy(&o.stdout).contains("program interpreter"),
        "{} is not the CNI image's static plugin",
        shim.display()
    );
    Ok(())
}

async fn scenario(c: &Cluster) -> Result<()> {
    let node = c.nodes()[0].clone();
    platform_pods(c, &node.name).await?;
    let rt = node.containerd.clone().context("the node runs no containerd")?;
    let cri = rt.cri()?;
    let vpc: ipnet::Ipv4Net = "10.0.0.0/16".parse()?;
    let mut pods = Vec::new();
    for name in ["web-0", "web-1"] {
        c.create_pod(name, &node.name).await?;
        // The pool grows after the operator's first round: retried as the kubelet does.
        wait::poll(&format!("pod {name} to get an address"), SETTLE, || c.start_sandbox(name))
            .await?;
        let p = c.pod(name)?;
        let ip = p.ip()?;
        let sandbox = p.sandbox_id.clone().context("no CRI sandbox id")?;
        ensure!(vpc.contains(&ip), "pod {name} got {ip}, outside the VPC");
        // The address containerd reports is one the ENIPool lists on the node's ENIs.
        let pool = c.pool(&node.name).await?;
        let listed = pool.status.iter().flat_map(|s| &s.enis).any(|e| {
            e.ips.iter().any(|a| a.parse::<Ipv4Addr>().ok() == Some(ip))
                || e.prefixes
                    .iter()
                    .any(|n| n.parse::<ipnet::Ipv4Net>().is_ok_and(|n| n.contains(&ip)))
        });
        ensure!(listed, "pod {name}'s {ip} is in none of the ENIPool's ENIs");
        // containerd made the sandbox's netns, under its own state dir; the platform's name for
        // it is the same namespace.
        let st = cri.sandbox_status(&sandbox).await?;
        let netns = st.netns.context("no netns in the sandbox status")?;
        ensure!(
            netns.starts_with(rt.state_dir()),
            "sandbox netns {} not under containerd's state dir",
            netns.display()
        );
        ensure!(ns_id(&netns)? == ns_id(&p.netns_path())?, "{} is another netns", p.netns);
        // The agent's record names the pod as containerd passed it in CNI_ARGS.
        let allocs = allocations(c, &node.name).await?;
        let a = allocation_of(&allocs, ip).with_context(|| format!("no allocation of {ip}"))?;
        ensure!(a["podName"] == name, "allocation of {ip} names pod {}", a["podName"]);
        ensure!(a["podNamespace"] == c.pod_namespace(), "allocation {a}");
        ensure!(a["containerId"] == sandbox.as_str(), "allocation {a} (sandbox {sandbox})");
        ensure!(a["netns"] == netns.display().to_string().as_str(), "allocation {a}");
        pods.push(name);
    }
    let (a, b) = (c.pod("web-0")?, c.pod("web-1")?);
    c.ping_from_pod(&a.name, b.ip()?).await?;
    c.ping_from_pod(&b.name, a.ip()?).await?;
    for p in [&a, &b] {
        let (ns, ip) = (node.netns.clone(), p.ip()?);
        ensure!(wait::blocking(move || fabric::ping(&ns, ip)).await, "node cannot ping {}", p.name);
        c.ping_from_pod(&p.name, node.primary_ip).await?;
    }
    // Stop and remove one sandbox: containerd's CNI DEL frees the address in the agent.
    let (gone_ip, gone_sandbox) = (a.ip()?, a.sandbox_id.clone().unwrap_or_default());
    c.delete_pod(&a.name).await?;
    ensure!(cri.sandbox_status(&gone_sandbox).await.is_err(), "sandbox {gone_sandbox} still there");
    let allocs = allocations(c, &node.name).await?;
    ensure!(allocation_of(&allocs, gone_ip).is_none(), "{gone_ip} still allocated: {allocs:?}");
    ensure!(allocation_of(&allocs, b.ip()?).is_some(), "the other pod's record went too");
    wait::poll("the agent to report 1 address in use", SETTLE, || async {
        let inuse = c.pool(&node.name).await?.status.and_then(|s| s.agent).map(|a| a.in_use);
        ensure!(inuse == Some(1), "inUse {inuse:?}");
        Ok(())
    })
    .await?;
    c.ping_from_pod(&b.name, node.primary_ip).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_through_containerd_cri() {
    assert!(nix::unistd::geteuid().is_root(), "needs root (network namespaces, containerd)");
    let build = "cargo build -p enipool-operator -p enipool-agent -p enipool-cni";
    let operator = binaries::fresh_binary("enipool-operator", &["operator/src", "crds/src"], build);
    binaries::fresh_binary("enipool-agent", &["node-agent/src", "crds/src"], build);
    binaries::fresh_binary("enipool-cni", &["cni-shim/src"], build);
    // The platform looks for them next to its executable, which a test binary is not.
    std::env::set_var("ENIPOOL_E2E_BIN_DIR", operator.parent().expect("bin dir"));
    let mut spec = Spec::new("containerd-cri", 1);
    spec.runtime = Runtime::Containerd;
    spec.operator_replicas = 1;
    let c = Cluster::up(&Target::default(), spec).await.expect("a platform node with containerd");
    let r = scenario(&c).await;
    c.finish(r).await.expect("pods through containerd's CRI");
}
