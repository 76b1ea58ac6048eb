//! The chart's RBAC as rendered by `helm template`: which ServiceAccount each component runs as
//! and what (apiGroup, resource, verb) its bound roles grant, in which namespace. A minimal copy
//! of the rendering in `chart.rs`, for the audit-based RBAC test.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `charts/enipool`.
pub fn chart() -> PathBuf {
    root().join("charts/enipool")
}

/// `helm`: /usr/local/bin/helm, else the one on PATH. Panics when neither exists.
pub fn helm() -> PathBuf {
    let fixed = PathBuf::from("/usr/local/bin/helm");
    if fixed.exists() {
        return fixed;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            p.to_str()?.split(':').map(|d| Path::new(d).join("helm")).find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("helm not found (/usr/local/bin/helm or PATH): run scripts/install-deps")
        })
}

/// `helm template <release> charts/enipool --namespace <ns> -f ci/<values>` → the objects.
pub fn render(release: &str, namespace: &str, values: &str) -> Result<Vec<Value>> {
    let out = Command::new(helm())
        .args(["template", release])
        .arg(chart())
        .args(["--namespace", namespace, "-f"])
        .arg(chart().join("ci").join(values))
        .output()
        .context("running helm template")?;
    if !out.status.success() {
        bail!("helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).context("parsing rendered YAML")?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

/// The rendered ServiceAccount of a component (`app.kubernetes.io/component` label):
/// (namespace, name).
pub fn service_account(docs: &[Value], component: &str) -> (String, String) {
    let sa = docs
        .iter()
        .find(|d| {
            d["kind"] == "ServiceAccount"
                && d["metadata"]["labels"]["app.kubernetes.io/component"] == component
        })
        .unwrap_or_else(|| panic!("no ServiceAccount for component {component} in the chart"));
    let s = |v: &Value| v.as_str().expect("string").to_string();
    (s(&sa["metadata"]["namespace"]), s(&sa["metadata"]["name"]))
}

/// One granted (apiGroup, resource[/subresource], verb); `namespace` is `None` for a
/// ClusterRoleBinding (any namespace and cluster-scoped objects), else the RoleBinding's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub namespace: Option<String>,
    pub api_group: String,
    pub resource: String,
    pub verb: String,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().expect("string").to_string()).collect())
        .unwrap_or_default()
}

/// Everything the rendered RBAC grants ServiceAccount `namespace/name`. Wildcards,
/// resourceNames and nonResourceURLs are refused (the chart uses none).
pub fn grants(docs: &[Value], namespace: &str, name: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for b in docs.iter().filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        let bound = b["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == namespace
        });
        if !bound {
            continue;
        }
        let scope = (b["kind"] == "RoleBinding").then(|| {
            b["metadata"]["namespace"].as_str().expect("RoleBinding namespace").to_string()
        });
        let (kind, rname) = (&b["roleRef"]["kind"], &b["roleRef"]["name"]);
        let role = docs
            .iter()
            .find(|d| {
                d["kind"] == *kind
                    && d["metadata"]["name"] == *rname
                    && (kind == "ClusterRole"
                        || d["metadata"]["namespace"] == b["metadata"]["namespace"])
            })
            .unwrap_or_else(|| {
                panic!("binding {} refers to a missing {kind} {rname}", b["metadata"]["name"])
            });
        for rule in role["rules"].as_array().into_iter().flatten() {
            assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null(), "{rule}");
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        assert!(g != "*" && r != "*" && v != "*", "wildcard in {rule}");
                        out.insert(Grant {
                            namespace: scope.clone(),
                            api_group: g.clone(),
                            resource: r.clone(),
                            verb: v,
                        });
                    }
                }
            }
        }
    }
    out
}

/// The rendered operator container's `--<flag>=<value>`.
pub fn operator_flag(docs: &[Value], flag: &str) -> Option<String> {
    let prefix = format!("--{flag}=");
    docs.iter()
        .filter(|d| d["kind"] == "Deployment")
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default()
        })
        .flat_map(|c| strings(&c["args"]))
        .find_map(|a| a.strip_prefix(&prefix).map(String::from))
}
