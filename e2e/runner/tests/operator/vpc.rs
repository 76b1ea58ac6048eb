//! The VPC CIDRs each pool publishes (`status.instance.vpcCIDRs`): every block of the VPC, primary
//! and associated secondaries, whichever subnets the node's ENIs are in; described once for all
//! pools, and never replaced by a wrong list when DescribeVpcs fails.

use crate::harness::*;
use ec2sim::{ErrorRule, FaultConfig};
use enipool_crds::ENIPool;
use kube::api::{Api, ListParams};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn vpc_cidrs(p: &ENIPool) -> Vec<String> {
    p.status
        .as_ref()
        .and_then(|s| s.instance.as_ref())
        .map(|i| i.vpc_cidrs.clone())
        .unwrap_or_default()
}

fn published(p: &ENIPool) -> bool {
    is_ready(p) && !vpc_cidrs(p).is_empty()
}

/// The harness VPC (10.0.0.0/16, pods subnet 10.0.0.0/20) plus a secondary block 100.64.0.0/16
/// with a subnet of its own, and a block associated once and removed again.
fn multi_block_vpc(env: &Env) -> String {
    env.sim.associate_vpc_cidr(&env.vpc, "100.64.0.0/16").unwrap();
    let gone = env.sim.associate_vpc_cidr(&env.vpc, "100.65.0.0/16").unwrap();
    env.sim.disassociate_vpc_cidr(&gone).unwrap();
    env.sim.create_subnet(&env.vpc, "100.64.0.0/20", AZ, &[("kind", "secondary")]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_publish_every_vpc_block_not_their_subnets() {
    let env = env().await;
    let secondary = multi_block_vpc(&env);
    let op = env.start_operator("op-a").await;
    env.join("node-a", "m5.large", &env.subnet).await;
    env.join("node-b", "m5.large", &secondary).await;

    let want = vec!["10.0.0.0/16".to_string(), "100.64.0.0/16".to_string()];
    for node in ["node-a", "node-b"] {
        let pool = env.wait_pool(node, "Ready with VPC CIDRs", T, published).await;
        assert_eq!(vpc_cidrs(&pool), want, "{node}: the VPC's blocks, not its subnets' CIDRs");
    }
    // Resyncs (1 s here) reuse the blocks: one DescribeVpcs for both pools.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.calls("DescribeVpcs"), 1, "{:?}", env.sim.counters());
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_vpc_cidrs_are_published_without_describe_vpcs() {
    let env = env().await;
    multi_block_vpc(&env);
    let mut cfg = env.config("op-a");
    cfg.vpc_cidrs = vec!["10.0.0.0/8".into()];
    let op = env.start_with(cfg, env.ec2(None).await);
    env.join("node-a", "m5.large", &env.subnet).await;
    let pool = env.wait_pool("node-a", "Ready with VPC CIDRs", T, published).await;
    assert_eq!(vpc_cidrs(&pool), ["10.0.0.0/8"]);
    assert_eq!(env.calls("DescribeVpcs"), 0);
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_known_blocks_nothing_is_published_until_describe_vpcs_answers() {
    let env = env().await;
    multi_block_vpc(&env);
    let denied = ErrorRule {
        action: Some("DescribeVpcs".into()),
        code: "UnauthorizedOperation".into(),
        status: 0,
        probability: 1.0,
        count: None,
        html: false,
    };
    env.sim.set_faults(FaultConfig { errors: vec![denied], ..Default::default() });
    let op = env.start_operator("op-a").await;
    env.join("node-a", "m5.large", &env.subnet).await;
    let pool = env
        .wait_pool("node-a", "EC2Synced=False", T, |p| {
            cond(p, "EC2Synced").as_deref() == Some("False")
        })
        .await;
    let st = pool.status.as_ref().unwrap();
    let synced = st.conditions.iter().find(|c| c.type_ == "EC2Synced").unwrap();
    assert!(synced.message.contains("DescribeVpcs"), "the condition names the call: {synced:?}");
    assert!(st.enis.is_empty() && vpc_cidrs(&pool).is_empty(), "nothing published: {st:?}");
    assert_eq!(env.mutating_calls(), 0, "no addresses for pods whose traffic would be SNATed");
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), "default");
    wait_for("a VPCCIDRsUnknown Event", T, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("VPCCIDRsUnknown"))
    })
    .await;

    // Permission granted: the retry publishes the VPC's blocks and the pool fills.
    env.sim.set_faults(FaultConfig::default());
    let pool =
        env.wait_pool("node-a", "Ready with VPC CIDRs", Duration::from_secs(60), published).await;
    assert_eq!(vpc_cidrs(&pool), ["10.0.0.0/16", "100.64.0.0/16"]);
    op.abort();
}
