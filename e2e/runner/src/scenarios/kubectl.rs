//! kubectl: CRDs served, `kubectl get enipools` columns, GitOps `kubectl apply` of a policy.

use super::{all_pools_ready, basic::pods_on, with_cluster, SETTLE};
use crate::Target;
use anyhow::{bail, ensure, Context, Result};
use cluster::{kube as k, wait, Cluster, Spec};
use std::collections::BTreeMap;

/// Runs against the platform's API or a real cluster (`--kubeconfig`): nothing here needs nodes.
pub async fn crds_served(t: Target) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("enipool-e2e-crds-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let r = async {
        let mut env = k::KubeEnv::start(t.kubeconfig.as_deref(), &dir).await?;
        let r = async {
            k::install_crds(&env.client).await?;
            for (crd, kind) in [
                ("enipools.enipool.io", "ENIPool"),
                ("enipoolpolicies.enipool.io", "ENIPoolPolicy"),
            ] {
                let out = env.kubectl(&["get", "crd", crd, "-o", "jsonpath={.spec.names.kind}"])?;
                ensure!(out.trim() == kind, "CRD {crd} serves kind {out:?}");
            }
            let cols = env.kubectl(&[
                "get",
                "crd",
                "enipools.enipool.io",
                "-o",
                "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
            ])?;
            for c in [
                "Node",
                "Instance",
                "Type",
                "Mode",
                "ENIs",
                "Allocated",
                "In-Use",
                "Available",
                "Target",
                "Ready",
            ] {
                ensure!(
                    cols.split_whitespace().any(|x| x == c),
                    "printer column {c} missing: {cols}"
                );
            }
            // Both kinds list (empty or not) through kubectl's discovery.
            env.kubectl(&["get", "enipools"])?;
            env.kubectl(&["get", "enipoolpolicies"])?;
            Ok(())
        }
        .await;
        env.shutdown().await;
        r
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// One row of a kubectl table: column → value.
pub(crate) type Row = BTreeMap<String, String>;

/// Parses kubectl's table output into its header and rows.
pub(crate) fn table(out: &str) -> Result<(Vec<String>, Vec<Row>)> {
    let mut lines = out.lines();
    let header: Vec<String> = lines
        .next()
        .context("empty kubectl output")?
        .split_whitespace()
        .map(String::from)
        .collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| header.iter().cloned().zip(l.split_whitespace().map(String::from)).collect())
        .collect();
    Ok((header, rows))
}

/// Secondary addresses EC2 has on the instance's attached ENIs (the truth ALLOCATED must match).
fn ec2_allocated(c: &Cluster, instance: &str) -> usize {
    let st = c.sim().snapshot();
    st.enis
        .values()
        .filter(|e| e.attachment.as_ref().is_some_and(|a| a.instance_id == instance))
        .map(|e| e.secondary.len() + e.prefixes.len() * 16)
        .sum()
}

