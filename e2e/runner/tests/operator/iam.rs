//! The IAM document users attach to the operator's role (`docs/iam-policy.json`), enforced by the
//! simulator for the operator's credentials: with it the operator grows a node through every EC2
//! action growth needs, and with one grant taken away that call is refused and the pool says why
//! (so the scenarios, which all run under the document, fail on a grant the code needs and the
//! document lacks).

use crate::harness::*;
use cluster::IAM_POLICY_DOC;
use ec2sim::iam::Policy;
use ec2sim::ACCOUNT_ID;
use std::time::Duration;

const T: Duration = Duration::from_secs(40);

/// The document, without the statement `drop` (by Sid), bound to the test operator's key.
pub(crate) fn enforce(env: &Env, drop: Option<&str>) {
    let mut doc: serde_json::Value = serde_json::from_str(IAM_POLICY_DOC).unwrap();
    let statements = doc["Statement"].as_array_mut().unwrap();
    let before = statements.len();
    statements.retain(|s| Some(s["Sid"].as_str().unwrap()) != drop);
    assert_eq!(before - statements.len(), usize::from(drop.is_some()), "no statement {drop:?}");
    let vars = [
        ("CLUSTER_NAME", CLUSTER),
        ("REGION", "us-west-2"),
        ("ACCOUNT_ID", ACCOUNT_ID),
        ("VPC_ID", env.vpc.as_str()),
    ];
    let policy = Policy::parse(&doc.to_string(), &vars).unwrap();
    // StaticCredentials::test(), the operator's key in these tests.
    env.sim.enforce_iam(Some(policy), "us-west-2", "test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_policy_allows_everything_growth_needs() {
    let env = env().await;
    enforce(&env, None);
    let op = env.start_operator("op-a").await;
    env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;
    // Ten pods: a second ENI (create with tags, attach, DeleteOnTermination, assign).
    env.agent("node-a", &agent_report(1, 10, 0, None)).await;
    env.wait_pool("node-a", "second ENI", T, |p| allocated(p) == 18 && is_ready(p)).await;
    for action in [
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
        "AssignPrivateIpAddresses",
    ] {
        assert!(env.calls(action) >= 1, "{action} never called: {:?}", env.sim.counters());
    }
    assert_eq!(env.sim.iam_denials(), Vec::<String>::new());
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_grant_is_refused_and_shown_on_the_pool() {
    let env = env().await;
    enforce(&env, Some("ChangeOnlyOwnENIs"));
    let op = env.start_operator("op-a").await;
    env.join("node-a", "m5.large", &env.subnet).await;
    env.wait_pool("node-a", "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;
    env.agent("node-a", &agent_report(1, 10, 0, None)).await;
    let p = env
        .wait_pool("node-a", "Ready=False naming the refusal", T, |p| {
            let ready =
                p.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            ready
                .is_some_and(|r| r.status == "False" && r.message.contains("UnauthorizedOperation"))
        })
        .await;
    let denied = env.sim.iam_denials();
    assert!(
        denied.iter().any(|d| d.contains("ec2:AttachNetworkInterface")),
        "the attach of the new ENI is what the document no longer allows: {denied:?}"
    );
    let enis = p.status.as_ref().unwrap().enis.len();
    assert_eq!(enis, 1, "the node has only its primary ENI (the new one is not attached)");
    // Rounds go on while the grant is missing: the ENI created for the step is kept for the
    // attach to succeed once it is granted, never left behind for a new one.
    let attaches = env.calls("AttachNetworkInterface");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let again = env.calls("AttachNetworkInterface") - attaches;
    assert!(again <= 3, "{again} attach retries in 10 s: a denied call is retried at the requeue");
    let created = env.tagged_enis();
    assert_eq!(created.len(), 1, "one ENI created, not one per round: {created:?}");
    let ops = env.pool("node-a").await.unwrap().status.unwrap().operations;
    assert!(ops.iter().any(|o| o.eni_id == created[0]), "the ENI stays in the journal: {ops:?}");

    // The role is fixed after EC2 forgot the entry's ClientToken (a day passes in real life):
    // the ENI created for the entry is the one attached, and no second one is made.
    env.sim.set_account(ec2sim::Account {
        client_token_ttl: Duration::ZERO,
        ..ec2sim::Account::default()
    });
    enforce(&env, None);
    env.wait_pool("node-a", "the kept ENI attached", T, |p| is_ready(p) && allocated(p) == 18)
        .await;
    assert_eq!(env.tagged_enis(), created, "the same ENI, attached; no second one");
    op.abort();
}
