//! Exec-to-exit time of `enipool-cni` ADD against a warm fake agent, plus the binary's size.
//!
//! ```sh
//! cargo build --release -p enipool-cni --bins --examples
//! target/release/examples/bench_exec [ITERATIONS]      # default 2000
//! ```
//! The shim binary is taken from `ENIPOOL_CNI_BIN` or next to the examples directory
//! (`target/release/enipool-cni`). Results go to stdout; record them in `BENCHMARKS.md`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let iterations: usize =
        std::env::args().nth(1).map(|s| s.parse().expect("ITERATIONS")).unwrap_or(2000);
    let bin = std::env::var_os("ENIPOOL_CNI_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("enipool-cni")
    });
    assert!(bin.exists(), "{} not found; build it or set ENIPOOL_CNI_BIN", bin.display());
    let agent = common::FakeAgent::healthy();
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "enipool", "type": "enipool-cni",
        "agentSocket": agent.socket, "mtu": 9001});
    let conf = conf.to_string();

    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations + 50 {
        let start = Instant::now();
        let mut child = Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("bench{i}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", "/var/run/netns/bench")
            .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let elapsed = start.elapsed();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        if i >= 50 {
            times.push(elapsed); // the first 50 warm the page cache and the agent
        }
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let size = std::fs::metadata(&bin).unwrap().len();
    println!("binary: {} ({} bytes, {:.0} KiB)", bin.display(), size, size as f64 / 1024.0);
    println!(
        "ADD exec-to-exit over {iterations} runs: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(*times.last().unwrap())
    );
}
