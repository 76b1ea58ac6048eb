//! Rendering of model objects into the EC2 XML shapes the SDK's deserializers expect
//! (element names checked against aws-sdk-ec2's `protocol_serde`).

use super::limits::TypeLimits;
use super::state::*;
use super::xml::Xml;

/// The account id every resource belongs to.
pub const OWNER: &str = "123456789012";

fn groups(x: &mut Xml, st: &State, ids: &[String]) {
    x.items("groupSet", ids, |x, g| {
        x.leaf("groupId", g);
        x.opt("groupName", st.groups.get(g).map(|s| s.name.as_str()));
    });
}

fn private_dns(ip: std::net::Ipv4Addr) -> String {
    format!("ip-{}.us-west-2.compute.internal", ip.to_string().replace('.', "-"))
}

fn addresses(x: &mut Xml, eni: &Eni) {
    let all =
        std::iter::once((eni.primary_ip, true)).chain(eni.secondary.iter().map(|a| (*a, false)));
    x.items("privateIpAddressesSet", all, |x, (ip, primary)| {
        x.leaf("privateIpAddress", ip)
            .leaf("privateDnsName", private_dns(ip))
            .leaf("primary", primary);
    });
    x.items("ipv6AddressesSet", &eni.ipv6_addrs, |x, a| {
        x.leaf("ipv6Address", a).leaf("isPrimaryIpv6", false);
    });
    x.items("ipv6PrefixSet", &eni.ipv6_prefixes, |x, p| {
        x.leaf("ipv6Prefix", p);
    });
    x.items("ipv4PrefixSet", &eni.prefixes, |x, p| {
        x.leaf("ipv4Prefix", p);
    });
}

/// A `NetworkInterface` (DescribeNetworkInterfaces, CreateNetworkInterface).
pub fn eni(x: &mut Xml, st: &State, e: &Eni) {
    x.leaf("networkInterfaceId", &e.id)
        .leaf("subnetId", &e.subnet_id)
        .leaf("vpcId", &e.vpc_id)
        .leaf("availabilityZone", &e.az)
        .leaf("description", &e.description)
        .leaf("ownerId", OWNER)
        .leaf("requesterManaged", false)
        .leaf("status", e.status())
        .leaf("macAddress", &e.mac)
        .leaf("privateIpAddress", e.primary_ip)
        .leaf("privateDnsName", private_dns(e.primary_ip))
        .leaf("sourceDestCheck", e.source_dest_check)
        .leaf("interfaceType", "interface");
    groups(x, st, &e.groups);
    if let Some(a) = &e.attachment {
        x.open("attachment")
            .leaf("attachmentId", &a.id)
            .leaf("instanceId", &a.instance_id)
            .leaf("instanceOwnerId", OWNER)
            .leaf("deviceIndex", a.device_index)
            .leaf("networkCardIndex", 0)
            .leaf("status", a.state.as_str())
            .leaf("attachTime", &a.attach_time)
            .leaf("deleteOnTermination", a.delete_on_termination)
            .close("attachment");
    }
    addresses(x, e);
    x.tag_set(&e.tags);
}

/// An `Instance` (DescribeInstances, RunInstances).
pub fn instance(x: &mut Xml, st: &State, i: &Instance) {
    x.leaf("instanceId", &i.id)
        .leaf("imageId", &i.image_id)
        .open("instanceState")
        .leaf("code", i.state.code())
        .leaf("name", i.state.name())
        .close("instanceState")
        .leaf("privateDnsName", private_dns(i.private_ip))
        .leaf("amiLaunchIndex", 0)
        .leaf("instanceType", &i.instance_type)
        .leaf("launchTime", &i.launch_time)
        .open("placement")
        .leaf("availabilityZone", &i.az)
        .leaf("tenancy", "default")
        .close("placement")
        .open("monitoring")
        .leaf("state", "disabled")
        .close("monitoring")
        .leaf("architecture", "x86_64")
        .leaf("rootDeviceType", "ebs")
        .leaf("virtualizationType", "hvm")
        .leaf("hypervisor", "xen");
    if i.state != InstanceState::Terminated {
        x.leaf("subnetId", &i.subnet_id)
            .leaf("vpcId", &i.vpc_id)
            .leaf("privateIpAddress", i.private_ip);
    }
    let mut enis: Vec<&Eni> = st.instance_enis(&i.id).collect();
    enis.sort_by_key(|e| e.attachment.as_ref().map(|a| a.device_index));
    let sgs =
        enis.iter().find(|e| e.id == i.primary_eni).map(|e| e.groups.clone()).unwrap_or_default();
    groups(x, st, &sgs);
    x.open("stateReason").close("stateReason");
    x.tag_set(&i.tags);
    x.items("networkInterfaceSet", enis, |x, e| {
        let a = e.attachment.as_ref().expect("instance ENIs are attached");
        x.leaf("networkInterfaceId", &e.id)
            .leaf("subnetId", &e.subnet_id)
            .leaf("vpcId", &e.vpc_id)
            .leaf("description", &e.description)
            .leaf("ownerId", OWNER)
            .leaf("status", e.status())
            .leaf("macAddress", &e.mac)
            .leaf("privateIpAddress", e.primary_ip)
            .leaf("privateDnsName", private_dns(e.primary_ip))
            .leaf("sourceDestCheck", e.source_dest_check)
            .leaf("interfaceType", "interface");
        groups(x, st, &e.groups);
        x.open("attachment")
            .leaf("attachmentId", &a.id)
            .leaf("deviceIndex", a.device_index)
            .leaf("networkCardIndex", 0)
            .leaf("status", a.state.as_str())
            .leaf("attachTime", &a.attach_time)
            .leaf("deleteOnTermination", a.delete_on_termination)
            .close("attachment");
        addresses(x, e);
    });
}

