//! A replica leads only with complete caches. A leader decides from its caches: a pool whose Node
//! is not cached is deleted, as the pool of a deleted Node. With the Lease free at start (a
//! graceful handover released it, or the first start), a replica that led as soon as its pool
//! list arrived, before its Node list, would delete the pools of live Nodes. Here the API answers
//! the new replica's Node LIST 4 s late while everything else is fast.

use crate::harness::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const SLOW_NODE_LIST: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_node_list_still_loading_neither_leads_nor_deletes_pools() {
    let env = env().await;
    let a = env.start_operator("op-a").await;
    for n in ["node-a", "node-b"] {
        env.join(n, "m5.large", &env.subnet).await;
        env.wait_pool(n, "Ready", T, is_ready).await;
    }
    // The leader goes gracefully: the Lease is free at once for the next replica.
    a.shutdown().await.expect("graceful shutdown");

    env.kube.delay_lists("nodes", SLOW_NODE_LIST);
    let b = env.start_operator("op-b").await;
    let started = std::time::Instant::now();
    wait_for("op-b leads", T, || async { b.is_leader().then_some(()) }).await;
    assert!(
        started.elapsed() >= SLOW_NODE_LIST - Duration::from_millis(500),
        "op-b led after {:?}, before its Node list could have arrived",
        started.elapsed()
    );
    assert!(b.is_ready(), "leading with caches not synced");
    env.kube.delay_lists("nodes", Duration::ZERO);
    // Leading for a few resyncs (1 s each) changes nothing about the live Nodes' pools.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in ["node-a", "node-b"] {
        let p = env.pool(n).await.unwrap_or_else(|| panic!("the pool of live {n} was deleted"));
        assert!(p.metadata.deletion_timestamp.is_none(), "the pool of live {n} is being deleted");
        assert!(is_ready(&p), "{n}'s pool is not Ready");
    }
    b.abort();
}
