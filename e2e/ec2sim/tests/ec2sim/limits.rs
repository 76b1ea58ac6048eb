//! Per-type ENI and per-ENI address/prefix limits, subnet exhaustion, reserved addresses, /28
//! alignment: each limit with the real numbers and the real error code.

use super::harness::*;
use aws_sdk_ec2::types::InstanceType;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// (type, max ENIs, IPv4 per ENI) — the real EC2 numbers.
const TYPES: &[(&str, i32, i32)] = &[
    ("t3.medium", 3, 6),
    ("t3.large", 3, 12),
    ("m5.large", 3, 10),
    ("m5.xlarge", 4, 15),
    ("m5.2xlarge", 4, 15),
    ("c5.large", 3, 10),
    ("m5.4xlarge", 8, 30),
];

#[tokio::test]
async fn describe_instance_types_reports_real_limits() {
    let e = env().await;
    let mut req = e.ec2.describe_instance_types();
    for (t, _, _) in TYPES {
        req = req.instance_types(InstanceType::from(*t));
    }
    let out = req.send().await.unwrap();
    assert_eq!(out.instance_types().len(), TYPES.len());
    for it in out.instance_types() {
        let name = it.instance_type().unwrap().as_str();
        let (_, enis, ips) = TYPES.iter().find(|(t, _, _)| *t == name).unwrap();
        let n = it.network_info().unwrap();
        assert_eq!(n.maximum_network_interfaces(), Some(*enis), "{name}");
        assert_eq!(n.ipv4_addresses_per_interface(), Some(*ips), "{name}");
        assert_eq!(n.network_cards()[0].maximum_network_interfaces(), Some(*enis));
    }
    let r =
        e.ec2.describe_instance_types().instance_types(InstanceType::from("x9.huge")).send().await;
    assert_eq!(code(r), ("InvalidInstanceType".into(), 400));
}

#[tokio::test]
async fn secondary_ip_limit_per_type() {
    let e = env().await;
    for (t, _, ips) in TYPES {
        let (_, eni) = e.launch(t, &e.subnet).await;
        // Fill all slots but the primary in two calls, then one more must fail.
        let first = (ips - 1) / 2;
        for n in [first, ips - 1 - first] {
            let out = e
                .ec2
                .assign_private_ip_addresses()
                .network_interface_id(&eni)
                .secondary_private_ip_address_count(n)
                .send()
                .await
                .unwrap();
            assert_eq!(out.assigned_private_ip_addresses().len(), n as usize, "{t}");
        }
        let r = e
            .ec2
            .assign_private_ip_addresses()
            .network_interface_id(&eni)
            .secondary_private_ip_address_count(1)
            .send()
            .await;
        assert_eq!(code(r), ("PrivateIpAddressLimitExceeded".into(), 400), "{t}");
        assert_eq!(e.eni(&eni).await.private_ip_addresses().len(), *ips as usize, "{t}");
    }
}

#[tokio::test]
async fn prefix_limit_per_type_shares_slots_with_ips() {
    let e = env().await;
    for (t, _, ips) in TYPES {
        let (_, eni) = e.launch(t, &e.subnet).await;
        e.ec2
            .assign_private_ip_addresses()
            .network_interface_id(&eni)
            .secondary_private_ip_address_count(1)
            .send()
            .await
            .unwrap();
        let out = e
            .ec2
            .assign_private_ip_addresses()
            .network_interface_id(&eni)
            .ipv4_prefix_count(ips - 2)
            .send()
            .await
            .unwrap();
        assert_eq!(out.assigned_ipv4_prefixes().len(), (ips - 2) as usize);
        for p in out.assigned_ipv4_prefixes() {
            let net: ipnet::Ipv4Net = p.ipv4_prefix().unwrap().parse().unwrap();
            assert_eq!(net.prefix_len(), 28);
            assert_eq!(net.network(), net.addr(), "{net} aligned");
        }
        let r = e
            .ec2
            .assign_private_ip_addresses()
            .network_interface_id(&eni)
            .ipv4_prefix_count(1)
            .send()
            .await;
        assert_eq!(code(r), ("PrivateIpAddressLimitExceeded".into(), 400), "{t}");
    }
}

