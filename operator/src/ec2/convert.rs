//! SDK output types → enipool's domain types. Missing or unparseable fields become empty values
//! rather than errors: a partial answer about one ENI must not fail a whole sync.

use super::{Attachment, Eni, Instance, InstanceTypeInfo, SecurityGroup, Subnet, Vpc};
use aws_sdk_ec2::types as sdk;
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

fn s(v: Option<&str>) -> String {
    v.unwrap_or_default().to_owned()
}

fn ip(v: Option<&str>) -> Option<Ipv4Addr> {
    v.and_then(|v| v.parse().ok())
}

/// Tags as a map.
pub fn tags(tags: &[sdk::Tag]) -> BTreeMap<String, String> {
    tags.iter().filter_map(|t| Some((t.key()?.to_owned(), s(t.value())))).collect()
}

fn groups(groups: &[sdk::GroupIdentifier]) -> Vec<String> {
    groups.iter().filter_map(|g| g.group_id().map(str::to_owned)).collect()
}

/// An ENI. MAC lower case; secondary IPs are the private IPs not flagged primary.
pub fn eni(n: &sdk::NetworkInterface) -> Eni {
    let primary_ip = ip(n.private_ip_address()).or_else(|| {
        n.private_ip_addresses()
            .iter()
            .find(|a| a.primary() == Some(true))
            .and_then(|a| ip(a.private_ip_address()))
    });
    let secondary_ips = n
        .private_ip_addresses()
        .iter()
        .filter(|a| a.primary() != Some(true))
        .filter_map(|a| ip(a.private_ip_address()))
        .filter(|a| Some(*a) != primary_ip)
        .collect();
    Eni {
        id: s(n.network_interface_id()),
        mac: s(n.mac_address()).to_ascii_lowercase(),
        subnet_id: s(n.subnet_id()),
        vpc_id: s(n.vpc_id()),
        zone: s(n.availability_zone()),
        status: n.status().map(|v| v.as_str().to_owned()).unwrap_or_default(),
        attachment: n.attachment().map(attachment),
        primary_ip,
        secondary_ips,
        prefixes: n
            .ipv4_prefixes()
            .iter()
            .filter_map(|p| p.ipv4_prefix()?.parse::<Ipv4Net>().ok())
            .collect(),
        ipv6_prefixes: n
            .ipv6_prefixes()
            .iter()
            .filter_map(|p| p.ipv6_prefix()?.parse::<Ipv6Net>().ok())
            .collect(),
        security_groups: groups(n.groups()),
        tags: tags(n.tag_set()),
        description: s(n.description()),
    }
}

fn attachment(a: &sdk::NetworkInterfaceAttachment) -> Attachment {
    Attachment {
        id: s(a.attachment_id()),
        instance_id: s(a.instance_id()),
        device_index: a.device_index().unwrap_or_default(),
        status: a.status().map(|v| v.as_str().to_owned()).unwrap_or_default(),
        delete_on_termination: a.delete_on_termination().unwrap_or_default(),
    }
}

