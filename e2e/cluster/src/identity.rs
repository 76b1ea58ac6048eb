//! The agent's identity as the chart makes it: its ServiceAccount, ClusterRole(Binding) and
//! admission policy(Binding), rendered by `helm template` from this repository's chart, and
//! tokens bound to a Pod on a node, as the kubelet mints them for the agent's pod. The platform's
//! agents run with such tokens, so every write of theirs passes the chart's admission policy.

use super::external::{container_security_context, pod_spec_extras, RUN_LABEL};
use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The chart templates that make the agent's identity and its limits.
const TEMPLATES: [&str; 3] = [
    "templates/serviceaccounts.yaml",
    "templates/rbac.yaml",
    "templates/agent-admission-policy.yaml",
];
/// The kinds of the agent's identity, all of which the chart must render.
const KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];
/// Lifetime asked for the agents' tokens: longer than any run (a kubelet would rotate them).
const TOKEN_SECONDS: i64 = 24 * 3600;

/// The agent's identity objects, as installed.
pub struct AgentIdentity {
    objects: Vec<(ApiResource, Value)>,
    /// Namespace of the ServiceAccount and of the Pods tokens are bound to.
    pub namespace: String,
    /// The agent's ServiceAccount.
    pub service_account: String,
}

impl AgentIdentity {
    /// Renders the chart as release `release` in `namespace` with the chart values `set`
    /// (`key=value`) and applies the agent's identity objects (labelled with `run` when given, so
    /// a sweep can find them).
    pub async fn install(
        client: &kube::Client,
        release: &str,
        namespace: &str,
        set: &[&str],
        run: Option<&str>,
    ) -> Result<AgentIdentity> {
        let is_agent =
            |d: &Value| d["metadata"]["labels"]["app.kubernetes.io/component"] == "agent";
        let mut objects = Vec::new();
        for mut d in render_chart(release, namespace, set)?.into_iter().filter(is_agent) {
            let Some(ar) = resource_of(d["kind"].as_str().unwrap_or_default()) else { continue };
            if let Some(run) = run {
                d["metadata"]["labels"][RUN_LABEL] = json!(run);
            }
            objects.push((ar, d));
        }
        let kinds: Vec<&str> = objects.iter().map(|(ar, _)| ar.kind.as_str()).collect();
        for want in KINDS {
            ensure!(kinds.contains(&want), "the chart renders no agent {want} (found {kinds:?})");
        }
        let service_account = objects
            .iter()
            .find(|(ar, _)| ar.kind == "ServiceAccount")
            .and_then(|(_, d)| d["metadata"]["name"].as_str())
            .context("agent ServiceAccount name")?
            .to_string();
        let id = AgentIdentity { objects, namespace: namespace.into(), service_account };
        let pp = PatchParams::apply(super::kube::MANAGER).force();
        for (ar, d) in &id.objects {
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            id.api(client, ar)
                .patch(name, &pp, &Patch::Apply(d))
                .await
                .with_context(|| format!("applying {} {name}", ar.kind))?;
        }
        Ok(id)
    }

    /// The user the agents' tokens authenticate as: one for every node's agent, as in a cluster.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.service_account)
    }

    fn api(&self, client: &kube::Client, ar: &ApiResource) -> Api<DynamicObject> {
        if ar.kind == "ServiceAccount" {
            Api::namespaced_with(client.clone(), &self.namespace, ar)
        } else {
            Api::all_with(client.clone(), ar)
        }
    }

    /// A token of the agent's ServiceAccount bound to a new Pod `pod` on `node`: what the kubelet
    /// gives the agent's pod there, with the node-name claim the admission policy checks.
    pub async fn token_on(
        &self,
        client: &kube::Client,
        node: &str,
        pod: &str,
        run: Option<&str>,
    ) -> Result<String> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let mut spec = pod_spec_extras();
        spec["nodeName"] = json!(node);
        spec["serviceAccountName"] = json!(self.service_account);
        // As the agent's own pod: on the host network, so it is no pod waiting for an address.
        spec["hostNetwork"] = json!(true);
        spec["containers"] = json!([{"name": "agent", "image": "enipool-agent:e2e",
                                      "securityContext": container_security_context()}]);
        let labels = run.map(|r| json!({RUN_LABEL: r})).unwrap_or_else(|| json!({}));
        let obj: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "labels": labels}, "spec": spec,
        }))?;
        let created = pods
            .create(&PostParams::default(), &obj)
            .await
            .with_context(|| format!("creating Pod {}/{pod}", self.namespace))?;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.namespace);
        let req: TokenRequest = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [], "expirationSeconds": TOKEN_SECONDS,
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod,
                                        "uid": created.metadata.uid}},
        }))?;
        let status = sas
            .create_token_request(&self.service_account, &PostParams::default(), &req)
            .await
            .with_context(|| {
                format!("requesting a token of {} bound to {pod}", self.service_account)
            })?
            .status
            .context("the TokenRequest has no status")?;
        Ok(status.token)
    }

    /// Deletes the objects [`install`](Self::install) applied (best effort, logged): an external
    /// cluster keeps cluster-scoped objects past the run's namespace.
    pub async fn remove(&self, client: &kube::Client) {
        for (ar, d) in self.objects.iter().rev() {
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            if let Err(e) = self.api(client, ar).delete(name, &DeleteParams::default()).await {
                tracing::warn!(kind = %ar.kind, name, error = %e, "removing the agent identity");
            }
        }
    }
}

/// The API server of `kubeconfig`, authenticated only by `token`.
pub async fn client_with_token(kubeconfig: &Path, token: String) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    cfg.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
    Ok(kube::Client::try_from(cfg)?)
}

fn resource_of(kind: &str) -> Option<ApiResource> {
    let (group, plural) = match kind {
        "ServiceAccount" => ("", "serviceaccounts"),
        "ClusterRole" => ("rbac.authorization.k8s.io", "clusterroles"),
        "ClusterRoleBinding" => ("rbac.authorization.k8s.io", "clusterrolebindings"),
        "ValidatingAdmissionPolicy" => {
            ("admissionregistration.k8s.io", "validatingadmissionpolicies")
        }
        "ValidatingAdmissionPolicyBinding" => {
            ("admissionregistration.k8s.io", "validatingadmissionpolicybindings")
        }
        _ => return None,
    };
    Some(ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural))
}

/// `helm template` of this repository's chart, only the templates of [`TEMPLATES`].
fn render_chart(release: &str, namespace: &str, set: &[&str]) -> Result<Vec<Value>> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/enipool");
    let helm = ["/usr/local/bin/helm", "/usr/bin/helm"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("helm"));
    let mut cmd = std::process::Command::new(&helm);
    cmd.args(["template", release])
        .arg(&chart)
        // clusterName is required by the operator's templates, which are not kept.
        .args(["--namespace", namespace, "--set", "clusterName=unused"]);
    for v in set {
        cmd.args(["--set", v]);
    }
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
