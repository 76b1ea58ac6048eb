use super::*;
use serde_json::json;

fn pool(v: serde_json::Value) -> ENIPool {
    serde_json::from_value(v).expect("pool")
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> serde_json::Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

fn effective(max_pod_ips: i32) -> serde_json::Value {
    json!({"mode": "SecondaryIP", "minAllocate": 0, "warmIPs": 8, "warmPrefixes": 1, "warmENIs": 0,
           "batch": 1, "maxAllocate": 0, "surgeMaxExtra": 64, "releaseEnabled": true,
           "releaseDelaySeconds": 180, "hysteresisIPs": 4, "releaseEmptyENIs": true,
           "cooldownSeconds": 30, "firstInterfaceIndex": 0, "freezeWhenCordoned": false,
           "capacity": {"maxENIs": 3, "ipsPerENI": 10, "prefixesPerENI": 0,
                        "maxPodIPs": max_pod_ips, "maxPods": 29, "source": "Static"}})
}

fn eni(id: &str, index: i32, subnet: &str, ips: &[&str]) -> serde_json::Value {
    json!({"id": id, "deviceIndex": index, "mac": "02:00:00:00:00:0a", "subnetID": subnet,
           "subnetCIDR": "10.0.16.0/20", "primaryIP": "10.0.16.4", "ips": ips})
}

fn healthy() -> ENIPool {
    pool(json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool",
        "metadata": {"name": "n-healthy"},
        "spec": {"nodeName": "n-healthy", "instanceID": "i-0000000000000001"},
        "status": {
            "instance": {"type": "m5.large", "zone": "us-west-2a", "vpcID": "vpc-1",
                         "subnetID": "subnet-a", "primaryENI": "eni-a0", "primaryIP": "10.0.16.4",
                         "state": "running"},
            "effective": effective(27),
            "enis": [eni("eni-a0", 0, "subnet-a", &["10.0.16.10", "10.0.16.11"])],
            "target": {"ips": 2, "reason": "demand"},
            "agent": {"epoch": 1, "inUse": 1, "pendingPods": 0},
            "conditions": [cond("Ready", "True", "Ready", "")],
        },
    }))
}

/// Not Ready, throttled, near capacity and growing, in zone b.
fn troubled() -> ENIPool {
    pool(json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool",
        "metadata": {"name": "n-troubled"},
        "spec": {"nodeName": "n-troubled", "instanceID": "i-0000000000000002"},
        "status": {
            "instance": {"type": "t3.small", "zone": "us-west-2b", "vpcID": "vpc-1",
                         "subnetID": "subnet-b", "primaryENI": "eni-b0", "primaryIP": "10.0.32.4",
                         "state": "running"},
            "effective": effective(10),
            "revision": 4,
            "enis": [eni("eni-b0", 0, "subnet-b", &["10.0.32.10", "10.0.32.11", "10.0.32.12",
                     "10.0.32.13", "10.0.32.14", "10.0.32.15", "10.0.32.16", "10.0.32.17",
                     "10.0.32.18"])],
            "target": {"ips": 10, "reason": "capacity"},
            "operations": [{"id": "op-1", "type": "AssignIPs", "eniID": "eni-b0", "count": 1,
                            "startedAt": "2026-01-01T00:00:00Z", "attempts": 3,
                            "lastError": "RequestLimitExceeded"}],
            "agent": {"epoch": 2, "observedRevision": 3, "readyENIs": ["eni-b0"], "inUse": 9,
                      "pendingPods": 2},
            "conditions": [
                cond("Ready", "False", "SubnetExhausted", "subnet-b has no free addresses"),
                cond("Throttled", "True", "RequestLimitExceeded", "EC2 throttles AssignPrivateIpAddresses"),
            ],
        },
    }))
}

fn policy() -> ENIPoolPolicy {
    serde_json::from_value(json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPoolPolicy",
        "metadata": {"name": "default"},
        "spec": {},
        "status": {"matchedNodes": 2, "subnets": [
            {"id": "subnet-a", "zone": "us-west-2a", "availableIPs": 4000, "exhausted": false},
            {"id": "subnet-b", "zone": "us-west-2b", "availableIPs": 0, "exhausted": true},
        ]},
    }))
    .expect("policy")
}

fn line_with<'a>(text: &'a str, section: &str, needle: &str) -> &'a str {
    let start = text.find(section).unwrap_or_else(|| panic!("no section {section:?} in\n{text}"));
    let rest = &text[start..];
    let end = rest[1..].find("\n\n").map_or(rest.len(), |e| e + 1);
    rest[..end]
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} under {section:?} in\n{text}"))
}

fn section_is_empty(text: &str, section: &str) -> bool {
    let start = text.find(section).expect("section");
    text[start..].lines().nth(1) == Some("  none")
}

