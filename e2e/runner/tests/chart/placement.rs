//! Where the operator's pods go and which images run: user affinity merged with the chart's
//! anti-affinity (never two `podAntiAffinity` keys, where YAML keeps the last one silently), zone
//! spread, tolerations added to the defaults, and images pinned by digest.

use super::{container, find, init_container, render, render_text, Values, RELEASE};
use serde_json::{json, Value};

fn operator_spec(values: Value) -> (String, Value) {
    let v = Values::Json(values);
    let text = render_text(&v, &[]).unwrap();
    let docs = render(&v).unwrap();
    let d = find(&docs, "Deployment", &format!("{RELEASE}-operator"));
    (text, d["spec"]["template"]["spec"].clone())
}

#[test]
fn user_pod_anti_affinity_is_merged_with_the_charts() {
    let user = json!({"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 50,
        "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone",
                            "labelSelector": {"matchLabels": {"app": "x"}}}}]});
    let (text, spec) = operator_spec(json!({
        "clusterName": "c",
        "operator": {"affinity": {"podAntiAffinity": user,
                                  "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                                      "nodeSelectorTerms": [{"matchExpressions": [
                                          {"key": "pool", "operator": "In", "values": ["sys"]}]}]}}}},
    }));
    let deployment =
        text.split("\nkind: Deployment").nth(1).unwrap().split("\n---").next().unwrap();
    assert_eq!(deployment.matches("podAntiAffinity:").count(), 1, "one key:\n{deployment}");
    let anti = &spec["affinity"]["podAntiAffinity"];
    assert_eq!(anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"], 50, "{anti}");
    let required = &anti["requiredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(required[0]["topologyKey"], "kubernetes.io/hostname", "the chart's term: {anti}");
    assert!(spec["affinity"]["nodeAffinity"].is_object(), "other affinity kept");
}

#[test]
fn operator_spreads_over_zones_and_takes_extra_tolerations() {
    let (_, spec) = operator_spec(json!({
        "clusterName": "c",
        "operator": {"extraTolerations": [{"key": "dedicated", "operator": "Equal",
                                           "value": "system", "effect": "NoSchedule"}]},
    }));
    let spread = &spec["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone", "{spread}");
    assert_eq!(spread["whenUnsatisfiable"], "ScheduleAnyway", "a one-zone cluster still schedules");
    assert_eq!(spread["maxSkew"], 1);
    assert!(spread["labelSelector"]["matchLabels"].is_object());
    let keys: Vec<&str> =
        spec["tolerations"].as_array().unwrap().iter().filter_map(|t| t["key"].as_str()).collect();
    assert!(
        keys.contains(&"node.kubernetes.io/not-ready") && keys.contains(&"dedicated"),
        "{keys:?}"
    );
    let (_, off) =
        operator_spec(json!({"clusterName": "c", "operator": {"zoneSpread": {"enabled": false}}}));
    assert!(off["topologySpreadConstraints"].is_null(), "{off}");
}

#[test]
fn images_can_be_pinned_by_digest() {
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let docs = render(&Values::Json(json!({
        "clusterName": "c",
        "image": {"registry": "registry.example.com/enipool"},
        "operator": {"image": {"digest": digest}},
        "agent": {"image": {"digest": digest}},
        "cni": {"image": {"digest": digest}},
    })))
    .unwrap();
    let op = container(find(&docs, "Deployment", &format!("{RELEASE}-operator")), "operator");
    assert_eq!(op["image"], format!("registry.example.com/enipool/enipool-operator@{digest}"));
    let ds = find(&docs, "DaemonSet", &format!("{RELEASE}-agent"));
    assert_eq!(
        container(ds, "agent")["image"],
        format!("registry.example.com/enipool/enipool-agent@{digest}")
    );
    let cni = init_container(ds, "install-cni").unwrap();
    assert_eq!(cni["image"], format!("registry.example.com/enipool/enipool-cni@{digest}"));
    // Without a digest: the tag.
    let docs =
        render(&Values::Json(json!({"clusterName": "c", "image": {"tag": "1.2.3"}}))).unwrap();
    let op = container(find(&docs, "Deployment", &format!("{RELEASE}-operator")), "operator");
    assert!(op["image"].as_str().unwrap().ends_with("enipool-operator:1.2.3"), "{}", op["image"]);
}
