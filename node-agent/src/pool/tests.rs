use super::check::{delegated_len, parse, Invalid, Problem, MAX_DEVICE_INDEX};
use super::*;
use crate::error::Error;
use serde_json::{json, Value};

/// A status the operator would write: a primary ENI with secondary IPs, a secondary ENI with a
/// prefix, a release in progress.
fn good() -> Value {
    json!({
        "revision": 7,
        "instance": {"type": "m5.large", "zone": "z", "vpcID": "vpc-1", "subnetID": "subnet-1",
                     "primaryENI": "eni-0", "primaryIP": "10.0.0.10", "vpcCIDRs": ["10.0.0.0/16"],
                     "state": "running"},
        "enis": [
            {"id": "eni-0", "deviceIndex": 0, "mac": "02:00:00:00:00:0A", "subnetID": "subnet-1",
             "subnetCIDR": "10.0.0.0/20", "primaryIP": "10.0.0.10",
             "ips": ["10.0.0.20", "10.0.0.21/32"], "state": "Attached"},
            {"id": "eni-1", "deviceIndex": 1, "mac": "02:00:00:00:00:0b", "subnetID": "subnet-2",
             "subnetCIDR": "10.0.16.0/20", "primaryIP": "10.0.16.5",
             "ips": ["10.0.16.6"], "prefixes": ["10.0.17.0/28"], "state": "Attached"},
            {"id": "eni-2", "deviceIndex": -1, "mac": "02:00:00:00:00:0c", "subnetID": "subnet-2",
             "subnetCIDR": "", "primaryIP": "", "state": "Detaching"}
        ],
        "releasing": {"revision": 1, "epoch": 1, "ips": ["10.0.0.21"], "prefixes": ["10.0.17.0/28"]}
    })
}

fn status(v: Value) -> ENIPoolStatus {
    serde_json::from_value(v).expect("status fixture")
}

fn check(v: Value) -> Result<PoolView, Invalid> {
    parse(&status(v), &BTreeSet::new())
}

#[test]
fn a_good_status_parses_into_the_view() {
    let v = check(good()).expect("good status");
    let ids: Vec<&str> = v.enis.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["eni-2", "eni-0", "eni-1"], "sorted by device index");
    let e0 = &v.enis[1];
    assert_eq!(e0.mac, "02:00:00:00:00:0a");
    assert_eq!(e0.ips, [Ipv4Addr::new(10, 0, 0, 20), Ipv4Addr::new(10, 0, 0, 21)]);
    assert_eq!(e0.primary_ip, Some(Ipv4Addr::new(10, 0, 0, 10)));
    assert_eq!(v.enis[2].prefixes, ["10.0.17.0/28".parse::<Ipv4Net>().unwrap()]);
    assert_eq!(v.enis[0].subnet, None, "a detaching ENI without addresses needs no subnet");
    assert_eq!(v.releasing.len(), 2);
    assert_eq!(v.node_primary_ip, Some(Ipv4Addr::new(10, 0, 0, 10)));
    assert_eq!(v.revision, 7);
}

