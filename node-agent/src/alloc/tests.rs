use super::*;
use crate::testutil::*;

#[test]
fn fullest_prefix_first_then_lowest_device_index() {
    let v = view(vec![
        eni("eni-0", 0, &[], &["10.0.1.0/28"]),
        eni("eni-1", 1, &[], &["10.0.2.0/28", "10.0.3.0/28"]),
    ]);
    let mut st = State::default();
    // Empty pool: lowest device index wins.
    assert_eq!(pick(&v, &st, 0).unwrap().ip, "10.0.1.0".parse::<Ipv4Addr>().unwrap());
    // A prefix with two in use beats one with one in use, whatever the device index.
    use_ip(&mut st, "a", "10.0.1.0");
    use_ip(&mut st, "b", "10.0.3.0");
    use_ip(&mut st, "c", "10.0.3.1");
    let p = pick(&v, &st, 0).unwrap();
    assert_eq!(p, Pick { ip: "10.0.3.2".parse().unwrap(), eni_id: "eni-1".into(), table: 2 });
}

#[test]
fn loose_ips_before_breaking_an_empty_prefix() {
    let v = view(vec![eni("eni-1", 1, &["10.0.5.9"], &["10.0.2.0/28"])]);
    let st = State::default();
    assert_eq!(pick(&v, &st, 0).unwrap().ip, "10.0.5.9".parse::<Ipv4Addr>().unwrap());
}

struct Case {
    name: &'static str,
    setup: fn(&mut PoolView, &mut State),
    want: Option<&'static str>,
}

#[test]
fn exclusions() {
    let cases = [
        Case { name: "free", setup: |_, _| {}, want: Some("10.0.0.20") },
        Case { name: "in use", setup: |_, s| use_ip(s, "a", "10.0.0.20"), want: Some("10.0.0.21") },
        Case {
            name: "cooling",
            setup: |_, s| {
                s.cooling.insert("10.0.0.20".parse().unwrap(), 100);
            },
            want: Some("10.0.0.21"),
        },
        Case {
            name: "cooled down",
            setup: |_, s| {
                s.cooling.insert("10.0.0.20".parse().unwrap(), 50);
            },
            want: Some("10.0.0.20"),
        },
        Case {
            name: "offered",
            setup: |_, s| {
                s.offered
                    .insert(net("10.0.0.20/32"), crate::store::Offer { revision: 1, epoch: 1 });
            },
            want: Some("10.0.0.21"),
        },
        Case { name: "releasing", setup: |v, _| v.releasing.push(net("10.0.0.20/31")), want: None },
        Case { name: "eni not ready", setup: |v, _| v.enis[0].ready = false, want: None },
        Case { name: "eni detaching", setup: |v, _| v.enis[0].attached = false, want: None },
        Case {
            name: "below first interface index",
            setup: |v, _| v.first_interface_index = 2,
            want: None,
        },
    ];
    for c in cases {
        let mut v = view(vec![eni("eni-1", 1, &["10.0.0.20", "10.0.0.21"], &[])]);
        let mut st = State::default();
        (c.setup)(&mut v, &mut st);
        let got = pick(&v, &st, 60).map(|p| p.ip.to_string());
        assert_eq!(got.as_deref(), c.want, "case {}", c.name);
    }
}

#[test]
fn available_counts_allocatable_only() {
    let v = view(vec![eni("eni-0", 0, &["10.0.0.20", "10.0.0.21"], &["10.0.1.0/28"])]);
    let mut st = State::default();
    assert_eq!(available(&v, &st, 0), 18);
    use_ip(&mut st, "a", "10.0.1.3");
    st.cooling.insert("10.0.0.20".parse().unwrap(), 10);
    assert_eq!(available(&v, &st, 0), 16);
    assert_eq!(available(&v, &st, 10), 17);
}

#[test]
fn offer_whole_free_prefixes_from_preferred_then_highest_eni() {
    let v = view(vec![
        eni("eni-0", 0, &["10.0.0.20"], &["10.0.1.0/28"]),
        eni("eni-1", 1, &["10.0.0.30", "10.0.0.31"], &["10.0.2.0/28", "10.0.3.0/28"]),
    ]);
    let mut st = State::default();
    use_ip(&mut st, "a", "10.0.2.5");
    st.cooling.insert("10.0.0.31".parse().unwrap(), 0);
    // 17: one whole free prefix on eni-1 (10.0.3.0/28; 10.0.2.0/28 has a pod), then one loose IP
    // that is not cooling (10.0.0.30; cooling addresses are never offered, even when expired).
    let got = plan_offer(&v, &st, 17, &[], 0);
    assert_eq!(got, vec![net("10.0.3.0/28"), net("10.0.0.30/32")]);
    // Preferring eni-0 takes its prefix first.
    let got = plan_offer(&v, &st, 16, &["eni-0".into()], 0);
    assert_eq!(got, vec![net("10.0.1.0/28")]);
    // Never anything in use.
    let all = plan_offer(&v, &st, 1000, &[], 0);
    assert!(all.iter().all(|n| !n.contains(&"10.0.2.5".parse::<Ipv4Addr>().unwrap())));
}

#[test]
fn earlier_offers_are_reoffered_first_and_forgotten_when_released() {
    let mut v = view(vec![eni("eni-1", 1, &["10.0.0.30", "10.0.0.31"], &[])]);
    let mut st = State::default();
    st.offered.insert(net("10.0.0.31/32"), crate::store::Offer { revision: 3, epoch: 1 });
    assert_eq!(plan_offer(&v, &st, 1, &[], 0), vec![net("10.0.0.31/32")]);
    assert!(offers_done(&v, &st).is_empty());
    v.enis[0].ips.retain(|ip| ip.to_string() != "10.0.0.31");
    assert!(offers_done(&v, &st).is_empty(), "releasedRevision not yet reached");
    v.released_revision = 3;
    assert_eq!(offers_done(&v, &st), vec![net("10.0.0.31/32")]);
}

mod ipv6;
mod storm;
