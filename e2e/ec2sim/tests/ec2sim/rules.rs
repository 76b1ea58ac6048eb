//! The error table: each EC2 rule with its real code and status, plus ClientToken idempotency.

use super::harness::*;
use aws_sdk_ec2::types::{
    Filter, NetworkInterfaceAttachmentChanges, ResourceType, Tag, TagSpecification,
};

#[tokio::test]
async fn error_table() {
    let e = env().await;
    let (inst, primary) = e.launch("m5.large", &e.subnet).await;
    let eni = e.create_eni(&e.subnet, 2).await;
    let att = e.attach(&eni, &inst, 1).await;
    let spare = e.create_eni(&e.subnet, 0).await;
    let far = e.create_eni(&e.other_az, 0).await;
    let primary_att =
        e.eni(&primary).await.attachment().unwrap().attachment_id().unwrap().to_string();
    let c = &e.ec2;
    let cases: Vec<(&str, (String, u16), &str)> = vec![
        (
            "delete attached ENI",
            code(c.delete_network_interface().network_interface_id(&eni).send().await),
            "InvalidNetworkInterface.InUse",
        ),
        (
            "delete unknown ENI",
            code(
                c.delete_network_interface()
                    .network_interface_id("eni-0000000000000dead")
                    .send()
                    .await,
            ),
            "InvalidNetworkInterfaceID.NotFound",
        ),
        (
            "attach to unknown instance",
            code(
                c.attach_network_interface()
                    .network_interface_id(&spare)
                    .instance_id("i-0000000000000dead")
                    .device_index(2)
                    .send()
                    .await,
            ),
            "InvalidInstanceID.NotFound",
        ),
        (
            "attach ENI already attached",
            code(
                c.attach_network_interface()
                    .network_interface_id(&eni)
                    .instance_id(&inst)
                    .device_index(2)
                    .send()
                    .await,
            ),
            "InvalidNetworkInterface.InUse",
        ),
        (
            "attach at a taken device index",
            code(
                c.attach_network_interface()
                    .network_interface_id(&spare)
                    .instance_id(&inst)
                    .device_index(1)
                    .send()
                    .await,
            ),
            "InvalidParameterValue",
        ),
        (
            "attach across AZs",
            code(
                c.attach_network_interface()
                    .network_interface_id(&far)
                    .instance_id(&inst)
                    .device_index(2)
                    .send()
                    .await,
            ),
            "InvalidParameterCombination",
        ),
        (
            "create in unknown subnet",
            code(c.create_network_interface().subnet_id("subnet-0000000000000dead").send().await),
            "InvalidSubnetID.NotFound",
        ),
        (
            "create with count and prefix count",
            code(
                c.create_network_interface()
                    .subnet_id(&e.subnet)
                    .secondary_private_ip_address_count(1)
                    .ipv4_prefix_count(1)
                    .send()
                    .await,
            ),
            "InvalidParameterCombination",
        ),
        (
            "assign with count and prefix count",
            code(
                c.assign_private_ip_addresses()
                    .network_interface_id(&eni)
                    .secondary_private_ip_address_count(1)
                    .ipv4_prefix_count(1)
                    .send()
                    .await,
            ),
            "InvalidParameterCombination",
        ),
        (
            "assign nothing",
            code(c.assign_private_ip_addresses().network_interface_id(&eni).send().await),
            "MissingParameter",
        ),
        (
            "assign to unknown ENI",
            code(
                c.assign_private_ip_addresses()
                    .network_interface_id("eni-0000000000000dead")
                    .secondary_private_ip_address_count(1)
                    .send()
                    .await,
            ),
            "InvalidNetworkInterfaceID.NotFound",
        ),
        (
            "assign an address in use",
            code(
                c.assign_private_ip_addresses()
                    .network_interface_id(&spare)
                    .private_ip_addresses(e.eni(&eni).await.private_ip_address().unwrap())
                    .send()
                    .await,
            ),
            "InvalidIPAddress.InUse",
        ),
        (
            "unassign an address not on the ENI",
            code(
                c.unassign_private_ip_addresses()
                    .network_interface_id(&eni)
                    .private_ip_addresses("10.0.15.200")
                    .send()
                    .await,
            ),
            "InvalidParameterValue",
        ),
        (
            "unassign the primary address",
            code(
                c.unassign_private_ip_addresses()
                    .network_interface_id(&eni)
                    .private_ip_addresses(e.eni(&eni).await.private_ip_address().unwrap())
                    .send()
                    .await,
            ),
            "InvalidParameterValue",
        ),
        (
            "unassign a prefix not on the ENI",
            code(
                c.unassign_private_ip_addresses()
                    .network_interface_id(&eni)
                    .ipv4_prefixes("10.0.15.0/28")
                    .send()
                    .await,
            ),
            "InvalidParameterValue",
        ),
        (
            "detach unknown attachment",
            code(
                c.detach_network_interface()
                    .attachment_id("eni-attach-0000000000000dead")
                    .send()
                    .await,
            ),
            "InvalidAttachmentID.NotFound",
        ),
        (
            "detach the primary ENI",
            code(c.detach_network_interface().attachment_id(&primary_att).send().await),
            "OperationNotPermitted",
        ),
        (
            "modify DoT of a wrong attachment",
            code(
                c.modify_network_interface_attribute()
                    .network_interface_id(&eni)
                    .attachment(
                        NetworkInterfaceAttachmentChanges::builder()
                            .attachment_id(&primary_att)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .send()
                    .await,
            ),
            "InvalidAttachmentID.NotFound",
        ),
        (
            "describe unknown ENI id",
            code(
                c.describe_network_interfaces()
                    .network_interface_ids("eni-0000000000000dead")
                    .send()
                    .await,
            ),
            "InvalidNetworkInterfaceID.NotFound",
        ),
        (
            "describe unknown instance id",
            code(c.describe_instances().instance_ids("i-0000000000000dead").send().await),
            "InvalidInstanceID.NotFound",
        ),
        (
            "describe unknown subnet id",
            code(c.describe_subnets().subnet_ids("subnet-0000000000000dead").send().await),
            "InvalidSubnetID.NotFound",
        ),
        (
            "MaxResults below 5",
            code(c.describe_network_interfaces().max_results(3).send().await),
            "InvalidParameterValue",
        ),
        (
            "MaxResults with ids",
            code(
                c.describe_network_interfaces()
                    .network_interface_ids(&eni)
                    .max_results(5)
                    .send()
                    .await,
            ),
            "InvalidParameterCombination",
        ),
        (
            "unknown filter",
            code(
                c.describe_network_interfaces()
                    .filters(Filter::builder().name("bogus").values("x").build())
                    .send()
                    .await,
            ),
            "InvalidParameterValue",
        ),
        (
            "bad NextToken",
            code(c.describe_network_interfaces().next_token("garbage").send().await),
            "InvalidParameterValue",
        ),
        (
            "tag unknown resource",
            code(
                c.create_tags()
                    .resources("eni-0000000000000dead")
                    .tags(Tag::builder().key("k").value("v").build())
                    .send()
                    .await,
            ),
            "InvalidNetworkInterfaceID.NotFound",
        ),
        (
            "terminate unknown instance",
            code(c.terminate_instances().instance_ids("i-0000000000000dead").send().await),
            "InvalidInstanceID.NotFound",
        ),
        (
            "launch unknown type",
            code(
                c.run_instances()
                    .image_id("ami-1")
                    .instance_type("x9.huge".into())
                    .min_count(1)
                    .max_count(1)
                    .subnet_id(&e.subnet)
                    .send()
                    .await,
            ),
            "InvalidParameterValue",
        ),
        (
            "dry run",
            code(
                c.delete_network_interface()
                    .network_interface_id(&spare)
                    .dry_run(true)
                    .send()
                    .await,
            ),
            "DryRunOperation",
        ),
    ];
    let mut failures = Vec::new();
    for (name, (got, status), want) in &cases {
        let want_status = if *want == "DryRunOperation" { 412 } else { 400 };
        if got != want || *status != want_status {
            failures.push(format!("{name}: got {got} ({status}), want {want} ({want_status})"));
        }
    }
    assert!(failures.is_empty(), "{}\nstate: {}", failures.join("\n"), e.sim.dump());
    // Nothing above changed the attachment.
    assert_eq!(e.eni(&eni).await.attachment().unwrap().attachment_id(), Some(att.as_str()));
}

#[tokio::test]
async fn client_token_idempotency() {
    let e = env().await;
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::NetworkInterface)
        .tags(Tag::builder().key("enipool.io/cluster").value("c1").build())
        .build();
    let create = |n: i32, token: &str| {
        e.ec2
            .create_network_interface()
            .subnet_id(&e.subnet)
            .secondary_private_ip_address_count(n)
            .tag_specifications(tags.clone())
            .client_token(token)
            .send()
    };
    let a = create(3, "op-1").await.unwrap();
    let b = create(3, "op-1").await.unwrap();
    let ia = a.network_interface().unwrap();
    assert_eq!(ia.network_interface_id(), b.network_interface().unwrap().network_interface_id());
    assert_eq!(a.client_token(), Some("op-1"));
    assert_eq!(ia.tag_set()[0].key(), Some("enipool.io/cluster"));
    assert_eq!(ia.private_ip_addresses().len(), 4);
    assert_eq!(e.available_ips(&e.subnet).await, 4091 - 4, "the retry allocated nothing");
    assert_eq!(code(create(4, "op-1").await), ("IdempotentParameterMismatch".into(), 400));
    let c = create(3, "op-2").await.unwrap();
    assert_ne!(c.network_interface().unwrap().network_interface_id(), ia.network_interface_id());
}

