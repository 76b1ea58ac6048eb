//! The API as users and the apiserver see it: the committed CRD YAML, its schema and CEL rules, and
//! the wire format of both kinds.

use enipool_crds::{generate, ENIPool, ENIPoolPolicy, IpMode};
use serde_json::{json, Value};
use std::path::Path;

fn committed(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn committed_crds_equal_generator_output() {
    for (name, yaml) in generate::rendered().unwrap() {
        assert!(
            committed(name) == yaml,
            "crds/{name} is stale: run `cargo run -p enipool-crds --bin enipool-crdgen` and commit"
        );
    }
}

/// The openAPIV3Schema of the committed YAML (what the apiserver would enforce), not of the Rust
/// types, so a hand edit or a stale file is caught too.
fn schema_of(file: &str) -> Value {
    let crd: Value = serde_saphyr::from_str(&committed(file)).unwrap();
    assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(v["subresources"]["status"], json!({}), "status subresource");
    v["schema"]["openAPIV3Schema"].clone()
}

/// What the apiserver does on create/update: structural schema, then CEL rules.
fn admit(schema: &Value, obj: &Value, old: Option<&Value>) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let validator = jsonschema::validator_for(schema).expect("schema compiles");
    for e in validator.iter_errors(obj) {
        errors.push(format!("{}: {}", e.instance_path(), e));
    }
    if let Err(es) = kube::core::cel::Validator::new().validate(schema, obj, old) {
        errors.extend(es.into_vec().into_iter().map(|e| e.to_string()));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn policy(spec: Value) -> Value {
    json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPoolPolicy",
           "metadata": {"name": "p"}, "spec": spec})
}

#[test]
fn policy_schema_accepts_good_and_refuses_bad_input() {
    let schema = schema_of("enipool.io_enipoolpolicies.yaml");
    let good = [
        json!({}),
        json!({"mode": "Prefix", "sizing": {"batch": 32, "warmPrefixes": 2}}),
        json!({"priority": 10, "sizing": {"minAllocate": 4, "maxAllocate": 20, "warmIPs": 3},
               "release": {"delaySeconds": 60, "hysteresisIPs": 2},
               "eni": {"subnets": {"tags": {"tier": "pods"}}, "firstInterfaceIndex": 1, "maxENIs": 3},
               "nodeSelector": {"matchLabels": {"pool": "web"}}}),
        json!({"sizing": {"minAllocate": 40, "maxAllocate": 0}}),
    ];
    for spec in good {
        admit(&schema, &policy(spec.clone()), None)
            .unwrap_or_else(|e| panic!("valid policy {spec} refused: {e:?}"));
    }
    // (spec, a word the error must contain so the user knows what to fix)
    let bad = [
        (json!({"mode": "Overlay"}), "Overlay"),
        (
            json!({"sizing": {"minAllocate": 10, "maxAllocate": 5}}),
            "minAllocate must be <= maxAllocate",
        ),
        (json!({"sizing": {"warmIPs": -1}}), "minimum"),
        (json!({"sizing": {"batch": 0}}), "minimum"),
        (json!({"priority": 5000}), "maximum"),
        (json!({"eni": {"firstInterfaceIndex": 2}}), "maximum"),
        (json!({"mode": "Prefix", "sizing": {"batch": 10}}), "multiple of 16"),
        (
            json!({"mode": "SecondaryIP", "sizing": {"warmPrefixes": 1}}),
            "warmPrefixes applies only",
        ),
        (json!({"sizing": {"warmIPs": "eight"}}), "integer"),
    ];
    for (spec, needle) in bad {
        let errs = admit(&schema, &policy(spec.clone()), None)
            .expect_err(&format!("invalid policy {spec} was accepted"));
        assert!(
            errs.iter().any(|e| e.contains(needle)),
            "policy {spec}: errors {errs:?} do not mention {needle:?}"
        );
    }
}

fn pool(node: &str, instance: &str) -> Value {
    json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool", "metadata": {"name": node},
           "spec": {"nodeName": node, "instanceID": instance}})
}

#[test]
fn pool_identity_is_required_and_immutable() {
    let schema = schema_of("enipool.io_enipools.yaml");
    let old = pool("node-a", "i-0123456789abcdef0");
    admit(&schema, &old, None).expect("valid pool");
    admit(&schema, &old, Some(&old)).expect("unchanged identity");

    let renamed = pool("node-b", "i-0123456789abcdef0");
    let errs = admit(&schema, &renamed, Some(&old)).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("nodeName is immutable")), "{errs:?}");
    let moved = pool("node-a", "i-0fedcba9876543210");
    let errs = admit(&schema, &moved, Some(&old)).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("instanceID is immutable")), "{errs:?}");

    let mut missing = old.clone();
    missing["spec"].as_object_mut().unwrap().remove("instanceID");
    let errs = admit(&schema, &missing, None).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("instanceID")), "{errs:?}");

    let errs = admit(&schema, &pool("node-a", "not-an-instance"), None).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("i-[0-9a-f]")), "{errs:?}");
}

