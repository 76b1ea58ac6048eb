//! The local demo (`sudo scripts/demo` = `enipool-e2e demo`), the README's main job, driven the
//! way a newcomer runs it: the runner binary brings the whole system up on this machine, prints
//! its pods, `kubectl get enipools` and two pings, and waits; `kubectl` from another "terminal"
//! (this test) reads the pools through the kubeconfig it printed; Ctrl-C (SIGINT) stops it, exit
//! status 0, and nothing is left behind: no network namespace of the run, no run directory, no
//! enipool process of the run.
//!
//! Needs root (the fabric) and the platform's binaries next to the runner (`cargo build -p
//! enipool-operator -p enipool-agent -p enipool-cni`; a workspace `cargo test` builds them). Never
//! skips: a missing piece fails the test saying what is missing. Takes about a minute per runtime
//! (the platform's libcni client, and containerd).

#[path = "common/binaries.rs"]
mod binaries;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Bring-up, pods, kubectl and pings; generous for a loaded 2-core CI machine.
const UP: Duration = Duration::from_secs(300);
/// Stopping: processes, namespaces, servers.
const DOWN: Duration = Duration::from_secs(120);

/// What the demo printed up to "Press Ctrl-C".
struct Shown {
    stdout: String,
    kubeconfig: PathBuf,
    /// The run's prefix (network namespaces `<prefix>-…`, run dir `/tmp/enipool-e2e-<prefix>`).
    prefix: String,
}

fn parse(stdout: &str) -> Shown {
    let kubeconfig = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
        .unwrap_or_else(|| panic!("no KUBECONFIG line in:\n{stdout}"))
        .into();
    let prefix = stdout
        .lines()
        .find_map(|l| l.split("| grep ").nth(1))
        .and_then(|p| p.trim().strip_suffix("-p-"))
        .unwrap_or_else(|| panic!("no netns line in:\n{stdout}"))
        .to_string();
    Shown { stdout: stdout.to_string(), kubeconfig, prefix }
}

fn netns_of(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect()
}

/// enipool processes whose flags or environment name the run directory.
fn processes_of(run_dir: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{name}/comm")).unwrap_or_default();
        if !comm.starts_with("enipool-") || comm.starts_with("enipool-e2e") {
            continue;
        }
        let mut text = std::fs::read(format!("/proc/{name}/cmdline")).unwrap_or_default();
        text.extend(std::fs::read(format!("/proc/{name}/environ")).unwrap_or_default());
        if String::from_utf8_lossy(&text).contains(run_dir) {
            found.push(format!("{name} {}", comm.trim()));
        }
    }
    found
}

fn kubectl(kubeconfig: &PathBuf, args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl (installed by scripts/install-deps)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_the_whole_system_and_cleans_up_on_ctrl_c() {
    demo_runs_and_cleans_up(&[], &[], "kubelet -> libcni -> enipool-cni").await;
}

/// `demo --ipv6`: the pods show IPv6 addresses, and three pings go through (pod to pod across
/// nodes, the IPv6 internet, the IPv4 internet through the node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ipv6_demo_runs_and_cleans_up_on_ctrl_c() {
    demo_runs_and_cleans_up(&[], &["--ipv6"], "kubelet -> libcni -> enipool-cni").await;
}

/// The same with a containerd per node (`--runtime containerd`): its pods go through CRI, and
/// Ctrl-C leaves no containerd behind either (its processes run from the run directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_under_containerd_and_cleans_up_on_ctrl_c() {
    demo_runs_and_cleans_up(
        &["--runtime", "containerd"],
        &[],
        "kubelet -> CRI -> containerd -> enipool-cni",
    )
    .await;
}