#[test]
fn status_shows_free_addresses_per_zone_and_subnet() {
    let view = ClusterView { pools: vec![healthy(), troubled()], policies: vec![policy()] };
    let text = status::render(&view, &Thresholds::default());
    let a = line_with(&text, "SUBNETS", "subnet-a");
    assert!(a.contains("us-west-2a") && a.contains("4000") && a.contains(" no"), "{a}");
    let b = line_with(&text, "SUBNETS", "subnet-b");
    assert!(b.contains("us-west-2b") && b.contains("yes") && b.contains(" 9"), "{b}");
}

#[test]
fn status_names_pools_not_ready_with_reason_and_message() {
    let view = ClusterView { pools: vec![healthy(), troubled()], policies: vec![] };
    let text = status::render(&view, &Thresholds::default());
    let line = line_with(&text, "POOLS NOT READY", "n-troubled");
    assert!(line.contains("SubnetExhausted: subnet-b has no free addresses"), "{line}");
    let start = text.find("POOLS NOT READY").unwrap();
    let end = text[start..].find("\n\n").unwrap();
    assert!(!text[start..start + end].contains("n-healthy"), "{text}");
}

#[test]
fn a_pool_without_conditions_is_not_ready_and_says_so() {
    let mut p = healthy();
    p.status.as_mut().unwrap().conditions.clear();
    let text =
        status::render(&ClusterView { pools: vec![p], policies: vec![] }, &Thresholds::default());
    let line = line_with(&text, "POOLS NOT READY", "n-healthy");
    assert!(line.contains("Unknown") && line.contains("no condition yet"), "{line}");
}

#[test]
fn status_lists_near_capacity_growth_and_throttling() {
    let view = ClusterView { pools: vec![healthy(), troubled()], policies: vec![] };
    let text = status::render(&view, &Thresholds::default());
    let near = line_with(&text, "NODES NEAR CAPACITY", "n-troubled");
    assert!(near.contains(" 9 ") && near.contains(" 10 "), "{near}");
    let growth = line_with(&text, "PENDING GROWTH", "n-troubled");
    assert!(growth.contains("capacity") && growth.trim_end().ends_with('1'), "{growth}");
    assert!(line_with(&text, "PENDING GROWTH", "n-troubled").contains(" 2 "), "{growth}");
    let thr = line_with(&text, "THROTTLED BY EC2", "n-troubled");
    assert!(thr.contains("RequestLimitExceeded: EC2 throttles"), "{thr}");
}

#[test]
fn a_healthy_cluster_has_empty_problem_sections() {
    let view = ClusterView { pools: vec![healthy()], policies: vec![policy()] };
    let text = status::render(&view, &Thresholds::default());
    for s in ["NODES NEAR CAPACITY", "POOLS NOT READY", "PENDING GROWTH", "THROTTLED BY EC2"] {
        assert!(section_is_empty(&text, s), "{s} not empty in\n{text}");
    }
}

#[test]
fn node_explains_enis_holders_waits_and_conditions() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "shop"},
        "spec": {"nodeName": "n-troubled", "containers": []},
        "status": {"podIP": "10.0.32.12", "podIPs": [{"ip": "10.0.32.12"}]},
    }))
    .unwrap();
    let annotated: Pod = serde_json::from_value(json!({
        "metadata": {"name": "job-7", "namespace": "batch",
                     "annotations": {"enipool.io/pod-ips": "10.0.32.13"}},
        "spec": {"nodeName": "n-troubled", "containers": []},
    }))
    .unwrap();
    let mut p = troubled();
    p.status.as_mut().unwrap().release_request =
        Some(enipool_crds::ReleaseRequest { revision: 2, count: 3, prefer_enis: vec![] });
    let text = node::render(&NodeView { pool: p, pods: vec![pod, annotated] });
    let eni = line_with(&text, "ENIS", "eni-b0");
    assert!(eni.starts_with("0 ") && eni.contains("subnet-b") && eni.contains("yes"), "{eni}");
    assert!(line_with(&text, "ADDRESSES", "10.0.32.12").contains("shop/web-1"), "{text}");
    assert!(line_with(&text, "ADDRESSES", "10.0.32.13").contains("batch/job-7"), "{text}");
    assert!(line_with(&text, "ADDRESSES", "10.0.32.14").trim_end().ends_with('-'), "{text}");
    let op = line_with(&text, "WAITING FOR", "AssignIPs");
    assert!(op.contains("eni-b0") && op.contains("RequestLimitExceeded"), "{op}");
    assert!(text.contains("the agent to offer 3 addresses for release"), "{text}");
    assert!(text.contains("the agent to apply revision 4 (it has applied 3)"), "{text}");
    let ready = line_with(&text, "CONDITIONS", "Ready");
    assert!(ready.contains("False") && ready.contains("SubnetExhausted"), "{ready}");
    assert!(text.contains("Pending:   2 pods"), "{text}");
}

#[test]
fn node_without_status_says_the_operator_has_not_written_one() {
    let mut p = healthy();
    p.status = None;
    let text = node::render(&NodeView { pool: p, pods: vec![] });
    assert!(text.contains("has not written a status"), "{text}");
}
