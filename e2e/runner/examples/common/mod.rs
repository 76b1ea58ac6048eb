//! What the platform benches share.

use cluster::Cluster;
use std::time::Duration;

/// Waits until `node`'s pool is Ready with at least `free` addresses available, as on a node
/// that has been up a while, so a bench does not time the pool's first growth.
pub async fn pool_warm(c: &Cluster, node: &str, free: i32, within: Duration) -> anyhow::Result<()> {
    cluster::wait::poll("the pool Ready at its warm target", within, || async {
        let st = c.pool(node).await?.status.unwrap_or_default();
        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        let available = st.summary.map(|s| s.available).unwrap_or(0);
        anyhow::ensure!(ready && available >= free, "Ready {ready}, {available} available");
        Ok(())
    })
    .await
}
