//! Scenarios, one simulator + API server each.

use crate::harness::*;
use enipool_crds::{POLICY_LABEL, POOL_FINALIZER};
use kube::ResourceExt;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_join_creates_a_ready_pool_with_one_call() {
    let env = env().await;
    let op = env.start_operator("op-a").await;
    let inst = env.join("node-a", "m5.large", &env.subnet).await;

    let pool = env.wait_pool("node-a", "Ready", T, is_ready).await;
    // Identity, owner reference to the Node, finalizer.
    assert_eq!(pool.spec.instance_id, inst);
    assert_eq!(pool.spec.node_name, "node-a");
    let owner = &pool.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", "node-a"));
    assert!(pool.finalizers().iter().any(|f| f == POOL_FINALIZER));
    assert_eq!(pool.labels().get(POLICY_LABEL), None, "no policy: defaults");
    // Default sizing: warmIPs 8 on an empty node, all on the primary ENI (room for 9).
    assert_eq!(target(&pool), 8);
    assert_eq!(allocated(&pool), 8);
    let st = pool.status.as_ref().unwrap();
    assert_eq!(st.enis.len(), 1);
    assert_eq!(st.instance.as_ref().unwrap().instance_type, "m5.large");
    assert!(
        st.operations.is_empty(),
        "journal drained: {:?}\n{}",
        st.operations,
        serde_json::to_string_pretty(&pool.metadata.managed_fields).unwrap()
    );
    assert!(st.agent.is_none());
    // One mutating EC2 call for the whole join.
    assert_eq!(env.mutating_calls(), 1, "{:?}", env.sim.counters());
    assert_eq!(env.calls("AssignPrivateIpAddresses"), 1);
    // It stays at one: resyncs only read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.mutating_calls(), 1, "{:?}", env.sim.counters());
    op.abort();
}