/// Each row changes one value of the good status; the status is refused naming that ENI, field,
/// value and problem.
#[test]
fn a_bad_value_refuses_the_status_and_names_it() {
    // (what is wrong, the edit, then the ENI, field, value and problem the refusal names)
    type Row =
        (&'static str, fn(&mut Value), Option<&'static str>, &'static str, &'static str, Problem);
    let bad_prefix = Problem::PrefixLength { got: 1, want: 28 };
    let outside = |s: &str| Problem::OutsideSubnet { subnet: s.to_string() };
    let twice = |e: &str| Problem::ListedTwice { other: e.to_string() };
    let rows: Vec<Row> = vec![
        (
            "a /1 prefix",
            |s| s["enis"][1]["prefixes"] = json!(["0.0.0.0/1"]),
            Some("eni-1"),
            "prefixes",
            "0.0.0.0/1",
            bad_prefix.clone(),
        ),
        (
            "a /24 prefix",
            |s| s["enis"][1]["prefixes"] = json!(["10.0.17.0/24"]),
            Some("eni-1"),
            "prefixes",
            "10.0.17.0/24",
            Problem::PrefixLength { got: 24, want: 28 },
        ),
        (
            "a /28 with host bits",
            |s| s["enis"][1]["prefixes"] = json!(["10.0.17.5/28"]),
            Some("eni-1"),
            "prefixes",
            "10.0.17.5/28",
            Problem::Unaligned { network: "10.0.17.0/28".into() },
        ),
        (
            "a prefix that is no CIDR",
            |s| s["enis"][1]["prefixes"] = json!(["10.0.17.0"]),
            Some("eni-1"),
            "prefixes",
            "10.0.17.0",
            Problem::NotACidr,
        ),
        (
            "an IPv6 prefix",
            |s| s["enis"][1]["prefixes"] = json!(["2001:db8::/80"]),
            Some("eni-1"),
            "prefixes",
            "2001:db8::/80",
            Problem::Family,
        ),
        (
            "a prefix outside the subnet",
            |s| s["enis"][1]["prefixes"] = json!(["10.0.0.32/28"]),
            Some("eni-1"),
            "prefixes",
            "10.0.0.32/28",
            outside("10.0.16.0/20"),
        ),
        (
            "an address outside the subnet",
            |s| s["enis"][0]["ips"] = json!(["10.0.0.20", "192.168.1.1"]),
            Some("eni-0"),
            "ips",
            "192.168.1.1",
            outside("10.0.0.0/20"),
        ),
        (
            "an unparseable address",
            |s| s["enis"][0]["ips"] = json!(["10.0.0.300"]),
            Some("eni-0"),
            "ips",
            "10.0.0.300",
            Problem::NotAnAddress,
        ),
        (
            "an address written as a network",
            |s| s["enis"][0]["ips"] = json!(["10.0.0.16/28"]),
            Some("eni-0"),
            "ips",
            "10.0.0.16/28",
            Problem::NotAHost { max: 32 },
        ),
        (
            "a primary IP outside the subnet",
            |s| s["enis"][1]["primaryIP"] = json!("10.0.0.99"),
            Some("eni-1"),
            "primaryIP",
            "10.0.0.99",
            outside("10.0.16.0/20"),
        ),
        (
            "an unparseable subnet",
            |s| s["enis"][1]["subnetCIDR"] = json!("10.0.16.0/33"),
            Some("eni-1"),
            "subnetCIDR",
            "10.0.16.0/33",
            Problem::NotACidr,
        ),
        (
            "addresses without a subnet",
            |s| s["enis"][1]["subnetCIDR"] = json!(""),
            Some("eni-1"),
            "primaryIP",
            "10.0.16.5",
            Problem::NoSubnet,
        ),
        (
            "an address on two ENIs",
            |s| {
                s["enis"][1]["subnetCIDR"] = json!("10.0.0.0/8");
                s["enis"][1]["ips"] = json!(["10.0.16.6", "10.0.0.20"]);
            },
            Some("eni-1"),
            "ips",
            "10.0.0.20",
            twice("eni-0"),
        ),
        (
            "an address twice on one ENI",
            |s| s["enis"][0]["ips"] = json!(["10.0.0.20", "10.0.0.20"]),
            Some("eni-0"),
            "ips",
            "10.0.0.20",
            twice("eni-0"),
        ),
        (
            "a primary IP listed as a secondary",
            |s| s["enis"][0]["ips"] = json!(["10.0.0.10"]),
            Some("eni-0"),
            "ips",
            "10.0.0.10",
            twice("eni-0"),
        ),
        (
            "an address inside another ENI's prefix",
            |s| {
                s["enis"][0]["subnetCIDR"] = json!("10.0.0.0/8");
                s["enis"][0]["ips"] = json!(["10.0.17.3"]);
                s["enis"].as_array_mut().unwrap().swap(0, 1);
            },
            Some("eni-0"),
            "ips",
            "10.0.17.3",
            twice("eni-1"),
        ),
        (
            "a prefix holding another ENI's address",
            |s| {
                s["enis"][0]["subnetCIDR"] = json!("10.0.0.0/8");
                s["enis"][0]["prefixes"] = json!(["10.0.16.0/28"]);
                s["enis"].as_array_mut().unwrap().swap(0, 1);
            },
            Some("eni-0"),
            "prefixes",
            "10.0.16.0/28",
            twice("eni-1"),
        ),
        (
            "one prefix on two ENIs",
            |s| {
                s["enis"][0]["subnetCIDR"] = json!("10.0.0.0/8");
                s["enis"][0]["prefixes"] = json!(["10.0.17.0/28"]);
            },
            Some("eni-1"),
            "prefixes",
            "10.0.17.0/28",
            twice("eni-0"),
        ),
        (
            "two ENIs with one device index",
            |s| s["enis"][1]["deviceIndex"] = json!(0),
            Some("eni-1"),
            "deviceIndex",
            "0",
            Problem::DeviceIndexTaken { other: "eni-0".into() },
        ),
        (
            "a device index whose table would be main",
            |s| s["enis"][1]["deviceIndex"] = json!(253),
            Some("eni-1"),
            "deviceIndex",
            "253",
            Problem::DeviceIndexRange,
        ),
        (
            "an attached ENI without a device index",
            |s| s["enis"][1]["deviceIndex"] = json!(-1),
            Some("eni-1"),
            "deviceIndex",
            "-1",
            Problem::DeviceIndexRange,
        ),
        (
            "a malformed MAC",
            |s| s["enis"][1]["mac"] = json!("02:00:00:00:00"),
            Some("eni-1"),
            "mac",
            "02:00:00:00:00",
            Problem::BadMac,
        ),
        (
            "a MAC with non-hex digits",
            |s| s["enis"][1]["mac"] = json!("02:00:00:00:00:zz"),
            Some("eni-1"),
            "mac",
            "02:00:00:00:00:zz",
            Problem::BadMac,
        ),
        (
            "one ENI listed twice",
            |s| {
                let dup = s["enis"][2].clone();
                s["enis"].as_array_mut().unwrap().push(dup);
            },
            Some("eni-2"),
            "id",
            "eni-2",
            Problem::DuplicateEni,
        ),
        (
            "a releasing prefix of the wrong length",
            |s| s["releasing"]["prefixes"] = json!(["10.0.0.0/1"]),
            None,
            "releasing.prefixes",
            "10.0.0.0/1",
            bad_prefix,
        ),
        (
            "a releasing address written as a network",
            |s| s["releasing"]["ips"] = json!(["10.0.0.0/24"]),
            None,
            "releasing.ips",
            "10.0.0.0/24",
            Problem::NotAHost { max: 32 },
        ),
        (
            "an unparseable releasing address",
            |s| s["releasing"]["ips"] = json!(["ten"]),
            None,
            "releasing.ips",
            "ten",
            Problem::NotAnAddress,
        ),
        (
            "an unparseable node address",
            |s| s["instance"]["primaryIP"] = json!("10.0.0"),
            None,
            "instance.primaryIP",
            "10.0.0",
            Problem::NotAnAddress,
        ),
        (
            "an unparseable VPC CIDR",
            |s| s["instance"]["vpcCIDRs"] = json!(["10.0.0.0/16", "vpc"]),
            None,
            "instance.vpcCIDRs",
            "vpc",
            Problem::NotACidr,
        ),
    ];
    for (name, edit, eni, field, value, problem) in rows {
        let mut s = good();
        edit(&mut s);
        let want = Invalid { eni: eni.map(str::to_string), field, value: value.into(), problem };
        assert_eq!(check(s), Err(want), "{name}");
    }
}

