//! The warm pool the bench runs against: one primary ENI with 64 /28 prefixes (1024 addresses),
//! or with `BENCH_IPV6` the same node in an IPv6 cluster (its /80, pods' node-local IPv4 from
//! the default egress range).

use enipool_agent::pool::{EniView, PoolView};

pub fn view(ipv6: bool) -> PoolView {
    let mut view = PoolView {
        enis: vec![EniView {
            id: "eni-bench0".into(),
            device_index: 0,
            mac: "02:00:00:88:00:00".into(),
            subnet: Some("10.88.0.0/16".parse().unwrap()),
            primary_ip: Some("10.88.0.10".parse().unwrap()),
            ips: vec![],
            prefixes: (0..64u32)
                .map(|i| {
                    ipnet::Ipv4Net::new(
                        std::net::Ipv4Addr::new(10, 88, 16 + (i / 16) as u8, ((i % 16) * 16) as u8),
                        28,
                    )
                    .unwrap()
                })
                .collect(),
            ipv6_prefixes: vec![],
            attached: true,
            ready: false,
        }],
        node_primary_ip: Some("10.88.0.10".parse().unwrap()),
        vpc_cidrs: vec!["10.88.0.0/16".parse().unwrap()],
        // Short cooldown so 1024 addresses sustain any run length (the cooldown's length does not
        // change the work per request).
        cooldown_seconds: 2,
        revision: 1,
        ..Default::default()
    };
    if ipv6 {
        view.ip_family = enipool_crds::IpFamily::IPv6;
        view.enis[0].ipv6_prefixes = vec!["2600:1f14:88:100:1::/80".parse().unwrap()];
    }
    view
}

/// One line saying which pool the run uses.
pub fn describe(ipv6: bool) -> &'static str {
    match ipv6 {
        true => {
            "pool: IPv6 pods (a /128 of the primary ENI's /80 each, node-local IPv4 for egress)"
        }
        false => "pool: IPv4 pods (addresses of 64 /28 prefixes on the primary ENI)",
    }
}
