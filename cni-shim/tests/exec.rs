//! Execs the built `enipool-cni` with env + stdin against a fake agent, for every verb and error path.

mod common;

use common::{canned_add, exec, healthy, Answer, FakeAgent};
use enipool_cni::error::{codes, ErrorObject};
use enipool_cni::proto::{Command, ErrorReply, Request, Response, StatusResult};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_enipool-cni");
const NETNS: &str = "/var/run/netns/test-pod";

/// How the agent behaves for one case.
enum Agent {
    Healthy,
    Absent,
    Custom(fn(&Request) -> Answer),
}

/// What the case expects.
enum Expect {
    /// Exit 0 and this check on stdout (None = stdout must be empty).
    Ok(Option<fn(&Value)>),
    /// Exit non-zero with this CNI code, and the message contains this text.
    Err(u32, &'static str),
}

struct Case {
    name: &'static str,
    command: &'static str,
    version: &'static str,
    /// Merged into the base config.
    extra: Value,
    /// Env overrides; a value of "" removes the variable.
    env: &'static [(&'static str, &'static str)],
    agent: Agent,
    expect: Expect,
    /// Check on what the agent received.
    got: Option<fn(&[Request])>,
    /// The DEL must be in the journal (the agent could not take it).
    journaled: bool,
}

fn case(name: &'static str, command: &'static str, version: &'static str) -> Case {
    Case {
        name,
        command,
        version,
        extra: json!({}),
        env: &[],
        agent: Agent::Healthy,
        expect: Expect::Ok(None),
        got: None,
        journaled: false,
    }
}

fn prev_result(ip: &str) -> Value {
    json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eni0a1b2c3d4e5"}, {"name": "eth0", "sandbox": NETNS}],
        "ips": [{"address": ip, "gateway": "169.254.1.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0"}]})
}