pub async fn get_enipools(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("kubectl-get-enipools", 2), |c| {
        Box::pin(async move {
            all_pools_ready(c).await?;
            let nodes = c.nodes();
            pods_on(c, "a", &nodes[0].name, 3).await?;
            pods_on(c, "b", &nodes[1].name, 1).await?;
            let expect_in_use = [(nodes[0].name.clone(), 3), (nodes[1].name.clone(), 1)];
            wait::poll("kubectl get enipools to show the right numbers", SETTLE, || async {
                let out = c.kubectl(&["get", "enipools"])?;
                let (header, rows) = table(&out)?;
                // On a shared API other runs' (or the cluster's own) pools are listed too.
                let rows: Vec<Row> =
                    rows.into_iter().filter(|r| c.node(&r["NAME"]).is_ok()).collect();
                let want = [
                    "NAME",
                    "NODE",
                    "INSTANCE",
                    "TYPE",
                    "MODE",
                    "ENIS",
                    "PREFIXES",
                    "ALLOCATED",
                    "IN-USE",
                    "AVAILABLE",
                    "TARGET",
                    "READY",
                    "AGE",
                ];
                ensure!(header == want, "columns {header:?}, want {want:?}");
                ensure!(rows.len() == 2, "{} rows:\n{out}", rows.len());
                for (node, in_use) in &expect_in_use {
                    let n = c.node(node)?;
                    let row = rows
                        .iter()
                        .find(|r| r["NAME"] == *node)
                        .with_context(|| format!("no row {node}"))?;
                    let pool = c.pool(node).await?;
                    let st = pool.status.context("status")?;
                    let allocated = ec2_allocated(c, &n.instance_id);
                    let enis = st.enis.len();
                    let target = st.target.map(|t| t.ips).unwrap_or(-1);
                    let num = |k: &str| {
                        row[k].parse::<i64>().with_context(|| format!("{k}={:?}", row[k]))
                    };
                    ensure!(
                        row["NODE"] == *node && row["INSTANCE"] == n.instance_id,
                        "identity: {row:?}"
                    );
                    ensure!(
                        row["TYPE"] == "m5.large" && row["MODE"] == "SecondaryIP",
                        "type/mode: {row:?}"
                    );
                    ensure!(
                        row["ENIS"] == format!("{enis}/3"),
                        "ENIS {} with {enis} ENIs of 3",
                        row["ENIS"]
                    );
                    ensure!(
                        num("ALLOCATED")? == allocated as i64,
                        "ALLOCATED {} but EC2 holds {allocated}",
                        row["ALLOCATED"]
                    );
                    ensure!(
                        num("IN-USE")? == *in_use,
                        "IN-USE {} with {in_use} pods",
                        row["IN-USE"]
                    );
                    ensure!(
                        num("AVAILABLE")? == allocated as i64 - in_use,
                        "AVAILABLE {} with {allocated} allocated and {in_use} in use",
                        row["AVAILABLE"]
                    );
                    ensure!(
                        num("TARGET")? == target as i64,
                        "TARGET {} vs status {target}",
                        row["TARGET"]
                    );
                    // warmIPs 2 above the pods, batch 1.
                    ensure!(
                        target as i64 == in_use + 2,
                        "target {target} for {in_use} pods + 2 warm"
                    );
                    ensure!(row["READY"] == "True", "READY {}", row["READY"]);
                }
                let wide = c.kubectl(&["get", "enipools", "-o", "wide"])?;
                let (wh, wrows) = table(&wide)?;
                let wrows: Vec<Row> =
                    wrows.into_iter().filter(|r| c.node(&r["NAME"]).is_ok()).collect();
                ensure!(wrows.len() == 2, "{} wide rows:\n{wide}", wrows.len());
                for col in
                    ["ZONE", "POLICY", "FAMILY", "PENDING-PODS", "RELEASING", "LAST-SYNC", "REASON"]
                {
                    ensure!(wh.iter().any(|h| h == col), "-o wide lacks {col}: {wh:?}");
                }
                for r in &wrows {
                    let zone = c.node(&r["NAME"])?.az;
                    ensure!(r["ZONE"] == zone && r["POLICY"] == c.names.policy, "wide row {r:?}");
                    ensure!(r["PENDING-PODS"] == "0" && r["RELEASING"] == "0", "wide row {r:?}");
                }
                Ok(())
            })
            .await?;
            one_pool_by_name(c, &nodes[0].name).await
        })
    })
    .await
}

/// The singular forms the docs and the chart's NOTES tell users to run on one pool, which fail
/// on a real apiserver when a category is spelled like the singular name.
async fn one_pool_by_name(c: &Cluster, node: &str) -> Result<()> {
    let out = c.kubectl(&["get", "enipool", node])?;
    let (_, rows) = table(&out)?;
    ensure!(rows.len() == 1 && rows[0]["NAME"] == node, "kubectl get enipool {node}:\n{out}");
    let pool = c.pool(node).await?;
    let max_pods = pool
        .status
        .as_ref()
        .and_then(|s| s.effective.as_ref())
        .map(|e| e.capacity.max_pods)
        .context("no effective capacity")?;
    let jp = c.kubectl(&[
        "get",
        "enipool",
        node,
        "-o",
        "jsonpath={.status.effective.capacity.maxPods}",
    ])?;
    ensure!(jp.trim() == max_pods.to_string(), "jsonpath maxPods {jp:?}, status {max_pods}");
    let described = c.kubectl(&["describe", "enipool", node])?;
    ensure!(
        described.contains(node) && described.contains("Kind:") && described.contains("ENIPool"),
        "kubectl describe enipool {node}:\n{described}"
    );
    for (what, args) in [
        ("policies by name", vec!["get", "enipoolpolicy", c.names.policy.as_str()]),
        ("the category", vec!["get", CATEGORY]),
    ] {
        let out = c.kubectl(&args)?;
        ensure!(out.contains(node) || out.contains(&c.names.policy), "{what}:\n{out}");
    }
    let explained = c.kubectl(&["explain", "enipool.status.agent"])?;
    ensure!(explained.contains("ENIPool") && explained.contains("epoch"), "{explained}");
    Ok(())
}

/// The kubectl category of both kinds (`kubectl get <category>` lists pools and policies).
const CATEGORY: &str = "enipool-all";