#[test]
fn the_error_reads_as_one_line_naming_eni_field_value_and_problem() {
    let mut s = good();
    s["enis"][1]["prefixes"] = json!(["0.0.0.0/1"]);
    let e = Error::from(PoolView::from_status(&status(s), &BTreeSet::new()).unwrap_err());
    assert_eq!(e.category(), "invalid_pool");
    assert!(matches!(e, Error::InvalidPool(_)));
    assert_eq!(
        e.to_string(),
        "ENIPool status refused: ENI eni-1: prefixes \"0.0.0.0/1\": prefix length /1, but \
         delegated prefixes are /28"
    );
}

#[test]
fn the_device_index_limit_keeps_route_tables_off_the_kernel_ones() {
    let mut s = good();
    s["enis"][1]["deviceIndex"] = json!(MAX_DEVICE_INDEX);
    let v = check(s).expect("the highest allowed index");
    let table = v.enis.iter().find(|e| e.id == "eni-1").unwrap().table();
    assert!(table < 253, "table {table} is one of default/main/local");
}

#[test]
fn each_family_has_its_own_delegated_length() {
    assert_eq!(delegated_len(&"10.0.0.0/28".parse().unwrap()), Some(28));
    assert_eq!(delegated_len(&"2001:db8::/80".parse().unwrap()), Some(80));
}

