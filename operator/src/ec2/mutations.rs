//! An [`Ec2Api`] that hands every mutating call to a [`MutationHook`] and passes describes
//! through unchanged: the one list of which calls change EC2 (and their action names), for the
//! wrappers that gate or watch mutations (the leader gate, tests that time the calls).

use super::{
    CreateEni, Ec2Api, Ec2Result, Eni, Instance, InstanceTypeInfo, Query, SecurityGroup, Subnet,
    Vpc,
};
use futures::future::BoxFuture;
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// What runs around each mutating call: `call` is the inner client's call, not started yet.
pub trait MutationHook: Send + Sync + 'static {
    /// Run (or refuse, or time) `call`, a mutation of EC2 action `action`.
    fn around<'a, T: Send + 'a>(
        &'a self,
        action: &'static str,
        call: BoxFuture<'a, Ec2Result<T>>,
    ) -> BoxFuture<'a, Ec2Result<T>>;
}

/// `inner` with `hook` around its mutations.
pub struct Mutations<H> {
    inner: Arc<dyn Ec2Api>,
    hook: H,
}

impl<H> Mutations<H> {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn Ec2Api>, hook: H) -> Self {
        Mutations { inner, hook }
    }

    /// The hook (for its own state).
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

#[async_trait::async_trait]
impl<H: MutationHook> Ec2Api for Mutations<H> {
    async fn describe_instances(&self, ids: &[String]) -> Ec2Result<Vec<Instance>> {
        self.inner.describe_instances(ids).await
    }
    async fn describe_instance_types(
        &self,
        types: &[String],
    ) -> Ec2Result<BTreeMap<String, InstanceTypeInfo>> {
        self.inner.describe_instance_types(types).await
    }
    async fn describe_subnets(&self, query: &Query) -> Ec2Result<Vec<Subnet>> {
        self.inner.describe_subnets(query).await
    }
    async fn describe_vpcs(&self, ids: &[String]) -> Ec2Result<Vec<Vpc>> {
        self.inner.describe_vpcs(ids).await
    }
    async fn describe_security_groups(&self, query: &Query) -> Ec2Result<Vec<SecurityGroup>> {
        self.inner.describe_security_groups(query).await
    }
    async fn describe_instance_enis(&self, instance_id: &str) -> Ec2Result<Vec<Eni>> {
        self.inner.describe_instance_enis(instance_id).await
    }
    async fn describe_enis(&self, ids: &[String]) -> Ec2Result<Vec<Eni>> {
        self.inner.describe_enis(ids).await
    }
    async fn list_cluster_enis(&self, cluster: &str) -> Ec2Result<Vec<Eni>> {
        self.inner.list_cluster_enis(cluster).await
    }
    async fn list_leftover_enis(&self, cluster: &str, instance_id: &str) -> Ec2Result<Vec<Eni>> {
        self.inner.list_leftover_enis(cluster, instance_id).await
    }
    async fn create_eni(&self, req: &CreateEni) -> Ec2Result<Eni> {
        self.hook.around("CreateNetworkInterface", self.inner.create_eni(req)).await
    }
    async fn attach_eni(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: i32,
    ) -> Ec2Result<String> {
        let call = self.inner.attach_eni(eni_id, instance_id, device_index);
        self.hook.around("AttachNetworkInterface", call).await
    }
    async fn set_delete_on_termination(
        &self,
        eni_id: &str,
        attachment_id: &str,
        delete: bool,
    ) -> Ec2Result<()> {
        let call = self.inner.set_delete_on_termination(eni_id, attachment_id, delete);
        self.hook.around("ModifyNetworkInterfaceAttribute", call).await
    }
    async fn detach_eni(&self, attachment_id: &str, force: bool) -> Ec2Result<()> {
        let call = self.inner.detach_eni(attachment_id, force);
        self.hook.around("DetachNetworkInterface", call).await
    }
    async fn delete_eni(&self, eni_id: &str) -> Ec2Result<()> {
        self.hook.around("DeleteNetworkInterface", self.inner.delete_eni(eni_id)).await
    }
    async fn assign_ips(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Addr>> {
        self.hook.around("AssignPrivateIpAddresses", self.inner.assign_ips(eni_id, count)).await
    }
    async fn assign_prefixes(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Net>> {
        let call = self.inner.assign_prefixes(eni_id, count);
        self.hook.around("AssignPrivateIpAddresses", call).await
    }
    async fn assign_ipv6_prefixes(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv6Net>> {
        let call = self.inner.assign_ipv6_prefixes(eni_id, count);
        self.hook.around("AssignIpv6Addresses", call).await
    }
    async fn unassign_ips(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Ec2Result<()> {
        let call = self.inner.unassign_ips(eni_id, ips);
        self.hook.around("UnassignPrivateIpAddresses", call).await
    }
    async fn unassign_prefixes(&self, eni_id: &str, prefixes: &[Ipv4Net]) -> Ec2Result<()> {
        let call = self.inner.unassign_prefixes(eni_id, prefixes);
        self.hook.around("UnassignPrivateIpAddresses", call).await
    }
    fn describe_qps(&self) -> Option<f64> {
        self.inner.describe_qps()
    }
}
