//! Running against an external Kubernetes API (`--kubeconfig`): a real cluster's API server (kind,
//! k3s, a dev cluster) stands in for the platform's own, while EC2 stays simulated and nodes stay
//! network namespaces on this machine.
//!
//! Such an API is shared: with other runs (on this machine or others), with leftovers of runs that
//! died, and with the cluster's own Nodes. So a run
//! - names everything it creates after its run id `e2e-<prefix>-<4 hex>` ([`KubeNames`]): Nodes
//!   (and so their ENIPools), its namespace (Pods and the operator's Lease live there) and its
//!   ENIPoolPolicy;
//! - labels its Nodes and Pods `enipool-e2e/run=<run id>`; its policy and its operator
//!   (`--node-selector`) select only those Nodes, so the cluster's own Nodes (a real node's aws
//!   providerID looks just like ours) get no pool and the run's pools get no other policy;
//! - creates Pods a real apiserver admits and keeps: no service account token, tolerations of every
//!   taint (the node lifecycle controller marks kubelet-less Nodes NotReady after ~40 s and taints
//!   them NoExecute; the runner posts Ready once and no heartbeats, and neither the operator nor
//!   the agent reads Node readiness), and a restricted security context;
//! - removes all of it at the end ([`ExternalRun::drain`] while the operator still runs, so its
//!   finalizer finishes the pools, then [`ExternalRun::sweep_blocking`] on every exit path),
//!   reporting loudly, with kubectl commands, whatever it could not remove. The CRDs stay
//!   installed: other runs and the cluster's own enipool use them.
//!
//! Not for EKS (or any cluster running the AWS cloud provider): its node lifecycle controller
//! deletes Nodes whose providerID names an instance the real EC2 does not have, which ours never
//! are. Nor for a cluster whose own enipool operator manages every Node (it would try to provision
//! ours in the real EC2).

