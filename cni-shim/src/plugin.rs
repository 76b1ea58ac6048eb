//! The shim's behaviour for each verb: parse, forward, print. `main` only wires the process to
//! [`run`], which tests drive with any environment, stdin and stdout.

use crate::client;
use crate::config::{self, CniEnv, Invocation, NetConf};
use crate::error::Error;
use crate::journal;
use crate::log::Logger;
use crate::proto::{self, Command, Request, Response};
use crate::result;
use crate::trace::{self, Phases};
use crate::version::{self, VersionInfo};
use serde::Serialize;
use std::io::{Read, Write};

/// Runs one CNI invocation and returns the process exit code (0 success, 1 CNI error).
///
/// Stdout gets exactly one JSON document (result, VERSION answer or error object) or nothing
/// (successful DEL, CHECK, STATUS, GC). Logs go to `logFile` or stderr.
pub fn run(
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> i32 {
    let mut phases = Phases::from_env(var, trace::unix_nanos());
    let code = run_traced(var, stdin, stdout, &mut phases);
    if let Some(line) = phases.line() {
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    code
}

fn run_traced(
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    phases: &mut Phases,
) -> i32 {
    let mut log = Logger::stderr();
    let input = match config::read_stdin(stdin) {
        Ok(input) => input,
        Err(e) => return fail(&mut log, stdout, None, &e),
    };
    let asked = config::sniff_version(&input);
    let (command, env, conf) = match config::parse_invocation(var, &input) {
        Ok(Invocation::Version(v)) => return print(stdout, &VersionInfo::answer(v.as_deref())),
        Ok(Invocation::Plugin { command, env, conf }) => (command, env, conf),
        Err(e) => return fail(&mut log, stdout, asked.as_deref(), &e),
    };
    phases.mark("parsed");
    let mut log = Logger::to_file(conf.log_file.as_deref());
    let code = match dispatch(command, &env, &conf, &mut log, phases) {
        Ok(Some(out)) => print(stdout, &out),
        Ok(None) => 0,
        Err(e) => fail(&mut log, stdout, Some(&conf.cni_version), &e),
    };
    phases.mark("written");
    code
}

fn dispatch(
    command: Command,
    env: &CniEnv,
    conf: &NetConf,
    log: &mut Logger,
    phases: &mut Phases,
) -> Result<Option<result::CniResult>, Error> {
    let request = Request {
        protocol: proto::PROTOCOL_VERSION,
        command,
        container_id: env.container_id.clone(),
        if_name: env.if_name.clone(),
        netns: env.netns.clone(),
        args: env.args.clone(),
        mtu: conf.mtu,
        network: conf.name.clone(),
        valid_attachments: conf.valid_attachments.clone(),
    };
    match command {
        Command::Add => match agent(conf, &request, phases)? {
            Response::Added(add) => {
                log.log(
                    "info",
                    &format!(
                        "ADD {} {}: {} on {}",
                        env.container_id,
                        env.if_name,
                        add.pod_ip(),
                        add.eni_id
                    ),
                );
                Ok(Some(result::from_add(&conf.cni_version, &add, &env.netns, conf.dns.as_ref())))
            }
            other => Err(unexpected(&other)),
        },
        Command::Del => del(conf, &request, log, phases).map(|()| None),
        Command::Check => check(conf, &request, phases).map(|()| None),
        Command::Status => status(conf, &request, phases).map(|()| None),
        Command::Gc => match agent(conf, &request, phases)? {
            Response::Done { released } => {
                log.log("info", &format!("GC released {released} allocations"));
                Ok(None)
            }
            other => Err(unexpected(&other)),
        },
    }
}

/// Calls the agent and turns an [`Response::Error`] into [`Error::Agent`].
fn agent(conf: &NetConf, request: &Request, phases: &mut Phases) -> Result<Response, Error> {
    match client::call_traced(&conf.agent_socket, request, conf.timeout, phases)? {
        Response::Error(reply) => Err(Error::Agent(reply)),
        other => Ok(other),
    }
}

fn unexpected(resp: &Response) -> Error {
    let kind = match resp {
        Response::Added(_) => "added",
        Response::Done { .. } => "done",
        Response::Status(_) => "status",
        Response::Error(_) => "error",
    };
    Error::decode("agent response", format!("unexpected outcome {kind:?} for this verb"))
}

fn del(
    conf: &NetConf,
    request: &Request,
    log: &mut Logger,
    phases: &mut Phases,
) -> Result<(), Error> {
    match agent(conf, request, phases) {
        Ok(Response::Done { .. }) => {
            log.log("info", &format!("DEL {} {}: released", request.container_id, request.if_name));
            Ok(())
        }
        Ok(other) => Err(unexpected(&other)),
        // DEL of an unknown container succeeds (spec); tolerate an agent that says otherwise.
        Err(Error::Agent(reply)) if reply.code == crate::error::codes::UNKNOWN_CONTAINER => Ok(()),
        // Not running, or gone mid-request (killed, restarting): the agent replays the journal
        // when it serves again, and a DEL it did finish replays as a no-op.
        Err(Error::AgentNotRunning { socket, source } | Error::AgentIo { socket, source }) => {
            let path = journal::record(&conf.del_journal_dir, request)
                .map_err(|source| Error::Journal { dir: conf.del_journal_dir.clone(), source })?;
            log.log(
                "warn",
                &format!(
                    "agent not reachable at {} ({source}); DEL {} {} journaled to {}",
                    socket.display(),
                    request.container_id,
                    request.if_name,
                    path.display()
                ),
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn check(conf: &NetConf, request: &Request, phases: &mut Phases) -> Result<(), Error> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        Error::InvalidConfig("CHECK requires prevResult in the network config".into())
    })?;
    let prev = result::parse_prev(prev)?;
    match agent(conf, request, phases)? {
        Response::Added(add) => {
            let found = prev.ips.iter().any(|ip| ip.address.addr() == add.pod_ip());
            if !found {
                return Err(Error::CheckMismatch(format!(
                    "agent holds {} for {} {} but prevResult lists {:?}",
                    add.pod_ip(),
                    request.container_id,
                    request.if_name,
                    prev.ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>()
                )));
            }
            Ok(())
        }
        Response::Done { .. } => Ok(()),
        other => Err(unexpected(&other)),
    }
}

fn status(conf: &NetConf, request: &Request, phases: &mut Phases) -> Result<(), Error> {
    match agent(conf, request, phases) {
        Ok(Response::Status(s)) if s.ready => Ok(()),
        Ok(Response::Status(s)) => Err(Error::NotReady(if s.reason.is_empty() {
            format!("{} addresses available", s.available)
        } else {
            s.reason
        })),
        Ok(other) => Err(unexpected(&other)),
        Err(
            e
            @ (Error::AgentNotRunning { .. } | Error::AgentTimeout { .. } | Error::AgentIo { .. }),
        ) => Err(Error::NotReady(e.to_string())),
        Err(e) => Err(e),
    }
}

fn print(stdout: &mut dyn Write, value: &impl Serialize) -> i32 {
    let mut out = match serde_json::to_vec(value) {
        Ok(out) => out,
        Err(_) => return 1,
    };
    out.push(b'\n');
    match stdout.write_all(&out).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn fail(log: &mut Logger, stdout: &mut dyn Write, asked: Option<&str>, err: &Error) -> i32 {
    log.log("error", &format!("code {}: {err}", err.code()));
    let _ = print(stdout, &err.to_reply(version::reply_version(asked)));
    1
}
