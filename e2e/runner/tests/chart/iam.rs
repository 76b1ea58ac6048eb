//! `docs/iam-policy.json` against the EC2 calls the operator makes: every call it makes is
//! granted, and every grant is used by a call it makes.
//!
//! What the operator calls is read from the source: the AWS adapter (`operator/src/ec2/aws.rs`
//! and `aws/`) maps each `Ec2Api` method to the SDK requests it sends (through its own helper
//! methods), and a method counts only when operator code outside the adapter, the trait, the
//! test fake (`operator/src/ec2/fake.rs` and `fake/`) and tests calls it. A CreateNetworkInterface sent with
//! TagSpecifications needs `ec2:CreateTags` too, and only that: AWS checks it with
//! `ec2:CreateAction` set to the creating action, so such a grant must carry that condition.

use super::{root, strings};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The EC2 actions the operator's code sends.
#[derive(Debug, Default, PartialEq)]
struct Usage {
    /// Actions sent as requests of their own.
    called: BTreeSet<String>,
    /// Creating actions sent with TagSpecifications (each needs CreateTags under its name).
    tagged_creates: BTreeSet<String>,
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The text of `path` before its test module (the crate keeps those last).
fn non_test_source(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let test_mod = regex::Regex::new(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s").unwrap();
    match test_mod.find(&text) {
        Some(m) => text[..m.start()].to_string(),
        None => text,
    }
}

/// `fn name` → its body (the text up to the next `fn`), for every function in `src`.
fn functions(src: &str) -> BTreeMap<String, String> {
    let head = regex::Regex::new(r"\bfn\s+([a-z_0-9]+)\s*[<(]").unwrap();
    let starts: Vec<(usize, String)> =
        head.captures_iter(src).map(|c| (c.get(0).unwrap().start(), c[1].to_string())).collect();
    let mut out = BTreeMap::new();
    for (i, (start, name)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(src.len(), |(s, _)| *s);
        out.entry(name.clone()).or_insert_with(String::new).push_str(&src[*start..end]);
    }
    out
}

/// `text` up to the brace that closes its first `{`.
fn block(text: &str) -> &str {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => return &text[..=i],
            '}' => depth -= 1,
            _ => {}
        }
    }
    panic!("unclosed block: {}", &text[..text.len().min(80)])
}

/// `describe_network_interfaces` → `DescribeNetworkInterfaces`.
fn action_name(sdk_method: &str) -> String {
    sdk_method.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect()
}

/// The EC2 actions each adapter function sends, its helpers' included, and whether it tags at
/// creation.
fn adapter_actions(src: &str) -> BTreeMap<String, (BTreeSet<String>, bool)> {
    let fns = functions(src);
    let sdk = regex::Regex::new(r"\.client\s*\.\s*([a-z_0-9]+)\(\)").unwrap();
    let own = regex::Regex::new(r"\bself\s*\.\s*([a-z_0-9]+)\s*\(").unwrap();
    let mut out = BTreeMap::new();
    for name in fns.keys() {
        let (mut actions, mut tags, mut seen) = (BTreeSet::new(), false, BTreeSet::new());
        let mut todo = vec![name.clone()];
        while let Some(f) = todo.pop() {
            if !seen.insert(f.clone()) {
                continue;
            }
            let body = &fns[&f];
            actions.extend(sdk.captures_iter(body).map(|c| action_name(&c[1])));
            tags |= body.contains(".tag_specifications(");
            todo.extend(
                own.captures_iter(body).map(|c| c[1].to_string()).filter(|h| fns.contains_key(h)),
            );
        }
        out.insert(name.clone(), (actions, tags));
    }
    out
}

/// What the operator's code sends to EC2, read from its source.
fn operator_usage() -> Usage {
    let src = root().join("operator/src");
    let ec2 = src.join("ec2");
    let mut adapter = vec![ec2.join("aws.rs")];
    rs_files(&ec2.join("aws"), &mut adapter);
    adapter.retain(|p| !p.ends_with("tests.rs"));
    let adapter_src: String = adapter.iter().map(|p| non_test_source(p)).collect();
    let actions = adapter_actions(&adapter_src);

    let mod_rs = std::fs::read_to_string(ec2.join("mod.rs")).unwrap();
    let trait_start = mod_rs.find("pub trait Ec2Api").expect("the Ec2Api trait in ec2/mod.rs");
    let trait_fns: BTreeSet<String> =
        functions(block(&mod_rs[trait_start..])).into_keys().collect();

    let mut callers = Vec::new();
    rs_files(&src, &mut callers);
    let skip = |p: &Path| {
        p.starts_with(ec2.join("aws"))
            || p == ec2.join("aws.rs")
            || p == ec2.join("mod.rs")
            || p.starts_with(ec2.join("fake"))
            || p == ec2.join("fake.rs")
            || p.file_name().is_some_and(|n| n == "tests.rs")
            || p.components().any(|c| c.as_os_str() == "tests")
    };
    let caller_src: String =
        callers.iter().filter(|p| !skip(p)).map(|p| non_test_source(p)).collect();
    let mut usage = Usage::default();
    for m in &trait_fns {
        let call = regex::Regex::new(&format!(r"\.\s*{m}\s*\(")).unwrap();
        if !call.is_match(&caller_src) {
            continue;
        }
        let (acts, tags) = actions.get(m).cloned().unwrap_or_default();
        if tags {
            usage.tagged_creates.extend(acts.iter().cloned());
        }
        usage.called.extend(acts);
    }
    usage
}

