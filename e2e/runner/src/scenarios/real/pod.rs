//! `pod-gets-vpc-ip`: a short-lived Pod pinned to a node with a Ready pool runs, gets an address
//! of that node's pool that EC2 has assigned to one of the node's ENIs, is deleted, and the
//! agent's in-use count drops back. The Pod is deleted on every exit path.

use super::audit::pod_ip;
use super::observe::{describe_enis, filter};
use super::RealEnv;
use anyhow::{bail, ensure, Context, Result};
/// Label on the Pod: the run it belongs to (find leftovers with `-l enipool-e2e/run`), the same
/// label the platform's runs put on their Nodes and Pods.
pub use cluster::external::RUN_LABEL;
use cluster::{wait, Cluster};
use enipool_crds::ENIPool;
use k8s_openapi::api::core::v1::{Node, Pod, PodStatus};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Image of the Pod unless `ENIPOOL_E2E_POD_IMAGE` names another (a mirror, for air-gapped
/// clusters).
pub const DEFAULT_IMAGE: &str = "registry.k8s.io/pause:3.10";
const START: Duration = Duration::from_secs(180);
/// Graceful deletion; pause stops at once on SIGTERM.
const GONE: Duration = Duration::from_secs(120);
/// The agent publishes its counts after a short debounce (1 s in the chart).
const COUNTED: Duration = Duration::from_secs(60);
/// How long EC2's describes may lag behind an assign (seconds on AWS).
const DESCRIBED: Duration = Duration::from_secs(30);

/// The Pod's namespace, image and run id.
#[derive(Debug, Clone)]
pub struct PodOpts {
    /// Namespace (`ENIPOOL_E2E_POD_NAMESPACE`, default `default`; must exist).
    pub namespace: String,
    /// Image (`ENIPOOL_E2E_POD_IMAGE`, default [`DEFAULT_IMAGE`]).
    pub image: String,
    /// Value of [`RUN_LABEL`] and suffix of the Pod's name.
    pub run_id: String,
}

impl PodOpts {
    /// From the environment, with a fresh run id.
    pub fn from_env() -> PodOpts {
        let var =
            |k: &str, d: &str| std::env::var(k).ok().filter(|v| !v.is_empty()).unwrap_or(d.into());
        PodOpts {
            namespace: var("ENIPOOL_E2E_POD_NAMESPACE", "default"),
            image: var("ENIPOOL_E2E_POD_IMAGE", DEFAULT_IMAGE),
            run_id: uuid::Uuid::new_v4().simple().to_string()[..10].to_string(),
        }
    }
}

/// Who runs the Pod once it exists.
#[derive(Clone, Copy)]
pub enum Kubelet<'a> {
    /// The cluster's own kubelet.
    Cluster,
    /// The test platform's kubelet (sandbox netns, CNI ADD/DEL through libcni).
    Platform(&'a Cluster),
}

/// The whole check; the Pod is gone when it returns.
pub async fn check(env: &RealEnv, opts: &PodOpts, kubelet: Kubelet<'_>) -> Result<()> {
    let pool = pick_pool(env).await?;
    let api: Api<Pod> = Api::namespaced(env.kube.clone(), &opts.namespace);
    let name = format!("enipool-e2e-vpc-ip-{}", opts.run_id);
    api.create(&PostParams::default(), &manifest(&name, opts, &pool.spec.node_name)?)
        .await
        .with_context(|| format!("creating Pod {}/{name}", opts.namespace))?;
    let mut guard = Guard { api: api.clone(), name: name.clone(), armed: true };
    let r = run(env, &api, &name, &pool, kubelet).await;
    let r = match r {
        Ok(()) => Ok(()),
        Err(e) => match delete_and_wait(kubelet, &api, &name).await {
            Ok(()) => Err(e),
            Err(d) => return Err(e.context(format!("and deleting Pod {name} failed too: {d:#}"))),
        },
    };
    guard.armed = false;
    r
}

/// Runs, checks and deletes the Pod.
async fn run(
    env: &RealEnv,
    api: &Api<Pod>,
    name: &str,
    pool: &ENIPool,
    kubelet: Kubelet<'_>,
) -> Result<()> {
    let node = pool.spec.node_name.as_str();
    let agent = pool.status.as_ref().is_some_and(|s| s.agent.is_some());
    if let Kubelet::Platform(c) = kubelet {
        c.run_existing_pod(name).await.context("the platform's kubelet running the Pod")?;
    }
    let ip = wait_running(api, name).await?;
    println!("    pod {name} on {node}: {ip}");
    let now = Api::<ENIPool>::all(env.kube.clone()).get(node).await?;
    let recorded = super::super::eni_of(&now, ip)
        .with_context(|| format!("pod IP {ip} is not an address of ENIPool {node}"))?;
    // EC2's describes are eventually consistent, and the operator publishes the addresses an
    // assign returned before a describe shows them: the pod can run on an address EC2 assigned
    // that its describe does not list yet.
    let what = format!("EC2's describe to show {ip} on {}'s ENIs", now.spec.instance_id);
    let holder = wait::poll(&what, DESCRIBED, || async {
        let on_instance = filter("attachment.instance-id", [now.spec.instance_id.clone()]);
        let enis = describe_enis(&env.ec2, vec![on_instance]).await?;
        let holder = enis.values().find(|e| {
            e.primary_ip != Some(ip)
                && (e.ips.contains(&ip) || e.prefixes.iter().any(|p| p.contains(&ip)))
        });
        holder.map(|h| h.id.clone()).with_context(|| {
            format!("EC2 has {ip} on none of {}'s ENIs {:?}", now.spec.instance_id, enis.keys())
        })
    })
    .await?;
    ensure!(
        holder == recorded.id,
        "EC2 has {ip} on {holder}, ENIPool {node} records it on {}",
        recorded.id
    );
    // The agent's count against the API's pods on the node (ours included, then not): relative
    // to what runs now rather than to a count read before, which may predate the agent's last
    // publish.
    if agent {
        in_use(env, node, "the agent counting the Pod", |n, pods| n >= pods).await?;
    }
    delete_and_wait(kubelet, api, name).await?;
    if agent {
        in_use(env, node, "the in-use count dropping back", |n, pods| n <= pods).await?;
    }
    Ok(())
}

/// A pool whose node can run the Pod (see [`score`]): untainted nodes first, then the most free
/// addresses.
async fn pick_pool(env: &RealEnv) -> Result<ENIPool> {
    let pools = env.pools().await?;
    let nodes = Api::<Node>::all(env.kube.clone()).list(&ListParams::default()).await?.items;
    let mut why = Vec::new();
    let mut best: Option<((bool, i32), ENIPool)> = None;
    for p in pools {
        let node = nodes.iter().find(|n| n.metadata.name.as_deref() == Some(&p.spec.node_name));
        match score(&p, node) {
            Err(reason) => why.push(format!("{}: {reason}", p.spec.node_name)),
            Ok(s) if best.as_ref().is_none_or(|(b, _)| s > *b) => best = Some((s, p)),
            Ok(_) => {}
        }
    }
    match best {
        Some((_, p)) => Ok(p),
        None => bail!(
            "no node can run the Pod: {}",
            if why.is_empty() { "no ENIPools".into() } else { why.join("; ") }
        ),
    }
}

/// Whether a pool's node can take the Pod (pure): its pool Ready, reported by its agent, with a
/// free address, its Node Ready and schedulable; else why not. The score is (untainted, free
/// addresses): a tainted node (the platform's nodes on a shared API, a dedicated pool) is only
/// used when no other one can take the Pod, which tolerates every taint.
fn score(p: &ENIPool, node: Option<&Node>) -> Result<(bool, i32), String> {
    let Some(st) = p.status.as_ref() else { return Err("no status yet".into()) };
    let ready = st.conditions.iter().find(|c| c.type_ == enipool_crds::conditions::READY);
    if ready.is_none_or(|c| c.status != "True") {
        return Err("ENIPool not Ready".into());
    }
    if st.agent.is_none() {
        return Err("no agent report".into());
    }
    let free = st.summary.as_ref().map(|s| s.available);
    if free == Some(0) {
        return Err("no free address".into());
    }
    let Some(node) = node else { return Err("no Node".into()) };
    let ns = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    if !ns.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")) {
        return Err("Node not Ready".into());
    }
    let spec = node.spec.as_ref();
    if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        return Err("Node unschedulable".into());
    }
    let taints = spec.and_then(|s| s.taints.as_ref());
    let tainted = taints.is_some_and(|t| t.iter().any(|t| t.effect != "PreferNoSchedule"));
    Ok((!tainted, free.unwrap_or(0)))
}

