//! Lint and schema validation: `helm lint --strict`, the chart's CRDs against the generated
//! ones, and the rendered manifests against Kubernetes' schemas and the CRDs' own.

use super::{
    chart, helm, kubernetes_validate, parse_docs, render_text, root, run, Values, RELEASE,
};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

#[test]
fn helm_lint_strict() {
    for values in ["default-values.yaml", "custom-values.yaml"] {
        let mut cmd = Command::new(helm());
        cmd.args(["lint", "--strict"]).arg(chart()).arg("-f").arg(chart().join("ci").join(values));
        let (ok, out, err) = run(&mut cmd, None).unwrap();
        assert!(ok, "helm lint --strict with {values} failed:\n{out}\n{err}");
    }
    // Without the one required value the chart refuses to render, saying what is missing.
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE]).arg(chart());
    let (ok, _, err) = run(&mut cmd, None).unwrap();
    assert!(!ok && err.contains("clusterName is required"), "{err}");
    // The values schema rejects a wrong type and an unknown key.
    for bad in ["agent.mtu=big", "operator.bogus=1", "operator.logFormat=xml"] {
        let mut cmd = Command::new(helm());
        cmd.args(["template", RELEASE]).arg(chart()).args(["--set", "clusterName=c", "--set", bad]);
        let (ok, _, err) = run(&mut cmd, None).unwrap();
        assert!(!ok && err.contains("schema"), "--set {bad} was accepted: {err}");
    }
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    };
    let (generated, in_chart) = (root().join("crds"), chart().join("crds"));
    assert_eq!(
        names(&generated),
        names(&in_chart),
        "charts/enipool/crds/ must hold exactly the files of crds/"
    );
    for n in names(&generated) {
        let a = std::fs::read(generated.join(&n)).unwrap();
        let b = std::fs::read(in_chart.join(&n)).unwrap();
        assert!(
            a == b,
            "charts/enipool/crds/{n} differs from crds/{n}: cp crds/*.yaml charts/enipool/crds/"
        );
    }
}

#[test]
fn rendered_manifests_validate_against_kubernetes_schemas_strictly() {
    let validator = kubernetes_validate();
    for values in ["default-values.yaml", "custom-values.yaml"] {
        let text = render_text(&Values::File(values), &["--include-crds"]).unwrap();
        // Oldest supported (the chart's kubeVersion) and newest known.
        for version in ["1.30.0", "1.37.0"] {
            let mut cmd = Command::new(&validator);
            cmd.args(["--strict", "--quiet", "-k", version, "-"]);
            let (ok, out, err) = run(&mut cmd, Some(&text)).unwrap();
            assert!(ok, "kubernetes-validate --strict ({values}, {version}):\n{out}\n{err}");
            // Only our own custom resources may lack a schema; they are checked below.
            for line in
                out.lines().chain(err.lines()).filter(|l| l.contains("Couldn't find schema"))
            {
                assert!(line.contains("enipool.io/"), "{values}: {line}");
            }
        }
        // Custom resources against the CRD's openAPIV3Schema.
        let docs = parse_docs(&text).unwrap();
        for cr in docs.iter().filter(|d| d["apiVersion"] == "enipool.io/v1alpha1") {
            let kind = cr["kind"].as_str().unwrap();
            let crd = docs
                .iter()
                .find(|d| {
                    d["kind"] == "CustomResourceDefinition" && d["spec"]["names"]["kind"] == kind
                })
                .unwrap_or_else(|| panic!("no CRD for {kind}"));
            let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            let validator = jsonschema::validator_for(schema).unwrap();
            let errors: Vec<String> = validator.iter_errors(cr).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{values}: {kind} does not match its CRD: {errors:?}");
        }
    }
}