use super::kube::client_for;
use super::{wait, Cluster, LEASE_NAMESPACE, POD_NAMESPACE};
use anyhow::{Context, Result};
use enipool_crds::{ENIPool, ENIPoolPolicy, ENIPoolPolicySpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Label on the Nodes and Pods of a run on an external API; its value is the run id.
pub const RUN_LABEL: &str = "enipool-e2e/run";
/// How long the operator gets to finalize the run's pools at the end before their finalizers are
/// stripped.
const DRAIN_WAIT: Duration = Duration::from_secs(30);
/// How long the sweep waits for what a real apiserver deletes asynchronously (namespaces).
const SWEEP_WAIT: Duration = Duration::from_secs(45);
/// Bound of every API call of the sweep, so an unreachable API cannot hang a teardown.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a run names in the Kubernetes API: the fixed names of the chart's defaults on the
/// platform's own API, per-run names on an external one.
#[derive(Debug, Clone)]
pub struct KubeNames {
    /// Run id (`e2e-<prefix>-<4 hex>`) on an external API; `None` on the platform's own.
    pub run: Option<String>,
    /// Namespace of the Pods the kubelet runs.
    pub pod_namespace: String,
    /// The ENIPoolPolicy of the run.
    pub policy: String,
    /// Namespace of the operator's Lease.
    pub lease_namespace: String,
    /// Name of the operator's Lease.
    pub lease_name: String,
}

impl KubeNames {
    /// The platform's own API: `default` Pods, the `default` policy, kube-system's Lease.
    pub fn local() -> KubeNames {
        KubeNames {
            run: None,
            pod_namespace: POD_NAMESPACE.into(),
            policy: "default".into(),
            lease_namespace: LEASE_NAMESPACE.into(),
            lease_name: "enipool-operator".into(),
        }
    }

    /// An external API: everything named after `e2e-<prefix>-<4 random hex>` (the fabric prefix
    /// alone is unique on this machine only; the dev cluster may be shared with others).
    pub fn external(prefix: &str) -> KubeNames {
        let salt = &uuid::Uuid::new_v4().simple().to_string()[..4];
        let run = format!("e2e-{prefix}-{salt}");
        KubeNames {
            pod_namespace: run.clone(),
            policy: run.clone(),
            lease_namespace: run.clone(),
            lease_name: run.clone(),
            run: Some(run),
        }
    }

    /// Name of the Node whose primary IP is `ip` (EC2's private DNS name on the platform's API).
    pub fn node_name(&self, ip: Ipv4Addr, region: &str) -> String {
        let dashed = ip.to_string().replace('.', "-");
        match &self.run {
            Some(run) => format!("{run}-ip-{dashed}"),
            None => format!("ip-{dashed}.{region}.compute.internal"),
        }
    }

    /// The run's label selector (`enipool-e2e/run=<run id>`), on an external API.
    pub fn selector(&self) -> Option<String> {
        self.run.as_ref().map(|r| format!("{RUN_LABEL}={r}"))
    }

    /// Labels the run puts on its Nodes and Pods.
    pub fn labels(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if let Some(r) = &self.run {
            m.insert(RUN_LABEL.into(), r.clone().into());
        }
        m
    }

    /// Taints of the run's Nodes: on an external API one that keeps the cluster's DaemonSets off
    /// them (a DaemonSet Pod bound to a node is demand the agent reports, unless it uses the host
    /// network); the kubelet's Pods tolerate every taint. DaemonSets that tolerate everything still
    /// come: kind's and k3s's own are host-network.
    pub fn node_taints(&self) -> serde_json::Value {
        match &self.run {
            Some(r) => serde_json::json!([{"key": RUN_LABEL, "value": r, "effect": "NoSchedule"}]),
            None => serde_json::json!([]),
        }
    }

    /// True for the name of a Node (or ENIPool, or what an Event is about) of this run.
    fn is_ours(&self, name: &str) -> bool {
        self.run.as_ref().is_some_and(|r| name.starts_with(&format!("{r}-")) || name == r)
    }

    /// The policy of the run on an external API: it selects the run's Nodes only and wins over any
    /// policy of the cluster that selects every Node (the highest priority the CRD allows).
    pub fn scope_policy(&self, spec: &mut ENIPoolPolicySpec) -> Result<()> {
        let Some(run) = &self.run else { return Ok(()) };
        spec.node_selector =
            Some(serde_json::from_value(serde_json::json!({"matchLabels": {RUN_LABEL: run}}))?);
        if spec.priority == 0 {
            spec.priority = 1000;
        }
        Ok(())
    }
}

/// What a run created in an external API, and its removal.
pub struct ExternalRun {
    kubeconfig: PathBuf,
    names: KubeNames,
    /// Namespaces this run created (only those are deleted).
    created_namespaces: Mutex<Vec<String>>,
    /// What the last sweep could not remove.
    leftovers: Mutex<Vec<String>>,
    swept: Mutex<bool>,
}

impl ExternalRun {
    /// A run on the API of `kubeconfig` (nothing is created yet).
    pub fn new(kubeconfig: &Path, names: KubeNames) -> ExternalRun {
        ExternalRun {
            kubeconfig: kubeconfig.to_path_buf(),
            names,
            created_namespaces: Mutex::new(Vec::new()),
            leftovers: Mutex::new(Vec::new()),
            swept: Mutex::new(false),
        }
    }

    /// Namespaces (created when missing, remembered for deletion) and the `default`
    /// ServiceAccount of the pod namespace, which the ServiceAccount admission plugin wants to
    /// exist before it admits a Pod (the cluster's controller makes it, a moment too late).
    pub async fn prepare(&self, client: &kube::Client) -> Result<()> {
        let n = &self.names;
        for ns in [&n.pod_namespace, &n.lease_namespace] {
            if super::kube::ensure_namespace(client, ns).await? {
                self.created_namespaces.lock().unwrap_or_else(|e| e.into_inner()).push(ns.clone());
            }
        }
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &n.pod_namespace);
        let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"},
        }))?;
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e).context("creating the default ServiceAccount of the pod namespace"),
        }
    }

    /// The end of a run while the operator still runs: agents stop, the instances terminate (as a
    /// scale-in would), Pods and Nodes go, and the operator finalizes the pools (bounded wait).
    pub async fn drain(&self, c: &Cluster) {
        let nodes = c.nodes();
        let core = c.core.clone();
        let agents: Vec<String> = nodes.iter().map(|n| n.agent.clone()).collect();
        wait::blocking(move || agents.iter().for_each(|a| core.procs.stop(a))).await;
        let ids: Vec<String> = nodes.iter().map(|n| n.instance_id.clone()).collect();
        if let Some(sim) = c.sim.clone() {
            let ids2 = ids.clone();
            if let Err(error) = wait::blocking(move || sim.terminate_instances(&ids2)).await {
                tracing::warn!(%error, "terminating the run's instances");
            }
            // The finalizer waits for the instance to be gone; deleting the Nodes after that makes
            // its first pass the last.
            let _ =
                wait::poll("the run's instances terminated", Duration::from_secs(15), || async {
                    let st = c.sim().snapshot();
                    let alive = ids.iter().filter(|id| {
                        st.instances
                            .get(*id)
                            .is_some_and(|i| i.state != ec2sim::state::InstanceState::Terminated)
                    });
                    anyhow::ensure!(alive.count() == 0, "instances still shutting down");
                    Ok(())
                })
                .await;
        }
        let client = c.client();
        if let Err(error) = delete_pods_and_nodes(client, &self.names).await {
            tracing::warn!(error = format!("{error:#}"), "deleting the run's Pods and Nodes");
        }
        let r = wait::poll("the operator to finalize the run's ENIPools", DRAIN_WAIT, || async {
            let left = self.our_pools(client).await?;
            anyhow::ensure!(left.is_empty(), "still there: {left:?}");
            Ok(())
        })
        .await;
        if let Err(e) = r {
            eprintln!("enipool-e2e: {e:#}; their finalizers will be removed");
        }
    }

    /// Names of the run's ENIPools.
    async fn our_pools(&self, client: &kube::Client) -> Result<Vec<String>> {
        let pools: Api<ENIPool> = Api::all(client.clone());
        let list = pools.list_metadata(&ListParams::default()).await?;
        Ok(list.items.iter().map(|p| p.name_any()).filter(|n| self.names.is_ours(n)).collect())
    }

    /// Removes whatever of the run is still in the API (finalizers of the pools stripped: the
    /// operator is stopped by now) and checks that nothing is left; prints what is, with the
    /// commands that remove it. Synchronous (own thread, own runtime and client), so `Drop` and the
    /// signal handler can use it; idempotent.
    pub fn sweep_blocking(&self) {
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        if *swept {
            return;
        }
        *swept = true;
        let (kubeconfig, names) = (self.kubeconfig.clone(), self.names.clone());
        let namespaces = self.created_namespaces.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let left = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match rt {
                Ok(rt) => rt.block_on(sweep(&kubeconfig, &names, &namespaces)),
                Err(e) => vec![format!("(no runtime for the clean-up: {e})")],
            }
        })
        .join()
        .unwrap_or_else(|_| vec!["(the clean-up panicked)".into()]);
        if !left.is_empty() {
            eprintln!("{}", self.report(&left));
        }
        *self.leftovers.lock().unwrap_or_else(|e| e.into_inner()) = left;
    }

    /// What the sweep could not remove (empty: the API holds nothing of this run).
    pub fn leftovers(&self) -> Vec<String> {
        self.leftovers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn report(&self, left: &[String]) -> String {
        let n = &self.names;
        let run = n.run.as_deref().unwrap_or_default();
        let k = format!("kubectl --kubeconfig {}", self.kubeconfig.display());
        let mut out = format!(
            "!!!!! enipool-e2e: run {run} LEFT OBJECTS in the cluster of {}:\n",
            self.kubeconfig.display()
        );
        for l in left {
            out.push_str(&format!("!!!!!   {l}\n"));
        }
        out.push_str(&format!(
            "!!!!! remove them with:\n\
             {k} delete pods -n {ns} -l {RUN_LABEL}={run} --grace-period=0 --force\n\
             {k} delete nodes -l {RUN_LABEL}={run}\n\
             for p in $({k} get enipools -o name | grep '/{run}-'); do {k} patch $p --type=merge \
             -p '{{\"metadata\":{{\"finalizers\":null}}}}'; {k} delete $p; done\n\
             {k} delete enipoolpolicy {policy} --ignore-not-found\n\
             {k} delete lease -n {lns} {lease} --ignore-not-found\n\
             {k} delete namespace {ns} --ignore-not-found",
            ns = n.pod_namespace,
            policy = n.policy,
            lns = n.lease_namespace,
            lease = n.lease_name,
        ));
        out
    }
}

