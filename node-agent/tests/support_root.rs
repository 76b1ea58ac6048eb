//! `enipool-agent support` against a running agent in a network namespace of its own: the archive
//! holds the agent's allocations and pool view, the netns's rules, routes, links, neighbours and
//! sysctls, the CNI configs, the shim's log and DEL journal, and a manifest naming what could not
//! be collected; no credential planted in the config dir or the log reaches it. As root; fails,
//! never skips, when not root.

#[path = "common/agent_proc.rs"]
mod agent_proc;
mod common;

use agent_proc::{AgentProc, FakeApi, AGENT};
use common::{assert_root, Netns};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Planted where a careless bundle would pick it up.
const SECRET: &str = "sekrit-9f3a";

fn members(archive: &Path) -> BTreeMap<String, String> {
    let f = std::fs::File::open(archive).expect("archive written");
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = BTreeMap::new();
    for e in ar.entries().expect("a tar.gz") {
        let mut e = e.expect("entry");
        let name = e.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        let name = name
            .strip_prefix("enipool-support/")
            .unwrap_or_else(|| panic!("{name} outside the root"));
        out.insert(name.to_string(), String::from_utf8_lossy(&bytes).into_owned());
    }
    out
}

#[test]
fn support_bundle_of_a_running_agent() {
    assert_root();
    let netns = Netns::new("enip-support");
    let api = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kubeconfig = d.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let mut agent = AgentProc::start("support-node", &netns, d, &kubeconfig);
    agent.wait_logged("serving CNI", Duration::from_secs(30));

    let conf_dir = d.join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let shim_log = d.join("enipool-cni.log");
    let conflist = serde_json::json!({"cniVersion": "1.0.0", "name": "enipool", "plugins": [
        {"type": "enipool-cni", "logFile": shim_log, "token": SECRET}]});
    std::fs::write(conf_dir.join("05-enipool.conflist"), conflist.to_string()).unwrap();
    std::fs::write(
        conf_dir.join("calico-kubeconfig"),
        format!("users:\n- user:\n    token: {SECRET}\n"),
    )
    .unwrap();
    std::fs::write(&shim_log, format!("ADD ok container=abc\nAuthorization: Bearer {SECRET}\n"))
        .unwrap();
    // After the agent drained the journal at start: an entry recorded while it is running.
    let journal = d.join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(journal.join("abc@eth0.json"), r#"{"command":"DEL","containerId":"abc"}"#)
        .unwrap();

    let archive = d.join("bundle.tgz");
    let out = Command::new(AGENT)
        .arg("--netns")
        .arg(netns.path())
        .arg("--state-dir")
        .arg(d.join("state"))
        .arg("--del-journal-dir")
        .arg(&journal)
        .args(["--metrics-addr", &agent.metrics.to_string()])
        .args(["--introspection-addr", &agent.introspection.to_string()])
        .arg("--cni-conf-source")
        .arg(d.join("unused.conflist"))
        .arg("--cni-conf-dir")
        .arg(&conf_dir)
        .arg("--cni-bin-dir")
        .arg(d.join("no-bin"))
        .args(["support", "--output"])
        .arg(&archive)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "support failed: {}", String::from_utf8_lossy(&out.stderr));
    let m = members(&archive);
    let names: Vec<&String> = m.keys().collect();

    for name in [
        "manifest.txt",
        "versions.txt",
        "agent/allocations.json",
        "agent/enis.json",
        "agent/readyz.txt",
        "agent/metrics.txt",
        "agent/recent.log",
        "agent/state-dir.txt",
        "agent/allocations.redb",
        "host/ip-rule.txt",
        "host/ip-route-all.txt",
        "host/ip-link.txt",
        "host/ip-addr.txt",
        "host/ip-neigh.txt",
        "host/sysctls.txt",
        "cni/net.d/05-enipool.conflist",
        "cni/shim.log",
        "cni/del-journal/index.txt",
        "cni/del-journal/abc@eth0.json",
    ] {
        let body =
            m.get(name).unwrap_or_else(|| panic!("no {name} in {names:?}\n{}", m["manifest.txt"]));
        assert!(!body.trim().is_empty(), "{name} is empty");
    }
    let alloc: serde_json::Value = serde_json::from_str(&m["agent/allocations.json"]).unwrap();
    assert!(alloc["epoch"].as_i64().is_some_and(|e| e > 0), "{alloc}");
    assert!(m["agent/enis.json"].contains("\"revision\""), "{}", m["agent/enis.json"]);
    assert!(m["agent/metrics.txt"].contains("enipool_build_info"), "{}", m["agent/metrics.txt"]);
    // The agent's own log lines since it started, as it wrote them to stderr.
    assert!(m["agent/recent.log"].contains("INFO"), "{}", m["agent/recent.log"]);
    assert!(m["versions.txt"].contains(env!("CARGO_PKG_VERSION")), "{}", m["versions.txt"]);
    // The agent's netns, not this process's: the rules the agent programmed there, and only lo
    // and what the agent made as links.
    assert!(m["host/ip-rule.txt"].contains("lookup main"), "{}", m["host/ip-rule.txt"]);
    let host_links = Command::new("ip").args(["-o", "link"]).output().unwrap().stdout;
    let netns_links =
        Command::new("ip").args(["-n", &netns.0, "-o", "link"]).output().unwrap().stdout;
    assert_eq!(
        m["host/ip-link.txt"].matches(": <").count(),
        String::from_utf8_lossy(&netns_links).lines().count(),
        "links of the netns, not of the host ({} there):\n{}",
        String::from_utf8_lossy(&host_links).lines().count(),
        m["host/ip-link.txt"]
    );
    assert!(m["host/sysctls.txt"].contains("net.ipv4.ip_forward = "), "{}", m["host/sysctls.txt"]);
    assert!(
        m["host/sysctls.txt"].contains("net.ipv4.conf.lo.rp_filter = "),
        "{}",
        m["host/sysctls.txt"]
    );
    assert!(m["cni/shim.log"].contains("ADD ok container=abc"), "{}", m["cni/shim.log"]);

    // What could not be collected is named, with the reason.
    let manifest = &m["manifest.txt"];
    assert!(manifest.contains("cni/net.d/calico-kubeconfig: not read"), "{manifest}");
    assert!(manifest.contains("shim binary"), "{manifest}");
    assert!(
        m.contains_key("host/nft-table-enipool.txt")
            || manifest.contains("host/nft-table-enipool.txt: "),
        "{manifest}"
    );
    assert!(!m.contains_key("cni/net.d/calico-kubeconfig"));
    for (name, body) in &m {
        assert!(!body.contains(SECRET), "{name} carries the planted credential:\n{body}");
    }

    // An unreachable agent is recorded, not fatal.
    let out = Command::new(AGENT)
        .args(["--introspection-addr", "127.0.0.1:1", "--metrics-addr", "127.0.0.1:1"])
        .arg("--state-dir")
        .arg(d.join("state"))
        .args(["support", "--output"])
        .arg(d.join("b2.tgz"))
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m2 = members(&d.join("b2.tgz"));
    assert!(
        m2["manifest.txt"]
            .contains("agent/allocations.json: GET http://127.0.0.1:1/v1/allocations"),
        "{}",
        m2["manifest.txt"]
    );
    drop(agent);
}
