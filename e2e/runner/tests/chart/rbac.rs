//! RBAC: the rendered grants against `rbac-expectations.yaml`, and a source scan of the kinds and
//! verbs the code uses against the same file (the audit-based check is `tests/rbac_audit.rs`).

use super::{chart, find, render, root, strings, Values, NAMESPACE};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, serde::Deserialize)]
struct Expectations {
    operator: Component,
    agent: Component,
    /// `enipool-operator cleanup`, the post-delete hook's Job (its own ServiceAccount).
    cleanup: Component,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Component {
    service_account: String,
    rules: Vec<ExpectedRule>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExpectedRule {
    api_group: String,
    resource: String,
    kind: String,
    verbs: Vec<String>,
    scope: String,
    /// Granted only when this value (a dotted path, `operator.managedNodeSelector`) is set,
    /// non-empty and not false, in the values rendered.
    #[serde(default)]
    when: Option<String>,
    #[allow(dead_code)]
    why: String,
}

fn expectations() -> Expectations {
    let text = std::fs::read_to_string(chart().join("rbac-expectations.yaml")).unwrap();
    serde_saphyr::from_str(&text).expect("rbac-expectations.yaml")
}

/// (scope, apiGroup, resource, verb).
type Grant = (String, String, String, String);

/// The grants of `c` for the values file `values` (a rule with `when: <path>` counts only when
/// that value is set there: non-empty, not false).
fn expected_grants(c: &Component, values: &Value) -> BTreeSet<Grant> {
    let set = |path: &str| match path.split('.').fold(values, |v, k| &v[k]) {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        _ => true,
    };
    let mut out = BTreeSet::new();
    for r in c.rules.iter().filter(|r| r.when.as_deref().is_none_or(set)) {
        assert!(r.scope == "cluster" || r.scope == "namespace", "scope {}", r.scope);
        for v in &r.verbs {
            out.insert((r.scope.clone(), r.api_group.clone(), r.resource.clone(), v.clone()));
        }
    }
    out
}

/// Everything the rendered RBAC grants the ServiceAccount `sa` in namespace NAMESPACE.
fn rendered_grants(docs: &[Value], sa: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for b in docs.iter().filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        let bound = b["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == NAMESPACE
        });
        if !bound {
            continue;
        }
        let scope = if b["kind"] == "RoleBinding" { "namespace" } else { "cluster" };
        let role_kind = b["roleRef"]["kind"].as_str().unwrap();
        let role = find(docs, role_kind, b["roleRef"]["name"].as_str().unwrap());
        for rule in role["rules"].as_array().unwrap() {
            assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null(), "{rule}");
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        assert!(g != "*" && r != "*" && v != "*", "wildcard in {rule}");
                        out.insert((scope.to_string(), g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn rbac_matches_expectations_exactly() {
    let exp = expectations();
    for (values, prefix, operator_sa) in [
        ("default-values.yaml", "enipool", "enipool-operator"),
        ("custom-values.yaml", "netpool", "enipool-ec2"),
    ] {
        let docs = render(&Values::File(values)).unwrap();
        let text = std::fs::read_to_string(chart().join("ci").join(values)).unwrap();
        let file: Value = serde_saphyr::from_str(&text).unwrap();
        let agent_sa = format!("{prefix}-{}", exp.agent.service_account);
        let cleanup_sa = format!("{prefix}-{}", exp.cleanup.service_account);
        for (who, sa, c) in [
            ("operator", operator_sa.to_string(), &exp.operator),
            ("agent", agent_sa, &exp.agent),
            ("cleanup", cleanup_sa, &exp.cleanup),
        ] {
            let want = expected_grants(c, &file);
            let have = rendered_grants(&docs, &sa);
            let extra: Vec<_> = have.difference(&want).collect();
            let missing: Vec<_> = want.difference(&have).collect();
            assert!(
                extra.is_empty() && missing.is_empty(),
                "{values}: {who} RBAC differs from rbac-expectations.yaml\n  granted but not expected: \
                 {extra:?}\n  expected but not granted: {missing:?}"
            );
        }
    }
}

/// A crude source scan: which resource kinds and write methods the code uses, per file.
///
/// For each `.rs` file under the given directories that mentions `kube::` (test modules after a
/// `#[cfg(test)]` line are cut off, line comments dropped), it collects the kinds named as
/// `Api<K>` / `Api::<K>` (through `DeserializeGuard<K>`), plus `Event` when it builds a `Recorder`,
/// and the kube calls it makes (`.create(`, `.delete(`, `.patch(`, `.patch_status(`,
/// `.replace(` (not `str::replace("..`), `.get_opt(`, `.list(`, watchers and controllers). It
/// reports a kind with no rule in the expectations, and a call whose verb no kind of the same file
/// has a rule for (on the main resource, or on `/status` for the `_status` calls).
///
/// Limits: it sees names, not types or data flow. A kind reached through a type alias, a generic
/// `Api<K>` or a helper in another file, a call on an `Api` passed in from elsewhere, or dynamic
/// objects (`DynamicObject`, `ApiResource`) escape it, and a verb is only matched to the kinds of
/// its own file. It fails when it should in the common cases (a new `Api<ConfigMap>`, a delete
/// added to the agent) and is a tripwire, not a proof. The strong check is the audit-based one:
/// run the binaries against the test platform's API and compare every recorded (user, verb,
/// resource) with rbac-expectations.yaml.
fn scan_source(
    files: &[(String, String)],
    rules: &[ExpectedRule],
) -> (BTreeSet<String>, Vec<String>) {
    let kind_re = regex::Regex::new(
        r"\bApi\s*(?:::)?\s*<\s*(?:DeserializeGuard\s*<\s*)?([A-Za-z_][A-Za-z0-9_:]*)",
    )
    .unwrap();
    let calls: &[(&str, &str, bool)] = &[
        // (pattern, verb, on the status subresource)
        (r"\.create\(", "create", false),
        (r"\.delete\(", "delete", false),
        (r"\.delete_collection\(", "deletecollection", false),
        (r"\.patch\(", "patch", false),
        (r"\.patch_status\(", "patch", true),
        (r#"\.replace\(\s*[^"'\s)]"#, "update", false),
        (r"\.replace_status\(", "update", true),
        (r"\.get_status\(", "get", true),
        (r"\.get_opt\(", "get", false),
        (r"\.get_metadata\(", "get", false),
        (r"\.list\(", "list", false),
        (r"\.list_metadata\(", "list", false),
        (r"\.patch_metadata\(", "patch", false),
        (
            r"\bwatcher\(|\bmetadata_watcher\(|Controller::new\(|\.owns\(|\.watches\(",
            "watch",
            false,
        ),
        (r"\bwatcher\(|\bmetadata_watcher\(|Controller::new\(|\.owns\(|\.watches\(", "list", false),
    ];
    let calls: Vec<(regex::Regex, &str, bool)> =
        calls.iter().map(|(p, v, s)| (regex::Regex::new(p).unwrap(), *v, *s)).collect();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (path, text) in files {
        if !text.contains("kube::") {
            continue;
        }
        let code: String = text
            .lines()
            .take_while(|l| l.trim() != "#[cfg(test)]")
            .map(|l| match l.find("//") {
                Some(i) => &l[..i],
                None => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut kinds: BTreeSet<String> = kind_re
            .captures_iter(&code)
            .map(|c| c[1].rsplit("::").next().unwrap().to_string())
            .filter(|k| k != "K" && k != "T")
            .collect();
        if code.contains("Recorder::new(") || code.contains("recorder.publish(") {
            kinds.insert("Event".into());
        }
        for k in &kinds {
            seen.insert(k.clone());
            if !rules.iter().any(|r| &r.kind == k) {
                problems.push(format!(
                    "{path}: uses Api<{k}> but rbac-expectations.yaml has no rule for kind {k}"
                ));
            }
        }
        for (re, verb, status) in &calls {
            if let Some(m) = re.find(&code) {
                let covered = rules.iter().any(|r| {
                    let right_resource = if *status {
                        r.resource.ends_with("/status")
                    } else {
                        !r.resource.contains('/')
                    };
                    kinds.contains(&r.kind) && right_resource && r.verbs.iter().any(|v| v == verb)
                });
                if !covered {
                    problems.push(format!(
                        "{path}: `{}` needs verb {verb}{} on one of {kinds:?}, which rbac-expectations.yaml does not grant",
                        m.as_str(),
                        if *status { " (status)" } else { "" }
                    ));
                }
            }
        }
    }
    (seen, problems)
}

fn rust_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root()).unwrap_or(&p).display().to_string();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn source_uses_only_expected_kinds_and_verbs() {
    let exp = expectations();
    for (dir, c) in [("operator/src", &exp.operator), ("node-agent/src", &exp.agent)] {
        let files: Vec<_> = rust_files(&root().join(dir))
            .into_iter()
            .filter(|(p, _)| {
                !p.ends_with("testing.rs") && !p.ends_with("testutil.rs") && !p.contains("/tests")
            })
            .collect();
        let (seen, problems) = scan_source(&files, &c.rules);
        assert!(problems.is_empty(), "{dir}:\n  {}", problems.join("\n  "));
        // Not vacuous: the scan must see the pool API in both components.
        assert!(seen.contains("ENIPool"), "{dir}: the scan found no Api<ENIPool> ({seen:?})");
        let unused: Vec<_> =
            c.rules.iter().filter(|r| !seen.contains(&r.kind)).map(|r| &r.resource).collect();
        if !unused.is_empty() {
            eprintln!("note: {dir} does not name the kinds of {unused:?} (granted per rbac-expectations.yaml)");
        }
    }
}

/// The cleanup subcommand (and the election code it calls) against the hook's own grants, which
/// are far fewer than the operator's: no get or watch on pools, no status, no events.
#[test]
fn cleanup_source_uses_only_the_hooks_grants() {
    let exp = expectations();
    let files: Vec<_> = rust_files(&root().join("operator/src"))
        .into_iter()
        .filter(|(p, _)| p.ends_with("src/cleanup.rs") || p.ends_with("src/leader.rs"))
        .collect();
    assert_eq!(files.len(), 2, "operator/src/cleanup.rs and leader.rs");
    let (seen, problems) = scan_source(&files, &exp.cleanup.rules);
    assert!(problems.is_empty(), "cleanup:\n  {}", problems.join("\n  "));
    for k in ["ENIPool", "Lease", "Node"] {
        assert!(seen.contains(k), "the scan found no Api<{k}> ({seen:?})");
    }
    // Not vacuous: a get or a watch on pools, which the hook is not granted, is caught.
    let file = |body: &str| vec![("x.rs".to_string(), format!("use kube::api::Api;\n{body}"))];
    for bad in ["a.get_opt(&n).await;", "a.patch_status(&n, &pp, &x).await;", "watcher(a, c);"] {
        let body = format!("let a: Api<ENIPool> = Api::all(c); {bad}");
        let (_, p) = scan_source(&file(&body), &exp.cleanup.rules);
        assert!(!p.is_empty(), "{bad} passed the cleanup's scan");
    }
    let ok = "let a: Api<ENIPool> = Api::all(c); a.list_metadata(&lp).await; \
              a.patch_metadata(&n, &pp, &x).await; a.delete(&n, &dp).await;";
    assert!(scan_source(&file(ok), &exp.cleanup.rules).1.is_empty());
}

#[test]
fn source_scan_fails_when_it_should() {
    let exp = expectations();
    let file = |body: &str| vec![("x.rs".to_string(), format!("use kube::api::Api;\n{body}"))];
    // A kind nobody granted.
    let (_, p) = scan_source(&file("let cms: Api<ConfigMap> = Api::all(c);"), &exp.agent.rules);
    assert!(p.iter().any(|p| p.contains("ConfigMap")), "{p:?}");
    // A verb the agent does not have.
    let (_, p) = scan_source(
        &file("let a: Api<ENIPool> = Api::all(c); a.delete(&n, &dp).await;"),
        &exp.agent.rules,
    );
    assert!(p.iter().any(|p| p.contains("delete")), "{p:?}");
    let (_, p) = scan_source(
        &file("let a: Api<Pod> = Api::all(c); a.patch_status(&n, &pp, &x).await;"),
        &exp.agent.rules,
    );
    assert!(p.iter().any(|p| p.contains("patch")), "{p:?}");
    // What the agent does today passes; str::replace is not a kube update; tests are cut off.
    let ok = "let a: Api<ENIPool> = Api::all(c); a.patch_status(&n, &pp, &x).await; \
              let s = n.replace(\"a\", \"b\");\n#[cfg(test)]\nmod tests { fn t() { let x: Api<Secret>; } }";
    let (_, p) = scan_source(&file(ok), &exp.agent.rules);
    assert!(p.is_empty(), "{p:?}");
    // The operator's lease calls need update, which it has on leases.
    let lease = "let a: Api<Lease> = Api::namespaced(c, ns); a.replace(&name, &pp, &l).await;";
    assert!(scan_source(&file(lease), &exp.operator.rules).1.is_empty());
    assert!(!scan_source(&file(lease), &exp.agent.rules).1.is_empty());
}
