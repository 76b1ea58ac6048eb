//! The kubelet for pods: a Pod object bound to a node, a netns for its sandbox, CNI ADD/DEL through
//! the libcni driver (so the shim and the chained plugins run as under a real runtime), and the
//! pod IP recorded in the Pod status.

use super::{external, wait, Cluster};
use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

/// How long a sandbox waits for its node's network to become ready.
const NETWORK_READY: Duration = Duration::from_secs(90);

/// A pod the kubelet runs.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// Pod name (namespace [`Cluster::pod_namespace`]).
    pub name: String,
    /// Node it is bound to.
    pub node: String,
    pub netns: String,
    /// Sandbox (container) id of the current attempt.
    pub container_id: String,
    /// Its IP, once CNI ADD succeeded (an IPv4 cluster's).
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address, once CNI ADD succeeded in an IPv6 cluster.
    pub ipv6: Option<Ipv6Addr>,
    pub uid: String,
    /// The CRI sandbox of the current attempt, on a containerd node (also [`PodInfo::container_id`]).
    pub sandbox_id: Option<String>,
    /// Sandboxes tried so far (the CRI metadata's attempt).
    pub attempt: u32,
}

impl PodInfo {
    /// `/run/netns/<netns>`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(fabric::sh::NETNS_DIR).join(&self.netns)
    }

    /// The IP (error if ADD has not succeeded).
    pub fn ip(&self) -> Result<Ipv4Addr> {
        self.ip.with_context(|| format!("pod {} has no IP", self.name))
    }

    /// The IPv6 address (error if ADD has not succeeded, or the cluster is IPv4).
    pub fn ipv6(&self) -> Result<Ipv6Addr> {
        self.ipv6.with_context(|| format!("pod {} has no IPv6 address", self.name))
    }

    /// The address Kubernetes shows for the pod: its IPv6 one in an IPv6 cluster.
    pub fn pod_ip(&self) -> Result<IpAddr> {
        match self.ipv6 {
            Some(v6) => Ok(IpAddr::V6(v6)),
            None => self.ip().map(IpAddr::V4),
        }
    }
}

/// A runtime that takes the first config in its dir reports the network ready once there is one.
fn has_conflist(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "conflist"))
}

fn new_container_id() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

impl Cluster {
    /// Creates a pod on `node` and runs its sandbox: Pod object, netns, CNI ADD, status. On ADD
    /// failure the Pod stays Pending (as with a real kubelet) and the error is returned.
    pub async fn add_pod(&self, name: &str, node: &str) -> Result<PodInfo> {
        self.create_pod(name, node).await?;
        self.start_sandbox(name).await
    }