/// Runs `enipool-e2e ARGS demo DEMO_ARGS`, whose pods must take the CNI call path `cni_path`.
async fn demo_runs_and_cleans_up(args: &[&str], demo_args: &[&str], cni_path: &str) {
    let ipv6 = demo_args.contains(&"--ipv6");
    assert!(
        nix::unistd::geteuid().is_root(),
        "the demo needs root (network namespaces): run as root"
    );
    let build = "cargo build -p enipool-operator -p enipool-agent -p enipool-cni";
    binaries::fresh_binary("enipool-operator", &["operator/src", "crds/src"], build);
    binaries::fresh_binary("enipool-agent", &["node-agent/src", "cni-shim/src", "crds/src"], build);
    binaries::fresh_binary("enipool-cni", &["cni-shim/src"], build);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_enipool-e2e"))
        .args(args)
        .arg("demo")
        .args(demo_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running enipool-e2e demo");
    let mut stderr = child.stderr.take().expect("stderr");
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stdout = String::new();
    let shown = tokio::time::timeout(UP, async {
        while let Some(line) = lines.next_line().await.expect("demo stdout") {
            stdout.push_str(&line);
            stdout.push('\n');
            if line.starts_with("Press Ctrl-C") {
                return true;
            }
        }
        false
    })
    .await;
    if shown != Ok(true) {
        let _ = child.kill().await;
        let err = errors.await.unwrap_or_default();
        panic!("the demo did not come up ({shown:?}):\n{stdout}\n--- stderr ---\n{err}");
    }
    let shown = parse(&stdout);

    // Six pods, each with its own address on an ENI of its node.
    let ips: Vec<&str> = shown
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("pod "))
        .filter_map(|l| l.split(" ip ").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(ips.len(), 6, "six pods shown:\n{}", shown.stdout);
    assert_eq!(ips.iter().collect::<BTreeSet<_>>().len(), 6, "pod addresses unique: {ips:?}");
    for ip in &ips {
        let ip: std::net::IpAddr = ip.parse().unwrap_or_else(|_| panic!("pod address {ip:?}"));
        assert_eq!(ip.is_ipv6(), ipv6, "pod address {ip} in a demo with {demo_args:?}");
    }
    assert!(!shown.stdout.contains("ENI ?"), "every pod's address is on a known ENI");
    // Every ping (pod to pod across nodes, pod to the internet; IPv6 adds the IPv6 internet)
    // went through.
    let pings = if ipv6 { 3 } else { 2 };
    assert_eq!(shown.stdout.matches(" 0% packet loss").count(), pings, "{}", shown.stdout);
    // kubectl from "another terminal" through the printed kubeconfig.
    let table = kubectl(&shown.kubeconfig, &["get", "enipools"]);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "one pool per node:\n{table}");
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    let ready = header.iter().position(|h| *h == "READY").expect("READY column");
    for r in &rows {
        assert_eq!(r.split_whitespace().nth(ready), Some("True"), "pool not Ready:\n{table}");
    }
    // Two nodes in two zones (subnets of different AZs), as in a production VPC.
    let path = "jsonpath={.items[*].status.instance.zone}";
    let zones = kubectl(&shown.kubeconfig, &["get", "enipools", "-o", path]);
    let zones: BTreeSet<&str> = zones.split_whitespace().collect();
    assert_eq!(zones.len(), 2, "the demo's nodes in two zones: {zones:?}");
    assert!(!netns_of(&shown.prefix).is_empty(), "no network namespace named {}-*", shown.prefix);
    let run_dir = format!("/tmp/enipool-e2e-{}", shown.prefix);
    assert!(!processes_of(&run_dir).is_empty(), "no enipool process of the run found");

    // Ctrl-C.
    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let status = tokio::time::timeout(DOWN, child.wait()).await;
    let err = errors.await.unwrap_or_default();
    let status = status.unwrap_or_else(|_| panic!("demo still running {DOWN:?} after Ctrl-C"));
    assert!(status.expect("wait").success(), "demo exit after Ctrl-C\n--- stderr ---\n{err}");
    assert!(err.contains("cleaned up, nothing left behind"), "--- stderr ---\n{err}");
    assert!(err.contains(&format!("({cni_path})")), "pods not run through {cni_path}:\n{err}");
    assert_eq!(netns_of(&shown.prefix), Vec::<String>::new(), "network namespaces left");
    assert!(!std::path::Path::new(&run_dir).exists(), "{run_dir} left");
    assert_eq!(processes_of(&run_dir), Vec::<String>::new(), "processes of the run left");
}
