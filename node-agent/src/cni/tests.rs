use super::*;
use crate::agent::CoreConfig;
use crate::hostnet::fake::FakeHost;
use crate::metrics::Metrics;
use crate::testutil::{eni, req, view};
use std::io::{BufRead, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A checked agent on a fake host with a small pool, served on a socket in `dir`.
fn served(dir: &Path) -> (tokio::runtime::Runtime, std::path::PathBuf, Arc<Agent>) {
    let host = Arc::new(FakeHost::default());
    let cfg = CoreConfig { mtu: 9001, external_snat: false, leak_grace_seconds: 0 };
    let agent =
        Agent::open(&dir.join("s.redb"), "boot", host, cfg, Arc::new(Metrics::unregistered()))
            .unwrap();
    agent.set_view(view(vec![eni("eni-0", 0, &["10.0.0.20", "10.0.0.21"], &[])]));
    agent.verify_store(None, false).unwrap();
    let agent = Arc::new(agent);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let socket = dir.join("cni.sock");
    let listener = {
        let _g = rt.enter();
        bind(&socket).unwrap()
    };
    rt.spawn(serve(listener, agent.clone()));
    (rt, socket, agent)
}

/// One raw exchange: `bytes` out, the answer line back.
fn raw(socket: &Path, bytes: &[u8]) -> Response {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(bytes).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn add_over_the_socket_is_answered_after_the_store_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, socket, agent) = served(dir.path());
    let resp = enipool_cni::client::call(&socket, &req(Command::Add, "c1"), Duration::from_secs(5))
        .unwrap();
    let Response::Added(added) = resp else { panic!("expected Added, got {resp:?}") };
    let held = agent.state().allocations.values().map(|a| a.ip).collect::<Vec<_>>();
    assert_eq!(held, [added.ip]);
}

#[test]
fn bad_requests_get_an_error_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, socket, agent) = served(dir.path());
    let Response::Error(e) = raw(&socket, b"not json\n") else { panic!("expected an error") };
    assert_eq!(e.code, codes::DECODING_FAILURE);
    assert!(e.msg.contains("cannot decode request"), "{}", e.msg);

    let mut big = vec![b' '; MAX_MESSAGE_BYTES + 10];
    big.push(b'\n');
    let mut s = UnixStream::connect(&socket).unwrap();
    // The agent stops reading at the bound and answers; the rest of the write may fail.
    let _ = s.write_all(&big);
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    let Response::Error(e) = serde_json::from_str(&line).unwrap() else { panic!("{line}") };
    assert!(e.msg.contains("too large"), "{}", e.msg);
    assert!(agent.state().allocations.is_empty());
}

#[test]
fn a_silent_connection_does_not_hold_up_others() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, socket, _agent) = served(dir.path());
    let _silent: Vec<UnixStream> = (0..4).map(|_| UnixStream::connect(&socket).unwrap()).collect();
    let start = std::time::Instant::now();
    let resp = enipool_cni::client::call(&socket, &req(Command::Add, "c2"), Duration::from_secs(5))
        .unwrap();
    assert!(matches!(resp, Response::Added(_)), "{resp:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
}