#[tokio::test]
async fn eni_count_limit_per_type_counts_detaching() {
    let e = env_with(Timing { detach: std::time::Duration::from_secs(30), ..instant() }).await;
    for (t, enis, _) in TYPES {
        let (inst, _) = e.launch(t, &e.subnet).await;
        let mut last = String::new();
        for idx in 1..*enis {
            let eni = e.create_eni(&e.subnet, 0).await;
            last = e.attach(&eni, &inst, idx).await;
        }
        let extra = e.create_eni(&e.subnet, 0).await;
        let r = e
            .ec2
            .attach_network_interface()
            .network_interface_id(&extra)
            .instance_id(&inst)
            .device_index(*enis)
            .send()
            .await;
        assert_eq!(code(r), ("AttachmentLimitExceeded".into(), 400), "{t}");
        // A detaching ENI still holds its slot.
        e.ec2.detach_network_interface().attachment_id(&last).send().await.unwrap();
        let r = e
            .ec2
            .attach_network_interface()
            .network_interface_id(&extra)
            .instance_id(&inst)
            .device_index(*enis)
            .send()
            .await;
        assert_eq!(code(r), ("AttachmentLimitExceeded".into(), 400), "{t} while detaching");
    }
}

/// A p4d.24xlarge has 60 interfaces over four network cards; an attach that names no card goes to
/// card 0, which takes 15.
#[tokio::test]
async fn a_multi_card_type_attaches_only_card_zeros_share_without_a_card_index() {
    let e = env().await;
    let out = e
        .ec2
        .describe_instance_types()
        .instance_types(InstanceType::P4d24xlarge)
        .send()
        .await
        .unwrap();
    let n = out.instance_types()[0].network_info().unwrap();
    assert_eq!((n.maximum_network_interfaces(), n.maximum_network_cards()), (Some(60), Some(4)));
    let cards: Vec<_> = n
        .network_cards()
        .iter()
        .map(|c| (c.network_card_index().unwrap(), c.maximum_network_interfaces().unwrap()))
        .collect();
    assert_eq!(cards, [(0, 15), (1, 15), (2, 15), (3, 15)]);
    let (inst, _) = e.launch("p4d.24xlarge", &e.subnet).await;
    for idx in 1..15 {
        let eni = e.create_eni(&e.subnet, 0).await;
        e.attach(&eni, &inst, idx).await;
    }
    let extra = e.create_eni(&e.subnet, 0).await;
    let r = e
        .ec2
        .attach_network_interface()
        .network_interface_id(&extra)
        .instance_id(&inst)
        .device_index(15)
        .send()
        .await;
    assert_eq!(code(r), ("AttachmentLimitExceeded".into(), 400));
}

#[tokio::test]
async fn attaching_an_eni_with_more_addresses_than_the_type_allows_fails() {
    let e = env().await;
    let (inst, _) = e.launch("t3.medium", &e.subnet).await;
    // Unattached ENIs may hold more than a t3.medium allows (7 > 6); attach is where it fails.
    let eni = e.create_eni(&e.subnet, 6).await;
    let r = e
        .ec2
        .attach_network_interface()
        .network_interface_id(&eni)
        .instance_id(&inst)
        .device_index(1)
        .send()
        .await;
    assert_eq!(code(r), ("InvalidInterface.IpAddressLimitExceeded".into(), 400));
    let r = e
        .ec2
        .create_network_interface()
        .subnet_id(&e.subnet)
        .secondary_private_ip_address_count(50)
        .send()
        .await;
    assert_eq!(code(r), ("PrivateIpAddressLimitExceeded".into(), 400));
}

