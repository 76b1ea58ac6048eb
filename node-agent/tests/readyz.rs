//! `/readyz` means "this agent can serve CNI requests", not "an address is free right now": an
//! agent on a node whose pods use every address stays Ready (otherwise it would count against the
//! DaemonSet's `maxUnavailable` and stall agent rollouts), while CNI STATUS keeps answering not
//! ready to the runtime. Served over real HTTP by the router the binary uses, with a fake host.

use enipool_agent::agent::{Agent, CoreConfig};
use enipool_agent::hostnet::fake::FakeHost;
use enipool_agent::http::{metrics_router, HttpState};
use enipool_agent::metrics::Metrics;
use enipool_agent::pool::{EniView, PoolView};
use enipool_cni::proto::{Command, Request, Response, PROTOCOL_VERSION};
use std::future::IntoFuture;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn eni(id: &str, device_index: i32, ips: &[&str], ready: bool) -> EniView {
    EniView {
        id: id.into(),
        device_index,
        mac: format!("02:00:00:00:00:{device_index:02x}"),
        subnet: Some("10.0.0.0/16".parse().unwrap()),
        primary_ip: Some(Ipv4Addr::new(10, 0, 0, 10 + device_index as u8)),
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        prefixes: Vec::new(),
        ipv6_prefixes: vec![],
        attached: true,
        ready,
    }
}

fn view(enis: Vec<EniView>) -> PoolView {
    PoolView {
        enis,
        cooldown_seconds: 30,
        node_primary_ip: Some(Ipv4Addr::new(10, 0, 0, 10)),
        revision: 1,
        ..Default::default()
    }
}

fn req(command: Command, cid: &str) -> Request {
    Request {
        protocol: PROTOCOL_VERSION,
        command,
        container_id: cid.into(),
        if_name: "eth0".into(),
        netns: format!("/var/run/netns/{cid}"),
        args: Default::default(),
        mtu: None,
        network: "enipool".into(),
        valid_attachments: None,
    }
}

/// `GET path` on `addr`: (status code, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn status(a: &Agent) -> enipool_cni::proto::StatusResult {
    match a.handle(req(Command::Status, "")) {
        Response::Status(s) => s,
        other => panic!("STATUS answered {other:?}"),
    }
}

#[tokio::test]
async fn readyz_is_about_serving_not_about_a_free_address() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Arc::new(
        Agent::open(
            &dir.path().join("allocations.redb"),
            "boot",
            Arc::new(FakeHost::default()),
            CoreConfig { mtu: 9001, external_snat: false, leak_grace_seconds: 0 },
            Arc::new(Metrics::unregistered()),
        )
        .unwrap(),
    );
    let st = HttpState { agent: agent.clone(), registry: Arc::new(Default::default()) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, metrics_router(st)).into_future());

    // Store open, not checked against the node yet: cannot serve.
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("allocation store is not checked"), "{body}");
    let a = agent.clone();
    tokio::task::spawn_blocking(move || a.verify_store(None, false).unwrap()).await.unwrap();

    // Checked, but no pool view from the ENIPool yet: cannot serve.
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no pool view"), "{body}");
    assert_eq!(get(addr, "/healthz").await.0, 200);

    // A view whose ENIs are not programmed on this host: still cannot serve.
    agent.set_view(view(vec![eni("eni-0", 0, &[], false), eni("eni-1", 1, &["10.0.0.30"], false)]));
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no ENI programmed"), "{body}");

    // Programmed, with no address yet (EC2 still assigning): the agent is ready, but a node
    // that has not taken pods yet does not announce that it takes them.
    agent.set_view(view(vec![eni("eni-0", 0, &[], true)]));
    assert_eq!(get(addr, "/readyz").await.0, 200);
    let first = agent.can_start_pods().unwrap_err();
    assert!(first.contains("no address to give yet"), "{first}");

    // Programmed, two addresses free.
    agent.set_view(view(vec![
        eni("eni-0", 0, &["10.0.0.20"], true),
        eni("eni-1", 1, &["10.0.0.30"], true),
    ]));
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!((code, body.as_str()), (200, "ready: 2 available\n"));
    assert!(status(&agent).ready);
    assert_eq!(agent.can_start_pods().as_deref(), Ok("ready: 2 available"));

    // Every address allocated (a full node): the agent is still Ready...
    for cid in ["pod-a", "pod-b"] {
        let a = agent.clone();
        let r =
            tokio::task::spawn_blocking(move || a.handle(req(Command::Add, cid))).await.unwrap();
        assert!(matches!(r, Response::Added(_)), "ADD {cid}: {r:?}");
    }
    assert_eq!(agent.state().allocations.len(), 2);
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 200, "a full node is not a readiness failure: {body}");
    assert!(body.starts_with("ready: 0 available"), "{body}");
    assert!(body.contains("no free address"), "says why nothing is available: {body}");
    // ...and so is CNI STATUS (a failed STATUS marks the node's pod network NotReady), which
    // reports that no address is available; ADD answers try-again-later.
    let s = status(&agent);
    assert!(s.ready && s.available == 0, "{s:?}");
    assert!(s.reason.contains("no free address"), "{s:?}");
    let a = agent.clone();
    match tokio::task::spawn_blocking(move || a.handle(req(Command::Add, "pod-c"))).await.unwrap() {
        Response::Error(e) => assert_eq!(e.code, enipool_agent::agent::codes::TRY_AGAIN_LATER),
        other => panic!("ADD on a full node: {other:?}"),
    }
    server.abort();
}
