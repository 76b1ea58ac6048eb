//! IPv6 clusters: pods hold a node-local IPv4 of the egress range, and their IPv6 address is the
//! same offset into the primary ENI's /80.

use super::*;
use std::net::Ipv6Addr;

const PREFIX: &str = "2600:1f14:0:100:1::/80";

fn ipv6_view(with_prefix: bool) -> PoolView {
    let mut primary = eni("eni-0", 0, &["10.0.0.20"], &[]);
    if with_prefix {
        primary.ipv6_prefixes = vec![PREFIX.parse().unwrap()];
    }
    let mut v = view(vec![primary, eni("eni-1", 1, &["10.0.1.5"], &[])]);
    v.ip_family = enipool_crds::IpFamily::IPv6;
    v.ipv4_egress = Some("169.254.172.0/22".parse().unwrap());
    v
}

#[test]
fn a_pod_gets_an_egress_address_and_the_ipv6_address_at_its_offset() {
    let v = ipv6_view(true);
    let mut st = State::default();
    let p = pick(&v, &st, 0).unwrap();
    assert_eq!(
        p,
        Pick { ip: "169.254.172.1".parse().unwrap(), eni_id: "eni-0".into(), table: 254 }
    );
    assert_eq!(v.ipv6_of(p.ip), Some("2600:1f14:0:100:1::1".parse::<Ipv6Addr>().unwrap()));
    use_ip(&mut st, "a", "169.254.172.1");
    let p = pick(&v, &st, 0).unwrap();
    assert_eq!(p.ip, "169.254.172.2".parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        v.ipv6_of("169.254.175.254".parse().unwrap()).unwrap().to_string(),
        "2600:1f14:0:100:1::3fe"
    );
    // The ENIs' own IPv4 addresses are never a pod's in an IPv6 cluster.
    assert_eq!(available(&v, &st, 0), 1021);
    assert_eq!(v.eni_of(p.ip).map(|e| e.id.as_str()), Some("eni-0"));
    assert_eq!(v.eni_of("10.0.1.5".parse().unwrap()), None);
    assert_eq!(v.ipv6_of("10.0.1.5".parse().unwrap()), None, "outside the egress range");
}

#[test]
fn no_address_before_the_prefix_is_there_and_programmed() {
    let st = State::default();
    assert_eq!(pick(&ipv6_view(false), &st, 0), None);
    let mut v = ipv6_view(true);
    v.enis[0].ready = false;
    assert_eq!(pick(&v, &st, 0), None);
    assert_eq!(available(&v, &st, 0), 0);
}

#[test]
fn cooling_holds_an_ipv6_address_back_like_an_ipv4_one() {
    let v = ipv6_view(true);
    let mut st = State::default();
    st.cooling.insert("169.254.172.1".parse().unwrap(), 100);
    assert_eq!(pick(&v, &st, 50).unwrap().ip, "169.254.172.2".parse::<Ipv4Addr>().unwrap());
    assert_eq!(pick(&v, &st, 101).unwrap().ip, "169.254.172.1".parse::<Ipv4Addr>().unwrap());
}

#[test]
fn an_ipv6_node_offers_nothing_back() {
    let mut v = ipv6_view(true);
    v.release_request = Some((1, 5, vec![]));
    assert!(plan_offer(&v, &State::default(), 5, &[], 0).is_empty());
}
