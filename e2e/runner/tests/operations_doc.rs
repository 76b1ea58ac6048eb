//! Keeps the metrics in `docs/operations.md` from drifting, for the operator and the agent: every
//! metric family a component registers is listed in the guide's table for it ("Operator metrics",
//! "Agent metrics") with its type and labels, every name a table lists is registered, and every
//! name with the component's prefix used anywhere in the guide (alert examples included) is one it
//! exposes.
//!
//! Names are compared as users see them on `/metrics`: prometheus_client writes a counter's
//! `# TYPE` line without `_total` and its samples with it, so counters are expected as
//! `<family>_total`; histograms and gauges by their family name (a histogram's `_bucket`, `_sum`
//! and `_count` series are accepted in the guide's queries).
//!
//! Each registry is built the way the binary builds it: the operator's (`Args::run`,
//! operator/src/run/binary.rs) registers the EC2 client's metrics under the `enipool` prefix, then
//! `Metrics::new` (which adds `enipool_operator`); that wiring is private to `run/`, so it is
//! repeated here (if it changes, change it here too). The agent's (node-agent/src/run.rs) is
//! `Metrics::new` on an empty registry. prometheus_client does not encode a labelled family before
//! its first sample, so one sample is recorded in each family through the crates' public APIs, and
//! the test checks that as many families were encoded as were registered (a new family must get a
//! sample below). Lives in the e2e crate, the one that depends on both components.

use enipool_cni::proto::Command;
use enipool_operator::ec2::metrics::{ActionLabels, CallLabels, ClassLabels, Ec2Metrics};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};

const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md"));

/// A component whose metrics the guide documents.
struct Component {
    name: &'static str,
    /// The heading of its metrics table.
    heading: &'static str,
    /// Its metric name prefixes.
    prefixes: &'static [&'static str],
    /// Its registry with one sample in every family, and how many families it registered.
    registry: fn() -> (Registry, usize),
}

const OPERATOR: Component = Component {
    name: "operator",
    heading: "### Operator metrics",
    prefixes: &["enipool_operator_", "enipool_ec2_"],
    registry: operator_registry,
};

const AGENT: Component = Component {
    name: "agent",
    heading: "### Agent metrics",
    prefixes: &["enipool_agent_"],
    registry: agent_registry,
};

/// The registry's Debug output lists one `Descriptor` per registered family, encoded or not.
fn registered(registry: &Registry) -> usize {
    format!("{registry:?}").matches("Descriptor {").count()
}

fn operator_registry() -> (Registry, usize) {
    use enipool_operator::metrics::Metrics;
    let mut registry = Registry::default();
    let ec2 = Ec2Metrics::default();
    ec2.register(registry.sub_registry_with_prefix("enipool"));
    let m = Metrics::new(&mut registry);
    m.reconciled(0.1);
    m.failed("KubeApi");
    m.pool_state("node-a", Some("Ready"));
    m.resync_period(std::time::Duration::from_secs(60));
    m.journal_replay("CreateENI", "finished");
    m.journal_rejected("eni_not_this_pool");
    m.enis_deleted("leaked", 1);
    let call = CallLabels { action: "DescribeInstances", result: "ok" };
    ec2.calls.get_or_create(&call).inc();
    let failed = CallLabels {
        action: "AssignPrivateIpAddresses",
        result: enipool_operator::ec2::Ec2ErrorKind::SubnetFull.label(),
    };
    ec2.calls.get_or_create(&failed).inc();
    ec2.retries.get_or_create(&failed).inc();
    ec2.duration.get_or_create(&ActionLabels { action: "DescribeInstances" }).observe(0.1);
    let class = ClassLabels { class: "describe" };
    ec2.throttled.get_or_create(&class).inc();
    ec2.limiter_rate.get_or_create(&class).set(10.0);
    ec2.limiter_wait.get_or_create(&class).inc_by(0.5);
    let n = registered(&registry);
    (registry, n)
}

