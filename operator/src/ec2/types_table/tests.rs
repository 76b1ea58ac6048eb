use super::*;
use crate::ec2::{
    CreateEni, Ec2Error, Ec2Result, Eni, Instance, InstanceTypeInfo, Query, SecurityGroup, Subnet,
    Vpc,
};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Answers DescribeInstanceTypes from a map, counts calls, can be made to fail.
#[derive(Default)]
struct Types {
    known: BTreeMap<String, InstanceTypeInfo>,
    calls: AtomicU32,
    fail: AtomicBool,
}

#[async_trait::async_trait]
impl Ec2Api for Types {
    async fn describe_instance_types(
        &self,
        types: &[String],
    ) -> Ec2Result<BTreeMap<String, InstanceTypeInfo>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        if self.fail.load(Ordering::SeqCst) {
            return Err(Ec2Error {
                kind: Ec2ErrorKind::Transient,
                action: "DescribeInstanceTypes",
                code: "InternalError".into(),
                message: String::new(),
            });
        }
        Ok(types.iter().filter_map(|t| Some((t.clone(), *self.known.get(t)?))).collect())
    }
    async fn describe_instances(&self, _: &[String]) -> Ec2Result<Vec<Instance>> {
        unimplemented!()
    }
    async fn describe_subnets(&self, _: &Query) -> Ec2Result<Vec<Subnet>> {
        unimplemented!()
    }
    async fn describe_vpcs(&self, _: &[String]) -> Ec2Result<Vec<Vpc>> {
        unimplemented!()
    }
    async fn describe_security_groups(&self, _: &Query) -> Ec2Result<Vec<SecurityGroup>> {
        unimplemented!()
    }
    async fn describe_instance_enis(&self, _: &str) -> Ec2Result<Vec<Eni>> {
        unimplemented!()
    }
    async fn describe_enis(&self, _: &[String]) -> Ec2Result<Vec<Eni>> {
        unimplemented!()
    }
    async fn list_cluster_enis(&self, _: &str) -> Ec2Result<Vec<Eni>> {
        unimplemented!()
    }
    async fn list_leftover_enis(&self, _: &str, _: &str) -> Ec2Result<Vec<Eni>> {
        unimplemented!()
    }
    async fn create_eni(&self, _: &CreateEni) -> Ec2Result<Eni> {
        unimplemented!()
    }
    async fn attach_eni(&self, _: &str, _: &str, _: i32) -> Ec2Result<String> {
        unimplemented!()
    }
    async fn set_delete_on_termination(&self, _: &str, _: &str, _: bool) -> Ec2Result<()> {
        unimplemented!()
    }
    async fn detach_eni(&self, _: &str, _: bool) -> Ec2Result<()> {
        unimplemented!()
    }
    async fn delete_eni(&self, _: &str) -> Ec2Result<()> {
        unimplemented!()
    }
    async fn assign_ips(&self, _: &str, _: i32) -> Ec2Result<Vec<Ipv4Addr>> {
        unimplemented!()
    }
    async fn assign_prefixes(&self, _: &str, _: i32) -> Ec2Result<Vec<Ipv4Net>> {
        unimplemented!()
    }
    async fn assign_ipv6_prefixes(&self, _: &str, _: i32) -> Ec2Result<Vec<ipnet::Ipv6Net>> {
        unimplemented!()
    }
    async fn unassign_ips(&self, _: &str, _: &[Ipv4Addr]) -> Ec2Result<()> {
        unimplemented!()
    }
    async fn unassign_prefixes(&self, _: &str, _: &[Ipv4Net]) -> Ec2Result<()> {
        unimplemented!()
    }
}

fn limits(max_enis: i32, ips_per_eni: i32) -> InstanceLimits {
    InstanceLimits { max_enis, ips_per_eni }
}

fn api() -> Arc<Types> {
    let mut known = BTreeMap::new();
    // Deliberately different from the static table, to see which source answered.
    known.insert("m5.large".to_owned(), InstanceTypeInfo { max_enis: 3, ipv4_per_eni: 11 });
    Arc::new(Types { known, ..Types::default() })
}

#[test]
fn static_table_has_the_real_numbers_of_common_types() {
    for (t, enis, ips) in [
        ("t3.small", 3, 4),
        ("t3.medium", 3, 6),
        ("t3.large", 3, 12),
        ("t3.xlarge", 4, 15),
        ("t3a.small", 2, 4),
        ("m5.large", 3, 10),
        ("m5.xlarge", 4, 15),
        ("m5.2xlarge", 4, 15),
        ("m5.4xlarge", 8, 30),
        ("m5.24xlarge", 15, 50),
        ("c5.large", 3, 10),
        ("c5.xlarge", 4, 15),
        ("r5.large", 3, 10),
        ("m6g.medium", 2, 4),
    ] {
        assert_eq!(static_limits(t), Some(limits(enis, ips)), "{t}");
    }
    assert_eq!(static_limits("x9.nothing"), None);
    let mut names: Vec<_> = STATIC_LIMITS.iter().map(|r| r.0).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), STATIC_LIMITS.len(), "no duplicate rows");
}

#[tokio::test(start_paused = true)]
async fn ec2_is_asked_once_per_type_and_wins_over_the_table() {
    let api = api();
    let cache = Arc::new(InstanceTypeCache::new(api.clone()));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move { cache.limits("m5.large").await }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            Some(TypeLimits { limits: limits(3, 11), source: CapacitySource::EC2API })
        );
    }
    assert_eq!(api.calls.load(Ordering::SeqCst), 1, "concurrent first asks share one call");
    cache.limits("m5.large").await;
    assert_eq!(api.calls.load(Ordering::SeqCst), 1);

    // Refreshed only after the TTL; a failing refresh keeps the EC2 answer.
    tokio::time::advance(InstanceTypeCache::DEFAULT_TTL).await;
    api.fail.store(true, Ordering::SeqCst);
    let l = cache.limits("m5.large").await.unwrap();
    assert_eq!((l.limits, l.source), (limits(3, 11), CapacitySource::EC2API));
    assert_eq!(api.calls.load(Ordering::SeqCst), 2);
    cache.limits("m5.large").await;
    assert_eq!(api.calls.load(Ordering::SeqCst), 2, "not retried before retry_after");
}

#[tokio::test(start_paused = true)]
async fn unknown_or_failing_types_fall_back_to_the_table() {
    let api = api();
    let cache = InstanceTypeCache::new(api.clone());
    // EC2 does not know it (in this fake), the table does.
    assert_eq!(
        cache.limits("c5.large").await,
        Some(TypeLimits { limits: limits(3, 10), source: CapacitySource::Static })
    );
    // Neither knows it.
    assert_eq!(cache.limits("x9.nothing").await, None);
    let calls = api.calls.load(Ordering::SeqCst);
    cache.limits("x9.nothing").await;
    assert_eq!(api.calls.load(Ordering::SeqCst), calls, "negative answers are cached");

    // EC2 down: the table answers; EC2 is asked again after retry_after.
    api.fail.store(true, Ordering::SeqCst);
    assert_eq!(cache.limits("t3.medium").await.map(|l| l.source), Some(CapacitySource::Static));
    api.fail.store(false, Ordering::SeqCst);
    tokio::time::advance(InstanceTypeCache::DEFAULT_RETRY_AFTER).await;
    cache.prefetch(&["t3.medium".into(), "m5.large".into()]).await;
    assert_eq!(cache.cached("m5.large").map(|l| l.source), Some(CapacitySource::EC2API));
}
