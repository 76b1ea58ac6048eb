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
    // tests/images.rs builds and runs the images; this checks what it cannot: that the
    // Containerfiles still suit docker/podman with their default registry bases and any
    // architecture, and name the chart's images.
    for (image, binary, base) in [
        ("operator", "enipool-operator", "gcr.io/distroless/cc-debian12:nonroot"),
        ("agent", "enipool-agent", "debian:bookworm-slim"),
        ("cni", "enipool-cni", "gcr.io/distroless/static-debian12:debug"),
    ] {
        let text =
            std::fs::read_to_string(root().join(format!("images/{image}.Containerfile"))).unwrap();
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(froms, ["FROM ${BASE}"], "{image}: one stage on the BASE build argument");
        assert!(text.contains(&format!("ARG BASE={base}\n")), "{image}: default base {base}");
        assert!(text.contains("ARG TARGETARCH\n"), "{image}: per-architecture context");
        let dest = if image == "cni" { "/opt/enipool/bin" } else { "/usr/local/bin" };
        assert!(
            text.contains(&format!("COPY ${{TARGETARCH}}/{binary} {dest}/{binary}")),
            "{image}: copies {binary} of the target architecture"
        );
        match image {
            "operator" => assert!(text.contains("USER 65532:65532")),
            "agent" => assert!(text.contains("nftables"), "the agent runs nft"),
            _ => assert!(text.contains(r#"ENTRYPOINT ["/busybox/sh"]"#)),
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
    // `make images` with an engine it does not know: a clear message and a failure.
    if which("make").is_some() {
        let mut cmd = Command::new("make");
        cmd.current_dir(root()).args(["images", "ENGINE=nerdctl"]);
        let (ok, _, err) = run(&mut cmd, None).unwrap();
        assert!(!ok && err.contains("--engine must be buildah, docker or podman"), "{err}");
    }
}