fn error(code: u32, msg: &str) -> Answer {
    Answer::Reply(Response::Error(ErrorReply { code, msg: msg.into(), details: "fix it".into() }))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            expect: Expect::Ok(Some(|v| {
                assert_eq!(v["ips"][0]["address"], "10.0.1.23/32");
                assert_eq!(v["ips"][0]["gateway"], "169.254.1.1");
                assert_eq!(v["ips"][0]["interface"], 1);
                assert!(v["ips"][0].get("version").is_none());
                assert_eq!(v["interfaces"][0]["name"], "eni0a1b2c3d4e5");
                assert!(v["interfaces"][0].get("sandbox").is_none());
                assert_eq!(
                    v["interfaces"][1],
                    json!({"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": NETNS})
                );
                assert_eq!(v["routes"], json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]));
                assert_eq!(v["dns"], json!({"nameservers": ["10.0.0.2"]}));
            })),
            extra: json!({"mtu": 1500, "dns": {"nameservers": ["10.0.0.2"]}}),
            got: Some(|r| {
                assert_eq!(r.len(), 1);
                assert_eq!(r[0].command, Command::Add);
                assert_eq!((r[0].container_id.as_str(), r[0].if_name.as_str()), ("ctr1", "eth0"));
                assert_eq!(r[0].netns, NETNS);
                assert_eq!(r[0].mtu, Some(1500));
                assert_eq!(r[0].args["K8S_POD_NAME"], "web");
            }),
            ..case("add 1.0.0", "ADD", "1.0.0")
        },
        Case {
            expect: Expect::Ok(Some(|v| assert_eq!(v["cniVersion"], "1.1.0"))),
            ..case("add 1.1.0", "ADD", "1.1.0")
        },
        Case {
            expect: Expect::Ok(Some(|v| {
                assert_eq!(v["cniVersion"], "0.3.1");
                assert_eq!(v["ips"][0]["version"], "4");
            })),
            ..case("add 0.3.1 has ip version", "ADD", "0.3.1")
        },
        Case {
            agent: Agent::Absent,
            expect: Expect::Err(codes::TRY_AGAIN_LATER, "agent not running"),
            ..case("add agent absent", "ADD", "1.0.0")
        },
        Case {
            agent: Agent::Custom(|_| error(codes::TRY_AGAIN_LATER, "no free address on this node")),
            expect: Expect::Err(codes::TRY_AGAIN_LATER, "no free address"),
            ..case("add agent error passes through", "ADD", "1.0.0")
        },
        Case {
            agent: Agent::Custom(|_| Answer::Hang),
            extra: json!({"timeoutMs": 200}),
            expect: Expect::Err(codes::TRY_AGAIN_LATER, "did not answer within 200 ms"),
            ..case("add agent timeout", "ADD", "1.0.0")
        },
        Case {
            agent: Agent::Custom(|_| Answer::Raw(b"garbage\n")),
            expect: Expect::Err(codes::DECODING_FAILURE, "agent response"),
            ..case("add agent garbage", "ADD", "1.0.0")
        },
        Case {
            agent: Agent::Custom(|_| Answer::Raw(b"")),
            expect: Expect::Err(codes::IO_FAILURE, "closed without answering"),
            ..case("add agent hangs up", "ADD", "1.0.0")
        },
        Case {
            agent: Agent::Custom(|_| Answer::Reply(Response::Done { released: 0 })),
            expect: Expect::Err(codes::DECODING_FAILURE, "unexpected outcome"),
            ..case("add wrong outcome", "ADD", "1.0.0")
        },
        Case {
            got: Some(|r| assert_eq!(r[0].command, Command::Del)),
            ..case("del", "DEL", "1.0.0")
        },
        Case {
            env: &[("CNI_NETNS", "")],
            got: Some(|r| assert_eq!(r[0].netns, "")),
            ..case("del without netns", "DEL", "0.4.0")
        },
        Case {
            agent: Agent::Custom(|_| error(codes::UNKNOWN_CONTAINER, "unknown")),
            ..case("del unknown container succeeds", "DEL", "1.0.0")
        },
        Case {
            agent: Agent::Custom(|_| error(codes::IO_FAILURE, "netlink failed")),
            expect: Expect::Err(codes::IO_FAILURE, "netlink failed"),
            ..case("del agent failure", "DEL", "1.0.0")
        },
        Case {
            agent: Agent::Absent,
            journaled: true,
            ..case("del agent absent is journaled", "DEL", "1.0.0")
        },
        // Killed or restarting while answering: the DEL is replayed at its next start (a DEL it
        // did finish replays as a no-op), so the runtime's DEL succeeds.
        Case {
            agent: Agent::Custom(|_| Answer::Raw(b"")),
            journaled: true,
            ..case("del the agent dropped unanswered is journaled", "DEL", "1.0.0")
        },
        Case {
            agent: Agent::Absent,
            extra: json!({"delJournalDir": "/dev/null/journal"}),
            expect: Expect::Err(codes::IO_FAILURE, "DEL journal"),
            ..case("del journal unwritable", "DEL", "1.0.0")
        },
        Case {
            extra: json!({"prevResult": prev_result("10.0.1.23/32")}),
            got: Some(|r| assert_eq!(r[0].command, Command::Check)),
            ..case("check", "CHECK", "1.0.0")
        },
        Case {
            expect: Expect::Err(codes::INVALID_NETWORK_CONFIG, "requires prevResult"),
            got: Some(|r| assert!(r.is_empty())),
            ..case("check without prevResult", "CHECK", "1.0.0")
        },
        Case {
            extra: json!({"prevResult": {"ips": [{"address": "nope"}]}}),
            expect: Expect::Err(codes::DECODING_FAILURE, "prevResult"),
            ..case("check bad prevResult", "CHECK", "1.0.0")
        },
        Case {
            extra: json!({"prevResult": prev_result("10.0.9.9/32")}),
            expect: Expect::Err(codes::CHECK_MISMATCH, "10.0.1.23"),
            ..case("check mismatch", "CHECK", "1.0.0")
        },
        Case {
            extra: json!({"prevResult": prev_result("10.0.1.23/32")}),
            agent: Agent::Custom(|_| error(codes::UNKNOWN_CONTAINER, "no allocation for ctr1")),
            expect: Expect::Err(codes::UNKNOWN_CONTAINER, "no allocation"),
            ..case("check unknown container", "CHECK", "1.0.0")
        },
        Case {
            extra: json!({"prevResult": prev_result("10.0.1.23/32")}),
            expect: Expect::Err(codes::INCOMPATIBLE_VERSION, "0.3.1"),
            ..case("check needs 0.4.0", "CHECK", "0.3.1")
        },
        Case {
            env: &[("CNI_CONTAINERID", ""), ("CNI_IFNAME", ""), ("CNI_NETNS", "")],
            got: Some(|r| assert_eq!(r[0].command, Command::Status)),
            ..case("status ready", "STATUS", "1.1.0")
        },
        Case {
            agent: Agent::Custom(|_| {
                Answer::Reply(Response::Status(StatusResult {
                    ready: false,
                    available: 0,
                    reason: "no ENI programmed yet".into(),
                }))
            }),
            expect: Expect::Err(codes::PLUGIN_NOT_AVAILABLE, "no ENI programmed yet"),
            ..case("status not ready", "STATUS", "1.1.0")
        },
        Case {
            agent: Agent::Absent,
            expect: Expect::Err(codes::PLUGIN_NOT_AVAILABLE, "agent not running"),
            ..case("status agent absent", "STATUS", "1.1.0")
        },
        Case {
            expect: Expect::Err(codes::INCOMPATIBLE_VERSION, "STATUS"),
            ..case("status needs 1.1.0", "STATUS", "1.0.0")
        },
        Case {
            extra: json!({"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth0"}]}),
            got: Some(|r| {
                assert_eq!(r[0].command, Command::Gc);
                assert_eq!(r[0].network, "enipool", "the GC's scope");
                let valid = r[0].valid_attachments.as_ref().expect("the runtime's list");
                assert_eq!(valid.len(), 2);
                assert_eq!(valid[1].container_id, "b");
            }),
            ..case("gc", "GC", "1.1.0")
        },
        Case {
            extra: json!({"cni.dev/valid-attachments": []}),
            got: Some(|r| assert_eq!(r[0].valid_attachments, Some(vec![]))),
            ..case("gc with an empty list", "GC", "1.1.0")
        },
        Case {
            expect: Expect::Err(codes::INVALID_NETWORK_CONFIG, "cni.dev/valid-attachments"),
            got: Some(|r| assert!(r.is_empty(), "nothing sent to the agent: {r:?}")),
            ..case("gc without valid-attachments", "GC", "1.1.0")
        },
        Case {
            expect: Expect::Err(codes::INCOMPATIBLE_VERSION, "GC"),
            ..case("gc needs 1.1.0", "GC", "1.0.0")
        },
        Case {
            agent: Agent::Absent,
            expect: Expect::Err(codes::TRY_AGAIN_LATER, "agent not running"),
            extra: json!({"cni.dev/valid-attachments": []}),
            ..case("gc agent absent", "GC", "1.1.0")
        },
        Case {
            env: &[("CNI_COMMAND", "")],
            expect: Expect::Err(codes::INVALID_ENV, "CNI_COMMAND"),
            ..case("missing CNI_COMMAND", "ADD", "1.0.0")
        },
        Case {
            expect: Expect::Err(codes::INVALID_ENV, "unknown verb"),
            ..case("unknown verb", "FROB", "1.0.0")
        },
        Case {
            env: &[("CNI_CONTAINERID", "")],
            expect: Expect::Err(codes::INVALID_ENV, "CNI_CONTAINERID"),
            ..case("missing container id", "ADD", "1.0.0")
        },
        Case {
            env: &[("CNI_IFNAME", "")],
            expect: Expect::Err(codes::INVALID_ENV, "CNI_IFNAME"),
            ..case("missing ifname", "DEL", "1.0.0")
        },
        Case {
            env: &[("CNI_NETNS", "")],
            expect: Expect::Err(codes::INVALID_ENV, "CNI_NETNS"),
            ..case("add missing netns", "ADD", "1.0.0")
        },
        Case {
            env: &[("CNI_ARGS", "K8S_POD_NAME")],
            expect: Expect::Err(codes::INVALID_ENV, "CNI_ARGS"),
            ..case("malformed CNI_ARGS", "ADD", "1.0.0")
        },
        Case {
            expect: Expect::Err(codes::INCOMPATIBLE_VERSION, "0.2.0"),
            ..case("old version", "ADD", "0.2.0")
        },
        Case {
            extra: json!({"ipam": {"type": "host-local"}}),
            expect: Expect::Err(codes::UNSUPPORTED_FIELD, "ipam"),
            ..case("ipam unsupported", "ADD", "1.0.0")
        },
        Case {
            extra: json!({"capabilities": {"ips": true}}),
            expect: Expect::Err(codes::UNSUPPORTED_FIELD, "capabilities.ips"),
            ..case("ips capability unsupported", "ADD", "1.0.0")
        },
        Case {
            extra: json!({"name": null}),
            expect: Expect::Err(codes::INVALID_NETWORK_CONFIG, "name"),
            ..case("missing name", "ADD", "1.0.0")
        },
        Case {
            extra: json!({"mtu": "big"}),
            expect: Expect::Err(codes::DECODING_FAILURE, "network config"),
            ..case("mtu wrong type", "ADD", "1.0.0")
        },
    ]
}

