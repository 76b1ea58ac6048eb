//! The `enipool-agent` binary stops gracefully on SIGTERM (how the kubelet stops a pod) exactly as
//! on SIGINT: it leaves its serve loop, logs the signal and `enipool-agent stopped`, and exits 0,
//! rather than dying by the signal's default action. Also while it still waits for its ENIPool at
//! start-up. As root (the agent programs a network namespace of its own, removed on drop); fails,
//! never skips, when not root.
//!
//! The agent needs a Kubernetes API. node-agent cannot depend on the e2e platform's, so
//! [`FakeApi`] is the least of one the agent's watches and publisher need.

#[path = "common/agent_proc.rs"]
mod agent_proc;
mod common;

use agent_proc::{http_get, AgentProc, FakeApi};
use common::{assert_root, Netns};
use nix::sys::signal::Signal;
use std::time::Duration;

#[test]
fn sigterm_and_sigint_stop_the_agent_gracefully() {
    assert_root();
    let netns = Netns::new("enip-sig-node");
    let api = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);

    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // Serving: CNI socket, HTTP, watches, publisher.
        let mut agent = AgentProc::start("sig-node", &netns, dir.path(), &kubeconfig);
        agent.wait_logged("serving CNI", Duration::from_secs(30));
        assert!(agent.socket.exists(), "no CNI socket at {}", agent.socket.display());
        let (code, body) = http_get(agent.metrics, "/readyz").expect("/readyz answers");
        // The pool view arrived (its status lists no ENI): serving, not ready to wire pods.
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("no ENI programmed"), "{body}");

        let st = agent.signal_and_wait(sig);
        assert_eq!(st.code(), Some(0), "exit after {sig}: {st}\n{}", agent.dump());
        let stop = agent
            .logged("stop signal received")
            .unwrap_or_else(|| panic!("no stop log after {sig}:\n{}", agent.dump()));
        assert_eq!(stop["fields"]["signal"], sig.as_str(), "{stop}");
        assert!(
            agent.messages().last().is_some_and(|m| m.contains("enipool-agent stopped")),
            "the last line says the agent stopped:\n{}",
            agent.dump()
        );
        assert!(agent.logged("agent failed").is_none(), "{}", agent.dump());
        assert!(http_get(agent.metrics, "/healthz").is_none(), "HTTP is closed");
    }

    // Still waiting for its ENIPool at start-up (it waits up to 60 s): SIGTERM ends that too.
    let mut agent = AgentProc::start("nopool-node", &netns, dir.path(), &kubeconfig);
    agent.wait_logged("waiting for this node's ENIPool", Duration::from_secs(30));
    let st = agent.signal_and_wait(Signal::SIGTERM);
    assert_eq!(st.code(), Some(0), "exit after SIGTERM during start-up: {st}\n{}", agent.dump());
    let stop = agent.logged("stop signal received").expect("stop logged");
    assert_eq!(stop["fields"]["signal"], "SIGTERM", "{stop}");
    assert!(agent.logged("serving CNI").is_none(), "{}", agent.dump());
    assert!(agent.logged("enipool-agent stopped").is_some(), "{}", agent.dump());

    let reqs = api.requests.lock().unwrap();
    assert!(
        reqs.iter().any(|r| r.starts_with("GET /apis/enipool.io/v1alpha1/enipools?")),
        "the agents used the fake API: {reqs:?}"
    );
}

/// `--cni-uninstall`: a stop signal removes the conflist and the shim binary (the agent is being
/// uninstalled); without the flag both stay, so a restarted agent's node keeps taking pods.
#[test]
fn sigterm_removes_the_cni_files_only_with_cni_uninstall() {
    assert_root();
    let netns = Netns::new("enip-sig-uninst");
    let api = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let (conf_dir, bin_dir) = (dir.path().join("net.d"), dir.path().join("bin"));
    let source = dir.path().join("rendered.conflist");
    std::fs::write(&source, "{}").unwrap();
    let (conflist, shim) = (conf_dir.join("05-enipool.conflist"), bin_dir.join("enipool-cni"));
    for uninstall in [false, true] {
        for (d, f) in [(&conf_dir, &conflist), (&bin_dir, &shim)] {
            std::fs::create_dir_all(d).unwrap();
            // Placed by a previous agent and install-cni (this agent never gets an ENI to serve
            // with, so it does not write the conflist itself).
            std::fs::write(f, "x").unwrap();
        }
        let mut extra: Vec<String> = vec![
            format!("--cni-conf-source={}", source.display()),
            format!("--cni-conf-dir={}", conf_dir.display()),
            format!("--cni-bin-dir={}", bin_dir.display()),
        ];
        if uninstall {
            extra.push("--cni-uninstall".into());
        }
        let mut agent =
            AgentProc::start_with("uninst-node", &netns, dir.path(), &kubeconfig, &extra);
        agent.wait_logged("serving CNI", Duration::from_secs(30));
        let st = agent.signal_and_wait(Signal::SIGTERM);
        assert_eq!(st.code(), Some(0), "{}", agent.dump());
        assert_eq!(
            conflist.exists(),
            !uninstall,
            "conflist, --cni-uninstall={uninstall}\n{}",
            agent.dump()
        );
        assert_eq!(
            shim.exists(),
            !uninstall,
            "shim binary, --cni-uninstall={uninstall}\n{}",
            agent.dump()
        );
        assert_eq!(
            agent.logged("CNI config and binary removed").is_some(),
            uninstall,
            "{}",
            agent.dump()
        );
    }
}
