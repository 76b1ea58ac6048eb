//! A compromised node: with its agent's own identity (a service-account token bound to a Pod on
//! that node, as the kubelet mints it) and the chart's RBAC and admission policy in force, every
//! write that would let the node spend the operator's EC2 rights or touch another node's pool is
//! refused by the API server, and nothing of either pool changes.

use super::{all_pools_ready, with_cluster, SETTLE};
use crate::Target;
use anyhow::{bail, ensure, Context, Result};
use cluster::identity::{client_with_token, AgentIdentity};
use cluster::{wait, Cluster, Spec};
use enipool_crds::{ENIPool, Operation, OperationKind};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Field manager of the agent's own status writes.
const AGENT_MANAGER: &str = "enipool-agent";
/// The Pod the compromised agent's token is bound to.
const COMPROMISED_POD: &str = "compromised-agent";

pub async fn compromised_agent(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("compromised-agent", 2), |c| {
        Box::pin(async move {
            all_pools_ready(c).await?;
            let nodes = c.nodes();
            let (own, victim) = (nodes[0].name.clone(), nodes[1].name.clone());
            c.kube.enforce_rbac();
            // The platform's API has the chart's agent identity already (its agents run with it);
            // on an external cluster the run installs its own, under per-run names.
            let run = c.names.run.as_deref();
            let installed = match (&c.agent_identity, run) {
                (Some(_), _) => None,
                (None, release) => {
                    c.step(
                        "installing the chart's agent ServiceAccount, RBAC and admission policy",
                    );
                    let release = release.unwrap_or("enipool");
                    Some(
                        AgentIdentity::install(c.client(), release, c.pod_namespace(), &[], run)
                            .await?,
                    )
                }
            };
            let identity = installed.as_ref().or(c.agent_identity.as_ref()).context("identity")?;
            let r = async {
                let token = identity.token_on(c.client(), &own, COMPROMISED_POD, run).await?;
                let agent = client_with_token(&c.kube.kubeconfig, token).await?;
                attack(c, &agent, &own, &victim).await
            }
            .await;
            let pods: Api<Pod> = Api::namespaced(c.client().clone(), &identity.namespace);
            let _ = pods.delete(COMPROMISED_POD, &DeleteParams::default()).await;
            if let Some(id) = &installed {
                id.remove(c.client()).await;
            }
            r
        })
    })
    .await
}

