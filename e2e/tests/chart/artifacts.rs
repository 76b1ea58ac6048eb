//! NOTES, the IAM policy against the operator's EC2 calls, and the image build files.

use super::{chart, helm, parse_docs, root, run, strings, which, NAMESPACE, RELEASE};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

#[test]
fn notes_tell_how_to_check_the_install() {
    // `helm template` drops NOTES.txt and `helm install --dry-run` wants a cluster (helm 3.19), so
    // render it through a copy of the chart with one extra template that includes it.
    let t = tempfile::tempdir().unwrap();
    let copy = t.path().join("enipool");
    let (ok, _, err) = run(Command::new("cp").arg("-r").arg(chart()).arg(&copy), None).unwrap();
    assert!(ok, "{err}");
    std::fs::write(
        copy.join("templates/zz-notes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rendered-notes\ndata:\n  notes: |\n\
         {{ include (print $.Template.BasePath \"/NOTES.txt\") . | indent 4 }}\n",
    )
    .unwrap();
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(&copy)
        .args(["--namespace", NAMESPACE, "--show-only", "templates/zz-notes.yaml", "-f"])
        .arg(chart().join("ci/default-values.yaml"));
    let (ok, out, err) = run(&mut cmd, None).unwrap();
    assert!(ok, "{err}");
    let docs = parse_docs(&out).unwrap();
    let notes = docs[0]["data"]["notes"].as_str().unwrap();
    for needle in
        ["kubectl get enipools", ".status.effective.capacity.maxPods", "docs/iam-policy.json"]
    {
        assert!(notes.contains(needle), "NOTES lack {needle}:\n{notes}");
    }
}

#[test]
fn iam_policy_covers_exactly_the_ec2_calls() {
    let policy: Value =
        serde_json::from_slice(&std::fs::read(root().join("docs/iam-policy.json")).unwrap())
            .unwrap();
    let mut allowed = BTreeSet::new();
    for s in policy["Statement"].as_array().unwrap() {
        assert_eq!(s["Effect"], "Allow");
        let actions = match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            a => strings(a),
        };
        for a in actions {
            assert!(a.starts_with("ec2:") && !a.contains('*'), "{a}");
            allowed.insert(a.trim_start_matches("ec2:").to_string());
        }
        // Every mutating statement is scoped by a condition.
        let mutating = !s["Sid"].as_str().unwrap().starts_with("Describe");
        let resource_all = s["Resource"] == "*";
        assert!(!(mutating && resource_all), "{} allows a mutation on every resource", s["Sid"]);
    }
    // The AWS adapter is operator/src/ec2/aws.rs and its submodules (tests excluded: they build
    // requests, they do not call EC2).
    let dir = root().join("operator/src/ec2");
    let mut files = vec![dir.join("aws.rs")];
    for e in std::fs::read_dir(dir.join("aws")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "rs") && !path.ends_with("tests.rs") {
            files.push(path);
        }
    }
    let src: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    let re = regex::Regex::new(r"\.client\s*\.\s*([a-z_]+)\(\)").unwrap();
    let called: BTreeSet<String> = re
        .captures_iter(&src)
        .map(|c| c[1].split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect::<String>())
        .collect();
    assert!(called.contains("CreateNetworkInterface"), "scan found {called:?}");
    assert_eq!(allowed, called, "docs/iam-policy.json vs the EC2 calls of the AWS adapter (operator/src/ec2/aws.rs and aws/)");
}

#[test]
fn image_build_files_are_consistent() {
    for (image, package) in
        [("operator", "enipool-operator"), ("agent", "enipool-agent"), ("cni", "enipool-cni")]
    {
        let text =
            std::fs::read_to_string(root().join(format!("images/{image}.Dockerfile"))).unwrap();
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(froms.len(), 2, "{image}: a builder and a runtime stage");
        assert!(
            froms[0].contains("rust:") && froms[0].contains(" AS build"),
            "{image}: {}",
            froms[0]
        );
        assert!(text.contains(&format!("cargo build --release --locked -p {package}")), "{image}");
        let manifest = std::fs::read_to_string(root().join(match image {
            "operator" => "operator/Cargo.toml",
            "agent" => "node-agent/Cargo.toml",
            _ => "cni-shim/Cargo.toml",
        }))
        .unwrap();
        assert!(
            manifest.contains(&format!("name = \"{package}\"")),
            "{image}: no package {package}"
        );
        match image {
            "operator" => assert!(froms[1].contains("distroless") && text.contains("USER 65532")),
            "cni" => assert!(
                froms[1].contains("distroless/static")
                    && text.contains("/opt/enipool/bin/enipool-cni")
            ),
            _ => assert!(text.contains("nftables"), "the agent runs nft"),
        }
        // The chart's default image names are these.
        let values = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
        assert!(
            values.contains(&format!("repository: enipool-{image}")),
            "values.yaml image for {image}"
        );
    }
    // The install script's busybox shell and plugin path match the cni image.
    let ds = std::fs::read_to_string(chart().join("templates/agent-daemonset.yaml")).unwrap();
    assert!(ds.contains("/busybox/sh") && ds.contains("/opt/enipool/bin/enipool-cni"));
    // `make images` without a container engine: a clear message and a failure, never a silent pass.
    if which("make").is_some() {
        let mut cmd = Command::new("make");
        cmd.current_dir(root()).args(["images", "ENGINE="]);
        let (ok, _, err) = run(&mut cmd, None).unwrap();
        assert!(!ok && err.contains("no working container engine"), "{err}");
    }
}