#[test]
fn printer_columns_are_the_documented_ones() {
    let crd: Value = serde_saphyr::from_str(&committed("enipool.io_enipools.yaml")).unwrap();
    let cols = crd["spec"]["versions"][0]["additionalPrinterColumns"].as_array().unwrap();
    let names = |wide: bool| -> Vec<String> {
        cols.iter()
            .filter(|c| (c.get("priority").and_then(Value::as_i64).unwrap_or(0) > 0) == wide)
            .map(|c| c["name"].as_str().unwrap().to_uppercase())
            .collect()
    };
    assert_eq!(
        names(false),
        [
            "NODE",
            "INSTANCE",
            "TYPE",
            "MODE",
            "ENIS",
            "PREFIXES",
            "ALLOCATED",
            "IN-USE",
            "AVAILABLE",
            "TARGET",
            "READY",
            "AGE"
        ]
    );
    assert_eq!(
        names(true),
        ["ZONE", "POLICY", "FAMILY", "PENDING-PODS", "RELEASING", "LAST-SYNC", "REASON"]
    );
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["enip"]));
}

#[test]
fn wire_format_round_trips_and_tolerates_unknown_and_missing_fields() {
    let text = json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool",
        "metadata": {"name": "n1"},
        "spec": {"nodeName": "n1", "instanceID": "i-0123456789abcdef0", "paused": true,
                 "fieldFromANewerRelease": 1},
        "status": {"revision": 3, "enis": [{"id": "eni-1", "deviceIndex": 0, "mac": "02:00:00:00:00:01",
                   "subnetID": "subnet-1", "subnetCIDR": "10.0.0.0/24", "primaryIP": "10.0.0.10",
                   "ips": ["10.0.0.11"], "state": "Attached"}],
                   "agent": {"epoch": 2, "inUse": 1, "readyENIs": ["eni-1"]}}
    });
    let pool: ENIPool = serde_json::from_value(text).expect("unknown fields are ignored");
    assert!(pool.spec.paused);
    let status = pool.status.as_ref().unwrap();
    assert_eq!(status.enis[0].ips, ["10.0.0.11"]);
    assert_eq!(status.agent.as_ref().unwrap().in_use, 1);
    let again: ENIPool = serde_json::from_value(serde_json::to_value(&pool).unwrap()).unwrap();
    assert_eq!(again, pool);

    let minimal: ENIPoolPolicy = serde_json::from_value(json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPoolPolicy", "metadata": {"name": "d"}, "spec": {}
    }))
    .expect("every policy field is optional");
    assert_eq!(minimal.spec.mode, IpMode::SecondaryIP);
    assert_eq!(minimal.spec.priority, 0);
    assert!(minimal.spec.sizing.warm_ips.is_none(), "unset stays unset so overrides can inherit");

    let err = serde_json::from_value::<ENIPool>(json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool", "metadata": {"name": "x"},
        "spec": {"nodeName": "x"}
    }))
    .unwrap_err();
    assert!(err.to_string().contains("instanceID"), "{err}");
}

/// An ENIPool with `status`, as the operator and the agent write it.
fn pool_with_status(status: Value) -> Value {
    let mut p = pool("node-a", "i-0123456789abcdef0");
    p["status"] = status;
    p
}

fn good_status() -> Value {
    json!({
        "revision": 3,
        "enis": [
            {"id": "eni-0", "deviceIndex": 0, "mac": "02:00:00:00:00:0A", "subnetID": "subnet-1",
             "subnetCIDR": "10.0.0.0/20", "primaryIP": "10.0.0.10", "ips": ["10.0.0.20"],
             "state": "Attached"},
            {"id": "eni-1", "deviceIndex": 1, "mac": "02:00:00:00:00:0b", "subnetID": "subnet-2",
             "subnetCIDR": "10.0.16.0/20", "primaryIP": "10.0.16.5",
             "prefixes": ["10.0.17.0/28", "10.0.17.240/28"], "state": "Attached"},
            // Not attached, and the operator could not look its subnet up.
            {"id": "eni-2", "deviceIndex": -1, "mac": "02:00:00:00:00:0c", "subnetID": "subnet-3",
             "subnetCIDR": "", "primaryIP": "", "state": "Detaching"}
        ],
        "releasing": {"revision": 1, "epoch": 1, "ips": ["10.0.0.21", "10.0.0.22/32"],
                      "prefixes": ["10.0.18.0/28"]},
        "agent": {"epoch": 1, "releasable": {"revision": 1, "ips": ["10.0.0.21"],
                  "prefixes": ["10.0.18.0/28"]}, "orphanedInUse": ["10.0.0.23"]}
    })
}

