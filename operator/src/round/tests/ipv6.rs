//! Rounds of a node in an IPv6 cluster: one /80 on the primary ENI, and nothing else ever.

use super::*;
use enipool_crds::IpFamily;

const SUBNET_V6: &str = "2600:1f14:0:100::/64";

fn ipv6_world(subnet_has_ipv6: bool) -> World {
    let mut w = world("m5.large", 0, None);
    w.shared.family = IpFamily::IPv6;
    if subnet_has_ipv6 {
        w.fake.add_subnet_ipv6("subnet-a", SUBNET_V6);
    }
    w
}

fn prefixes(st: &ENIPoolStatus) -> Vec<String> {
    st.enis.iter().flat_map(|e| e.ipv6_prefixes.clone()).collect()
}

#[tokio::test]
async fn an_ipv6_node_gets_one_prefix_on_its_primary_eni_journaled_first() {
    let mut w = ipv6_world(true);
    let out = w.run().await;
    assert_eq!(w.fake.mutations(), vec!["AssignIpv6Addresses"]);
    let st = &out.status;
    assert_eq!(st.enis.len(), 1);
    assert_eq!(st.enis[0].device_index, 0);
    let got = prefixes(st);
    assert_eq!(got.len(), 1, "{got:?}");
    let prefix: ipnet::Ipv6Net = got[0].parse().unwrap();
    assert_eq!(prefix.prefix_len(), 80);
    assert!(SUBNET_V6.parse::<ipnet::Ipv6Net>().unwrap().contains(&prefix));
    assert!(st.enis[0].ips.is_empty() && st.enis[0].prefixes.is_empty(), "no IPv4 for pods");
    {
        let writes = w.sink.writes.lock().unwrap();
        // The journal entry is written before the call.
        assert_eq!(writes[0].1, 0);
        assert_eq!(writes[0].0.operations[0].kind, OperationKind::AssignIPv6Prefixes);
        assert_eq!(writes[0].0.operations[0].eni_id, st.enis[0].id);
    }
    assert!(st.operations.is_empty());
    assert!(cond(st, "Ready"), "{:?}", st.conditions);
    let eff = st.effective.as_ref().unwrap();
    assert_eq!((eff.ip_family, eff.capacity.max_pods), (IpFamily::IPv6, 250));
    let target = st.target.as_ref().unwrap();
    assert_eq!((target.ips, target.reason.as_str()), (248, "ipv6Prefix"));
    let summary = st.summary.as_ref().unwrap();
    assert_eq!((summary.prefixes, summary.allocated), (1, 248));
}

#[tokio::test]
async fn demand_never_grows_or_releases_an_ipv6_node() {
    let mut w = ipv6_world(true);
    w.run().await;
    let first = prefixes(&w.input.status);
    // Many pods, many pending: an IPv4 node would grow by a new ENI here.
    w.set_agent(AgentStatus { epoch: 1, in_use: 240, pending_pods: 60, ..Default::default() });
    w.run().await;
    // And an idle node would give addresses back after the delay.
    w.set_agent(AgentStatus { epoch: 1, in_use: 0, ..Default::default() });
    for _ in 0..3 {
        w.run().await;
    }
    assert_eq!(w.fake.mutations(), vec!["AssignIpv6Addresses"]);
    assert_eq!(prefixes(&w.input.status), first);
    assert!(w.input.status.release_request.is_none());
}

#[tokio::test]
async fn a_lagging_describe_does_not_get_a_second_prefix() {
    let mut w = ipv6_world(true);
    w.fake.lag_describes();
    let out = w.run().await;
    // Published from EC2's answer, although the describe does not show it yet.
    let first = prefixes(&out.status);
    assert_eq!(first.len(), 1);
    let again = w.run().await;
    assert_eq!(w.fake.mutations(), vec!["AssignIpv6Addresses"]);
    assert_eq!(prefixes(&again.status), first);
    w.fake.catch_up();
    let caught_up = w.run().await;
    assert_eq!(prefixes(&caught_up.status), first);
    assert_eq!(w.fake.mutations().len(), 1);
}

#[tokio::test]
async fn a_subnet_without_ipv6_leaves_the_node_not_ready_saying_why() {
    let mut w = ipv6_world(false);
    let out = w.run().await;
    let ready = out.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NoAddresses"));
    assert!(ready.message.contains("no IPv6 CIDR block"), "{}", ready.message);
    assert!(out.status.operations.is_empty(), "the failed assign is not left journaled");
    assert!(prefixes(&out.status).is_empty());
    // Nothing else is tried in its place: no ENI, no IPv4 addresses.
    assert_eq!(w.fake.mutations(), vec!["AssignIpv6Addresses"]);
}
