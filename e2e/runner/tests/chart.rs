//! The Helm chart (`charts/enipool`): lint, offline schema validation, the flags it passes against
//! the runner's, RBAC against `rbac-expectations.yaml` and against the code, the agent's
//! ValidatingAdmissionPolicy evaluated in CEL, the install-cni script run for real, the IAM policy
//! against the operator's EC2 calls, and the image build files.
//!
//! Needs `helm` (v3) and `kubernetes-validate` (`scripts/install-deps` installs both); a missing
//! tool fails the test, it never skips.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const RELEASE: &str = "enipool";
const NAMESPACE: &str = "kube-system";
const NODE_NAME_CLAIM: &str = "authentication.kubernetes.io/node-name";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart() -> PathBuf {
    root().join("charts/enipool")
}

/// `helm`: /usr/local/bin/helm, else the one on PATH. Panics (test failure) when neither exists.
fn helm() -> PathBuf {
    let fixed = PathBuf::from("/usr/local/bin/helm");
    if fixed.exists() {
        return fixed;
    }
    if let Some(p) = which("helm") {
        return p;
    }
    panic!("helm not found (/usr/local/bin/helm or PATH): run scripts/install-deps, which installs helm v3");
}

fn kubernetes_validate() -> PathBuf {
    which("kubernetes-validate").unwrap_or_else(|| {
        panic!(
            "kubernetes-validate not found on PATH: run scripts/install-deps, which installs it \
             (pip kubernetes-validate)"
        )
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<(bool, String, String)> {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Values files the tests render with: the chart's CI files, or JSON written to a temp file.
enum Values<'a> {
    File(&'a str),
    Json(Value),
}

/// `helm template` → the rendered YAML text.
fn render_text(values: &Values, extra: &[&str]) -> Result<String> {
    let tmp = tempfile::tempdir()?;
    let file = match values {
        Values::File(name) => chart().join("ci").join(name),
        Values::Json(v) => {
            let p = tmp.path().join("values.json");
            std::fs::write(&p, serde_json::to_vec_pretty(v)?)?;
            p
        }
    };
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE, "-f"])
        .arg(&file)
        .args(extra);
    let (ok, stdout, stderr) = run(&mut cmd, None)?;
    if !ok {
        bail!("helm template failed: {stderr}");
    }
    Ok(stdout)
}

/// `helm template` → the rendered objects.
fn render(values: &Values) -> Result<Vec<Value>> {
    parse_docs(&render_text(values, &[])?)
}

fn parse_docs(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).context("parsing rendered YAML")?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered chart"))
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn init_container<'a>(workload: &'a Value, name: &str) -> Option<&'a Value> {
    workload["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
}

/// `hostnet::CAPABILITIES` of node-agent/src/hostnet/mod.rs: what the agent's root test
/// (node-agent/tests/unprivileged_root.rs) proves it runs with (this crate does not link the agent).
fn agent_capabilities() -> Vec<String> {
    let src = std::fs::read_to_string(root().join("node-agent/src/hostnet/mod.rs")).unwrap();
    let line = src
        .lines()
        .find(|l| l.starts_with("pub const CAPABILITIES: &[&str] = &["))
        .expect("pub const CAPABILITIES in node-agent/src/hostnet/mod.rs");
    line.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().expect("string").to_string()).collect())
        .unwrap_or_default()
}

// The tests, by topic. A test crate root's `mod x;` would look for tests/x.rs (which cargo would
// also build as a test binary of its own), hence the paths into tests/chart/.
#[path = "chart/admission.rs"]
mod admission;
#[path = "chart/admission_pods.rs"]
mod admission_pods;
#[path = "chart/artifacts.rs"]
mod artifacts;
#[path = "chart/flags.rs"]
mod flags;
#[path = "chart/iam.rs"]
mod iam;
#[path = "chart/lint.rs"]
mod lint;
#[path = "chart/migration.rs"]
mod migration;
#[path = "chart/monitoring.rs"]
mod monitoring;
#[path = "chart/placement.rs"]
mod placement;
#[path = "chart/rbac.rs"]
mod rbac;
#[path = "chart/workloads.rs"]
mod workloads;
