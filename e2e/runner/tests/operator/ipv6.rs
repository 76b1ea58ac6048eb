//! An IPv6 cluster (`--ip-family IPv6`) against the simulator's IPv6 VPC, through the AWS SDK and
//! under the documented IAM policy: each node's primary ENI gets one /80, whatever its pods, and a
//! policy naming the other family is shown as not Valid.

use crate::harness::*;
use enipool_crds::{ENIPool, IpFamily};
use std::time::Duration;

const T: Duration = Duration::from_secs(40);

fn ipv6_prefixes(p: &ENIPool) -> Vec<String> {
    let st = p.status.as_ref();
    st.map(|s| s.enis.iter().flat_map(|e| e.ipv6_prefixes.clone()).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_gets_one_prefix_under_the_documented_policy() {
    let env = env().await;
    env.sim.associate_vpc_ipv6(&env.vpc).unwrap();
    let block = env.sim.associate_subnet_ipv6(&env.subnet, 0).unwrap();
    crate::iam::enforce(&env, None);
    let mut cfg = env.config("op-a");
    cfg.family = IpFamily::IPv6;
    let op = env.start_with(cfg, env.ec2(None).await);
    let instance = env.join("node-a", "m5.large", &env.subnet).await;
    let p = env.wait_pool("node-a", "a /80 published", T, |p| ipv6_prefixes(p).len() == 1).await;
    let prefix: ipnet::Ipv6Net = ipv6_prefixes(&p)[0].parse().unwrap();
    assert_eq!(prefix.prefix_len(), 80);
    assert!(block.contains(&prefix), "{prefix} outside the subnet's {block}");
    // It is the primary ENI's, in EC2 too.
    let st = p.status.as_ref().unwrap();
    let primary = &st.instance.as_ref().unwrap().primary_eni;
    assert_eq!(&st.enis[0].id, primary);
    let ec2 = env.sim.snapshot();
    assert_eq!(ec2.enis[primary].ipv6_prefixes, vec![prefix]);
    let on_instance = ec2
        .enis
        .values()
        .filter(|e| e.attachment.as_ref().is_some_and(|a| a.instance_id == instance));
    assert_eq!(on_instance.count(), 1, "an ENI beyond the primary");
    let eff = st.effective.as_ref().unwrap();
    assert_eq!((eff.ip_family, eff.capacity.max_pods), (IpFamily::IPv6, 250));
    env.wait_pool("node-a", "Ready", T, is_ready).await;

    // 200 pods and 60 pending: still the one prefix, no ENI, no IPv4 address for pods.
    env.agent("node-a", &agent_report(1, 200, 60, None)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = env.pool("node-a").await.unwrap();
    assert_eq!(ipv6_prefixes(&p), vec![prefix.to_string()]);
    assert_eq!(allocated(&p), 0, "IPv4 pod addresses on an IPv6 node");
    assert_eq!(env.calls("AssignIpv6Addresses"), 1);
    assert_eq!(env.calls("CreateNetworkInterface"), 0);
    assert_eq!(env.calls("AssignPrivateIpAddresses"), 0);
    assert_eq!(env.sim.iam_denials(), Vec::<String>::new());
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ipv6_grant_is_what_lets_a_node_have_its_prefix() {
    let env = env().await;
    env.sim.associate_vpc_ipv6(&env.vpc).unwrap();
    env.sim.associate_subnet_ipv6(&env.subnet, 0).unwrap();
    crate::iam::enforce(&env, Some("Ipv6PrefixesOnPrimaryENIsInTheClusterVpc"));
    let mut cfg = env.config("op-a");
    cfg.family = IpFamily::IPv6;
    let op = env.start_with(cfg, env.ec2(None).await);
    env.join("node-a", "m5.large", &env.subnet).await;
    let p = env
        .wait_pool("node-a", "not Ready for lack of the grant", T, |p| {
            let ready =
                p.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            ready
                .is_some_and(|c| c.status == "False" && c.message.contains("UnauthorizedOperation"))
        })
        .await;
    assert!(ipv6_prefixes(&p).is_empty());
    assert!(!env.sim.iam_denials().is_empty());
    op.abort();
}