#[test]
fn an_ipv6_node_lists_its_prefix_and_family() {
    let mut s = good();
    s["enis"][0]["ipv6Prefixes"] = json!(["2600:1f14:0:100:1::/80"]);
    s["effective"] = json!({"ipFamily": "IPv6", "mode": "Prefix", "minAllocate": 0, "warmIPs": 0,
        "warmPrefixes": 0, "batch": 16, "maxAllocate": 248, "surgeMaxExtra": 0,
        "releaseEnabled": false, "releaseDelaySeconds": 0, "hysteresisIPs": 0,
        "releaseEmptyENIs": false, "cooldownSeconds": 30, "firstInterfaceIndex": 0,
        "capacity": {"maxENIs": 3, "ipsPerENI": 10, "prefixesPerENI": 9, "maxPodIPs": 248,
                     "maxPods": 250, "source": "EC2API"}});
    let v = check(s).unwrap();
    assert_eq!(v.ip_family, enipool_crds::IpFamily::IPv6);
    let primary = v.enis.iter().find(|e| e.device_index == 0).unwrap();
    assert_eq!(primary.ipv6_prefixes, ["2600:1f14:0:100:1::/80".parse::<Ipv6Net>().unwrap()]);
    assert_eq!(v.ipv4_egress, None, "the range is the agent's setting, set by the programmer");
}

#[test]
fn a_bad_ipv6_prefix_refuses_the_status_and_names_it() {
    type Row = (&'static str, Value, &'static str, Problem);
    let rows: Vec<Row> = vec![
        (
            "a /64",
            json!(["2600:1f14:0:100::/64"]),
            "2600:1f14:0:100::/64",
            Problem::PrefixLength { got: 64, want: 80 },
        ),
        (
            "host bits set",
            json!(["2600:1f14:0:100:1::5/80"]),
            "2600:1f14:0:100:1::5/80",
            Problem::Unaligned { network: "2600:1f14:0:100:1::/80".into() },
        ),
        ("a link-local prefix", json!(["fe80::/80"]), "fe80::/80", Problem::NotGlobal),
        ("an IPv4 prefix", json!(["10.0.17.0/28"]), "10.0.17.0/28", Problem::Family),
        ("no CIDR", json!(["2600:1f14::"]), "2600:1f14::", Problem::NotACidr),
    ];
    for (name, value, bad, problem) in rows {
        let mut s = good();
        s["enis"][1]["ipv6Prefixes"] = value;
        let want = Invalid {
            eni: Some("eni-1".into()),
            field: "ipv6Prefixes",
            value: bad.into(),
            problem,
        };
        assert_eq!(check(s), Err(want), "{name}");
    }
    // One /80 on two ENIs: the second is refused.
    let mut s = good();
    s["enis"][0]["ipv6Prefixes"] = json!(["2600:1f14:0:100:1::/80"]);
    s["enis"][1]["ipv6Prefixes"] = json!(["2600:1f14:0:100:1::/80"]);
    let e = check(s).unwrap_err();
    assert_eq!(
        (e.field, e.problem),
        ("ipv6Prefixes", Problem::ListedTwice { other: "eni-0".into() })
    );
}

#[test]
fn ready_marks_programmed_enis() {
    let ready: BTreeSet<String> = ["eni-1".to_string()].into();
    let v = PoolView::from_status(&status(good()), &ready).unwrap();
    let r: Vec<(&str, bool)> = v.enis.iter().map(|e| (e.id.as_str(), e.ready)).collect();
    assert_eq!(r, [("eni-2", false), ("eni-0", false), ("eni-1", true)]);
}
