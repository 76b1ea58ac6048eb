use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn pod(table: u32, dsts: &[&str]) -> PodConfig {
    PodConfig {
        netns: "/run/netns/p".into(),
        if_name: "eth0".into(),
        host_if: "eni0123456789a".into(),
        ip: "10.0.1.20".parse().unwrap(),
        ipv6: None,
        table,
        from_rule_dsts: dsts.iter().map(|d| net(d)).collect(),
        mtu: 9001,
    }
}

fn eni() -> EniConfig {
    EniConfig {
        id: "eni-1".into(),
        mac: "02:AA:00:00:00:01".into(),
        table: 2,
        subnet: net("10.0.1.0/24"),
        gateway: "10.0.1.1".parse().unwrap(),
        primary_ip: Some("10.0.1.10".parse().unwrap()),
        mtu: 9001,
    }
}

fn node() -> NodeConfig {
    NodeConfig {
        primary_mac: None,
        primary_ip: "10.0.0.10".parse().unwrap(),
        vpc_cidrs: vec![net("10.0.0.0/16")],
        snat_exclude: vec![],
        external_snat: false,
        snat_ports: Default::default(),
        ipv4_egress: None,
    }
}

/// A host with the pod's veth and the ENI's link, and nothing else.
fn bare() -> HostSnapshot {
    let mut s = HostSnapshot::default();
    s.links.insert("eni0123456789a".into(), LinkInfo { index: 7, mac: "02:00:00:00:00:07".into() });
    s.links.insert("ens6".into(), LinkInfo { index: 3, mac: "02:aa:00:00:00:01".into() });
    s
}

/// The host as the setup verbs leave it, built by adding what a bare host lacks.
fn programmed(pods: &[PodConfig]) -> HostSnapshot {
    let mut s = bare();
    let mut all = node_missing(&node(), None, &s);
    all.extend(eni_missing(&eni(), &s));
    for p in pods {
        all.extend(pod_missing(p, &s));
    }
    for m in all {
        match m {
            Missing::Rule(r) => {
                s.rules.insert(r);
            }
            Missing::Route(r) => {
                s.routes.insert(r);
            }
            Missing::NftTable | Missing::NftChanged => {
                s.nft_table = Some("table ip enipool".into())
            }
        }
    }
    s
}

#[test]
fn a_bare_host_lacks_what_setup_adds() {
    let s = bare();
    let p = pod(2, &["10.0.0.0/16", "100.64.0.0/16"]);
    let got: Vec<String> = pod_missing(&p, &s).iter().map(|m| m.to_string()).collect();
    assert_eq!(
        got,
        [
            "route 10.0.1.20/32 table 254 dev #7",
            "rule 512: from all to 10.0.1.20/32 lookup 254",
            "rule 1536: from 10.0.1.20/32 to 10.0.0.0/16 lookup 2",
            "rule 1536: from 10.0.1.20/32 to 100.64.0.0/16 lookup 2",
        ]
    );
    let got: Vec<String> = eni_missing(&eni(), &s).iter().map(|m| m.to_string()).collect();
    assert_eq!(
        got,
        [
            "rule 32765: from 10.0.1.10/32 to all lookup 2",
            "route 10.0.1.1/32 table 2 dev #3",
            "route 0.0.0.0/0 table 2 via 10.0.1.1 dev #3",
        ]
    );
    let got: Vec<String> = node_missing(&node(), None, &s).iter().map(|m| m.to_string()).collect();
    assert_eq!(
        got,
        ["rule 1024: from all to all fwmark 0x80 lookup 254", "nftables table ip enipool"]
    );
}

#[test]
fn a_programmed_host_lacks_nothing() {
    let pods = [pod(2, &["10.0.0.0/16"]), pod(2, &[]), pod(MAIN_TABLE, &["10.0.0.0/16"])];
    for p in &pods {
        let s = programmed(std::slice::from_ref(p));
        assert_eq!(pod_missing(p, &s), vec![], "{p:?}");
        assert_eq!(eni_missing(&eni(), &s), vec![]);
        assert_eq!(node_missing(&node(), s.nft_table.as_deref(), &s), vec![]);
    }
}

#[test]
fn a_flushed_rule_or_table_is_missing() {
    let p = pod(2, &["10.0.0.0/16"]);
    let mut s = programmed(std::slice::from_ref(&p));
    let applied = s.nft_table.clone();
    // `ip rule flush` style: every rule of the pod gone.
    s.rules.retain(|r| r.src != Some(net("10.0.1.20/32")) && r.dst != Some(net("10.0.1.20/32")));
    assert_eq!(pod_missing(&p, &s).len(), 2);
    s.nft_table = Some("table ip enipool {}".into());
    assert_eq!(node_missing(&node(), applied.as_deref(), &s), vec![Missing::NftChanged]);
    s.nft_table = None;
    assert_eq!(node_missing(&node(), applied.as_deref(), &s), vec![Missing::NftTable]);
}

#[test]
fn a_pod_route_through_another_link_is_missing() {
    let p = pod(MAIN_TABLE, &[]);
    let mut s = programmed(std::slice::from_ref(&p));
    let r = s.routes.iter().find(|r| r.dst == net("10.0.1.20/32")).unwrap().clone();
    s.routes.remove(&r);
    s.routes.insert(RouteKey { oif: Some(3), ..r });
    assert_eq!(pod_missing(&p, &s).len(), 1);
}

#[test]
fn gone_links_are_not_repaired() {
    let p = pod(2, &["10.0.0.0/16"]);
    let mut s = HostSnapshot::default();
    s.rules.clear();
    assert_eq!(pod_missing(&p, &s), vec![], "a pod without its veth is a leak candidate");
    assert_eq!(eni_missing(&eni(), &s), vec![], "an ENI without its link is detached");
}
