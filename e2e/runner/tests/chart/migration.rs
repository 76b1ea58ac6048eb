//! A node moved from the Amazon VPC CNI (aws-node) in place: enipool's conflist wins, its host
//! ports are free, and aws-node's ENIs are left alone.

use super::{container, find, render, strings, Values, RELEASE};

/// Host ports aws-node's containers bind on a node (ipamd metrics and introspection, the network
/// policy agent's metrics, ipamd's gRPC, the node agent's health and metrics).
const AWS_NODE_PORTS: &[u16] = &[61678, 61679, 61680, 50051, 8162, 8163];

#[test]
fn the_conflist_sorts_before_aws_nodes() {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let ds = find(&docs, "DaemonSet", &format!("{RELEASE}-agent"));
    let args = strings(&container(ds, "agent")["args"]);
    let name = args
        .iter()
        .find_map(|a| a.strip_prefix("--cni-conf-name="))
        .expect("the agent is told the conflist's name");
    // Runtimes take the lexically first config in the directory.
    assert!(name < "10-aws.conflist", "{name} loses to aws-node's 10-aws.conflist");
    assert!(!args.iter().any(|a| a == "--cni-exclusive"), "exclusive mode is opt-in");
    let values = serde_json::json!({"clusterName": "c", "cni": {"exclusive": true}});
    let exclusive = render(&Values::Json(values)).unwrap();
    let ds = find(&exclusive, "DaemonSet", &format!("{RELEASE}-agent"));
    assert!(strings(&container(ds, "agent")["args"]).iter().any(|a| a == "--cni-exclusive"));
}

#[test]
fn agent_host_ports_are_not_aws_nodes() {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let ds = find(&docs, "DaemonSet", &format!("{RELEASE}-agent"));
    assert_eq!(ds["spec"]["template"]["spec"]["hostNetwork"], true, "ports are the node's");
    let args = strings(&container(ds, "agent")["args"]);
    for flag in ["--metrics-addr=", "--introspection-addr="] {
        let addr = args.iter().find_map(|a| a.strip_prefix(flag)).expect(flag);
        let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
        assert!(!AWS_NODE_PORTS.contains(&port), "{flag}{addr} is a port aws-node binds");
    }
}

#[test]
fn the_default_policy_leaves_aws_nodes_enis_alone() {
    let docs = render(&Values::File("default-values.yaml")).unwrap();
    let policy = docs.iter().find(|d| d["kind"] == "ENIPoolPolicy").expect("default policy");
    let exclude = &policy["spec"]["eni"]["excludeInterfaceTags"];
    assert_eq!(exclude["node.k8s.amazonaws.com/instance_id"], "", "{exclude}");
    assert_eq!(exclude["node.k8s.amazonaws.com/no_manage"], "true", "{exclude}");
}
