use super::*;
use crate::ec2::fake::FakeEc2;
use aws_sdk_ec2::types::{VpcCidrBlockAssociation, VpcCidrBlockState, VpcCidrBlockStateCode};

fn nets(s: &[&str]) -> Vec<Ipv4Net> {
    s.iter().map(|c| c.parse().unwrap()).collect()
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|c| c.to_string()).collect()
}

fn failure() -> Ec2Error {
    Ec2Error {
        kind: Ec2ErrorKind::Unauthorized,
        action: "DescribeVpcs",
        code: "UnauthorizedOperation".into(),
        message: "not allowed".into(),
    }
}

const MIN: Duration = Duration::from_secs(60);

#[test]
fn describes_when_never_tried_stale_or_failed_long_enough_ago() {
    let t0 = Instant::now();
    let mut e = Entry::default();
    assert!(due(&e, t0, 5 * MIN, MIN), "never tried");
    e.record(Ok(nets(&["10.0.0.0/16"])), t0);
    assert!(!due(&e, t0 + 4 * MIN, 5 * MIN, MIN), "fresh blocks serve");
    assert!(due(&e, t0 + 5 * MIN, 5 * MIN, MIN), "stale blocks are described again");
    e.record(Err(failure()), t0 + 5 * MIN);
    assert!(!due(&e, t0 + 5 * MIN + MIN / 2, 5 * MIN, MIN), "a failure waits for the retry");
    assert!(due(&e, t0 + 6 * MIN, 5 * MIN, MIN));
}

#[test]
fn a_failed_describe_keeps_the_known_blocks() {
    let t0 = Instant::now();
    let mut e = Entry::default();
    assert_eq!(e.record(Ok(nets(&["10.0.0.0/16", "100.64.0.0/16"])), t0), None);
    assert_eq!(e.record(Err(failure()), t0 + MIN), Some(failure()));
    assert_eq!(e.blocks, Some(strings(&["10.0.0.0/16", "100.64.0.0/16"])));
    assert_eq!(e.fetched, Some(t0));
}

#[test]
fn a_pool_publishes_known_blocks_else_what_it_shows_else_nothing() {
    let known = strings(&["10.0.0.0/16", "100.64.0.0/16"]);
    let shown = strings(&["10.0.0.0/20"]);
    assert_eq!(publish(Some(&known), &shown), Some(known.clone()));
    assert_eq!(publish(None, &shown), Some(shown));
    assert_eq!(publish(None, &[]), None, "no list is better than a wrong one");
}

#[test]
fn a_vpc_missing_from_the_answer_is_an_error() {
    let vpc = Vpc { id: "vpc-1".into(), cidr_blocks: nets(&["10.0.0.0/16"]) };
    assert_eq!(blocks_of(vec![vpc.clone()], "vpc-1").unwrap(), nets(&["10.0.0.0/16"]));
    let e = blocks_of(vec![vpc], "vpc-2").unwrap_err();
    assert_eq!(e.kind, Ec2ErrorKind::NotFound);
    let empty = Vpc { id: "vpc-1".into(), cidr_blocks: vec![] };
    assert!(blocks_of(vec![empty], "vpc-1").is_err(), "a VPC without blocks is not trusted");
}

#[test]
fn only_associated_secondary_blocks_count() {
    let assoc = |cidr: &str, state: VpcCidrBlockStateCode| {
        VpcCidrBlockAssociation::builder()
            .cidr_block(cidr)
            .cidr_block_state(VpcCidrBlockState::builder().state(state).build())
            .build()
    };
    let v = aws_sdk_ec2::types::Vpc::builder()
        .vpc_id("vpc-1")
        .cidr_block("10.0.0.0/16")
        .cidr_block_association_set(assoc("10.0.0.0/16", VpcCidrBlockStateCode::Associated))
        .cidr_block_association_set(assoc("100.64.0.0/16", VpcCidrBlockStateCode::Associated))
        .cidr_block_association_set(assoc("100.65.0.0/16", VpcCidrBlockStateCode::Associating))
        .cidr_block_association_set(assoc("100.66.0.0/16", VpcCidrBlockStateCode::Disassociated))
        .build();
    let got = crate::ec2::convert::vpc(&v);
    assert_eq!(got.id, "vpc-1");
    assert_eq!(got.cidr_blocks, nets(&["10.0.0.0/16", "100.64.0.0/16"]));
}

fn vpc_calls(fake: &FakeEc2) -> usize {
    fake.calls().iter().filter(|c| **c == "DescribeVpcs").count()
}

#[tokio::test]
async fn concurrent_pools_share_one_describe() {
    let fake = FakeEc2::new();
    let cache = VpcCidrs::new(vec![]);
    let (a, b) = tokio::join!(cache.lookup(&fake, "vpc-1"), cache.lookup(&fake, "vpc-1"));
    assert_eq!(a.blocks, Some(strings(&["10.0.0.0/16"])));
    assert_eq!(a, b);
    cache.lookup(&fake, "vpc-1").await;
    assert_eq!(vpc_calls(&fake), 1);
}

#[tokio::test]
async fn configured_blocks_replace_describe_vpcs() {
    let fake = FakeEc2::new();
    let cache = VpcCidrs::new(strings(&["172.16.0.0/12"]));
    let got = cache.lookup(&fake, "vpc-1").await;
    assert_eq!(got.blocks, Some(strings(&["172.16.0.0/12"])));
    assert_eq!(vpc_calls(&fake), 0);
}

#[tokio::test]
async fn a_failure_is_retried_and_stale_blocks_serve_meanwhile() {
    let fake = FakeEc2::new();
    let cache = VpcCidrs::with_periods(vec![], Duration::ZERO, Duration::ZERO);
    fake.fail_next("DescribeVpcs", Ec2ErrorKind::Unauthorized);
    let first = cache.lookup(&fake, "vpc-1").await;
    assert_eq!(first.blocks, None);
    assert_eq!(first.error.map(|e| e.kind), Some(Ec2ErrorKind::Unauthorized));
    let second = cache.lookup(&fake, "vpc-1").await;
    assert_eq!(second, Lookup { blocks: Some(strings(&["10.0.0.0/16"])), error: None });
    fake.fail_next("DescribeVpcs", Ec2ErrorKind::Transient);
    let third = cache.lookup(&fake, "vpc-1").await;
    assert_eq!(third.blocks, second.blocks, "the known blocks outlive a failure");
    assert_eq!(third.error.map(|e| e.kind), Some(Ec2ErrorKind::Transient));
    assert_eq!(vpc_calls(&fake), 3);
}
