//! EC2 for the leader only: every mutating call is refused unless this replica leads, and dropped
//! if its term ends before the call returns. A call waiting for the mutate rate limiter or for a
//! retry is thus never sent once the term is over. One already on the wire is abandoned as a crash
//! would abandon it: its journal entry, written before it, lets the next leader find out what it
//! did. Describes pass: reading EC2 changes nothing.
//!
//! A refused or dropped call fails with [`Ec2ErrorKind::Transient`] and the code `NotLeader`:
//! nothing was decided by EC2, and it may succeed unchanged once this replica leads again.

use super::gate::Leadership;
use crate::ec2::{
    CreateEni, Ec2Api, Ec2Error, Ec2ErrorKind, Ec2Result, Eni, Instance, InstanceTypeInfo, Query,
    SecurityGroup, Subnet,
};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The error code of a mutating call this replica did not (finish to) make.
pub const NOT_LEADER: &str = "NotLeader";

/// [`Ec2Api`] whose mutations only the leader makes.
pub struct LeaderOnlyEc2 {
    inner: Arc<dyn Ec2Api>,
    leadership: Leadership,
}

impl LeaderOnlyEc2 {
    /// Gate `inner` by `leadership`.
    pub fn new(inner: Arc<dyn Ec2Api>, leadership: Leadership) -> Self {
        LeaderOnlyEc2 { inner, leadership }
    }

    async fn mutate<T>(
        &self,
        action: &'static str,
        call: impl Future<Output = Ec2Result<T>>,
    ) -> Ec2Result<T> {
        let refused = |message: &str| Ec2Error {
            kind: Ec2ErrorKind::Transient,
            action,
            code: NOT_LEADER.into(),
            message: message.into(),
        };
        if !self.leadership.is_leader() {
            return Err(refused("not sent: this replica does not hold the leader Lease"));
        }
        tokio::select! {
            r = call => r,
            _ = self.leadership.lost() => {
                Err(refused("abandoned: this replica's term as leader ended before the answer"))
            }
        }
    }
}

#[async_trait::async_trait]
impl Ec2Api for LeaderOnlyEc2 {
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
        self.mutate("CreateNetworkInterface", self.inner.create_eni(req)).await
    }
    async fn attach_eni(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: i32,
    ) -> Ec2Result<String> {
        let call = self.inner.attach_eni(eni_id, instance_id, device_index);
        self.mutate("AttachNetworkInterface", call).await
    }
    async fn set_delete_on_termination(
        &self,
        eni_id: &str,
        attachment_id: &str,
        delete: bool,
    ) -> Ec2Result<()> {
        let call = self.inner.set_delete_on_termination(eni_id, attachment_id, delete);
        self.mutate("ModifyNetworkInterfaceAttribute", call).await
    }
    async fn detach_eni(&self, attachment_id: &str, force: bool) -> Ec2Result<()> {
        self.mutate("DetachNetworkInterface", self.inner.detach_eni(attachment_id, force)).await
    }
    async fn delete_eni(&self, eni_id: &str) -> Ec2Result<()> {
        self.mutate("DeleteNetworkInterface", self.inner.delete_eni(eni_id)).await
    }
    async fn assign_ips(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Addr>> {
        self.mutate("AssignPrivateIpAddresses", self.inner.assign_ips(eni_id, count)).await
    }
    async fn assign_prefixes(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Net>> {
        self.mutate("AssignPrivateIpAddresses", self.inner.assign_prefixes(eni_id, count)).await
    }
    async fn unassign_ips(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Ec2Result<()> {
        self.mutate("UnassignPrivateIpAddresses", self.inner.unassign_ips(eni_id, ips)).await
    }
    async fn unassign_prefixes(&self, eni_id: &str, prefixes: &[Ipv4Net]) -> Ec2Result<()> {
        let call = self.inner.unassign_prefixes(eni_id, prefixes);
        self.mutate("UnassignPrivateIpAddresses", call).await
    }
    fn describe_qps(&self) -> Option<f64> {
        self.inner.describe_qps()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeEc2;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn only_the_leader_mutates_and_describes_always_pass() {
        let fake = Arc::new(FakeEc2::new());
        let leadership = Leadership::new();
        let ec2 = LeaderOnlyEc2::new(fake.clone(), leadership.clone());
        let req = CreateEni { subnet_id: "subnet-a".into(), ..Default::default() };
        let err = ec2.create_eni(&req).await.unwrap_err();
        assert_eq!((err.kind, err.code.as_str()), (Ec2ErrorKind::Transient, NOT_LEADER));
        ec2.describe_subnets(&Query::default()).await.expect("a standby may read");
        assert!(fake.calls().iter().all(|c| c.starts_with("Describe")), "{:?}", fake.calls());
        leadership.set(Some(Instant::now() + Duration::from_secs(10)));
        ec2.create_eni(&req).await.expect("the leader creates");
        // The term ends (no renewal): refused again, without a watchdog having said so.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let err = ec2.create_eni(&req).await.unwrap_err();
        assert_eq!(err.code, NOT_LEADER);
        assert_eq!(fake.calls().iter().filter(|c| **c == "CreateNetworkInterface").count(), 1);
    }

    /// A mutation that waits (as in the rate limiter) until it is let go.
    struct Slow(tokio::sync::Semaphore, std::sync::atomic::AtomicBool);

    impl Slow {
        async fn call(&self) -> Ec2Result<()> {
            let _permit = self.0.acquire().await.expect("open");
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_still_waiting_when_the_term_ends_is_never_sent() {
        let leadership = Leadership::new();
        let ec2 = LeaderOnlyEc2::new(Arc::new(FakeEc2::new()), leadership.clone());
        leadership.set(Some(Instant::now() + Duration::from_secs(10)));
        let slow = Slow(tokio::sync::Semaphore::new(0), false.into());
        let started = Instant::now();
        let err = ec2.mutate("AssignPrivateIpAddresses", slow.call()).await.unwrap_err();
        assert_eq!(err.code, NOT_LEADER);
        assert_eq!(Instant::now() - started, Duration::from_secs(10), "dropped at the deadline");
        slow.0.add_permits(1);
        assert!(!slow.1.load(std::sync::atomic::Ordering::SeqCst), "sent after the term ended");
    }
}