fn agent_registry() -> (Registry, usize) {
    use enipool_agent::metrics::Metrics;
    let mut registry = Registry::default();
    let m = Metrics::new(&mut registry);
    m.cni_request(Command::Add, "ok", std::time::Duration::from_millis(5));
    m.cni_request(Command::Del, "ok", std::time::Duration::from_millis(5));
    m.status_patch("ok");
    m.host_repaired("pod");
    let n = registered(&registry);
    (registry, n)
}

/// One encoded metric family as users see it.
#[derive(Debug)]
struct Family {
    /// `counter`, `gauge`, `histogram`.
    kind: String,
    /// Label names of its samples (`le` excluded).
    labels: BTreeSet<String>,
}

/// `name="value",…` → the names.
fn label_names(s: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find("=\"") {
        names.push(rest[..eq].trim_start_matches(',').to_string());
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = Some(eq + 2 + i + 1);
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[end.expect("closing quote")..];
    }
    names
}

/// Exposed name → family, from the text encoding of `c`'s registry.
fn exposed(c: &Component) -> BTreeMap<String, Family> {
    let (registry, registered) = (c.registry)();
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut types = 0;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            types += 1;
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                panic!("unexpected TYPE line {line:?}")
            };
            let shown = if kind == "counter" { format!("{name}_total") } else { name.to_string() };
            families.insert(shown, Family { kind: kind.to_string(), labels: BTreeSet::new() });
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, labels) = match line.split_once('{') {
                Some((s, rest)) => (s, rest.rsplit_once('}').expect("closing brace").0),
                None => (line.split_whitespace().next().unwrap_or(""), ""),
            };
            let Some(family) = families.get_mut(family_of(series, &families)) else {
                panic!("sample {line:?} of no family")
            };
            family.labels.extend(label_names(labels).into_iter().filter(|l| l != "le"));
        }
    }
    assert_eq!(
        types, registered,
        "the {} registers {registered} metric families but only {types} were encoded: a new \
         labelled family needs a sample in its registry function in this test\n{out}",
        c.name
    );
    families
}

/// A histogram's series name mapped back to its family, when that family is a histogram.
fn family_of<'a>(name: &'a str, exposed: &BTreeMap<String, Family>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if exposed.get(base).is_some_and(|f| f.kind == "histogram") {
                return base;
            }
        }
    }
    name
}

/// The lines of the section under `heading`, up to the next heading.
fn section<'a>(doc: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != heading);
    assert!(lines.next().is_some(), "docs/operations.md has no {heading:?} heading");
    lines.take_while(|l| !l.starts_with('#')).collect()
}

/// A row of the metrics table: name, type, label names.
#[derive(Debug)]
struct Row {
    name: String,
    kind: String,
    labels: BTreeSet<String>,
}

/// The rows whose first cell is a backticked metric name.
fn table_rows(lines: &[&str]) -> Vec<Row> {
    let mut rows = Vec::new();
    for l in lines {
        let cells: Vec<&str> = l.trim().trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 3 {
            continue;
        }
        let Some(name) = cells[0].strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
            continue;
        };
        let labels = cells[2].split('`').skip(1).step_by(2).map(String::from).collect();
        rows.push(Row { name: name.to_string(), kind: cells[1].to_string(), labels });
    }
    rows
}

/// Every word of `text` that starts with one of `prefixes` (metric-name characters only); a word
/// ending in `_` is a prefix pattern such as `enipool_agent_*`, not a name.
fn mentioned(text: &str, prefixes: &[&str]) -> Vec<String> {
    let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
    let names = words.filter(|w| !w.ends_with('_'));
    names.filter(|w| prefixes.iter().any(|p| w.starts_with(p))).map(String::from).collect()
}

fn every_registered_metric_is_in_the_guide_table(c: &Component) {
    let exposed = exposed(c);
    let rows = table_rows(&section(DOC, c.heading));
    let missing: Vec<_> = exposed.keys().filter(|n| !rows.iter().any(|r| &r.name == *n)).collect();
    assert!(
        missing.is_empty(),
        "{} metrics missing from the {:?} table of docs/operations.md: {missing:?}",
        c.name,
        c.heading
    );
    for row in &rows {
        let Some(f) = exposed.get(&row.name) else { continue };
        assert_eq!(row.kind, f.kind, "type of {} in docs/operations.md", row.name);
        assert_eq!(row.labels, f.labels, "labels of {} in docs/operations.md", row.name);
    }
}