#[test]
fn pool_status_addresses_are_checked_by_the_schema() {
    let schema = schema_of("enipool.io_enipools.yaml");
    admit(&schema, &pool_with_status(good_status()), None).expect("the operator's status");
    let mut ipv6 = good_status();
    ipv6["enis"][0]["ipv6Prefixes"] = json!(["2600:1f14:1:100:1::/80"]);
    admit(&schema, &pool_with_status(ipv6), None).expect("an IPv6 node's status");
    type Edit = fn(&mut Value);
    // (what is wrong, the edit, the field path the error must name)
    let bad: Vec<(&str, Edit, &str)> = vec![
        (
            "a /1 prefix",
            |s| s["enis"][1]["prefixes"][0] = json!("0.0.0.0/1"),
            "/status/enis/1/prefixes/0",
        ),
        (
            "a /27 prefix",
            |s| s["enis"][1]["prefixes"][0] = json!("10.0.17.0/27"),
            "/status/enis/1/prefixes/0",
        ),
        (
            "an unaligned /28",
            |s| s["enis"][1]["prefixes"][0] = json!("10.0.17.8/28"),
            "/status/enis/1/prefixes/0",
        ),
        (
            "a prefix without length",
            |s| s["enis"][1]["prefixes"][0] = json!("10.0.17.0"),
            "/status/enis/1/prefixes/0",
        ),
        (
            "an IPv6 /64 where a /80 belongs",
            |s| s["enis"][0]["ipv6Prefixes"] = json!(["2600:1f14:1:100::/64"]),
            "/status/enis/0/ipv6Prefixes/0",
        ),
        (
            "an IPv6 prefix that is a shell command",
            |s| s["enis"][0]["ipv6Prefixes"] = json!(["$(reboot)/80"]),
            "/status/enis/0/ipv6Prefixes/0",
        ),
        (
            "an address that is no IP",
            |s| s["enis"][0]["ips"][0] = json!("not-an-ip"),
            "/status/enis/0/ips/0",
        ),
        (
            "an octet above 255",
            |s| s["enis"][0]["ips"][0] = json!("10.0.0.256"),
            "/status/enis/0/ips/0",
        ),
        (
            "a leading zero",
            |s| s["enis"][0]["ips"][0] = json!("10.0.0.020"),
            "/status/enis/0/ips/0",
        ),
        (
            "an IPv6 address",
            |s| s["enis"][0]["ips"][0] = json!("2001:db8::1"),
            "/status/enis/0/ips/0",
        ),
        (
            "a /33 subnet",
            |s| s["enis"][0]["subnetCIDR"] = json!("10.0.0.0/33"),
            "/status/enis/0/subnetCIDR",
        ),
        (
            "a subnet without length",
            |s| s["enis"][0]["subnetCIDR"] = json!("10.0.0.0"),
            "/status/enis/0/subnetCIDR",
        ),
        (
            "a primary IP as a CIDR",
            |s| s["enis"][0]["primaryIP"] = json!("10.0.0.10/32"),
            "/status/enis/0/primaryIP",
        ),
        (
            "a malformed MAC",
            |s| s["enis"][0]["mac"] = json!("02:00:00:00:00"),
            "/status/enis/0/mac",
        ),
        (
            "a device index on the main table",
            |s| s["enis"][1]["deviceIndex"] = json!(253),
            "/status/enis/1/deviceIndex",
        ),
        (
            "a /24 releasing address",
            |s| s["releasing"]["ips"][0] = json!("10.0.0.0/24"),
            "/status/releasing/ips/0",
        ),
        (
            "a /1 releasing prefix",
            |s| s["releasing"]["prefixes"][0] = json!("10.0.0.0/1"),
            "/status/releasing/prefixes/0",
        ),
        (
            "a /8 offered prefix",
            |s| s["agent"]["releasable"]["prefixes"][0] = json!("10.0.0.0/8"),
            "/status/agent/releasable/prefixes/0",
        ),
        (
            "an offered network",
            |s| s["agent"]["releasable"]["ips"][0] = json!("10.0.0.0/24"),
            "/status/agent/releasable/ips/0",
        ),
        (
            "an orphan that is no IP",
            |s| s["agent"]["orphanedInUse"][0] = json!("x"),
            "/status/agent/orphanedInUse/0",
        ),
        (
            "257 addresses on one ENI",
            |s| {
                s["enis"][0]["ips"] = json!((0..257)
                    .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
                    .collect::<Vec<_>>())
            },
            "/status/enis/0/ips",
        ),
    ];
    for (what, edit, path) in bad {
        let mut s = good_status();
        edit(&mut s);
        let errs =
            admit(&schema, &pool_with_status(s), None).expect_err(&format!("{what}: accepted"));
        assert!(errs.iter().any(|e| e.starts_with(&format!("{path}:"))), "{what}: {errs:?}");
    }
}