/// A `Subnet`.
pub fn subnet(x: &mut Xml, s: &Subnet) {
    x.leaf("subnetId", &s.id)
        .leaf("subnetArn", format!("arn:aws:ec2:us-west-2:{OWNER}:subnet/{}", s.id))
        .leaf("state", "available")
        .leaf("vpcId", &s.vpc_id)
        .leaf("ownerId", OWNER)
        .leaf("cidrBlock", s.cidr)
        .leaf("availableIpAddressCount", s.available())
        .leaf("availabilityZone", &s.az)
        .leaf("availabilityZoneId", az_id(&s.az))
        .leaf("defaultForAz", false)
        .leaf("mapPublicIpOnLaunch", false)
        .leaf("assignIpv6AddressOnCreation", false);
    x.items("ipv6CidrBlockAssociationSet", &s.ipv6, |x, b| {
        x.leaf("associationId", &b.association_id)
            .leaf("ipv6CidrBlock", b.cidr)
            .open("ipv6CidrBlockState")
            .leaf("state", "associated")
            .close("ipv6CidrBlockState");
    });
    x.tag_set(&s.tags);
}

fn az_id(az: &str) -> String {
    format!("usw2-az{}", az.chars().last().map_or(1, |c| (c as u32).saturating_sub('a' as u32) + 1))
}

/// A `Vpc` with its `cidrBlockAssociationSet` (the primary block included, like EC2's).
pub fn vpc(x: &mut Xml, v: &Vpc) {
    x.leaf("vpcId", &v.id)
        .leaf("ownerId", OWNER)
        .leaf("state", "available")
        .leaf("cidrBlock", v.cidr);
    x.items("cidrBlockAssociationSet", &v.blocks, |x, b| {
        x.leaf("associationId", &b.association_id)
            .leaf("cidrBlock", b.cidr)
            .open("cidrBlockState")
            .leaf("state", &b.state)
            .close("cidrBlockState");
    });
    x.items("ipv6CidrBlockAssociationSet", &v.ipv6, |x, b| {
        x.leaf("associationId", &b.association_id)
            .leaf("ipv6CidrBlock", b.cidr)
            .open("ipv6CidrBlockState")
            .leaf("state", "associated")
            .close("ipv6CidrBlockState")
            .leaf("networkBorderGroup", "us-west-2")
            .leaf("ipv6Pool", "Amazon");
    });
    x.leaf("dhcpOptionsId", "dopt-00000000")
        .leaf("instanceTenancy", "default")
        .leaf("isDefault", false);
    x.tag_set(&v.tags);
}

/// A `SecurityGroup`.
pub fn security_group(x: &mut Xml, g: &SecurityGroup) {
    x.leaf("ownerId", OWNER)
        .leaf("groupId", &g.id)
        .leaf("groupName", &g.name)
        .leaf("groupDescription", &g.description)
        .leaf("vpcId", &g.vpc_id)
        .open("ipPermissions")
        .close("ipPermissions")
        .open("ipPermissionsEgress")
        .close("ipPermissionsEgress");
    x.tag_set(&g.tags);
}

/// An `InstanceTypeInfo` with the network facts enipool reads.
pub fn instance_type(x: &mut Xml, t: &TypeLimits) {
    x.leaf("instanceType", t.name)
        .leaf("currentGeneration", true)
        .leaf("bareMetal", false)
        .leaf("hypervisor", "nitro")
        .open("vCpuInfo")
        .leaf("defaultVCpus", t.vcpus)
        .close("vCpuInfo")
        .open("memoryInfo")
        .leaf("sizeInMiB", t.memory_mib)
        .close("memoryInfo")
        .open("networkInfo")
        .leaf("networkPerformance", t.network_performance)
        .leaf("maximumNetworkInterfaces", t.max_enis)
        .leaf("maximumNetworkCards", t.network_cards)
        .leaf("defaultNetworkCardIndex", 0);
    x.items("networkCards", 0..t.network_cards, |x, card| {
        x.leaf("networkCardIndex", card)
            .leaf("networkPerformance", t.network_performance)
            .leaf("maximumNetworkInterfaces", t.enis_per_card());
    });
    x.leaf("ipv4AddressesPerInterface", t.ipv4_per_eni)
        .leaf("ipv6AddressesPerInterface", t.ipv6_per_eni)
        .leaf("ipv6Supported", true)
        .leaf("enaSupport", "required")
        .leaf("efaSupported", false)
        .leaf("encryptionInTransitSupported", false)
        .close("networkInfo");
}
