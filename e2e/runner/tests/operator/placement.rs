//! Where new ENIs go and which ENIs are left alone, as a policy says: subnets chosen by tag but
//! never one tagged `kubernetes.io/role/cni=0`, security groups chosen by tag, and an attached ENI
//! carrying an excluded tag that keeps its device index and addresses untouched.

use crate::harness::*;
use enipool_operator::ec2::CreateEni;
use kube::api::{Patch, PatchParams};
use std::time::Duration;

const T: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnets_and_groups_by_tag_excluded_subnets_and_enis_left_alone() {
    let env = env().await;
    let vpc = env.vpc.clone();
    // The roomiest pods subnet is excluded from ENI placement; the small one is used.
    let excluded = env
        .sim
        .create_subnet(
            &vpc,
            "10.0.32.0/20",
            AZ,
            &[("tier", "pod-enis"), ("kubernetes.io/role/cni", "0")],
        )
        .unwrap();
    let allowed = env.sim.create_subnet(&vpc, "10.0.48.0/24", AZ, &[("tier", "pod-enis")]).unwrap();
    let pods_sg = env.sim.create_security_group(&vpc, "pods", &[("sg-role", "pods")]).unwrap();

    let inst = env.launch("m5.large", &env.subnet);
    // An ENI someone else attached (another tool's, marked to be left alone), with addresses.
    let theirs = CreateEni {
        subnet_id: env.subnet.clone(),
        security_groups: vec![env.sg.clone()],
        secondary_ips: 3,
        tags: [("team-x/managed".to_string(), "true".to_string())].into(),
        ..Default::default()
    };
    let ec2 = env.ec2(None).await;
    let theirs = ec2.create_eni(&theirs).await.unwrap().id;
    ec2.attach_eni(&theirs, &inst, 1).await.unwrap();

    let policy = serde_json::json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPoolPolicy",
        "metadata": {"name": "all"},
        "spec": {
            "sizing": {"warmIPs": 4},
            "eni": {
                "subnets": {"tags": {"tier": "pod-enis"}},
                "securityGroups": {"tags": {"sg-role": "pods"}},
                "firstInterfaceIndex": 1,
                "excludeInterfaceTags": {"team-x/managed": "true"},
            },
        },
    });
    env.policies()
        .patch("all", &PatchParams::apply("gitops"), &Patch::Apply(&policy))
        .await
        .unwrap();
    let op = env.start_operator("op-a").await;
    env.create_node("node-a", "m5.large", &inst, &[]).await;
    let p = env
        .wait_pool("node-a", "Ready with 4 addresses", T, |p| is_ready(p) && allocated(p) >= 4)
        .await;

    let snap = env.sim.snapshot();
    let created: Vec<_> = env.tagged_enis().into_iter().map(|id| snap.enis[&id].clone()).collect();
    assert_eq!(created.len(), 1, "one new ENI: {created:?}");
    let new = &created[0];
    assert_eq!(new.subnet_id, allowed, "not the excluded subnet {excluded}");
    assert_eq!(new.groups, vec![pods_sg.clone()], "the tagged security group");
    let index = new.attachment.as_ref().map(|a| a.device_index);
    assert_eq!(index, Some(2), "the excluded ENI keeps device index 1");
    assert_eq!(snap.enis[&theirs].secondary.len(), 3, "the excluded ENI's addresses untouched");
    let on_new =
        p.status.as_ref().unwrap().enis.iter().find(|e| e.id == new.id).map(|e| e.ips.len());
    assert!(on_new >= Some(4), "the warm addresses are on the new ENI: {on_new:?}");
    op.abort();
}
