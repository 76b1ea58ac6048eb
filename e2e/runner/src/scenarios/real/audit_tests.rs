//! Table tests of the audit: a clean snapshot has no finding, and each fault injected into it
//! gives exactly the finding that names it.

use super::*;
use serde_json::json;

const CLUSTER: &str = "c1";

fn eni_status(
    id: &str,
    index: i32,
    state: &str,
    ips: &[&str],
    prefixes: &[&str],
) -> serde_json::Value {
    json!({"id": id, "deviceIndex": index, "mac": "02:00:00:00:00:01", "subnetID": "subnet-1",
           "subnetCIDR": "10.0.0.0/16", "primaryIP": format!("10.0.{index}.1"), "ips": ips,
           "prefixes": prefixes, "state": state, "managed": index > 0})
}

fn pool(name: &str, instance: &str, enis: Vec<serde_json::Value>) -> ENIPool {
    serde_json::from_value(json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool",
        "metadata": {"name": name},
        "spec": {"nodeName": name, "instanceID": instance},
        "status": {"enis": enis},
    }))
    .expect("pool fixture")
}

fn ec2(
    id: &str,
    instance: Option<(&str, i32)>,
    primary: &str,
    ips: &[&str],
    prefixes: &[&str],
) -> Ec2Eni {
    let primary: Ipv4Addr = primary.parse().unwrap();
    Ec2Eni {
        id: id.into(),
        status: if instance.is_some() { "in-use" } else { "available" }.into(),
        attachment: instance
            .map(|(i, d)| Ec2Attachment { instance_id: i.into(), device_index: Some(d) }),
        primary_ip: Some(primary),
        ips: std::iter::once(primary).chain(ips.iter().map(|a| a.parse().unwrap())).collect(),
        prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        tags: BTreeMap::new(),
    }
}

fn tagged(mut e: Ec2Eni, cluster: &str, age_secs: Option<i64>, op: &str) -> Ec2Eni {
    e.tags.insert(tags::CLUSTER.into(), cluster.into());
    e.tags.insert(tags::OWNER.into(), tags::OWNER_VALUE.into());
    if let Some(age) = age_secs {
        let t = now() - jiff::SignedDuration::from_secs(age);
        e.tags.insert(tags::CREATED_AT.into(), t.to_string());
    }
    if !op.is_empty() {
        e.tags.insert(tags::OPERATION.into(), op.into());
    }
    e
}

fn now() -> jiff::Timestamp {
    "2026-01-01T12:00:00Z".parse().unwrap()
}

fn rules() -> Rules {
    Rules { cluster: CLUSTER.into(), leak_allowance: Duration::from_secs(900) }
}

/// Two nodes: n1 (i-1) with its primary ENI and a managed secondary ENI in prefix mode on the
/// second, n2 (i-2) with its primary; pods on both; a young available ENI, an ENI of another
/// cluster and an unrecorded ENI of an in-flight journaled CreateENI.
fn clean() -> Observed {
    let mut p1 = pool(
        "n1",
        "i-1",
        vec![
            eni_status("eni-a", 0, "Attached", &["10.0.0.10", "10.0.0.11"], &[]),
            eni_status("eni-b", 1, "Attached", &[], &["10.0.2.0/28"]),
            eni_status("eni-creating", 2, "Creating", &[], &[]),
        ],
    );
    p1.status.as_mut().unwrap().operations = vec![serde_json::from_value(json!({
        "id": "op-7", "type": "CreateENI", "startedAt": "2026-01-01T11:00:00Z"}))
    .unwrap()];
    let p2 = pool("n2", "i-2", vec![eni_status("eni-c", 0, "Attached", &["10.0.1.10"], &[])]);
    let enis = [
        ec2("eni-a", Some(("i-1", 0)), "10.0.0.1", &["10.0.0.10", "10.0.0.11", "10.0.0.12"], &[]),
        tagged(
            ec2("eni-b", Some(("i-1", 1)), "10.0.1.1", &[], &["10.0.2.0/28"]),
            CLUSTER,
            Some(3600),
            "op-1",
        ),
        ec2("eni-c", Some(("i-2", 0)), "10.0.1.2", &["10.0.1.10"], &[]),
        tagged(ec2("eni-young", None, "10.0.9.1", &[], &[]), CLUSTER, Some(60), "op-2"),
        tagged(
            ec2("eni-journaled", Some(("i-1", 2)), "10.0.9.2", &[], &[]),
            CLUSTER,
            Some(3600),
            "op-7",
        ),
        tagged(ec2("eni-other", None, "10.0.9.3", &[], &[]), "other", Some(3600), "op-3"),
    ]
    .into_iter()
    .map(|e| (e.id.clone(), e))
    .collect();
    let pod = |name: &str, node: &str, ip: &str| PodIp {
        pod: format!("default/{name}"),
        node: node.into(),
        ip: ip.parse().unwrap(),
    };
    Observed {
        pools: vec![p1, p2],
        enis,
        pods: vec![
            pod("a", "n1", "10.0.0.10"),
            pod("b", "n1", "10.0.2.5"),
            pod("c", "n2", "10.0.1.10"),
        ],
        now: now(),
    }
}

