//! Describe filters the operator uses, and pagination through the SDK's paginators.

use super::harness::*;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

fn f(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

#[tokio::test]
async fn network_interface_filters() {
    let e = env().await;
    let (inst, primary) = e.launch("m5.xlarge", &e.subnet).await;
    let mut attached = vec![];
    for i in 0..3 {
        let spec = TagSpecification::builder()
            .resource_type(ResourceType::NetworkInterface)
            .tags(Tag::builder().key("enipool.io/cluster").value("c1").build())
            .build();
        let out = e
            .ec2
            .create_network_interface()
            .subnet_id(&e.subnet)
            .description(format!("enipool eni {i}"))
            .tag_specifications(spec)
            .send()
            .await
            .unwrap();
        let id = out.network_interface().unwrap().network_interface_id().unwrap().to_string();
        if i < 2 {
            e.attach(&id, &inst, i + 1).await;
            attached.push(id);
        }
    }
    let ids = |out: aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput| {
        let mut v: Vec<String> = out.network_interfaces().iter().map(|n| n.network_interface_id().unwrap().to_string()).collect();
        v.sort();
        v
    };
    let d = || e.ec2.describe_network_interfaces();
    let by_instance = ids(d().filters(f("attachment.instance-id", &inst)).send().await.unwrap());
    let mut want = vec![primary.clone(), attached[0].clone(), attached[1].clone()];
    want.sort();
    assert_eq!(by_instance, want);
    assert_eq!(
        ids(d()
            .filters(f("attachment.instance-id", &inst))
            .filters(f("attachment.device-index", "0"))
            .send()
            .await
            .unwrap()),
        std::slice::from_ref(&primary)
    );
    assert_eq!(ids(d().filters(f("attachment.status", "attached")).send().await.unwrap()).len(), 3);
    assert_eq!(ids(d().filters(f("status", "available")).send().await.unwrap()).len(), 1);
    assert_eq!(ids(d().filters(f("tag:enipool.io/cluster", "c1")).send().await.unwrap()).len(), 3);
    assert_eq!(
        ids(d()
            .filters(f("tag-key", "enipool.io/cluster"))
            .filters(f("status", "in-use"))
            .send()
            .await
            .unwrap()),
        attached
    );
    assert_eq!(ids(d().filters(f("description", "enipool eni *")).send().await.unwrap()).len(), 3);
    assert_eq!(
        ids(d()
            .filters(f("subnet-id", &e.subnet))
            .filters(f("vpc-id", &e.vpc))
            .send()
            .await
            .unwrap())
        .len(),
        4
    );
    assert_eq!(
        ids(d().filters(f("network-interface-id", &primary)).send().await.unwrap()),
        std::slice::from_ref(&primary)
    );
    assert!(ids(d().filters(f("subnet-id", &e.tiny)).send().await.unwrap()).is_empty());
    // The instance view lists its ENIs with their attachments.
    let di = e
        .ec2
        .describe_instances()
        .filters(f("instance-state-name", "running"))
        .send()
        .await
        .unwrap();
    let i = &di.reservations()[0].instances()[0];
    assert_eq!(i.network_interfaces().len(), 3);
    assert_eq!(i.instance_type().unwrap().as_str(), "m5.xlarge");
    assert_eq!(i.placement().unwrap().availability_zone(), Some("us-west-2a"));
    assert_eq!(i.subnet_id(), Some(e.subnet.as_str()));
    assert_eq!(i.security_groups()[0].group_id(), Some(e.sg.as_str()));
}

#[tokio::test]
async fn pagination_covers_everything_once() {
    let e = env().await;
    for _ in 0..12 {
        e.create_eni(&e.subnet, 0).await;
    }
    let mut pages = vec![];
    let mut token = None;
    loop {
        let out = e
            .ec2
            .describe_network_interfaces()
            .max_results(5)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        pages.push(out.network_interfaces().len());
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, [5, 5, 2]);
    let all: Vec<_> = e
        .ec2
        .describe_network_interfaces()
        .max_results(5)
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await;
    let mut ids: Vec<String> =
        all.into_iter().map(|n| n.unwrap().network_interface_id().unwrap().to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    for _ in 0..6 {
        e.launch("t3.medium", &e.subnet).await;
    }
    let all = e
        .ec2
        .describe_instances()
        .max_results(5)
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(all.len(), 6);
}

#[tokio::test]
async fn vpcs_list_their_block_associations_with_state() {
    let e = env().await;
    let extra = e.sim.associate_vpc_cidr(&e.vpc, "100.64.0.0/16").unwrap();
    let gone = e.sim.associate_vpc_cidr(&e.vpc, "100.65.0.0/16").unwrap();
    e.sim.disassociate_vpc_cidr(&gone).unwrap();
    assert!(e.sim.associate_vpc_cidr(&e.vpc, "10.0.128.0/17").is_err(), "overlaps the primary");
    // Subnets may be carved from an associated secondary block only.
    e.sim.create_subnet(&e.vpc, "100.64.0.0/20", "us-west-2b", &[]).unwrap();
    assert!(e.sim.create_subnet(&e.vpc, "100.65.0.0/20", "us-west-2b", &[]).is_err());
    assert!(e.sim.disassociate_vpc_cidr(&extra).is_err(), "a block with subnets stays");
    let other = e.sim.create_vpc("172.16.0.0/16", &[]).unwrap();

    let out = e.ec2.describe_vpcs().filters(f("vpc-id", &e.vpc)).send().await.unwrap();
    assert_eq!(out.vpcs().len(), 1);
    let v = &out.vpcs()[0];
    assert_eq!(v.vpc_id(), Some(e.vpc.as_str()));
    assert_eq!(v.cidr_block(), Some("10.0.0.0/16"));
    let blocks: Vec<(&str, &str)> = v
        .cidr_block_association_set()
        .iter()
        .map(|a| (a.cidr_block().unwrap(), a.cidr_block_state().unwrap().state().unwrap().as_str()))
        .collect();
    assert_eq!(
        blocks,
        [
            ("10.0.0.0/16", "associated"),
            ("100.64.0.0/16", "associated"),
            ("100.65.0.0/16", "disassociated")
        ]
    );
    let all = e.ec2.describe_vpcs().send().await.unwrap();
    assert_eq!(all.vpcs().len(), 2);
    let by_id = e.ec2.describe_vpcs().vpc_ids(&other).send().await.unwrap();
    assert_eq!(by_id.vpcs()[0].cidr_block(), Some("172.16.0.0/16"));
    let missing = e.ec2.describe_vpcs().vpc_ids("vpc-0000000000000dead").send().await;
    assert_eq!(
        aws_sdk_ec2::error::ProvideErrorMetadata::code(&missing.unwrap_err()),
        Some("InvalidVpcID.NotFound")
    );
}