/// The forgeries, each of which must be refused with 403, then the pools checked unchanged.
async fn attack(c: &Cluster, agent: &kube::Client, own: &str, victim: &str) -> Result<()> {
    let pools: Api<ENIPool> = Api::all(agent.clone());
    let before_own = c.pool(own).await?;
    let before_victim = c.pool(victim).await?;
    let victim_st = before_victim.status.clone().context("victim pool status")?;
    let victim_eni = victim_st.enis.last().context("victim pool has no ENI")?.clone();
    let own_st = before_own.status.clone().context("own pool status")?;

    // The policy and the RBAC binding reach a real apiserver's caches a moment after they are
    // created: wait until a no-op write to the victim's pool is refused, and the agent's own
    // write is admitted.
    c.step("waiting until the policy is in force for the agent's token");
    let own_agent = json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool",
                           "status": {"agent": own_st.agent}});
    let victim_agent = json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool",
                              "status": {"agent": victim_st.agent}});
    let ssa = PatchParams::apply(AGENT_MANAGER).force();
    wait::poll("the agent admission policy to refuse another node's pool", SETTLE, || async {
        match pools.patch_status(victim, &ssa, &Patch::Apply(&victim_agent)).await {
            Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("its own node") => {
                Ok(())
            }
            other => bail!("not refused yet: {other:?}"),
        }
    })
    .await?;
    pools
        .patch_status(own, &ssa, &Patch::Apply(&own_agent))
        .await
        .context("the agent's own status.agent write must be admitted")?;

    c.step("forging the operator's journal, ENIs, release set and conditions of the own pool");
    let forged_ids: Vec<String> = (0..4).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let entries = [
        (OperationKind::CreateENI, "", vec![victim_eni.subnet_id.clone(), "sg-any".into()]),
        (OperationKind::AttachENI, victim_eni.id.as_str(), vec![]),
        (OperationKind::DetachENI, victim_eni.id.as_str(), vec![]),
        (OperationKind::DeleteENI, victim_eni.id.as_str(), vec![]),
    ];
    for ((kind, eni, items), id) in entries.into_iter().zip(&forged_ids) {
        let op = Operation {
            id: id.clone(),
            kind,
            eni_id: eni.to_string(),
            count: 1,
            items,
            device_index: Some(1),
            started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ),
            attempts: 0,
            last_error: String::new(),
        };
        let mut ops = own_st.operations.clone();
        ops.push(op);
        let patch = json!({"status": {"operations": ops}});
        refused(
            &format!("a forged {kind:?} journal entry"),
            pools.patch_status(own, &PatchParams::default(), &Patch::Merge(&patch)).await,
            "changes status.operations",
        )?;
    }
    let mut enis = own_st.enis.clone();
    enis.push(victim_eni.clone());
    let forged = [
        ("the victim's ENI added to status.enis", json!({"status": {"enis": enis}}), "status.enis"),
        (
            "a victim address in status.releasing",
            json!({"status": {"releasing": enipool_crds::Releasing {
                revision: own_st.released_revision + 1,
                epoch: own_st.agent.as_ref().map(|a| a.epoch).unwrap_or(1),
                ips: victim_eni.ips.iter().map(|i| format!("{i}/32")).collect(),
                prefixes: vec![],
            }}}),
            "status.releasing",
        ),
        ("conditions", json!({"status": {"conditions": []}}), "status.conditions"),
        ("the revision", json!({"status": {"revision": own_st.revision + 100}}), "status.revision"),
    ];
    for (what, patch, field) in forged {
        refused(
            what,
            pools.patch_status(own, &PatchParams::default(), &Patch::Merge(&patch)).await,
            &format!("changes {field}"),
        )?;
    }

    c.step("editing spec and metadata, creating and deleting pools");
    let spec_edit = json!({"spec": {"paused": true}});
    refused(
        "a spec edit",
        pools.patch(own, &PatchParams::default(), &Patch::Merge(&spec_edit)).await,
        "forbidden",
    )?;
    // Through the status subresource the apiserver drops a spec change, or the policy refuses
    // it; either way the spec must stay as it was (checked below).
    let _ = pools.patch_status(own, &PatchParams::default(), &Patch::Merge(&spec_edit)).await;
    let label = json!({"metadata": {"labels": {"enipool.io/policy": "forged"},
                                    "finalizers": []}});
    refused(
        "a label and finalizer edit",
        pools.patch(own, &PatchParams::default(), &Patch::Merge(&label)).await,
        "forbidden",
    )?;
    let mut new_pool = before_victim.clone();
    new_pool.metadata =
        kube::core::ObjectMeta { name: Some("forged-pool".into()), ..Default::default() };
    new_pool.status = None;
    refused("a pool create", pools.create(&PostParams::default(), &new_pool).await, "forbidden")?;
    refused(
        "the victim pool's delete",
        pools.delete(victim, &DeleteParams::default()).await.map(|_| ()),
        "forbidden",
    )?;
    refused(
        "the own pool's delete",
        pools.delete(own, &DeleteParams::default()).await.map(|_| ()),
        "forbidden",
    )?;

    c.step("editing Nodes: another node's taints, its own labels, unschedulable and taints");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(agent.clone());
    let taint = json!({"spec": {"taints": [{"key": "evil", "effect": "NoExecute"}]}});
    refused(
        "tainting the victim's Node",
        nodes.patch(victim, &PatchParams::default(), &Patch::Merge(&taint)).await,
        "forbidden",
    )?;
    refused(
        "a taint on its own Node",
        nodes.patch(own, &PatchParams::default(), &Patch::Merge(&taint)).await,
        "other taints",
    )?;
    let cordon = json!({"spec": {"unschedulable": true}});
    refused(
        "cordoning the victim's Node",
        nodes.patch(victim, &PatchParams::default(), &Patch::Merge(&cordon)).await,
        "forbidden",
    )?;
    let relabel = json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "elsewhere"}}});
    refused(
        "relabelling its own Node",
        nodes.patch(own, &PatchParams::default(), &Patch::Merge(&relabel)).await,
        "metadata.labels",
    )?;

    c.step("checking both pools and EC2");
    let after_own = c.pool(own).await?;
    let after_victim = c.pool(victim).await?;
    ensure!(after_own.spec == before_own.spec, "the own pool's spec changed: {:?}", after_own.spec);
    ensure!(
        after_own.metadata.labels == before_own.metadata.labels
            && after_own.metadata.finalizers == before_own.metadata.finalizers,
        "the own pool's labels or finalizers changed"
    );
    let ops = after_own.status.as_ref().map(|s| s.operations.clone()).unwrap_or_default();
    ensure!(
        !ops.iter().any(|o| forged_ids.contains(&o.id)),
        "a forged journal entry reached the pool: {ops:?}"
    );
    ensure!(
        after_victim.metadata.deletion_timestamp.is_none(),
        "the victim's pool is being deleted"
    );
    let victim_enis = after_victim.status.map(|s| s.enis).unwrap_or_default();
    ensure!(
        victim_enis.iter().any(|e| e.id == victim_eni.id && !e.attachment_id.is_empty()),
        "the victim's ENI {} left its pool: {victim_enis:?}",
        victim_eni.id
    );
    if let Some(sim) = &c.sim {
        let victim_instance = c.node(victim)?.instance_id;
        let eni = sim.snapshot().enis.get(&victim_eni.id).cloned();
        let attached_to =
            eni.as_ref().and_then(|e| e.attachment.as_ref()).map(|a| a.instance_id.clone());
        ensure!(
            attached_to.as_deref() == Some(victim_instance.as_str()),
            "EC2: the victim's ENI {} is attached to {attached_to:?}, not {victim_instance}",
            victim_eni.id
        );
    }
    Ok(())
}

/// `r` must be a 403 whose message contains `needle`.
fn refused<T>(what: &str, r: kube::Result<T>, needle: &str) -> Result<()> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains(needle) => Ok(()),
        Err(kube::Error::Api(e)) => {
            bail!(
                "{what}: refused, but with {} {:?} (expected 403 mentioning {needle:?})",
                e.code,
                e.message
            )
        }
        Err(e) => bail!("{what}: failed without an API answer: {e}"),
        Ok(_) => bail!("{what} was ADMITTED for a compromised agent"),
    }
}
