//! Phase timestamps of one invocation, written to stderr as one line when
//! [`TRACE_ENV`] is set, so a benchmark can split a call's time between exec, parsing, the
//! socket and the agent. Off (the runtime never sets it), a mark is one branch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Set to a non-empty value other than `0` to print the phase line.
pub const TRACE_ENV: &str = "ENIPOOL_CNI_TRACE_PHASES";

/// Start of the phase line on stderr.
pub const PREFIX: &str = "enipool-cni phases:";

/// Wall-clock nanoseconds since the Unix epoch: comparable across processes (the benchmark
/// takes the spawn time in its own process).
pub fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The marks taken so far, or nothing when tracing is off.
#[derive(Debug, Default)]
pub struct Phases {
    marks: Option<Vec<(&'static str, u64)>>,
}

impl Phases {
    /// Tracing off: every mark is a no-op.
    pub fn off() -> Self {
        Phases { marks: None }
    }

    /// On when [`TRACE_ENV`] says so, with `main` marked at `start` (taken before the lookup).
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>, start: u64) -> Self {
        match var(TRACE_ENV) {
            Some(v) if !v.is_empty() && v != "0" => {
                Phases { marks: Some(Vec::from([("main", start)])) }
            }
            _ => Phases::off(),
        }
    }

    /// Records that phase `name` ended now.
    pub fn mark(&mut self, name: &'static str) {
        if let Some(m) = &mut self.marks {
            m.push((name, unix_nanos()));
        }
    }

    /// The stderr line (`PREFIX name=nanos ...`), when on.
    pub fn line(&self) -> Option<String> {
        let marks = self.marks.as_ref()?;
        let mut s = String::from(PREFIX);
        for (name, t) in marks {
            s.push_str(&format!(" {name}={t}"));
        }
        s.push('\n');
        Some(s)
    }
}

/// The marks of a phase line (`None` for any other line): what benchmarks read back.
pub fn parse_line(line: &str) -> Option<Vec<(String, u64)>> {
    let rest = line.trim_end().strip_prefix(PREFIX)?;
    rest.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_the_variable_is_set() {
        let mut p = Phases::from_env(&|_| None, 1);
        p.mark("parsed");
        assert_eq!(p.line(), None);
        let mut p = Phases::from_env(&|k| (k == TRACE_ENV).then(|| "0".into()), 1);
        p.mark("parsed");
        assert_eq!(p.line(), None);
    }

    #[test]
    fn line_round_trips_in_order() {
        let mut p = Phases::from_env(&|k| (k == TRACE_ENV).then(|| "1".into()), 5);
        p.mark("parsed");
        p.mark("connected");
        let marks = parse_line(&p.line().unwrap()).unwrap();
        let names: Vec<&str> = marks.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["main", "parsed", "connected"]);
        assert_eq!(marks[0].1, 5);
        assert!(marks[1].1 <= marks[2].1 && marks[1].1 > 5);
        assert_eq!(parse_line("0.1 info enipool-cni: ADD"), None);
    }
}
