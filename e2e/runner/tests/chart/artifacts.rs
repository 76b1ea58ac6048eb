//! NOTES and the image build files.

use super::{chart, helm, parse_docs, root, run, which, NAMESPACE, RELEASE};
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
