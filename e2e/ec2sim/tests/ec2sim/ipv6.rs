//! IPv6 through the SDK: a VPC's /56 and a subnet's /64 as Describe shows them, /80 prefixes and
//! single addresses assigned to ENIs with EC2's rules (one kind per call, the per-type slot limit,
//! all or nothing, subnets without IPv6 refused), and everything given back when an ENI goes.

use super::harness::*;
use ipnet::Ipv6Net;
use std::net::Ipv6Addr;

/// The env with IPv6 on the VPC and on `subnet` (not on `other_az`).
async fn env6() -> (Env, Ipv6Net, Ipv6Net) {
    let e = env().await;
    let vpc6 = e.sim.associate_vpc_ipv6(&e.vpc).unwrap();
    let sub6 = e.sim.associate_subnet_ipv6(&e.subnet, 3).unwrap();
    (e, vpc6, sub6)
}

async fn prefixes_of(e: &Env, eni: &str) -> Vec<Ipv6Net> {
    let n = e.eni(eni).await;
    n.ipv6_prefixes().iter().map(|p| p.ipv6_prefix().unwrap().parse().unwrap()).collect()
}

#[tokio::test]
async fn vpc_and_subnet_blocks_are_described() {
    let (e, vpc6, sub6) = env6().await;
    assert_eq!(vpc6.prefix_len(), 56);
    assert_eq!((sub6.prefix_len(), vpc6.contains(&sub6)), (64, true));
    assert_eq!(
        e.sim.associate_subnet_ipv6(&e.subnet, 4).map_err(|x| x.code().to_string()),
        Err("InvalidParameterValue".into()),
        "a second block for one subnet"
    );
    let vpcs = e.ec2.describe_vpcs().vpc_ids(&e.vpc).send().await.unwrap();
    let v = &vpcs.vpcs()[0];
    let blocks: Vec<&str> =
        v.ipv6_cidr_block_association_set().iter().filter_map(|b| b.ipv6_cidr_block()).collect();
    assert_eq!(blocks, [vpc6.to_string()]);
    let subnets = e.ec2.describe_subnets().subnet_ids(&e.subnet).send().await.unwrap();
    let s = &subnets.subnets()[0];
    let b = &s.ipv6_cidr_block_association_set()[0];
    assert_eq!(b.ipv6_cidr_block(), Some(sub6.to_string().as_str()));
    let state = b.ipv6_cidr_block_state().and_then(|s| s.state()).map(|s| s.as_str());
    assert_eq!(state, Some("associated"));
    let other = e.ec2.describe_subnets().subnet_ids(&e.other_az).send().await.unwrap();
    assert!(other.subnets()[0].ipv6_cidr_block_association_set().is_empty());
}

#[tokio::test]
async fn prefixes_and_addresses_with_ec2s_rules() {
    let (e, _, sub6) = env6().await;
    let (_, eni) = e.launch("m5.large", &e.subnet).await;
    let c = &e.ec2;
    let described = e.eni(&eni).await;
    let node: Vec<Ipv6Addr> = described
        .ipv6_addresses()
        .iter()
        .map(|a| a.ipv6_address().unwrap().parse().unwrap())
        .collect();
    assert_eq!(node.len(), 1, "an instance in an IPv6 subnet gets one address at launch");
    assert!(sub6.contains(&node[0]));
    let out = c
        .assign_ipv6_addresses()
        .network_interface_id(&eni)
        .ipv6_prefix_count(2)
        .send()
        .await
        .unwrap();
    let got: Vec<Ipv6Net> =
        out.assigned_ipv6_prefixes().iter().map(|p| p.parse().unwrap()).collect();
    assert_eq!(got.len(), 2);
    for p in &got {
        assert_eq!(p.prefix_len(), 80, "{p}");
        assert_eq!(p.network(), p.addr(), "{p} aligned");
        assert!(sub6.contains(p), "{p} inside {sub6}");
    }
    assert_ne!(got[0], got[1]);
    assert_eq!(prefixes_of(&e, &eni).await, got, "Describe lists what was assigned");

    // m5.large: 10 IPv6 slots per ENI; 3 used (the node's address from launch and 2 prefixes), 8
    // more is one too many and takes nothing.
    let over = c.assign_ipv6_addresses().network_interface_id(&eni).ipv6_prefix_count(8);
    assert_eq!(code(over.send().await).0, "PrivateIpAddressLimitExceeded");
    assert_eq!(prefixes_of(&e, &eni).await, got);

    let mixed = c
        .assign_ipv6_addresses()
        .network_interface_id(&eni)
        .ipv6_prefix_count(1)
        .ipv6_address_count(1);
    assert_eq!(code(mixed.send().await).0, "InvalidParameterCombination");
    let none = c.assign_ipv6_addresses().network_interface_id(&eni);
    assert_eq!(code(none.send().await).0, "MissingParameter");

    let addrs = c
        .assign_ipv6_addresses()
        .network_interface_id(&eni)
        .ipv6_address_count(2)
        .send()
        .await
        .unwrap();
    let addrs: Vec<Ipv6Addr> =
        addrs.assigned_ipv6_addresses().iter().map(|a| a.parse().unwrap()).collect();
    assert_eq!(addrs.len(), 2);
    for a in &addrs {
        assert!(sub6.contains(a) && !got.iter().any(|p| p.contains(a)) && !node.contains(a), "{a}");
        let off = u128::from(*a) - u128::from(sub6.network());
        assert!(off > 3, "{a} is one of the subnet's reserved addresses");
    }
    let described = e.eni(&eni).await;
    let listed: Vec<&str> =
        described.ipv6_addresses().iter().filter_map(|a| a.ipv6_address()).collect();
    let want: Vec<String> = node.iter().chain(&addrs).map(|a| a.to_string()).collect();
    assert_eq!(listed, want);

    c.unassign_ipv6_addresses()
        .network_interface_id(&eni)
        .ipv6_prefixes(got[0].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(prefixes_of(&e, &eni).await, [got[1]]);
    let again =
        c.unassign_ipv6_addresses().network_interface_id(&eni).ipv6_prefixes(got[0].to_string());
    assert_eq!(code(again.send().await).0, "InvalidParameterValue", "not the ENI's any more");
}

#[tokio::test]
async fn a_subnet_without_ipv6_is_refused_and_a_deleted_eni_gives_its_prefixes_back() {
    let (e, _, _) = env6().await;
    let c = &e.ec2;
    let far = e.create_eni(&e.other_az, 0).await;
    let refused = c.assign_ipv6_addresses().network_interface_id(&far).ipv6_prefix_count(1);
    assert_eq!(code(refused.send().await).0, "InvalidParameterValue");
    assert!(prefixes_of(&e, &far).await.is_empty());

    let eni = e.create_eni(&e.subnet, 0).await;
    let out =
        c.assign_ipv6_addresses().network_interface_id(&eni).ipv6_prefix_count(1).send().await;
    let p = out.unwrap().assigned_ipv6_prefixes()[0].clone();
    let other = e.create_eni(&e.subnet, 0).await;
    let taken = c.assign_ipv6_addresses().network_interface_id(&other).ipv6_prefixes(&p);
    assert_eq!(code(taken.send().await).0, "InvalidParameterValue", "{p} is held");
    c.delete_network_interface().network_interface_id(&eni).send().await.unwrap();
    let freed = c.assign_ipv6_addresses().network_interface_id(&other).ipv6_prefixes(&p);
    assert_eq!(freed.send().await.unwrap().assigned_ipv6_prefixes(), std::slice::from_ref(&p));
}
