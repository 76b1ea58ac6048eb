//! A compromised node: with its agent's own identity (a service-account token bound to a Pod on
//! that node, as the kubelet mints it) and the chart's RBAC and admission policy in force, every
//! write that would let the node spend the operator's EC2 rights or touch another node's pool is
//! refused by the API server, and nothing of either pool changes.

use super::{all_pools_ready, with_cluster, SETTLE};
use crate::cluster::external::{container_security_context, pod_spec_extras, RUN_LABEL};
use crate::cluster::{wait, Cluster, Spec};
use crate::runner::Target;
use anyhow::{bail, ensure, Context, Result};
use enipool_crds::{ENIPool, Operation, OperationKind};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Field manager of the agent's own status writes.
const AGENT_MANAGER: &str = "enipool-agent";
/// The chart templates that make the agent's identity and its limits.
const TEMPLATES: [&str; 3] = [
    "templates/serviceaccounts.yaml",
    "templates/rbac.yaml",
    "templates/agent-admission-policy.yaml",
];

pub async fn compromised_agent(t: Target) -> Result<()> {
    with_cluster(&t, Spec::new("compromised-agent", 2), |c| {
        Box::pin(async move {
            all_pools_ready(c).await?;
            let nodes = c.nodes();
            let (own, victim) = (nodes[0].name.clone(), nodes[1].name.clone());
            c.step("installing the chart's agent ServiceAccount, RBAC and admission policy");
            c.kube.enforce_rbac();
            let identity = AgentIdentity::install(c).await?;
            let r = async {
                let agent = identity.client_on(c, &own).await?;
                attack(c, &agent, &own, &victim).await
            }
            .await;
            identity.remove(c).await;
            r
        })
    })
    .await
}

/// The chart's agent ServiceAccount, ClusterRole(Binding) and admission policy(Binding), as
/// installed for this run.
struct AgentIdentity {
    objects: Vec<(ApiResource, Value)>,
    service_account: String,
    pod: String,
}

impl AgentIdentity {
    async fn install(c: &Cluster) -> Result<AgentIdentity> {
        let release = c.names.run.clone().unwrap_or_else(|| "enipool".into());
        let docs = render_chart(&release, c.pod_namespace(), &c.name)?;
        let is_agent =
            |d: &Value| d["metadata"]["labels"]["app.kubernetes.io/component"] == "agent";
        let mut objects = Vec::new();
        for mut d in docs.into_iter().filter(is_agent) {
            let kind = d["kind"].as_str().unwrap_or_default().to_string();
            let Some(ar) = resource_of(&kind) else { continue };
            if let Some(run) = &c.names.run {
                d["metadata"]["labels"][RUN_LABEL] = json!(run);
            }
            objects.push((ar, d));
        }
        let kinds: Vec<&str> = objects.iter().map(|(ar, _)| ar.kind.as_str()).collect();
        for want in [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ] {
            ensure!(kinds.contains(&want), "the chart renders no agent {want} (found {kinds:?})");
        }
        let service_account = objects
            .iter()
            .find(|(ar, _)| ar.kind == "ServiceAccount")
            .and_then(|(_, d)| d["metadata"]["name"].as_str())
            .context("agent ServiceAccount name")?
            .to_string();
        let id = AgentIdentity { objects, service_account, pod: "compromised-agent".into() };
        let pp = PatchParams::apply(crate::cluster::kube::MANAGER).force();
        for (ar, d) in &id.objects {
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            id.api(c, ar)
                .patch(name, &pp, &Patch::Apply(d))
                .await
                .with_context(|| format!("applying {} {name}", ar.kind))?;
        }
        Ok(id)
    }

    fn api(&self, c: &Cluster, ar: &ApiResource) -> Api<DynamicObject> {
        if ar.kind == "ServiceAccount" {
            Api::namespaced_with(c.client().clone(), c.pod_namespace(), ar)
        } else {
            Api::all_with(c.client().clone(), ar)
        }
    }

    /// A client holding what a compromised agent on `node` holds: a token of the agent's
    /// ServiceAccount bound to a Pod on that node (so it carries the node-name claim).
    async fn client_on(&self, c: &Cluster, node: &str) -> Result<kube::Client> {
        let pods: Api<Pod> = Api::namespaced(c.client().clone(), c.pod_namespace());
        let mut spec = pod_spec_extras();
        spec["nodeName"] = json!(node);
        spec["serviceAccountName"] = json!(self.service_account);
        spec["containers"] = json!([{"name": "agent", "image": "enipool-agent:e2e",
                                      "securityContext": container_security_context()}]);
        let mut labels = json!({});
        if let Some(run) = &c.names.run {
            labels[RUN_LABEL] = json!(run);
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.pod, "labels": labels}, "spec": spec,
        }))?;
        let pod = pods.create(&PostParams::default(), &pod).await.context("creating the Pod")?;
        let sas: Api<ServiceAccount> = Api::namespaced(c.client().clone(), c.pod_namespace());
        let req: TokenRequest = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [], "expirationSeconds": 600,
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.pod,
                                        "uid": pod.metadata.uid}},
        }))?;
        let token = sas
            .create_token_request(&self.service_account, &PostParams::default(), &req)
            .await
            .context("requesting a token for the agent's ServiceAccount bound to the Pod")?
            .status
            .context("the TokenRequest has no status")?
            .token;
        client_with_token(&c.kube.kubeconfig, token).await
    }

    /// Best effort: an external cluster keeps cluster-scoped objects past the run's namespace.
    async fn remove(&self, c: &Cluster) {
        let pods: Api<Pod> = Api::namespaced(c.client().clone(), c.pod_namespace());
        let _ = pods.delete(&self.pod, &DeleteParams::default()).await;
        for (ar, d) in self.objects.iter().rev() {
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            if let Err(e) = self.api(c, ar).delete(name, &DeleteParams::default()).await {
                tracing::warn!(kind = %ar.kind, name, error = %e, "removing the agent identity");
            }
        }
    }
}

/// The same API server as the runner's kubeconfig, authenticated only by `token`.
async fn client_with_token(kubeconfig: &Path, token: String) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    cfg.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
    Ok(kube::Client::try_from(cfg)?)
}

fn resource_of(kind: &str) -> Option<ApiResource> {
    let (group, version, plural) = match kind {
        "ServiceAccount" => ("", "v1", "serviceaccounts"),
        "ClusterRole" => ("rbac.authorization.k8s.io", "v1", "clusterroles"),
        "ClusterRoleBinding" => ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
        "ValidatingAdmissionPolicy" => {
            ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies")
        }
        "ValidatingAdmissionPolicyBinding" => {
            ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings")
        }
        _ => return None,
    };
    Some(ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural))
}

/// `helm template` of the chart in this repository, only the templates of [`TEMPLATES`].
fn render_chart(release: &str, namespace: &str, cluster: &str) -> Result<Vec<Value>> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/enipool");
    let helm = ["/usr/local/bin/helm", "/usr/bin/helm"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("helm"));
    let mut cmd = std::process::Command::new(&helm);
    cmd.args(["template", release]).arg(&chart).args([
        "--namespace",
        namespace,
        "--set",
        &format!("clusterName={cluster}"),
    ]);
    for t in TEMPLATES {
        cmd.args(["--show-only", t]);
    }
    let out = cmd.output().with_context(|| {
        format!("running {} (scripts/install-deps installs helm v3)", helm.display())
    })?;
    if !out.status.success() {
        bail!("helm template failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout))
        .context("parsing the rendered chart")?;
    Ok(docs.into_iter().filter(Value::is_object).collect())
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
