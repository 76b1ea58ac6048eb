//! The [`Ec2Api`] calls of [`AwsEc2`]: each builds its request, sends it through the limiter
//! (Describe calls page by page, see `describe.rs`) and converts the answer.

use super::describe::{filter, query_filters, tag_filter};
use super::{AwsEc2, PAGE_SIZE, TYPES_PER_CALL};
use crate::ec2::classify;
use crate::ec2::convert;
use crate::ec2::limiter::{ApiClass, Retry};
use crate::ec2::{
    CreateEni, Ec2Api, Ec2ErrorKind, Ec2Result, Eni, Instance, InstanceTypeInfo, Query,
    SecurityGroup, Subnet, Vpc,
};
use aws_sdk_ec2::types::{NetworkInterfaceAttachmentChanges, ResourceType, Tag, TagSpecification};
use enipool_crds::tags;
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

fn sdk_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

#[async_trait::async_trait]
impl Ec2Api for AwsEc2 {
    async fn describe_instances(&self, ids: &[String]) -> Ec2Result<Vec<Instance>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A filter, not InstanceIds: one unknown id must not fail the batch.
        let filters = vec![filter("instance-id", ids.iter().cloned())];
        self.describe_pages(
            "DescribeInstances",
            |token| {
                self.client
                    .describe_instances()
                    .set_filters(Some(filters.clone()))
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
            },
            |page| {
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .map(convert::instance)
                    .collect()
            },
            |page| page.next_token(),
        )
        .await
    }

    async fn describe_instance_types(
        &self,
        types: &[String],
    ) -> Ec2Result<BTreeMap<String, InstanceTypeInfo>> {
        let mut wanted: Vec<String> = types.to_vec();
        wanted.sort();
        wanted.dedup();
        let mut out = BTreeMap::new();
        for chunk in wanted.chunks(TYPES_PER_CALL) {
            match self.describe_types_once(chunk).await {
                Ok(found) => out.extend(found),
                // One unknown type (InvalidInstanceType) fails the whole call: ask one by one so
                // the known types still get answers and unknown ones are simply absent.
                Err(e) if e.kind == Ec2ErrorKind::InvalidRequest && chunk.len() > 1 => {
                    for t in chunk {
                        match self.describe_types_once(std::slice::from_ref(t)).await {
                            Ok(found) => out.extend(found),
                            Err(e) if e.kind == Ec2ErrorKind::InvalidRequest => {
                                tracing::warn!(instance_type = %t, error = &e as &dyn std::error::Error, "EC2 does not know this instance type");
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) if e.kind == Ec2ErrorKind::InvalidRequest => {
                    tracing::warn!(instance_type = %chunk[0], error = &e as &dyn std::error::Error, "EC2 does not know this instance type");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn describe_subnets(&self, query: &Query) -> Ec2Result<Vec<Subnet>> {
        let filters = Some(query_filters(query, "subnet-id", true)).filter(|f| !f.is_empty());
        self.describe_pages(
            "DescribeSubnets",
            |token| {
                self.client
                    .describe_subnets()
                    .set_filters(filters.clone())
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
            },
            |page| page.subnets().iter().filter_map(convert::subnet).collect(),
            |page| page.next_token(),
        )
        .await
    }

    async fn describe_vpcs(&self, ids: &[String]) -> Ec2Result<Vec<Vpc>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A filter, not VpcIds: an unknown id is absent from the answer, not a failed call.
        let filters = vec![filter("vpc-id", ids.iter().cloned())];
        self.describe_pages(
            "DescribeVpcs",
            |token| {
                self.client
                    .describe_vpcs()
                    .set_filters(Some(filters.clone()))
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
            },
            |page| page.vpcs().iter().map(convert::vpc).collect(),
            |page| page.next_token(),
        )
        .await
    }

    async fn describe_security_groups(&self, query: &Query) -> Ec2Result<Vec<SecurityGroup>> {
        let filters = Some(query_filters(query, "group-id", false)).filter(|f| !f.is_empty());
        self.describe_pages(
            "DescribeSecurityGroups",
            |token| {
                self.client
                    .describe_security_groups()
                    .set_filters(filters.clone())
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
            },
            |page| page.security_groups().iter().map(convert::security_group).collect(),
            |page| page.next_token(),
        )
        .await
    }

    async fn describe_instance_enis(&self, instance_id: &str) -> Ec2Result<Vec<Eni>> {
        self.describe_enis_where(vec![filter("attachment.instance-id", [instance_id])]).await
    }

    async fn describe_enis(&self, ids: &[String]) -> Ec2Result<Vec<Eni>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A filter, not NetworkInterfaceIds: a deleted ENI must not fail the batch.
        self.describe_enis_where(vec![filter("network-interface-id", ids.iter().cloned())]).await
    }

    async fn list_cluster_enis(&self, cluster: &str) -> Ec2Result<Vec<Eni>> {
        self.describe_enis_where(vec![filter(&tag_filter(tags::CLUSTER), [cluster])]).await
    }

    async fn list_leftover_enis(&self, cluster: &str, instance_id: &str) -> Ec2Result<Vec<Eni>> {
        self.describe_enis_where(vec![
            filter(&tag_filter(tags::CLUSTER), [cluster]),
            filter(&tag_filter(tags::INSTANCE_ID), [instance_id]),
            filter("status", ["available"]),
        ])
        .await
    }

    async fn create_eni(&self, r: &CreateEni) -> Ec2Result<Eni> {
        const ACTION: &str = "CreateNetworkInterface";
        let mut req = self
            .client
            .create_network_interface()
            .subnet_id(&r.subnet_id)
            .set_groups(Some(r.security_groups.clone()).filter(|g| !g.is_empty()));
        if !r.description.is_empty() {
            req = req.description(&r.description);
        }
        if !r.client_token.is_empty() {
            req = req.client_token(&r.client_token);
        }
        if r.secondary_ips > 0 {
            req = req.secondary_private_ip_address_count(r.secondary_ips);
        }
        if r.prefixes > 0 {
            req = req.ipv4_prefix_count(r.prefixes);
        }
        if !r.tags.is_empty() {
            req = req.tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::NetworkInterface)
                    .set_tags(Some(sdk_tags(&r.tags)))
                    .build(),
            );
        }
        // With a ClientToken a repeat returns the same ENI; without one, a repeat after an
        // ambiguous failure could create a second ENI.
        let retry = if r.client_token.is_empty() { Retry::ThrottleOnly } else { Retry::Idempotent };
        let out = self.send(ACTION, ApiClass::Mutate, retry, || req.clone().send()).await?;
        out.network_interface()
            .map(convert::eni)
            .ok_or_else(|| classify::malformed(ACTION, "no NetworkInterface in the answer"))
    }

    async fn attach_eni(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: i32,
    ) -> Ec2Result<String> {
        const ACTION: &str = "AttachNetworkInterface";
        let req = self
            .client
            .attach_network_interface()
            .network_interface_id(eni_id)
            .instance_id(instance_id)
            .device_index(device_index);
        let out =
            self.send(ACTION, ApiClass::Mutate, Retry::ThrottleOnly, || req.clone().send()).await?;
        out.attachment_id()
            .map(str::to_owned)
            .ok_or_else(|| classify::malformed(ACTION, "no AttachmentId in the answer"))
    }

    async fn set_delete_on_termination(
        &self,
        eni_id: &str,
        attachment_id: &str,
        delete: bool,
    ) -> Ec2Result<()> {
        const ACTION: &str = "ModifyNetworkInterfaceAttribute";
        let req = self
            .client
            .modify_network_interface_attribute()
            .network_interface_id(eni_id)
            .attachment(
                NetworkInterfaceAttachmentChanges::builder()
                    .attachment_id(attachment_id)
                    .delete_on_termination(delete)
                    .build(),
            );
        self.send(ACTION, ApiClass::Mutate, Retry::Idempotent, || req.clone().send())
            .await
            .map(drop)
    }

    async fn detach_eni(&self, attachment_id: &str, force: bool) -> Ec2Result<()> {
        const ACTION: &str = "DetachNetworkInterface";
        let req = self.client.detach_network_interface().attachment_id(attachment_id).force(force);
        self.send(ACTION, ApiClass::Mutate, Retry::Idempotent, || req.clone().send())
            .await
            .map(drop)
    }

    async fn delete_eni(&self, eni_id: &str) -> Ec2Result<()> {
        const ACTION: &str = "DeleteNetworkInterface";
        let req = self.client.delete_network_interface().network_interface_id(eni_id);
        self.send(ACTION, ApiClass::Mutate, Retry::Idempotent, || req.clone().send())
            .await
            .map(drop)
    }

    async fn assign_ips(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Addr>> {
        const ACTION: &str = "AssignPrivateIpAddresses";
        if count <= 0 {
            return Ok(Vec::new());
        }
        let req = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(eni_id)
            .secondary_private_ip_address_count(count);
        let out =
            self.send(ACTION, ApiClass::Mutate, Retry::ThrottleOnly, || req.clone().send()).await?;
        Ok(out
            .assigned_private_ip_addresses()
            .iter()
            .filter_map(|a| a.private_ip_address()?.parse().ok())
            .collect())
    }

    async fn assign_prefixes(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Net>> {
        const ACTION: &str = "AssignPrivateIpAddresses";
        if count <= 0 {
            return Ok(Vec::new());
        }
        let req = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(eni_id)
            .ipv4_prefix_count(count);
        let out =
            self.send(ACTION, ApiClass::Mutate, Retry::ThrottleOnly, || req.clone().send()).await?;
        Ok(out
            .assigned_ipv4_prefixes()
            .iter()
            .filter_map(|p| p.ipv4_prefix()?.parse().ok())
            .collect())
    }

    async fn assign_ipv6_prefixes(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv6Net>> {
        const ACTION: &str = "AssignIpv6Addresses";
        if count <= 0 {
            return Ok(Vec::new());
        }
        let req = self
            .client
            .assign_ipv6_addresses()
            .network_interface_id(eni_id)
            .ipv6_prefix_count(count);
        let out =
            self.send(ACTION, ApiClass::Mutate, Retry::ThrottleOnly, || req.clone().send()).await?;
        Ok(out.assigned_ipv6_prefixes().iter().filter_map(|p| p.parse().ok()).collect())
    }

    async fn unassign_ips(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Ec2Result<()> {
        const ACTION: &str = "UnassignPrivateIpAddresses";
        if ips.is_empty() {
            return Ok(());
        }
        let req = self
            .client
            .unassign_private_ip_addresses()
            .network_interface_id(eni_id)
            .set_private_ip_addresses(Some(ips.iter().map(ToString::to_string).collect()));
        self.send(ACTION, ApiClass::Mutate, Retry::Idempotent, || req.clone().send())
            .await
            .map(drop)
    }

    async fn unassign_prefixes(&self, eni_id: &str, prefixes: &[Ipv4Net]) -> Ec2Result<()> {
        const ACTION: &str = "UnassignPrivateIpAddresses";
        if prefixes.is_empty() {
            return Ok(());
        }
        let req = self
            .client
            .unassign_private_ip_addresses()
            .network_interface_id(eni_id)
            .set_ipv4_prefixes(Some(prefixes.iter().map(ToString::to_string).collect()));
        self.send(ACTION, ApiClass::Mutate, Retry::Idempotent, || req.clone().send())
            .await
            .map(drop)
    }

    /// The configured describe bucket (after `--budget-share`), not the AIMD rate of the moment:
    /// the resync period is sized for steady state, throttling is handled by the limiter.
    fn describe_qps(&self) -> Option<f64> {
        Some(self.limiter.class(ApiClass::Describe).configured().qps)
    }
}
