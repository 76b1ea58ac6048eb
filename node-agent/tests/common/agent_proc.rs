//! A running `enipool-agent` process against [`FakeApi`], the least of a Kubernetes API the
//! agent's watches and publisher need: list + (never ending) watch of its ENIPool, Node and pods,
//! and the `status.agent` patch. Shared by the root tests that run the binary.
#![allow(dead_code)]

use super::common::Netns;
use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::future::IntoFuture;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_enipool-agent");

/// A Kubernetes API for one agent: its ENIPool (for any node name but those starting with
/// `nopool`) has a status without ENIs, there is no Node and no pod. Watches never send an event.
pub struct FakeApi {
    pub url: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

pub fn json_response(code: StatusCode, v: Value) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

pub fn pool(name: &str) -> Value {
    json!({
        "apiVersion": "enipool.io/v1alpha1",
        "kind": "ENIPool",
        "metadata": {"name": name, "resourceVersion": "1", "uid": "00000000-0000-0000-0000-000000000001"},
        "spec": {"nodeName": name, "instanceID": "i-0123456789abcdef0"},
        "status": {"revision": 1},
    })
}

pub fn api(method: &Method, uri: &Uri) -> Response {
    let query = uri.query().unwrap_or("");
    let watch = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let name = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("fieldSelector="))
        .map(|v| v.replace("%3D", "=").replace("%3d", "="))
        .and_then(|v| v.strip_prefix("metadata.name=").map(str::to_string));
    let list = |api_version: &str, kind: &str, items: Vec<Value>| {
        json_response(
            StatusCode::OK,
            json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}),
        )
    };
    let path = uri.path();
    if *method == Method::GET && watch {
        // A watch that stays open without events (the objects do not change).
        let never = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::from_stream(never))
            .unwrap();
    }
    match (method.clone(), path) {
        (Method::GET, "/apis/enipool.io/v1alpha1/enipools") => {
            let items = name
                .filter(|n| !n.starts_with("nopool"))
                .map(|n| vec![pool(&n)])
                .unwrap_or_default();
            list("enipool.io/v1alpha1", "ENIPoolList", items)
        }
        (Method::GET, "/api/v1/nodes") => list("v1", "NodeList", vec![]),
        (Method::GET, "/api/v1/pods") => list("v1", "PodList", vec![]),
        (Method::PATCH, p) if p.starts_with("/apis/enipool.io/v1alpha1/enipools/") => {
            let n = p.trim_start_matches("/apis/enipool.io/v1alpha1/enipools/");
            json_response(StatusCode::OK, pool(n.trim_end_matches("/status")))
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{method} {path}")}),
        ),
    }
}

impl FakeApi {
    pub fn start() -> FakeApi {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
            let reqs = reqs.clone();
            async move {
                reqs.lock().unwrap().push(format!("{method} {uri}"));
                api(&method, &uri)
            }
        });
        rt.spawn(axum::serve(listener, app).into_future());
        FakeApi { url: format!("http://{addr}"), requests, _rt: rt }
    }

    pub fn write_kubeconfig(&self, path: &Path) {
        let cfg = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: agent\n  user:\n    token: t\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: agent\n    namespace: default\ncurrent-context: fake\n",
            self.url
        );
        std::fs::write(path, cfg).unwrap();
    }
}

/// A free loopback port (bound and released; nothing else on this machine races for it here).
/// A free 127.0.0.1 port below the kernel's ephemeral range (32768 and up by default): one picked
/// with bind(0) and released can be taken by the agent's own outgoing connection to the fake API
/// before the agent binds it (the e2e platform met exactly that; this crate cannot use its
/// `cluster::ports`, so the same walk is repeated here).
pub fn free_port() -> SocketAddr {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 21000 + (std::process::id() % 50) as u16 * 200;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < 10_000, "no free port below the ephemeral range");
        let addr = SocketAddr::from(([127, 0, 0, 1], base + n % 10_000));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// `GET path`: (status code, body), `None` when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    Some((code, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// A running agent process, its JSON log lines collected as they come; SIGKILLed on drop if the
/// test failed before it exited.
pub struct AgentProc {
    pub child: Child,
    pub log: Arc<Mutex<Vec<Value>>>,
    /// Reads stderr until EOF (the process is gone).
    pub reader: Option<std::thread::JoinHandle<()>>,
    pub metrics: SocketAddr,
    pub introspection: SocketAddr,
    pub socket: PathBuf,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl AgentProc {
    pub fn start(node: &str, netns: &Netns, dir: &Path, kubeconfig: &Path) -> AgentProc {
        AgentProc::start_with(node, netns, dir, kubeconfig, &[])
    }

    /// [`AgentProc::start`] with more flags.
    pub fn start_with(
        node: &str,
        netns: &Netns,
        dir: &Path,
        kubeconfig: &Path,
        extra: &[String],
    ) -> AgentProc {
        let (metrics, introspection) = (free_port(), free_port());
        let socket = dir.join("run/agent.sock");
        let mut child = Command::new(AGENT)
            .args([
                "--node-name",
                node,
                "--netns",
                &netns.path(),
                "--log-format",
                "json",
                "--socket",
                socket.to_str().unwrap(),
                "--state-dir",
                dir.join("state").to_str().unwrap(),
                "--del-journal-dir",
                dir.join("journal").to_str().unwrap(),
                "--metrics-addr",
                &metrics.to_string(),
                "--introspection-addr",
                &introspection.to_string(),
            ])
            .args(extra)
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (l, stderr) = (log.clone(), child.stderr.take().unwrap());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "raw": line }));
                l.lock().unwrap().push(v);
            }
        });
        AgentProc { child, log, reader: Some(reader), metrics, introspection, socket }
    }

    pub fn messages(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().map(|v| v["fields"]["message"].to_string()).collect()
    }

    pub fn dump(&self) -> String {
        self.log.lock().unwrap().iter().map(|v| format!("{v}\n")).collect()
    }

    /// The first log line whose message contains `needle`.
    pub fn logged(&self, needle: &str) -> Option<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["fields"]["message"].as_str().is_some_and(|m| m.contains(needle)))
            .cloned()
    }

    pub fn wait_logged(&mut self, needle: &str, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            if let Some(v) = self.logged(needle) {
                return v;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("agent exited ({st}) before logging {needle:?}:\n{}", self.dump());
            }
            assert!(start.elapsed() < within, "no {needle:?} within {within:?}:\n{}", self.dump());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig`; the exit status once the process is gone (within 15 s).
    pub fn signal_and_wait(&mut self, sig: Signal) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Every line read: the reader ends at EOF, once the process (the only writer)
                // is gone. A fixed sleep here was a race on a loaded machine.
                if let Some(r) = self.reader.take() {
                    r.join().expect("log reader");
                }
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "still running 15 s after {sig}:\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
