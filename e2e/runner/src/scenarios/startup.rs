//! A node joining: the runtime sees no CNI config until the agent can serve, so pods created
//! before that wait (the kubelet's "network not ready") and then start on their first ADD.

use super::{eni_of, pool_ready, with_cluster, SETTLE};
use crate::Target;
use anyhow::{ensure, Result};
use cluster::node::{CONFLIST_NAME, STARTUP_TAINT};
use cluster::{wait, Spec};
use std::time::Duration;

async fn startup_tainted(c: &cluster::Cluster, node: &str) -> Result<bool> {
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(c.client().clone());
    let n = api.get(node).await?;
    let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
    Ok(taints.iter().any(|t| t.key == STARTUP_TAINT))
}

pub async fn pods_wait_for_the_agent(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("node-startup", 1), |c| {
        Box::pin(async move {
            pool_ready(c, &c.nodes()[0].name).await?;
            // Without the operator a new node gets no pool, so its agent cannot serve.
            let operators: Vec<String> =
                c.core.procs.names().into_iter().filter(|n| n.starts_with("operator-")).collect();
            for o in &operators {
                c.core.procs.stop(o);
            }
            c.step("operators stopped; a node joins");
            let n = c.join_node().await?;
            let conf = n.driver.conf_dir.join(CONFLIST_NAME);
            let pod = async {
                c.add_pod("early", &n.name).await?;
                Ok::<_, anyhow::Error>(())
            };
            let checks = async {
                // Long enough for an installer, an agent start and a refused ADD.
                tokio::time::sleep(Duration::from_secs(6)).await;
                ensure!(
                    !conf.exists(),
                    "{} exists while the agent cannot serve: the node takes pods it cannot start",
                    conf.display()
                );
                let log = std::fs::read_to_string(n.dir.join("cni.log")).unwrap_or_default();
                ensure!(
                    log.trim().is_empty(),
                    "the runtime ran the plugin before the network was ready:\n{log}"
                );
                ensure!(
                    startup_tainted(c, &n.name).await?,
                    "the startup taint went before the agent could serve"
                );
                c.step("no CNI config yet, the pod waits; operators back");
                for o in &operators {
                    c.core.procs.restart(o)?;
                }
                Ok(())
            };
            let (added, checked) =
                tokio::join!(tokio::time::timeout(SETTLE + Duration::from_secs(30), pod), checks);
            checked?;
            added.map_err(|_| anyhow::anyhow!("the early pod never started"))??;
            ensure!(conf.exists(), "the pod started without a CNI config");
            let log = std::fs::read_to_string(n.dir.join("cni.log")).unwrap_or_default();
            ensure!(
                !log.contains(" error "),
                "the early pod's first ADD failed (the kubelet would back off):\n{log}"
            );
            let ip = c.pod("early")?.ip()?;
            let pool = pool_ready(c, &n.name).await?;
            ensure!(eni_of(&pool, ip).is_some(), "the early pod's {ip} is not in its node's pool");
            c.ping_from_pod("early", n.primary_ip).await?;
            // The agent, under the chart's RBAC and admission policy, removed the startup taint.
            wait::poll("the startup taint removed", SETTLE, || async {
                ensure!(!startup_tainted(c, &n.name).await?, "Node {} still tainted", n.name);
                Ok(())
            })
            .await?;
            // A CNI config removed from the host is put back.
            std::fs::remove_file(&conf)?;
            wait::poll("the CNI config put back", SETTLE, || async {
                ensure!(conf.exists(), "{} still missing", conf.display());
                Ok(())
            })
            .await
        })
    })
    .await
}