/// The Pod: pinned with nodeName (no scheduler; tolerating every taint keeps a NoExecute taint
/// from evicting it), no service account token, restricted-profile security context (so
/// namespaces enforcing Pod Security admit it), labelled with the run.
fn manifest(name: &str, opts: &PodOpts, node: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": opts.namespace, "labels": {
            RUN_LABEL: opts.run_id, "app.kubernetes.io/name": "enipool-e2e"}},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65535,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "pause", "image": opts.image,
                            "securityContext": {"allowPrivilegeEscalation": false,
                                                "capabilities": {"drop": ["ALL"]}}}],
        },
    }))?)
}

/// Waits for phase Running with a podIP; fails at once when the Pod fails or goes.
async fn wait_running(api: &Api<Pod>, name: &str) -> Result<Ipv4Addr> {
    let started = Instant::now();
    loop {
        let pod = api.get_opt(name).await?.with_context(|| format!("Pod {name} disappeared"))?;
        let st = pod.status.unwrap_or_default();
        let ip = st.pod_ip.as_deref().and_then(|s| s.parse::<Ipv4Addr>().ok());
        match (st.phase.as_deref(), ip) {
            (Some("Running"), Some(ip)) => return Ok(ip),
            (Some(p @ ("Failed" | "Succeeded")), _) => bail!("Pod {name} {p}: {}", describe(&st)),
            _ if started.elapsed() > START => bail!(
                "Pod {name} not Running with an IPv4 podIP after {}s: {}",
                START.as_secs(),
                describe(&st)
            ),
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Phase, reasons and messages of a Pod status, for failure reports.
fn describe(st: &PodStatus) -> String {
    let mut parts = vec![format!("phase {}", st.phase.as_deref().unwrap_or("?"))];
    parts.extend(st.reason.iter().chain(&st.message).cloned());
    for c in st.conditions.iter().flatten().filter(|c| c.status != "True") {
        parts.push(format!("{} {}", c.type_, c.message.as_deref().unwrap_or("")));
    }
    for cs in st.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            parts.push(format!(
                "{}: {} {}",
                cs.name,
                w.reason.as_deref().unwrap_or(""),
                w.message.as_deref().unwrap_or("")
            ));
        }
    }
    parts.join("; ")
}

/// Deletes the Pod (through the platform's kubelet when it runs it: CNI DEL, then the object) and
/// waits until the object is gone. Already gone is fine.
async fn delete_and_wait(kubelet: Kubelet<'_>, api: &Api<Pod>, name: &str) -> Result<()> {
    let r = match kubelet {
        Kubelet::Platform(c) if c.pod(name).is_ok() => c.delete_pod(name).await,
        _ => api.delete(name, &DeleteParams::default()).await.map(|_| ()).map_err(Into::into),
    };
    if let Err(e) = r {
        let gone = e.chain().any(|c| {
            matches!(c.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 404)
        });
        if !gone {
            return Err(e.context(format!("deleting Pod {name}")));
        }
    }
    wait::until(&format!("Pod {name} gone"), GONE, Duration::from_secs(1), || async {
        match api.get_opt(name).await? {
            None => Ok(()),
            Some(p) => bail!("still there, phase {:?}", p.status.and_then(|s| s.phase)),
        }
    })
    .await
}

/// Waits until `ok(inUse, pods)` holds for the agent's reported in-use count of `node` and the
/// number of the node's pods that hold pool addresses (per the API).
async fn in_use(
    env: &RealEnv,
    node: &str,
    what: &str,
    ok: impl Fn(i64, i64) -> bool,
) -> Result<()> {
    let pools: Api<ENIPool> = Api::all(env.kube.clone());
    let pods: Api<Pod> = Api::all(env.kube.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let nodes: BTreeSet<String> = [node.to_string()].into();
    let (pools, pods, on_node, nodes, ok) = (&pools, &pods, &on_node, &nodes, &ok);
    wait::poll(&format!("{what} (ENIPool {node} status.agent.inUse)"), COUNTED, || async move {
        let p = pools.get(node).await?;
        let n = p
            .status
            .and_then(|s| s.agent)
            .map(|a| i64::from(a.in_use))
            .context("no agent report")?;
        let listed = pods.list(on_node).await?.items;
        let holding = listed.iter().filter(|p| pod_ip(p, nodes).is_some()).count() as i64;
        if ok(n, holding) {
            Ok(())
        } else {
            bail!("inUse {n}, pods holding pool addresses on the node {holding}")
        }
    })
    .await
}

/// Deletes the Pod if the check is dropped unfinished (the runner's timeout drops it).
struct Guard {
    api: Api<Pod>,
    name: String,
    armed: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            eprintln!("deleting Pod {} (the check did not finish)", self.name);
            let (api, name) = (self.api.clone(), self.name.clone());
            h.spawn(async move { api.delete(&name, &DeleteParams::default()).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(ready: &str, agent: bool, available: i32) -> ENIPool {
        let mut status = json!({
            "conditions": [{"type": "Ready", "status": ready, "reason": "r", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "summary": {"enis": "1/3", "allocated": 10, "inUse": 0, "available": available,
                        "releasing": 0, "offered": 0, "cooling": 0, "prefixes": 0},
        });
        if agent {
            status["agent"] = json!({"epoch": 1});
        }
        serde_json::from_value(json!({
            "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool", "metadata": {"name": "n1"},
            "spec": {"nodeName": "n1", "instanceID": "i-0123456789abcdef0"}, "status": status,
        }))
        .unwrap()
    }

    fn node(ready: &str, spec: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}))
        .unwrap()
    }

    #[test]
    fn which_nodes_can_take_the_pod() {
        let ok = node("True", json!({}));
        let soft = node("True", json!({"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}));
        let hard = node("True", json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}));
        assert_eq!(score(&pool("True", true, 5), Some(&ok)), Ok((true, 5)));
        assert_eq!(score(&pool("True", true, 5), Some(&soft)), Ok((true, 5)));
        // Tainted ranks below any untainted node, however many addresses it has free.
        assert_eq!(score(&pool("True", true, 9), Some(&hard)), Ok((false, 9)));
        assert!(
            score(&pool("True", true, 9), Some(&hard)) < score(&pool("True", true, 1), Some(&ok))
        );
        let cordoned = node("True", json!({"unschedulable": true}));
        let mut bare = pool("True", true, 5);
        bare.status = None;
        for (want, p, n) in [
            ("no status yet", bare, Some(&ok)),
            ("ENIPool not Ready", pool("False", true, 5), Some(&ok)),
            ("no agent report", pool("True", false, 5), Some(&ok)),
            ("no free address", pool("True", true, 0), Some(&ok)),
            ("no Node", pool("True", true, 5), None),
            ("Node not Ready", pool("True", true, 5), Some(&node("Unknown", json!({})))),
            ("Node unschedulable", pool("True", true, 5), Some(&cordoned)),
        ] {
            assert_eq!(score(&p, n), Err(want.to_string()));
        }
    }
}
