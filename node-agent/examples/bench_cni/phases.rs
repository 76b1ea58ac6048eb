//! Where the time of one call through the shim goes: the shim's phase marks (stderr line, see
//! `enipool_cni::trace`), the server's ([`ServerPhases`] from its tap) and the harness's spawn and
//! exit times, all on the wall clock, joined by command + container id.

use enipool_agent::cni::{PhaseTap, ServerPhases};
use enipool_cni::proto::Command;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The harness's view of one exec: spawn and exit times and the shim's marks.
#[derive(Debug, Clone)]
pub struct Traced {
    pub command: Command,
    pub container_id: String,
    pub spawned: u64,
    pub exited: u64,
    pub shim: Vec<(String, u64)>,
}

/// Collects the server's phases by (command, container id).
#[derive(Clone, Default)]
pub struct ServerLog(Arc<Mutex<HashMap<(String, String), ServerPhases>>>);

impl ServerLog {
    pub fn tap(&self) -> PhaseTap {
        let log = self.0.clone();
        Arc::new(move |p: ServerPhases| {
            if let Some(cmd) = p.command {
                log.lock().unwrap().insert((format!("{cmd:?}"), p.container_id.clone()), p);
            }
        })
    }
}

/// The shim's marks of one exec from its stderr, if it printed them.
pub fn shim_marks(stderr: &[u8]) -> Vec<(String, u64)> {
    String::from_utf8_lossy(stderr)
        .lines()
        .find_map(enipool_cni::trace::parse_line)
        .unwrap_or_default()
}

/// The consecutive intervals of a call, in order; each is a difference of two marks.
const STEPS: [&str; 10] = [
    "exec to main (harness spawn -> shim main)",
    "shim: config + env parse",
    "shim: connect",
    "shim: request write",
    // The server starts the handler on the same thread right after the read: no hop between.
    "agent: accept + request read",
    "agent: work (Agent::handle)",
    "agent: handler end -> reply written",
    "shim: reply read (agent write -> shim)",
    "shim: result write (stdout)",
    "shim exit + harness wait",
];

fn intervals(t: &Traced, s: &ServerPhases) -> Option<[i64; 10]> {
    let m = |k: &str| t.shim.iter().find(|(n, _)| n == k).map(|(_, v)| *v as i64);
    let marks = [
        t.spawned as i64,
        m("main")?,
        m("parsed")?,
        m("connected")?,
        m("sent")?,
        s.read as i64,
        s.handled as i64,
        s.written as i64,
        m("replied")?,
        m("written")?,
        t.exited as i64,
    ];
    let mut out = [0i64; 10];
    for i in 0..10 {
        out[i] = marks[i + 1] - marks[i];
    }
    Some(out)
}

/// Prints the p50 and mean of every step for `command` over the traced calls.
pub fn report(name: &str, command: Command, calls: &[Traced], server: &ServerLog) {
    let server = server.0.lock().unwrap();
    let key = format!("{command:?}");
    let rows: Vec<[i64; 10]> = calls
        .iter()
        .filter(|t| t.command == command)
        .filter_map(|t| intervals(t, server.get(&(key.clone(), t.container_id.clone()))?))
        .collect();
    println!("{name} {key} phases over {} calls (p50 / mean, ms):", rows.len());
    if rows.is_empty() {
        return;
    }
    let ms = |ns: i64| ns as f64 / 1e6;
    let (mut sum50, mut summean) = (0.0, 0.0);
    for (i, step) in STEPS.iter().enumerate() {
        let mut v: Vec<i64> = rows.iter().map(|r| r[i]).collect();
        v.sort();
        let p50 = ms(v[v.len() / 2]);
        let mean = ms(v.iter().sum::<i64>()) / v.len() as f64;
        sum50 += p50;
        summean += mean;
        println!("  {step:<44} {p50:>7.3} / {mean:>7.3}");
    }
    println!("  {:<44} {sum50:>7.3} / {summean:>7.3}", "sum");
}
