//! Test helpers shared by the integration tests and the exec benchmark: a fake agent on a Unix
//! socket that answers canned [`Response`]s and records the requests it got, and a runner that execs
//! the shim with a given environment and stdin.
#![allow(dead_code)]

use enipool_cni::proto::{AddResult, Command, Request, Response, StatusResult};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the fake agent answers one request.
#[derive(Clone)]
pub enum Answer {
    Reply(Response),
    /// Send these raw bytes.
    Raw(&'static [u8]),
    /// Read the request and never answer (until the test ends).
    Hang,
}

type Responder = dyn Fn(&Request) -> Answer + Send + Sync;

/// A fake agent listening in a private temp dir.
pub struct FakeAgent {
    _dir: tempfile::TempDir,
    /// The socket path to put in the config's `agentSocket`.
    pub socket: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

/// The wiring the fake agent reports for ADD/CHECK.
pub fn canned_add(req: &Request) -> AddResult {
    AddResult {
        ip: "10.0.1.23".parse().unwrap(),
        gateway: "169.254.1.1".parse().unwrap(),
        host_if_name: "eni0a1b2c3d4e5".into(),
        host_mac: "02:00:00:00:00:01".into(),
        pod_if_name: req.if_name.clone(),
        pod_mac: "02:00:00:00:00:02".into(),
        eni_id: "eni-0123".into(),
        mtu: req.mtu.unwrap_or(9001),
        ipv6: None,
    }
}

/// What a healthy agent answers.
pub fn healthy(req: &Request) -> Answer {
    Answer::Reply(match req.command {
        Command::Add | Command::Check => Response::Added(canned_add(req)),
        Command::Del => Response::Done { released: 0 },
        Command::Gc => Response::Done { released: 2 },
        Command::Status => {
            Response::Status(StatusResult { ready: true, available: 5, reason: String::new() })
        }
    })
}

impl FakeAgent {
    /// Starts a fake agent answering with `healthy`.
    pub fn healthy() -> Self {
        Self::start(healthy)
    }

    /// Starts a fake agent answering with `responder`.
    pub fn start(responder: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let responder: Arc<Responder> = Arc::new(responder);
        let (reqs, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, responder) = (reqs.clone(), responder.clone());
                std::thread::spawn(move || serve(conn, &reqs, &*responder));
            }
        });
        FakeAgent { _dir: dir, socket, requests, stop }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(conn: UnixStream, reqs: &Mutex<Vec<Request>>, responder: &Responder) {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let req: Request = serde_json::from_str(&line).expect("shim sent a valid proto::Request");
    reqs.lock().unwrap().push(req.clone());
    let mut conn = reader.into_inner();
    match responder(&req) {
        Answer::Reply(resp) => {
            let mut out = serde_json::to_vec(&resp).unwrap();
            out.push(b'\n');
            let _ = conn.write_all(&out);
        }
        Answer::Raw(bytes) => {
            let _ = conn.write_all(bytes);
        }
        Answer::Hang => std::thread::sleep(Duration::from_secs(5)),
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.socket); // wake the accept loop
    }
}

/// Execs `bin` with exactly `env` (plus PATH) and `stdin`.
pub fn exec(bin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Output {
    exec_args(bin, &[], env, stdin)
}

/// Like [`exec`], with arguments.
pub fn exec_args(bin: &Path, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Proc::new(bin)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // A writer thread: the shim stops reading at its bound, so a large input gets EPIPE, which is fine.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}