fn config(version: &str, socket: &Path, journal: &Path, extra: &Value) -> Value {
    let mut conf = json!({
        "cniVersion": version, "name": "enipool", "type": "enipool-cni",
        "agentSocket": socket, "delJournalDir": journal,
        "runtimeConfig": {"portMappings": []}
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            conf.as_object_mut().unwrap().remove(k);
        } else {
            conf[k] = v.clone();
        }
    }
    conf
}

#[test]
fn every_verb_and_error_path() {
    for case in cases() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = tmp.path().join("journal");
        let agent = match case.agent {
            Agent::Healthy => Some(FakeAgent::start(healthy)),
            Agent::Custom(f) => Some(FakeAgent::start(f)),
            Agent::Absent => None,
        };
        let socket =
            agent.as_ref().map(|a| a.socket.clone()).unwrap_or(tmp.path().join("none.sock"));
        let stdin = config(case.version, &socket, &journal, &case.extra).to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("CNI_COMMAND", case.command),
            ("CNI_CONTAINERID", "ctr1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", NETNS),
            ("CNI_PATH", "/opt/cni/bin"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"),
        ];
        for (k, v) in case.env {
            env.retain(|(n, _)| n != k);
            if !v.is_empty() {
                env.push((k, v));
            }
        }
        let started = Instant::now();
        let out = exec(Path::new(BIN), &env, stdin.as_bytes());
        let elapsed = started.elapsed();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ctx = format!("case {:?}: stdout={stdout} stderr={stderr}", case.name);
        match case.expect {
            Expect::Ok(check) => {
                assert!(out.status.success(), "{ctx}");
                match check {
                    Some(check) => check(&serde_json::from_str(&stdout).expect(&ctx)),
                    None => assert!(stdout.is_empty(), "{ctx}"),
                }
            }
            Expect::Err(code, text) => {
                assert_eq!(out.status.code(), Some(1), "{ctx}");
                let err: ErrorObject = serde_json::from_str(&stdout).expect(&ctx);
                assert_eq!(err.code, code, "{ctx}");
                assert!(err.msg.contains(text), "{ctx}");
                assert!(!err.details.is_empty(), "{ctx}");
                assert_eq!(stdout.lines().count(), 1, "{ctx}");
                let expected_version = if case.version == "0.2.0" { "1.1.0" } else { case.version };
                assert_eq!(err.cni_version, expected_version, "{ctx}");
                assert!(
                    stderr.contains(&format!("code {code}")),
                    "errors are logged to stderr: {ctx}"
                );
            }
        }
        assert!(elapsed < Duration::from_secs(3), "{ctx}: took {elapsed:?}");
        if let Some(got) = case.got {
            got(&agent.as_ref().expect("agent").requests());
        }
        if case.journaled {
            let entries = enipool_cni::journal::drain(&journal).unwrap();
            assert_eq!(entries.len(), 1, "{ctx}");
            assert_eq!(entries[0].1.command, Command::Del);
            assert_eq!(entries[0].1.container_id, "ctr1");
            assert_eq!(entries[0].1.args["K8S_POD_NAME"], "web");
            assert!(stderr.contains("journaled"), "{ctx}");
        }
    }
}