fn eni_mut<'a>(o: &'a mut Observed, pool: usize, id: &str) -> &'a mut enipool_crds::EniStatus {
    o.pools[pool].status.as_mut().unwrap().enis.iter_mut().find(|e| e.id == id).unwrap()
}

#[test]
fn a_clean_snapshot_has_no_finding() {
    assert_eq!(audit(&clean(), &rules()), vec![]);
}

#[test]
fn each_fault_gives_its_finding() {
    type Case = (&'static str, fn(&mut Observed), Vec<Finding>);
    let s = |v: &str| v.to_string();
    let cases: Vec<Case> = vec![
        (
            "ENI gone from EC2",
            |o| {
                o.enis.remove("eni-c");
            },
            vec![Finding::EniMissing { pool: s("n2"), eni: s("eni-c") }],
        ),
        (
            "ENI on another instance",
            |o| {
                o.enis.get_mut("eni-c").unwrap().attachment.as_mut().unwrap().instance_id =
                    "i-9".into()
            },
            vec![Finding::EniNotOnInstance {
                pool: s("n2"),
                eni: s("eni-c"),
                instance: s("i-2"),
                found: s("attached to i-9"),
            }],
        ),
        (
            "ENI detached",
            |o| {
                let e = o.enis.get_mut("eni-c").unwrap();
                e.attachment = None;
                e.status = "available".into();
            },
            vec![Finding::EniNotOnInstance {
                pool: s("n2"),
                eni: s("eni-c"),
                instance: s("i-2"),
                found: s("not attached (available)"),
            }],
        ),
        (
            "wrong device index",
            |o| eni_mut(o, 0, "eni-b").device_index = 3,
            vec![Finding::WrongDeviceIndex {
                pool: s("n1"),
                eni: s("eni-b"),
                recorded: 3,
                found: 1,
            }],
        ),
        (
            "address unassigned in EC2",
            |o| {
                o.enis.get_mut("eni-a").unwrap().ips.remove(&"10.0.0.11".parse().unwrap());
            },
            vec![Finding::NotAssigned { pool: s("n1"), eni: s("eni-a"), address: s("10.0.0.11") }],
        ),
        (
            "prefix unassigned in EC2",
            |o| o.enis.get_mut("eni-b").unwrap().prefixes.clear(),
            vec![Finding::NotAssigned {
                pool: s("n1"),
                eni: s("eni-b"),
                address: s("10.0.2.0/28"),
            }],
        ),
        (
            "the ENI's own primary recorded as a pod address",
            |o| eni_mut(o, 1, "eni-c").ips.push("10.0.1.2".into()),
            vec![Finding::NotAssigned { pool: s("n2"), eni: s("eni-c"), address: s("10.0.1.2") }],
        ),
        (
            "an address in two pools",
            |o| {
                eni_mut(o, 1, "eni-c").ips.push("10.0.0.10".into());
                o.enis.get_mut("eni-c").unwrap().ips.insert("10.0.0.10".parse().unwrap());
            },
            vec![Finding::DoubleAssigned {
                address: s("10.0.0.10/32"),
                first: s("n1/eni-a"),
                second: s("n2/eni-c"),
            }],
        ),
        (
            "an address inside another pool's prefix",
            |o| {
                eni_mut(o, 1, "eni-c").ips.push("10.0.2.7".into());
                o.enis.get_mut("eni-c").unwrap().ips.insert("10.0.2.7".parse().unwrap());
            },
            vec![Finding::DoubleAssigned {
                address: s("10.0.2.7/32"),
                first: s("n1/eni-b"),
                second: s("n2/eni-c"),
            }],
        ),
        (
            "an address twice in one list",
            |o| eni_mut(o, 0, "eni-a").ips.push("10.0.0.11".into()),
            vec![Finding::DoubleAssigned {
                address: s("10.0.0.11/32"),
                first: s("n1/eni-a"),
                second: s("n1/eni-a"),
            }],
        ),
        (
            "an ENI in two pools",
            |o| {
                let e = eni_mut(o, 0, "eni-b").clone();
                o.pools[1].status.as_mut().unwrap().enis.push(enipool_crds::EniStatus {
                    prefixes: vec![],
                    state: EniState::Detaching,
                    ..e
                });
            },
            vec![Finding::EniInTwoPools { eni: s("eni-b"), pools: (s("n1"), s("n2")) }],
        ),
        (
            "an old available ENI nobody records",
            |o| {
                let e = o.enis.get_mut("eni-young").unwrap();
                *e = tagged(
                    ec2("eni-young", None, "10.0.9.1", &[], &[]),
                    CLUSTER,
                    Some(901),
                    "op-2",
                );
            },
            vec![Finding::Leaked {
                eni: s("eni-young"),
                status: s("available"),
                created_at: (now() - jiff::SignedDuration::from_secs(901)).to_string(),
            }],
        ),
        (
            "an attached cluster ENI nobody records",
            |o| {
                let e = o.enis.get_mut("eni-young").unwrap();
                e.attachment =
                    Some(Ec2Attachment { instance_id: "i-1".into(), device_index: Some(2) });
                e.status = "in-use".into();
            },
            vec![Finding::Leaked {
                eni: s("eni-young"),
                status: s("in-use"),
                created_at: (now() - jiff::SignedDuration::from_secs(60)).to_string(),
            }],
        ),
        (
            "a cluster ENI without created-at",
            |o| {
                o.enis.get_mut("eni-young").unwrap().tags.remove(tags::CREATED_AT);
            },
            vec![Finding::Leaked {
                eni: s("eni-young"),
                status: s("available"),
                created_at: s("missing"),
            }],
        ),
        (
            "the journal entry is gone",
            |o| o.pools[0].status.as_mut().unwrap().operations.clear(),
            vec![Finding::Leaked {
                eni: s("eni-journaled"),
                status: s("in-use"),
                created_at: (now() - jiff::SignedDuration::from_secs(3600)).to_string(),
            }],
        ),
        (
            "two pods with one IP",
            |o| o.pods[1].ip = "10.0.0.10".parse().unwrap(),
            vec![Finding::PodIpDuplicate {
                ip: "10.0.0.10".parse().unwrap(),
                pods: (s("default/a"), s("default/b")),
            }],
        ),
        (
            "a pod IP of the other node's pool",
            |o| o.pods[2].ip = "10.0.0.11".parse().unwrap(),
            vec![Finding::PodIpOutsidePool {
                pod: s("default/c"),
                node: s("n2"),
                ip: "10.0.0.11".parse().unwrap(),
            }],
        ),
        (
            "the agent's orphan alarm",
            |o| {
                o.pools[1].status.as_mut().unwrap().agent = Some(enipool_crds::AgentStatus {
                    orphaned_in_use: vec!["10.0.1.99".into()],
                    ..Default::default()
                });
            },
            vec![Finding::AgentOrphaned { pool: s("n2"), addresses: vec![s("10.0.1.99")] }],
        ),
        (
            "garbage in a pool",
            |o| eni_mut(o, 1, "eni-c").ips.push("10.0.1".into()),
            vec![Finding::Unparseable { pool: s("n2"), eni: s("eni-c"), value: s("10.0.1") }],
        ),
    ];
    for (what, fault, want) in cases {
        let mut o = clean();
        fault(&mut o);
        assert_eq!(audit(&o, &rules()), want, "{what}");
    }
}

#[test]
fn states_in_flux_and_releasing_addresses_are_not_findings() {
    let mut o = clean();
    // Detaching/Deleting ENIs may already be gone; a released address may already be unassigned.
    eni_mut(&mut o, 0, "eni-b").state = EniState::Detaching;
    o.enis.remove("eni-b");
    o.enis.get_mut("eni-a").unwrap().ips.remove(&"10.0.0.11".parse().unwrap());
    o.pools[0].status.as_mut().unwrap().releasing = Some(
        serde_json::from_value(json!({"revision": 1, "epoch": 1, "ips": ["10.0.0.11"]})).unwrap(),
    );
    o.pods.retain(|p| p.pod != "default/b");
    assert_eq!(audit(&o, &rules()), vec![]);
    // But an attaching ENI must exist.
    eni_mut(&mut o, 1, "eni-c").state = EniState::Attaching;
    o.enis.remove("eni-c");
    o.pods.retain(|p| p.node != "n2");
    assert_eq!(
        audit(&o, &rules()),
        vec![Finding::EniMissing { pool: "n2".into(), eni: "eni-c".into() }]
    );
}

#[test]
fn which_pods_must_hold_pool_addresses() {
    let nodes: BTreeSet<String> = ["n1".to_string()].into();
    let pod = |spec: serde_json::Value, status: serde_json::Value, deleting: bool| -> Pod {
        let mut meta = json!({"name": "p", "namespace": "ns"});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-01-01T12:00:00Z");
        }
        serde_json::from_value(json!({"metadata": meta, "spec": spec, "status": status})).unwrap()
    };
    let spec = json!({"nodeName": "n1", "containers": [{"name": "c"}]});
    let running = json!({"phase": "Running", "podIP": "10.0.0.10"});
    assert_eq!(
        pod_ip(&pod(spec.clone(), running.clone(), false), &nodes),
        Some(PodIp { pod: "ns/p".into(), node: "n1".into(), ip: "10.0.0.10".parse().unwrap() })
    );
    let host = json!({"nodeName": "n1", "hostNetwork": true, "containers": [{"name": "c"}]});
    let elsewhere = json!({"nodeName": "n9", "containers": [{"name": "c"}]});
    for (what, p) in [
        ("hostNetwork", pod(host, running.clone(), false)),
        ("node without a pool", pod(elsewhere, running.clone(), false)),
        ("terminating", pod(spec.clone(), running, true)),
        ("finished", pod(spec.clone(), json!({"phase": "Succeeded", "podIP": "10.0.0.10"}), false)),
        ("no IP yet", pod(spec, json!({"phase": "Pending"}), false)),
    ] {
        assert_eq!(pod_ip(&p, &nodes), None, "{what}");
    }
}