fn actions_of(s: &Value) -> Vec<String> {
    let list = match &s["Action"] {
        Value::String(a) => vec![a.clone()],
        a => strings(a),
    };
    list.into_iter().map(|a| a.trim_start_matches("ec2:").to_string()).collect()
}

/// The creating actions a statement's `ec2:CreateAction` condition limits it to, if any.
fn create_actions(s: &Value) -> Option<BTreeSet<String>> {
    match &s["Condition"]["StringEquals"]["ec2:CreateAction"] {
        Value::String(a) => Some([a.clone()].into()),
        Value::Array(_) => {
            Some(strings(&s["Condition"]["StringEquals"]["ec2:CreateAction"]).into_iter().collect())
        }
        _ => None,
    }
}

/// Everything wrong with `policy` for `usage`, one line each (empty: the policy fits).
fn findings(policy: &Value, usage: &Usage) -> Vec<String> {
    let mut out = Vec::new();
    let mut granted = BTreeSet::new();
    for s in policy["Statement"].as_array().unwrap() {
        let sid = s["Sid"].as_str().unwrap_or("<no Sid>");
        if s["Effect"] != "Allow" {
            out.push(format!("{sid}: Effect {} (the policy only allows)", s["Effect"]));
        }
        let raw = match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            a => strings(a),
        };
        if let Some(bad) = raw.iter().find(|a| !a.starts_with("ec2:") || a.contains('*')) {
            out.push(format!("{sid}: action {bad} is not one named EC2 action"));
        }
        // Every mutating statement is scoped by a resource or a condition.
        if !sid.starts_with("Describe") && s["Resource"] == "*" {
            out.push(format!("{sid}: allows a mutation on every resource"));
        }
        for a in actions_of(s) {
            if usage.called.contains(&a) {
                granted.insert(a);
                continue;
            }
            let on_create = create_actions(s).filter(|c| a == "CreateTags" && !c.is_empty());
            if let Some(creates) = on_create.filter(|c| c.is_subset(&usage.tagged_creates)) {
                granted.extend(creates.iter().map(|c| format!("CreateTags for {c}")));
                continue;
            }
            out.push(match a.as_str() {
                "CreateTags" if !usage.tagged_creates.is_empty() => format!(
                    "{sid}: grants CreateTags beyond tagging at creation (no ec2:CreateAction \
                     condition limited to {:?}), but the operator never calls CreateTags",
                    usage.tagged_creates
                ),
                _ => format!("{sid}: grants {a}, which the operator never calls"),
            });
        }
    }
    for a in &usage.called {
        if !granted.contains(a) {
            out.push(format!("the operator calls {a}, which no statement grants"));
        }
    }
    for c in &usage.tagged_creates {
        if !granted.contains(&format!("CreateTags for {c}")) && !usage.called.contains("CreateTags")
        {
            out.push(format!(
                "the operator tags at {c} (TagSpecifications), but no statement grants CreateTags \
                 with ec2:CreateAction {c}"
            ));
        }
    }
    out
}

fn policy() -> Value {
    serde_json::from_slice(&std::fs::read(root().join("docs/iam-policy.json")).unwrap()).unwrap()
}

#[test]
fn iam_policy_grants_exactly_the_ec2_calls_the_operator_makes() {
    let usage = operator_usage();
    assert!(usage.called.contains("CreateNetworkInterface"), "scan found {usage:?}");
    assert!(usage.called.contains("DescribeNetworkInterfaces"), "scan found {usage:?}");
    let found = findings(&policy(), &usage);
    assert!(
        found.is_empty(),
        "docs/iam-policy.json vs the operator's EC2 calls:\n{}",
        found.join("\n")
    );
}

/// The comparison fails on a grant no code uses, on a CreateTags grant broader than tagging at
/// creation, and on a call no statement grants.
#[test]
fn iam_check_fails_when_it_should() {
    let usage = operator_usage();
    let with = |extra: Value| {
        let mut p = policy();
        p["Statement"].as_array_mut().unwrap().push(extra);
        findings(&p, &usage)
    };
    let unused = with(serde_json::json!({"Sid": "Extra", "Effect": "Allow",
        "Action": "ec2:DeleteTags", "Resource": "arn:aws:ec2:*:*:network-interface/*"}));
    assert!(unused.iter().any(|f| f.contains("Extra") && f.contains("DeleteTags")), "{unused:?}");
    let retag = with(serde_json::json!({"Sid": "RetagOwnENIs", "Effect": "Allow",
        "Action": "ec2:CreateTags", "Resource": "arn:aws:ec2:*:*:network-interface/*",
        "Condition": {"StringEquals": {"aws:ResourceTag/enipool.io/cluster": "CLUSTER_NAME"}}}));
    assert!(retag.iter().any(|f| f.starts_with("RetagOwnENIs: grants CreateTags")), "{retag:?}");

    let mut p = policy();
    for s in p["Statement"].as_array_mut().unwrap() {
        if s["Sid"] == "TagOnlyWhileCreating" {
            s["Condition"]["StringEquals"]["ec2:CreateAction"] = "RunInstances".into();
        }
    }
    let missing = findings(&p, &usage);
    assert!(missing.iter().any(|f| f.contains("tags at CreateNetworkInterface")), "{missing:?}");

    let called_only = Usage { called: ["DetachVolume".to_string()].into(), ..Default::default() };
    let f = findings(&serde_json::json!({"Statement": []}), &called_only);
    assert_eq!(f, ["the operator calls DetachVolume, which no statement grants"]);
}