fn run_raw(env: &[(&str, &str)], stdin: &[u8]) -> (Option<i32>, String) {
    let out = exec(Path::new(BIN), env, stdin);
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn version_verb() {
    let (code, out) = run_raw(&[("CNI_COMMAND", "VERSION")], b"");
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let (_, out) = run_raw(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"0.4.0"}"#);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["cniVersion"], "0.4.0");
    let (code, out) = run_raw(&[("CNI_COMMAND", "VERSION")], b"{nope");
    assert_eq!(code, Some(1));
    assert_eq!(serde_json::from_str::<ErrorObject>(&out).unwrap().code, codes::DECODING_FAILURE);
}

#[test]
fn malformed_and_oversized_stdin() {
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/n"),
    ];
    let big = format!(r#"{{"cniVersion":"1.0.0","name":"n","pad":"{}"}}"#, "x".repeat(2 << 20));
    let inputs: &[(&[u8], &str)] = &[
        (b"", "EOF"),
        (b"{", "EOF"),
        (b"\xff\xfe", "expected value"),
        (b"null", "not a JSON object"),
        (big.as_bytes(), "limit"),
    ];
    for (input, text) in inputs {
        let (code, out) = run_raw(&env, input);
        assert_eq!(code, Some(1), "{out}");
        let err: ErrorObject = serde_json::from_str(&out).unwrap();
        assert_eq!(err.code, codes::DECODING_FAILURE, "{out}");
        assert!(err.msg.contains(text), "{out}");
        assert_eq!(err.cni_version, "1.1.0");
    }
}

/// Runs `command` for container `c` against an agent answering `answer`; returns the shim's
/// stdout and its log file.
fn run_logged(command: &str, answer: fn(&Request) -> Answer) -> (std::process::Output, String) {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("cni.log");
    let agent = FakeAgent::start(answer);
    let conf =
        json!({"cniVersion": "1.0.0", "name": "n", "agentSocket": agent.socket, "logFile": log});
    let env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/n"),
    ];
    let out = exec(Path::new(BIN), &env, conf.to_string().as_bytes());
    (out, std::fs::read_to_string(&log).unwrap())
}

#[test]
fn logs_go_to_log_file_not_stdout() {
    let (out, logged) = run_logged("ADD", |req| Answer::Reply(Response::Added(canned_add(req))));
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let _: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(logged.contains("ADD c eth0: 10.0.1.23 on eni-0123"), "{logged}");
}

/// A DEL leaves a line in the log like an ADD, so a release can be confirmed on the node without
/// the runtime's logs.
#[test]
fn a_successful_del_is_logged() {
    let (out, logged) = run_logged("DEL", |_| Answer::Reply(Response::Done { released: 0 }));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "DEL prints nothing");
    assert!(logged.contains(" info enipool-cni: DEL c eth0: released"), "{logged}");
}