/// Pods first, force-deleted (no kubelet will ever confirm a graceful deletion), then Nodes.
async fn delete_pods_and_nodes(client: &kube::Client, names: &KubeNames) -> Result<()> {
    let Some(sel) = names.selector() else { return Ok(()) };
    let lp = ListParams::default().labels(&sel);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &names.pod_namespace);
    let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    match pods.list_metadata(&lp).await {
        Ok(list) => {
            for p in list.items {
                ignore_gone(pods.delete(&p.name_any(), &now).await.map(drop))?;
            }
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {} // the namespace is gone already
        Err(e) => return Err(e.into()),
    }
    let nodes: Api<Node> = Api::all(client.clone());
    for n in nodes.list_metadata(&lp).await?.items {
        ignore_gone(nodes.delete(&n.name_any(), &DeleteParams::default()).await.map(drop))?;
    }
    Ok(())
}

fn ignore_gone(r: kube::Result<()>) -> Result<()> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        r => Ok(r?),
    }
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.with_context(|| what.to_string()),
        Err(_) => anyhow::bail!("{what}: no answer within {}s", CALL_TIMEOUT.as_secs()),
    }
}

/// Deletes everything of the run, then polls until nothing is left (or [`SWEEP_WAIT`]); returns
/// what is left, or why it could not look.
async fn sweep(kubeconfig: &Path, names: &KubeNames, namespaces: &[String]) -> Vec<String> {
    let client = match bounded("connecting", client_for(kubeconfig)).await {
        Ok(c) => c,
        Err(e) => return vec![format!("(cannot reach the API: {e:#})")],
    };
    let mut errors = Vec::new();
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            errors.push(format!("(clean-up error: {e:#})"));
        }
    };
    note(bounded("deleting Pods and Nodes", delete_pods_and_nodes(&client, names)).await);
    let pools: Api<ENIPool> = Api::all(client.clone());
    let strip = serde_json::json!({"metadata": {"finalizers": null}});
    note(
        bounded("deleting ENIPools", async {
            for p in pools.list_metadata(&ListParams::default()).await?.items {
                let name = p.name_any();
                if names.is_ours(&name) {
                    let pp = PatchParams::default();
                    ignore_gone(pools.patch(&name, &pp, &Patch::Merge(&strip)).await.map(drop))?;
                    ignore_gone(pools.delete(&name, &DeleteParams::default()).await.map(drop))?;
                }
            }
            Ok(())
        })
        .await,
    );
    let policies: Api<ENIPoolPolicy> = Api::all(client.clone());
    note(
        bounded("deleting the ENIPoolPolicy", async {
            ignore_gone(policies.delete(&names.policy, &DeleteParams::default()).await.map(drop))
        })
        .await,
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &names.lease_namespace);
    note(
        bounded("deleting the Lease", async {
            ignore_gone(leases.delete(&names.lease_name, &DeleteParams::default()).await.map(drop))
        })
        .await,
    );
    note(bounded("deleting Events", delete_events(&client, names)).await);
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        note(
            bounded("deleting the run's namespace", async {
                ignore_gone(ns_api.delete(ns, &DeleteParams::default()).await.map(drop))
            })
            .await,
        );
    }
    let started = Instant::now();
    loop {
        // Again each round: the node lifecycle controller reports a deleted Node a moment later.
        let _ = bounded("deleting Events", delete_events(&client, names)).await;
        let mut left = match bounded("checking", left_over(&client, names, namespaces)).await {
            Ok(l) => l,
            Err(e) => vec![format!("(cannot check what is left: {e:#})")],
        };
        if left.is_empty() {
            return left; // a call that failed on the way (a race with the operator) did no harm
        }
        if started.elapsed() > SWEEP_WAIT {
            left.extend(errors);
            return left;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Events about the run's objects: the operator's (about pools, in `default`, where Events about
/// cluster-scoped objects go) and the node lifecycle controller's (about Nodes). Events in the
/// run's namespace go with it.
async fn delete_events(client: &kube::Client, names: &KubeNames) -> Result<()> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    for e in our_events(&events, names).await? {
        ignore_gone(events.delete(&e, &DeleteParams::default()).await.map(drop))?;
    }
    Ok(())
}

async fn our_events(events: &Api<Event>, names: &KubeNames) -> Result<Vec<String>> {
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()).is_some_and(|n| names.is_ours(n))
        })
        .map(|e| e.name_any())
        .collect())
}