fn every_metric_the_guide_names_exists(c: &Component) {
    let exposed = exposed(c);
    let rows = table_rows(&section(DOC, c.heading));
    assert!(!rows.is_empty(), "the {:?} table has no rows", c.heading);
    let unknown: Vec<_> = rows.iter().filter(|r| !exposed.contains_key(&r.name)).collect();
    assert!(
        unknown.is_empty(),
        "the {} metrics table lists names it does not expose: {unknown:?}; exposed: {:?}",
        c.name,
        exposed.keys().collect::<Vec<_>>()
    );
    // Anywhere in the guide (alerts, troubleshooting), not only the table.
    let unknown: Vec<_> = mentioned(DOC, c.prefixes)
        .into_iter()
        .filter(|n| !exposed.contains_key(family_of(n, &exposed)))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/operations.md uses {} metric names that do not exist: {unknown:?}",
        c.name
    );
}

#[test]
fn every_registered_operator_metric_is_in_the_guide_table() {
    every_registered_metric_is_in_the_guide_table(&OPERATOR);
}

#[test]
fn every_operator_metric_the_guide_names_exists() {
    every_metric_the_guide_names_exists(&OPERATOR);
}

#[test]
fn every_registered_agent_metric_is_in_the_guide_table() {
    every_registered_metric_is_in_the_guide_table(&AGENT);
}

#[test]
fn every_agent_metric_the_guide_names_exists() {
    every_metric_the_guide_names_exists(&AGENT);
}

/// Labels whose values name something outside enipool's metrics and keep its spelling: an EC2
/// action, a CNI command, a journal operation's `type`, a pool state as `kubectl get enipools`
/// shows it, and the build's identity. (family as exposed, label); `*` is any family.
const VERBATIM_LABELS: &[(&str, &str)] = &[
    ("*", "action"),
    ("*", "cmd"),
    ("*", "le"),
    ("enipool_operator_journal_replays_total", "kind"),
    ("enipool_operator_pools", "state"),
    ("enipool_build_info", "version"),
    ("enipool_build_info", "commit"),
];

fn is_snake_case(v: &str) -> bool {
    !v.is_empty()
        && v.split('_').all(|w| {
            !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// `name="value",…` → (name, value) pairs.
fn label_pairs(s: &str) -> Vec<(String, String)> {
    let names = label_names(s);
    let mut out = Vec::new();
    let mut rest = s;
    for n in names {
        let start = rest.find("=\"").expect("value") + 2;
        let end = start + rest[start..].find('"').expect("closing quote");
        out.push((n, rest[start..end].to_string()));
        rest = &rest[end + 1..];
    }
    out
}

/// Categories, results, outcomes and reasons are written one way across the operator and the
/// agent (snake_case, as the agent's error categories and the journal's reasons are), so one
/// query or alert reads the same whichever component it is about; an error category the
/// operator also uses as a Kubernetes reason (PascalCase there) is converted for the label.
#[test]
fn metric_label_values_use_one_case_style_across_components() {
    let mut bad = Vec::new();
    for c in [&OPERATOR, &AGENT] {
        let (registry, _) = (c.registry)();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, rest)) = line.split_once('{') else { continue };
            let labels = rest.rsplit_once('}').expect("closing brace").0;
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| series.strip_suffix(s))
                .unwrap_or(series);
            for (name, value) in label_pairs(labels) {
                let verbatim = VERBATIM_LABELS
                    .iter()
                    .any(|(f, l)| *l == name && (*f == "*" || *f == family || *f == series));
                if !verbatim && !is_snake_case(&value) {
                    bad.push(format!("{}: {series} {name}=\"{value}\"", c.name));
                }
            }
        }
    }
    assert!(bad.is_empty(), "label values not in snake_case:\n{}", bad.join("\n"));
}
