//! The PodMonitors (`podMonitor.enabled`): none by default; when enabled, one per component whose
//! selector picks exactly that component's pods and whose endpoint is a port those pods expose;
//! and a clear refusal when the agent's metrics are on the node's loopback.

use super::{render, render_text, Values, NAMESPACE};
use serde_json::{json, Value};

fn values(extra: Value) -> Values<'static> {
    let mut v = json!({"clusterName": "c", "podMonitor": {"enabled": true}});
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in extra {
            v.insert(k.clone(), x.clone());
        }
    }
    Values::Json(v)
}

fn kinds<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// Whether every `matchLabels` pair is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let want = selector["matchLabels"].as_object().expect("matchLabels");
    !want.is_empty() && want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn no_pod_monitor_unless_enabled() {
    let docs = render(&Values::Json(json!({"clusterName": "c"}))).unwrap();
    assert!(kinds(&docs, "PodMonitor").is_empty());
}

#[test]
fn pod_monitors_select_each_components_pods_and_their_metrics_port() {
    let docs = render(&values(json!({
        "podMonitor": {"enabled": true, "interval": "15s", "labels": {"release": "prom"}}
    })))
    .unwrap();
    let monitors = kinds(&docs, "PodMonitor");
    assert_eq!(monitors.len(), 2, "one per component");
    let workloads: Vec<&Value> =
        docs.iter().filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet").collect();
    for m in monitors {
        assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(m["metadata"]["namespace"], NAMESPACE);
        assert_eq!(m["metadata"]["labels"]["release"], "prom", "extra labels");
        assert_eq!(m["spec"]["namespaceSelector"]["matchNames"], json!([NAMESPACE]));
        let selected: Vec<&&Value> = workloads
            .iter()
            .filter(|w| {
                selects(&m["spec"]["selector"], &w["spec"]["template"]["metadata"]["labels"])
            })
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "{}: selects exactly one workload's pods",
            m["metadata"]["name"]
        );
        let endpoint = &m["spec"]["podMetricsEndpoints"][0];
        assert_eq!(
            (endpoint["path"].as_str(), endpoint["interval"].as_str()),
            (Some("/metrics"), Some("15s"))
        );
        let containers = selected[0]["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        let ports: Vec<Value> = containers
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| p["name"].clone())
            .collect();
        assert!(
            ports.contains(&endpoint["port"]),
            "{}: port {} not among the pods' ports {ports:?}",
            m["metadata"]["name"],
            endpoint["port"]
        );
    }
}

#[test]
fn agent_metrics_on_loopback_cannot_be_monitored() {
    let v = values(json!({"agent": {"metrics": {"bindAddress": "127.0.0.1", "port": 61688}}}));
    let err = render_text(&v, &[]).expect_err("rendering must fail");
    assert!(err.to_string().contains("agent.metrics.bindAddress 127.0.0.1"), "{err}");
}