#[tokio::test]
async fn tags_create_delete_and_describe() {
    let e = env().await;
    let eni = e.create_eni(&e.subnet, 0).await;
    e.ec2
        .create_tags()
        .resources(&eni)
        .tags(Tag::builder().key("a").value("1").build())
        .tags(Tag::builder().key("b").value("2").build())
        .send()
        .await
        .unwrap();
    // A value that does not match keeps the tag; no value removes it.
    e.ec2
        .delete_tags()
        .resources(&eni)
        .tags(Tag::builder().key("a").value("other").build())
        .tags(Tag::builder().key("b").build())
        .send()
        .await
        .unwrap();
    let keys: Vec<_> =
        e.eni(&eni).await.tag_set().iter().map(|t| t.key().unwrap().to_string()).collect();
    assert_eq!(keys, ["a"]);
    let sgs = e
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("tag:role").values("node").build())
        .send()
        .await
        .unwrap();
    assert_eq!(sgs.security_groups()[0].group_id(), Some(e.sg.as_str()));
    let subnets = e
        .ec2
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(&e.vpc).build())
        .filters(Filter::builder().name("availability-zone").values("us-west-2a").build())
        .send()
        .await
        .unwrap();
    assert_eq!(subnets.subnets().len(), 3);
    let tagged = e
        .ec2
        .describe_subnets()
        .filters(Filter::builder().name("tag:kind").values("pods").build())
        .send()
        .await
        .unwrap();
    assert_eq!(tagged.subnets()[0].cidr_block(), Some("10.0.0.0/20"));
}