    /// Creates the Pod object (bound to `node`, Pending, no IP) and its sandbox netns.
    pub async fn create_pod(&self, name: &str, node: &str) -> Result<()> {
        self.node(node)?;
        let ns = self.pod_namespace();
        let api: Api<Pod> = Api::namespaced(self.kube.client.clone(), ns);
        let mut labels = serde_json::Map::new();
        labels.insert("app".into(), "enipool-e2e".into());
        labels.extend(self.names.labels());
        let mut spec = external::pod_spec_extras();
        spec["nodeName"] = node.into();
        spec["containers"] = serde_json::json!([{
            "name": "pause", "image": "registry.k8s.io/pause:3.10",
            "securityContext": external::container_security_context(),
        }]);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": spec,
        }))?;
        let created = api
            .create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating Pod {name}"))?;
        let uid = created.metadata.uid.unwrap_or_default();
        self.track_pod(name, node, uid).await
    }

    /// Starts tracking a pod bound to `node`, with its sandbox netns unless the node's runtime
    /// (containerd) makes it.
    async fn track_pod(&self, name: &str, node: &str, uid: String) -> Result<()> {
        let suffix = format!("p-{name}");
        let netns = match self.node(node)?.containerd {
            Some(_) => format!("{}-{suffix}", self.fabric().prefix()),
            None => {
                let f = self.fabric().clone();
                wait::blocking(move || f.add_netns(&suffix)).await?
            }
        };
        let info = PodInfo {
            name: name.to_string(),
            node: node.to_string(),
            netns,
            container_id: new_container_id(),
            ip: None,
            ipv6: None,
            uid,
            sandbox_id: None,
            attempt: 0,
        };
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), info);
        Ok(())
    }

    /// Runs a Pod someone else created in [`Cluster::pod_namespace`] and bound (`spec.nodeName`) to one of
    /// this platform's nodes, as a real kubelet runs the Pods it finds: sandbox netns, CNI ADD,
    /// status. The platform's real-cluster stand-in ([`Cluster::delete_pod`] tears it down).
    pub async fn run_existing_pod(&self, name: &str) -> Result<PodInfo> {
        let api: Api<Pod> = Api::namespaced(self.kube.client.clone(), self.pod_namespace());
        let pod = api.get(name).await.with_context(|| format!("reading Pod {name}"))?;
        let node = pod
            .spec
            .and_then(|s| s.node_name)
            .with_context(|| format!("Pod {name} is not bound to a node"))?;
        self.track_pod(name, &node, pod.metadata.uid.unwrap_or_default()).await?;
        self.start_sandbox(name).await
    }

    /// CNI ADD for a created pod (again, after a failure: like the kubelet, DEL the failed
    /// sandbox first, then ADD a new one). Records the IP in the Pod status.
    pub async fn start_sandbox(&self, name: &str) -> Result<PodInfo> {
        let mut p = self.pod(name)?;
        let n = self.node(&p.node)?;
        if let Some(rt) = &n.containerd {
            let res = self.run_sandbox_cri(&mut p, &n, rt).await;
            self.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), p.clone());
            res.with_context(|| format!("sandbox of pod {name} on {}", n.name))?;
            self.record_running(name, &p, &n).await?;
            return Ok(p);
        }
        let driver = n.driver.clone();
        // The kubelet starts no sandbox while the runtime reports the network not ready (no CNI
        // config in its config dir), and tries again until one appears.
        let conf = driver.conf_dir.join(super::node::CONFLIST_NAME);
        let what = format!("{} in {}'s CNI config dir (network ready)", conf.display(), n.name);
        let any_config = driver.network == fabric::cnidriver::RUNTIME_CHOICE;
        wait::poll(&what, NETWORK_READY, || async {
            let ready = match any_config {
                true => has_conflist(&driver.conf_dir),
                false => conf.exists(),
            };
            anyhow::ensure!(ready, "container runtime network not ready: no CNI config");
            Ok(())
        })
        .await?;
        let (cid, path, pname, uid) =
            (p.container_id.clone(), p.netns_path(), p.name.clone(), p.uid.clone());
        let ns = self.pod_namespace().to_string();
        let res = wait::blocking(move || {
            let args = [
                ("K8S_POD_NAMESPACE", ns.as_str()),
                ("K8S_POD_NAME", pname.as_str()),
                ("K8S_POD_INFRA_CONTAINER_ID", cid.as_str()),
                ("K8S_POD_UID", uid.as_str()),
            ];
            match driver.add(&cid, &path, "eth0", &args, None) {
                Ok(v) => Ok(v),
                Err(e) => {
                    // The kubelet tears a failed sandbox down before trying again.
                    let _ = driver.del(&cid, &path, "eth0", &args, None);
                    Err(e)
                }
            }
        })
        .await;
        let result = match res {
            Ok(v) => v,
            Err(e) => {
                p.container_id = new_container_id();
                self.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), p);
                return Err(e).with_context(|| format!("sandbox of pod {name} on {}", n.name));
            }
        };
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse::<IpAddr>().ok())
            .with_context(|| format!("CNI ADD result without an address: {result}"))?;
        match ip {
            IpAddr::V4(v4) => p.ip = Some(v4),
            IpAddr::V6(v6) => p.ipv6 = Some(v6),
        }
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), p.clone());
        self.record_running(name, &p, &n).await?;
        Ok(p)
    }

    /// The Pod status a kubelet writes once the sandbox has its IP.
    async fn record_running(&self, name: &str, p: &PodInfo, n: &super::NodeInfo) -> Result<()> {
        let ip = p.pod_ip()?;
        let api: Api<Pod> = Api::namespaced(self.kube.client.clone(), self.pod_namespace());
        let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let status = serde_json::json!({"status": {
            "phase": "Running",
            "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
            "hostIP": n.primary_ip.to_string(), "hostIPs": [{"ip": n.primary_ip.to_string()}],
            "startTime": now,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("recording the IP of pod {name}"))?;
        Ok(())
    }

    /// A pod the kubelet knows.
    pub fn pod(&self, name: &str) -> Result<PodInfo> {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .with_context(|| format!("no pod {name}"))
    }

    /// Deletes a pod: CNI DEL, sandbox netns gone, Pod object deleted.
    pub async fn delete_pod(&self, name: &str) -> Result<()> {
        let p = self.pod(name)?;
        let n = self.node(&p.node)?;
        match &n.containerd {
            Some(rt) => self.end_sandbox_cri(&p, rt).await?,
            None => self.del_sandbox_libcni(&p, &n).await?,
        }
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        let api: Api<Pod> = Api::namespaced(self.kube.client.clone(), self.pod_namespace());
        api.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
            .await
            .with_context(|| format!("deleting Pod {name}"))?;
        Ok(())
    }

    /// CNI DEL through libcni and the sandbox netns gone.
    async fn del_sandbox_libcni(&self, p: &PodInfo, n: &super::NodeInfo) -> Result<()> {
        let name = &p.name;
        let driver = n.driver.clone();
        let (cid, path, pname, uid) =
            (p.container_id.clone(), p.netns_path(), p.name.clone(), p.uid.clone());
        let ns = self.pod_namespace().to_string();
        wait::blocking(move || {
            let args = [
                ("K8S_POD_NAMESPACE", ns.as_str()),
                ("K8S_POD_NAME", pname.as_str()),
                ("K8S_POD_INFRA_CONTAINER_ID", cid.as_str()),
                ("K8S_POD_UID", uid.as_str()),
            ];
            driver.del(&cid, &path, "eth0", &args, None)
        })
        .await
        .with_context(|| format!("CNI DEL of pod {name}"))?;
        let f = self.fabric().clone();
        let ns = p.netns.clone();
        wait::blocking(move || f.remove_netns(&ns)).await
    }

    /// Forgets the pods of a node that is gone (their netns are removed with the fabric's).
    pub(crate) fn forget_pods_of(&self, node: &str) {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, p| p.node != node);
    }

    /// Pings `to` from a pod, over either family (3 tries, 1 s each).
    pub async fn ping_from_pod(&self, pod: &str, to: impl Into<IpAddr>) -> Result<()> {
        let to = to.into();
        let ns = self.pod(pod)?.netns;
        let ping = move || match to {
            IpAddr::V4(v4) => fabric::ping(&ns, v4),
            IpAddr::V6(v6) => fabric::ping6(&ns, v6),
        };
        let ok = wait::blocking(move || (0..3).any(|_| ping())).await;
        if !ok {
            bail!("pod {pod} cannot ping {to}");
        }
        Ok(())
    }
}