/// An instance. The primary ENI is the one at device index 0 (network card 0).
pub fn instance(i: &sdk::Instance) -> Instance {
    let primary = i.network_interfaces().iter().find(|n| {
        n.attachment().and_then(|a| a.device_index()) == Some(0)
            && n.attachment().and_then(|a| a.network_card_index()).unwrap_or(0) == 0
    });
    let security_groups = match primary {
        Some(p) if !p.groups().is_empty() => groups(p.groups()),
        _ => groups(i.security_groups()),
    };
    Instance {
        id: s(i.instance_id()),
        instance_type: i.instance_type().map(|t| t.as_str().to_owned()).unwrap_or_default(),
        zone: s(i.placement().and_then(|p| p.availability_zone())),
        vpc_id: s(i.vpc_id()),
        subnet_id: s(i.subnet_id()),
        state: i
            .state()
            .and_then(|st| st.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        primary_eni: s(primary.and_then(|p| p.network_interface_id())),
        primary_ip: ip(i.private_ip_address()),
        security_groups,
        tags: tags(i.tags()),
    }
}

/// A subnet; `None` without a parseable IPv4 CIDR (IPv6-only subnets).
pub fn subnet(v: &sdk::Subnet) -> Option<Subnet> {
    Some(Subnet {
        id: s(v.subnet_id()),
        cidr: v.cidr_block()?.parse().ok()?,
        zone: s(v.availability_zone()),
        vpc_id: s(v.vpc_id()),
        available_ips: v.available_ip_address_count().unwrap_or_default(),
        tags: tags(v.tags()),
    })
}

/// A VPC: its primary IPv4 block and the associated secondary ones. EC2 lists the primary block
/// in the association set too, and keeps blocks being added or removed there with their state.
pub fn vpc(v: &sdk::Vpc) -> Vpc {
    let associated = v.cidr_block_association_set().iter().filter(|a| {
        a.cidr_block_state().and_then(|st| st.state())
            == Some(&sdk::VpcCidrBlockStateCode::Associated)
    });
    let mut cidr_blocks: Vec<Ipv4Net> = v
        .cidr_block()
        .into_iter()
        .chain(associated.filter_map(|a| a.cidr_block()))
        .filter_map(|c| c.parse::<Ipv4Net>().ok())
        .map(|c| c.trunc())
        .collect();
    cidr_blocks.sort();
    cidr_blocks.dedup();
    Vpc { id: s(v.vpc_id()), cidr_blocks }
}

pub fn security_group(g: &sdk::SecurityGroup) -> SecurityGroup {
    SecurityGroup { id: s(g.group_id()), vpc_id: s(g.vpc_id()), tags: tags(g.tags()) }
}

/// Network limits of an instance type; `None` when EC2 gave no network info.
pub fn instance_type(t: &sdk::InstanceTypeInfo) -> Option<(String, InstanceTypeInfo)> {
    let name = t.instance_type()?.as_str().to_owned();
    let net = t.network_info()?;
    // Attachments name no NetworkCardIndex, so they all go to the default card; on a multi-card
    // type (p4d, p5) that card takes only its share of `maximumNetworkInterfaces`, and counting
    // the total would overstate capacity and plan attachments EC2 refuses.
    let default_card = net.default_network_card_index().unwrap_or(0);
    let on_default_card = net
        .network_cards()
        .iter()
        .find(|c| c.network_card_index().unwrap_or(0) == default_card)
        .and_then(|c| c.maximum_network_interfaces());
    Some((
        name,
        InstanceTypeInfo {
            max_enis: on_default_card.or(net.maximum_network_interfaces())?,
            ipv4_per_eni: net.ipv4_addresses_per_interface()?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_card_type_counts_the_enis_of_its_default_card() {
        let card = |i: i32| {
            sdk::NetworkCardInfo::builder()
                .network_card_index(i)
                .maximum_network_interfaces(15)
                .build()
        };
        let t = sdk::InstanceTypeInfo::builder()
            .instance_type(sdk::InstanceType::P4d24xlarge)
            .network_info(
                sdk::NetworkInfo::builder()
                    .maximum_network_interfaces(60)
                    .maximum_network_cards(4)
                    .default_network_card_index(0)
                    .set_network_cards(Some((0..4).map(card).collect()))
                    .ipv4_addresses_per_interface(50)
                    .build(),
            )
            .build();
        let (name, info) = instance_type(&t).unwrap();
        assert_eq!(name, "p4d.24xlarge");
        assert_eq!(
            (info.max_enis, info.ipv4_per_eni),
            (15, 50),
            "card 0's ENIs, not all four cards'"
        );
        // A single-card answer without the card list still uses the total.
        let t = sdk::InstanceTypeInfo::builder()
            .instance_type(sdk::InstanceType::M5Large)
            .network_info(
                sdk::NetworkInfo::builder()
                    .maximum_network_interfaces(3)
                    .ipv4_addresses_per_interface(10)
                    .build(),
            )
            .build();
        assert_eq!(instance_type(&t).unwrap().1.max_enis, 3);
    }

    #[test]
    fn eni_conversion_splits_primary_and_secondary_and_lowercases_the_mac() {
        let n = sdk::NetworkInterface::builder()
            .network_interface_id("eni-1")
            .mac_address("0A:1B:2C:3D:4E:5F")
            .subnet_id("subnet-1")
            .vpc_id("vpc-1")
            .availability_zone("us-east-1a")
            .status(sdk::NetworkInterfaceStatus::InUse)
            .private_ip_address("10.0.1.10")
            .private_ip_addresses(
                sdk::NetworkInterfacePrivateIpAddress::builder()
                    .primary(true)
                    .private_ip_address("10.0.1.10")
                    .build(),
            )
            .private_ip_addresses(
                sdk::NetworkInterfacePrivateIpAddress::builder()
                    .primary(false)
                    .private_ip_address("10.0.1.11")
                    .build(),
            )
            .ipv4_prefixes(
                sdk::Ipv4PrefixSpecification::builder().ipv4_prefix("10.0.1.32/28").build(),
            )
            .ipv6_prefixes(
                sdk::Ipv6PrefixSpecification::builder()
                    .ipv6_prefix("2600:1f14:0:100:1::/80")
                    .build(),
            )
            .attachment(
                sdk::NetworkInterfaceAttachment::builder()
                    .attachment_id("eni-attach-1")
                    .instance_id("i-1")
                    .device_index(1)
                    .status(sdk::AttachmentStatus::Attached)
                    .delete_on_termination(true)
                    .build(),
            )
            .groups(sdk::GroupIdentifier::builder().group_id("sg-1").build())
            .tag_set(sdk::Tag::builder().key("k").value("v").build())
            .description("d")
            .build();
        let e = eni(&n);
        assert_eq!(e.mac, "0a:1b:2c:3d:4e:5f");
        assert_eq!(e.status, "in-use");
        assert_eq!(e.primary_ip, Some(Ipv4Addr::new(10, 0, 1, 10)));
        assert_eq!(e.secondary_ips, vec![Ipv4Addr::new(10, 0, 1, 11)]);
        assert_eq!(e.prefixes, vec!["10.0.1.32/28".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(e.ipv6_prefixes, vec!["2600:1f14:0:100:1::/80".parse::<Ipv6Net>().unwrap()]);
        let a = e.attachment.unwrap();
        assert_eq!(
            (a.id.as_str(), a.instance_id.as_str(), a.device_index),
            ("eni-attach-1", "i-1", 1)
        );
        assert_eq!(a.status, "attached");
        assert!(a.delete_on_termination);
        assert_eq!(e.security_groups, vec!["sg-1".to_owned()]);
        assert_eq!(e.tags.get("k").map(String::as_str), Some("v"));
    }
}