#[tokio::test]
async fn subnet_exhaustion_and_reserved_addresses() {
    let e = env().await;
    assert_eq!(e.available_ips(&e.tiny).await, 11, "a /28 has 16 - 5 reserved");
    let (_, eni) = e.launch("m5.4xlarge", &e.tiny).await;
    // All or nothing: a request larger than what is left assigns nothing.
    let r = e
        .ec2
        .assign_private_ip_addresses()
        .network_interface_id(&eni)
        .secondary_private_ip_address_count(11)
        .send()
        .await;
    assert_eq!(code(r), ("InsufficientFreeAddressesInSubnet".into(), 400));
    assert_eq!(e.available_ips(&e.tiny).await, 10);
    let out = e
        .ec2
        .assign_private_ip_addresses()
        .network_interface_id(&eni)
        .secondary_private_ip_address_count(10)
        .send()
        .await
        .unwrap();
    assert_eq!(out.assigned_private_ip_addresses().len(), 10);
    assert_eq!(e.available_ips(&e.tiny).await, 0);
    let r = e
        .ec2
        .assign_private_ip_addresses()
        .network_interface_id(&eni)
        .secondary_private_ip_address_count(1)
        .send()
        .await;
    assert_eq!(code(r), ("InsufficientFreeAddressesInSubnet".into(), 400));
    let r = e.ec2.create_network_interface().subnet_id(&e.tiny).send().await;
    assert_eq!(code(r), ("InsufficientFreeAddressesInSubnet".into(), 400));
    let addrs: HashSet<Ipv4Addr> = e
        .eni(&eni)
        .await
        .private_ip_addresses()
        .iter()
        .map(|a| a.private_ip_address().unwrap().parse().unwrap())
        .collect();
    assert_eq!(addrs.len(), 11);
    for reserved in ["10.0.16.0", "10.0.16.1", "10.0.16.2", "10.0.16.3", "10.0.16.15"] {
        assert!(!addrs.contains(&reserved.parse().unwrap()), "{reserved} handed out");
    }
}

#[tokio::test]
async fn prefixes_are_aligned_and_exclusive_of_secondary_ips() {
    let e = env().await;
    let (_, eni) = e.launch("m5.4xlarge", &e.small).await;
    let out = e
        .ec2
        .assign_private_ip_addresses()
        .network_interface_id(&eni)
        .ipv4_prefix_count(2)
        .send()
        .await
        .unwrap();
    let got: Vec<&str> =
        out.assigned_ipv4_prefixes().iter().filter_map(|p| p.ipv4_prefix()).collect();
    assert_eq!(got, ["10.0.32.16/28", "10.0.32.32/28"]);
    assert_eq!(e.available_ips(&e.small).await, 59 - 1 - 32);
    // Free addresses remain (.5-.14, .49-.62) but no aligned /28 is entirely free.
    let r = e
        .ec2
        .assign_private_ip_addresses()
        .network_interface_id(&eni)
        .ipv4_prefix_count(1)
        .send()
        .await;
    assert_eq!(code(r), ("InsufficientCidrBlocks".into(), 400));
    let out = e
        .ec2
        .assign_private_ip_addresses()
        .network_interface_id(&eni)
        .secondary_private_ip_address_count(20)
        .send()
        .await
        .unwrap();
    for a in out.assigned_private_ip_addresses() {
        let ip: Ipv4Addr = a.private_ip_address().unwrap().parse().unwrap();
        assert!(
            !(u32::from(ip) >= u32::from(Ipv4Addr::new(10, 0, 32, 16))
                && u32::from(ip) < u32::from(Ipv4Addr::new(10, 0, 32, 48))),
            "{ip} inside a prefix"
        );
    }
    // Unassigning a prefix gives its 16 addresses back.
    let before = e.available_ips(&e.small).await;
    e.ec2
        .unassign_private_ip_addresses()
        .network_interface_id(&eni)
        .ipv4_prefixes("10.0.32.16/28")
        .send()
        .await
        .unwrap();
    assert_eq!(e.available_ips(&e.small).await, before + 16);
    let r = e
        .ec2
        .assign_private_ip_addresses()
        .network_interface_id(&eni)
        .ipv4_prefixes("10.0.32.8/28")
        .send()
        .await;
    assert_eq!(code(r).0, "InvalidParameterValue", "misaligned explicit prefix");
}

#[tokio::test]
async fn addresses_are_unique_across_the_subnet() {
    let e = env().await;
    let mut seen = HashSet::new();
    for _ in 0..10 {
        let id = e.create_eni(&e.subnet, 9).await;
        for a in e.eni(&id).await.private_ip_addresses() {
            assert!(seen.insert(a.private_ip_address().unwrap().to_string()), "duplicate address");
        }
    }
    assert_eq!(seen.len(), 100);
    assert_eq!(e.available_ips(&e.subnet).await, 4096 - 5 - 100);
}