/// Waits until the pool's target and EC2's allocation of the single node equal `n`.
async fn converge_to(c: &Cluster, n: i32) -> Result<()> {
    let node = c.nodes()[0].clone();
    wait::poll(&format!("target and EC2 allocation at {n}"), SETTLE, || async {
        let pool = c.pool(&node.name).await?;
        let target = pool.status.as_ref().and_then(|s| s.target.as_ref()).map(|t| t.ips);
        let allocated = ec2_allocated(c, &node.instance_id);
        ensure!(
            target == Some(n) && allocated == n as usize,
            "target {target:?}, EC2 holds {allocated}"
        );
        Ok(())
    })
    .await
}

/// A policy that names a subnet EC2 does not have is Stalled and not Ready, so the GitOps tool
/// shows it failed instead of waiting forever. It selects no node, and is removed again.
async fn policy_stalled_on_missing_subnets(
    c: &Cluster,
    base: &enipool_crds::ENIPoolPolicySpec,
) -> Result<()> {
    let mut spec = serde_json::to_value(base)?;
    spec["nodeSelector"] = serde_json::json!({"matchLabels": {"enipool-e2e/no-such-node": "x"}});
    spec["eni"]["subnets"] = serde_json::json!({"ids": ["subnet-0000000000000dead"]});
    let name = format!("{}-broken", c.names.policy);
    let file = c.run_dir().join("gitops").join("broken.yaml");
    std::fs::write(&file, k::policy_manifest(&name, &serde_json::from_value(spec)?)?)?;
    let f = file.display().to_string();
    c.kubectl(&["apply", "-f", &f])?;
    let obj = format!("enipoolpolicy/{name}");
    let stalled = c.kubectl(&["wait", "--for=condition=Stalled", &obj, "--timeout=30s"]);
    let ready = c.kubectl(&[
        "get",
        &obj,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    c.kubectl(&["delete", "-f", &f])?;
    stalled.context("a policy naming a missing subnet did not turn Stalled")?;
    ensure!(ready?.trim() == "False", "a policy naming a missing subnet is Ready");
    Ok(())
}

/// kubectl apply moves the targets, kstatus reads Ready, an invalid change is refused; that SSA
/// by a GitOps manager never conflicts is `gitops_policy_edits_change_targets_without_conflicts`'s.
pub async fn gitops_apply(t: Target) -> Result<()> {
    let spec = Spec::new("gitops-policy-apply", 1).policy(serde_json::json!({
        "mode": "SecondaryIP", "sizing": {"warmIPs": 2, "batch": 1},
        "release": {"enabled": true, "delaySeconds": 5}, "cooldownSeconds": 1,
    }));
    with_cluster(&t, spec, |c| {
        Box::pin(async move {
            all_pools_ready(c).await?;
            converge_to(c, 2).await?;
            // The repository's manifest changes; the GitOps tool runs kubectl apply.
            let repo = c.run_dir().join("gitops");
            std::fs::create_dir_all(&repo)?;
            let file = repo.join("policy.yaml");
            let mut policy = c.spec.policy.clone();
            policy.sizing.warm_ips = Some(6);
            std::fs::write(&file, k::policy_manifest(&c.names.policy, &policy)?)?;
            let f = file.display().to_string();
            c.kubectl(&["apply", "-f", &f])?;
            converge_to(c, 6).await?;
            // What a GitOps tool's health check reads (kstatus): the applied policy is Ready.
            let obj = format!("enipoolpolicy/{}", c.names.policy);
            c.kubectl(&["wait", "--for=condition=Ready", &obj, "--timeout=30s"])?;
            if c.kube.is_local() {
                policy_stalled_on_missing_subnets(c, &policy).await?;
            } else {
                println!(
                    "    NOT CHECKED: Stalled on a policy naming a missing subnet: on a shared \
                     cluster the runner's operator is scoped (--node-selector) and writes the \
                     status only of policies its nodes use"
                );
            }
            // And back down (release after the 5 s delay).
            policy.sizing.warm_ips = Some(3);
            std::fs::write(&file, k::policy_manifest(&c.names.policy, &policy)?)?;
            c.kubectl(&["apply", "-f", &f])?;
            converge_to(c, 3).await?;
            // An invalid change is refused by the API with the CRD's message; nothing moves.
            policy.mode = enipool_crds::IpMode::Prefix;
            policy.sizing.batch = Some(5);
            std::fs::write(&file, k::policy_manifest(&c.names.policy, &policy)?)?;
            match c.kubectl(&["apply", "-f", &f]) {
                Ok(out) => bail!("an invalid policy was accepted: {out}"),
                Err(e) => ensure!(
                    format!("{e:#}").contains("multiple of 16"),
                    "unexpected refusal: {e:#}"
                ),
            }
            converge_to(c, 3).await
        })
    })
    .await
}