/// What of the run is still in the API.
async fn left_over(
    client: &kube::Client,
    names: &KubeNames,
    namespaces: &[String],
) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let Some(sel) = names.selector() else { return Ok(left) };
    let lp = ListParams::default().labels(&sel);
    let nodes: Api<Node> = Api::all(client.clone());
    left.extend(
        nodes.list_metadata(&lp).await?.items.iter().map(|n| format!("Node {}", n.name_any())),
    );
    let pods: Api<Pod> = Api::all(client.clone());
    left.extend(
        pods.list_metadata(&lp)
            .await?
            .items
            .iter()
            .map(|p| format!("Pod {}/{}", p.namespace().unwrap_or_default(), p.name_any())),
    );
    let pools: Api<ENIPool> = Api::all(client.clone());
    for p in pools.list_metadata(&ListParams::default()).await?.items {
        if names.is_ours(&p.name_any()) {
            left.push(format!("ENIPool {} (finalizers {:?})", p.name_any(), p.finalizers()));
        }
    }
    let policies: Api<ENIPoolPolicy> = Api::all(client.clone());
    if policies.get_metadata_opt(&names.policy).await?.is_some() {
        left.push(format!("ENIPoolPolicy {}", names.policy));
    }
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let lease_ns_gone = ns_api.get_metadata_opt(&names.lease_namespace).await?.is_none();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &names.lease_namespace);
    if !lease_ns_gone && leases.get_metadata_opt(&names.lease_name).await?.is_some() {
        left.push(format!("Lease {}/{}", names.lease_namespace, names.lease_name));
    }
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    left.extend(
        our_events(&events, names).await?.into_iter().map(|e| format!("Event default/{e}")),
    );
    for ns in namespaces {
        if let Some(n) = ns_api.get_metadata_opt(ns).await? {
            let state = if n.metadata.deletion_timestamp.is_some() { " (terminating)" } else { "" };
            left.push(format!("Namespace {ns}{state}"));
        }
    }
    Ok(left)
}

/// The pod spec fields a real apiserver needs for the kubelet's Pods (see the module docs);
/// harmless on the platform's own API.
pub fn pod_spec_extras() -> serde_json::Value {
    serde_json::json!({
        "automountServiceAccountToken": false,
        "tolerations": [{"operator": "Exists"}],
        "terminationGracePeriodSeconds": 0,
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65535,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    })
}

/// The container security context the `restricted` Pod Security level asks for.
pub fn container_security_context() -> serde_json::Value {
    serde_json::json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
}
