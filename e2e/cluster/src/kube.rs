//! The Kubernetes side of the platform: the API server (the test platform's, or a real one through
//! a kubeconfig), the CRDs from `crds/`, policies, kubectl.

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Field manager the runner uses for what it applies.
pub const MANAGER: &str = "enipool-e2e";

/// A Kubernetes API to run against, and a client for it.
pub struct KubeEnv {
    /// Kubeconfig the processes and kubectl use.
    pub kubeconfig: PathBuf,
    /// Client of the runner itself.
    pub client: kube::Client,
    local: Option<LocalApi>,
}

/// The test platform's API server, while it runs.
pub struct LocalApi {
    api: kubeapi::KubeApi,
}

impl KubeEnv {
    /// Starts the platform's API server (kubeconfig written into `run_dir`), or connects to the
    /// cluster of `real` when given.
    pub async fn start(real: Option<&Path>, run_dir: &Path) -> Result<KubeEnv> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (kubeconfig, local) = match real {
            // Absolute: the processes and kubectl get it through KUBECONFIG / --kubeconfig.
            Some(p) => (
                std::fs::canonicalize(p).with_context(|| format!("kubeconfig {}", p.display()))?,
                None,
            ),
            None => {
                let path = run_dir.join("kubeconfig");
                let api = kubeapi::KubeApi::start(kubeapi::KubeApiConfig::default())
                    .await
                    .context("starting the test platform's Kubernetes API")?;
                api.write_kubeconfig(&path).context("writing the kubeconfig")?;
                (path, Some(LocalApi { api }))
            }
        };
        let client = client_for(&kubeconfig).await?;
        Ok(KubeEnv { kubeconfig, client, local })
    }

    /// True when the API is the test platform's own.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// URL of the API server.
    pub fn url(&self) -> Option<String> {
        self.local.as_ref().map(|l| l.api.url())
    }

    /// Makes the platform's API authorize every request by RBAC, as a real cluster always does.
    /// Its own components keep running as `system:masters`; kubectl, anonymous there (client-go
    /// sends no token over plain HTTP), is refused from then on.
    pub fn enforce_rbac(&self) {
        if let Some(l) = &self.local {
            l.api.set_rbac(true);
        }
    }

    /// Writes a kubeconfig of the platform's API that authenticates with `token` (an error on a
    /// real cluster, whose processes use the given kubeconfig).
    pub fn write_kubeconfig_with_token(&self, path: &Path, token: &str) -> Result<()> {
        let l = self.local.as_ref().context("not the platform's own API")?;
        l.api
            .write_kubeconfig_with_token(path, token)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Gives `user` (in `system:masters`) a token of its own on the platform's API and writes a
    /// kubeconfig with it to `path`: a client of its own, which [`KubeEnv::freeze_user`] can cut
    /// off alone. An error on a real cluster, whose users the platform cannot make.
    pub fn write_kubeconfig_for_user(&self, path: &Path, user: &str) -> Result<()> {
        let l = self.local.as_ref().context("not the platform's own API")?;
        let token = format!("{user}-{}", uuid::Uuid::new_v4().simple());
        l.api.add_token(&token, kubeapi::UserInfo::admin(user));
        l.api
            .write_kubeconfig_with_token(path, &token)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Stops (`frozen`) or resumes answering `user` on the platform's API, as a partition between
    /// that client and the server looks to it (`KubeApi::freeze_user`). An error on a real
    /// cluster's API, which has no such switch.
    pub fn freeze_user(&self, user: &str, frozen: bool) -> Result<()> {
        let l = self.local.as_ref().context("not the platform's own API: it cannot be frozen")?;
        match frozen {
            true => l.api.freeze_user(user),
            false => l.api.unfreeze_user(user),
        }
        Ok(())
    }

    /// Stops the platform's API server (nothing for a real cluster).
    pub async fn shutdown(&mut self) {
        if let Some(l) = self.local.take() {
            l.api.shutdown().await;
        }
    }

    /// Moves the platform's API server (if any) out, for shutting it down elsewhere.
    pub fn take_local(&mut self) -> KubeEnv {
        KubeEnv {
            kubeconfig: self.kubeconfig.clone(),
            client: self.client.clone(),
            local: self.local.take(),
        }
    }

    /// Runs `kubectl` against this API; stdout, or an error with stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        kubectl(&self.kubeconfig, args)
    }
}

/// A client for a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    kube::Client::try_from(cfg).context("building the Kubernetes client")
}

/// The API server's host and port in a kubeconfig file's current context.
pub async fn server_of(kubeconfig: &Path) -> Result<(String, u16)> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    let url = cfg.cluster_url;
    let host = url.host().context("API server URL without a host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_u16().unwrap_or(if url.scheme_str() == Some("http") { 80 } else { 443 });
    Ok((host, port))
}

/// `kubectl --kubeconfig <k> <args>` (blocking).
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running kubectl (is /usr/bin/kubectl installed?)")?;
    if !out.status.success() {
        bail!("kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The CRD manifests of `crds/` (as `kubectl apply -f crds/` would read them).
pub fn crd_manifests() -> Result<Vec<CustomResourceDefinition>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
        out.push(crd);
    }
    if out.len() != 2 {
        bail!("expected 2 CRDs in {}, found {}", dir.display(), out.len());
    }
    Ok(out)
}

/// Applies the CRDs (server-side apply) and waits until both kinds can be listed.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    for crd in crd_manifests()? {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(&name, &pp, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
    }
    let pools: Api<enipool_crds::ENIPool> = Api::all(client.clone());
    let policies: Api<enipool_crds::ENIPoolPolicy> = Api::all(client.clone());
    super::wait::poll("the enipool.io CRDs to be served", Duration::from_secs(30), || async {
        pools.list(&Default::default()).await?;
        policies.list(&Default::default()).await?;
        Ok(())
    })
    .await
}

/// Creates the namespaces the platform uses if they are missing.
pub async fn ensure_namespaces(client: &kube::Client, names: &[&str]) -> Result<()> {
    for n in names {
        ensure_namespace(client, n).await?;
    }
    Ok(())
}

/// Creates namespace `name` if it is missing; true when this call created it (so only then is it
/// this run's to delete).
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<bool> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        return Ok(false);
    }
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// Applies an ENIPoolPolicy (server-side apply, forced: the runner owns the policy).
pub async fn apply_policy(
    client: &kube::Client,
    name: &str,
    spec: &enipool_crds::ENIPoolPolicySpec,
) -> Result<()> {
    let api: Api<enipool_crds::ENIPoolPolicy> = Api::all(client.clone());
    let obj = serde_json::json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPoolPolicy",
        "metadata": {"name": name}, "spec": spec,
    });
    api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&obj))
        .await
        .with_context(|| format!("applying ENIPoolPolicy {name}"))?;
    Ok(())
}

/// The YAML of an ENIPoolPolicy manifest, as a GitOps repository would hold it.
pub fn policy_manifest(name: &str, spec: &enipool_crds::ENIPoolPolicySpec) -> Result<String> {
    let obj = serde_json::json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPoolPolicy",
        "metadata": {"name": name}, "spec": spec,
    });
    Ok(serde_saphyr::to_string(&obj)?)
}
