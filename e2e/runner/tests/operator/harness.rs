//! One simulated region (VPC, subnets, security group), one test API server with the CRDs, and
//! helpers to run operator replicas in process, join nodes and play the agent.

use cluster::Platform;
use ec2sim::{Config, Ec2Sim, RunReq, Timing};
use enipool_crds::{
    AgentStatus, ENIPool, ENIPoolPolicy, Releasable, AGENT_FIELD_MANAGER, INSTANCE_TYPE_LABEL,
    ZONE_LABEL,
};
use enipool_operator::ec2::aws::{AwsEc2, AwsEc2Config, StaticCredentials};
use enipool_operator::ec2::limiter::RateConfig;
use enipool_operator::ec2::Ec2Api;
use enipool_operator::{Operator, OperatorConfig, OperatorHandle};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use kubeapi::{KubeApi, KubeApiConfig};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CLUSTER: &str = "e2e";
pub const AZ: &str = "us-west-2a";

/// EC2 actions that change state (everything the operator calls that is not a Describe*).
pub fn is_mutating(action: &str) -> bool {
    !action.starts_with("Describe")
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,enipool_operator=info".into());
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter(filter).try_init();
}

pub struct Env {
    pub sim: Ec2Sim,
    #[allow(dead_code)] // kept alive for the test
    pub kube: KubeApi,
    pub client: Client,
    #[allow(dead_code)]
    pub vpc: String,
    /// 10.0.0.0/20.
    pub subnet: String,
    /// 10.0.16.0/28: 11 usable addresses.
    pub tiny: String,
    pub sg: String,
}

pub async fn env() -> Env {
    env_with(Timing {
        attach: Duration::ZERO,
        detach: Duration::from_millis(200),
        terminate: Duration::from_millis(200),
    })
    .await
}

pub async fn env_with(timing: Timing) -> Env {
    init_tracing();
    enipool_operator::ec2::aws::install_crypto_provider();
    let p = Platform::builder("10.0.0.0/16")
        .ec2(Config { timing, ..Default::default() })
        .subnet("10.0.0.0/20", AZ, &[("kind", "pods")])
        .subnet("10.0.16.0/28", AZ, &[("kind", "tiny")])
        .kube(KubeApiConfig::default())
        .crds()
        .start()
        .await
        .expect("starting the platform");
    let client = p.kube().client().expect("client");
    let Platform { sim, kube, vpc_id, subnet_ids, sg_id } = p;
    let [subnet, tiny] = <[String; 2]>::try_from(subnet_ids).expect("two subnets");
    Env { sim, kube: kube.expect("kubeapi"), client, vpc: vpc_id, subnet, tiny, sg: sg_id }
}

/// Poll `f` every 100 ms until it returns `Some`, or panic after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Env {
    /// An EC2 adapter for the simulator with the given mutate budget (account bucket; the
    /// operator's share is 100 % here).
    pub async fn ec2(&self, mutate: Option<RateConfig>) -> Arc<dyn Ec2Api> {
        let mut cfg = AwsEc2Config {
            region: Some("us-west-2".into()),
            endpoint_url: Some(self.sim.endpoint_url()),
            static_credentials: Some(StaticCredentials::test()),
            budget_share: 1.0,
            ..Default::default()
        };
        if let Some(m) = mutate {
            cfg.mutate = m;
        }
        Arc::new(AwsEc2::new(cfg).await.expect("AwsEc2"))
    }

    /// Fast settings: 1 s resync, 3 s lease.
    pub fn config(&self, identity: &str) -> OperatorConfig {
        let mut c = OperatorConfig::new(CLUSTER);
        c.identity = identity.into();
        c.lease_duration = Duration::from_secs(3);
        c.resync = Duration::from_secs(1);
        c.gc_interval = Duration::from_secs(1);
        c.leak_grace_secs = 2;
        c.termination_wait = Duration::from_secs(60);
        c
    }

    pub async fn start_operator(&self, identity: &str) -> OperatorHandle {
        let ec2 = self.ec2(None).await;
        self.start_with(self.config(identity), ec2)
    }

    pub fn start_with(&self, cfg: OperatorConfig, ec2: Arc<dyn Ec2Api>) -> OperatorHandle {
        Operator::start(cfg, self.client.clone(), ec2, Default::default())
    }

    /// A client of its own for `user` (an unrestricted one, with a token only it uses), so the
    /// API server's audit log and faults tell this client's requests apart.
    #[allow(dead_code)]
    pub fn client_as(&self, user: &str) -> Client {
        let token = format!("{user}-token");
        self.kube.add_token(&token, kubeapi::UserInfo::admin(user));
        self.kube.client_with_token(&token).expect("client")
    }

    /// Launch an instance in `subnet` and create its Node; returns the instance id.
    pub async fn join(&self, name: &str, itype: &str, subnet: &str) -> String {
        let id = self.launch(itype, subnet);
        self.create_node(name, itype, &id, &[]).await;
        id
    }

    pub fn launch(&self, itype: &str, subnet: &str) -> String {
        let ids = self
            .sim
            .run_instances(&RunReq {
                image_id: "ami-12345678".into(),
                instance_type: itype.into(),
                count: 1,
                subnet_id: subnet.into(),
                groups: vec![self.sg.clone()],
                delete_on_termination: true,
                ..Default::default()
            })
            .expect("run_instances");
        ids[0].clone()
    }

    pub async fn create_node(
        &self,
        name: &str,
        itype: &str,
        instance: &str,
        labels: &[(&str, &str)],
    ) {
        let mut l: BTreeMap<String, String> = [(ZONE_LABEL, AZ), (INSTANCE_TYPE_LABEL, itype)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": l},
            "spec": {"providerID": format!("aws:///{AZ}/{instance}")},
        }))
        .unwrap();
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }

    pub async fn delete_node(&self, name: &str) {
        Api::<Node>::all(self.client.clone())
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete node");
    }

    pub fn pools(&self) -> Api<ENIPool> {
        Api::all(self.client.clone())
    }

    pub fn policies(&self) -> Api<ENIPoolPolicy> {
        Api::all(self.client.clone())
    }

    pub async fn pool(&self, name: &str) -> Option<ENIPool> {
        self.pools().get_opt(name).await.expect("get pool")
    }

    /// Wait until the pool exists and `pred` holds.
    pub async fn wait_pool(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ENIPool) -> bool,
    ) -> ENIPool {
        let start = Instant::now();
        loop {
            let p = self.pool(name).await;
            if let Some(p) = p.as_ref().filter(|p| pred(p)) {
                return p.clone();
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for pool {name}: {what}\npool: {}\nec2: {}",
                    serde_json::to_string_pretty(&p).unwrap(),
                    serde_json::to_string(&self.sim.counters()).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Mutating EC2 calls so far (every request, failed and throttled included).
    pub fn mutating_calls(&self) -> u64 {
        self.sim.counters().iter().filter(|(a, _)| is_mutating(a)).map(|(_, c)| c.calls).sum()
    }

    pub fn calls(&self, action: &str) -> u64 {
        self.sim.counters().get(action).map(|c| c.calls).unwrap_or(0)
    }

    /// Publish `status.agent` as the node agent would (SSA, the agent's field manager).
    pub async fn agent(&self, pool: &str, a: &AgentStatus) {
        let patch = json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool", "metadata": {"name": pool}, "status": {"agent": a}});
        self.pools()
            .patch_status(
                pool,
                &PatchParams::apply(AGENT_FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .expect("agent status");
    }

    /// ENIs in EC2 tagged for this cluster, by id (any state).
    pub fn tagged_enis(&self) -> Vec<String> {
        let st = self.sim.snapshot();
        st.enis
            .values()
            .filter(|e| {
                e.tags.get(enipool_crds::tags::CLUSTER).map(String::as_str) == Some(CLUSTER)
            })
            .map(|e| e.id.clone())
            .collect()
    }
}

/// An agent report: `in_use` addresses, `pending` pods, fresh heartbeat.
pub fn agent_report(
    epoch: i64,
    in_use: i32,
    pending: i32,
    offer: Option<Releasable>,
) -> AgentStatus {
    AgentStatus {
        epoch,
        in_use,
        pending_pods: pending,
        releasable: offer,
        last_heartbeat: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        ..Default::default()
    }
}

pub fn cond(p: &ENIPool, type_: &str) -> Option<String> {
    p.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

pub fn is_ready(p: &ENIPool) -> bool {
    cond(p, "Ready").as_deref() == Some("True")
}

/// Pod addresses the pool holds (secondary IPs + 16 per prefix, every ENI).
pub fn allocated(p: &ENIPool) -> i32 {
    p.status
        .as_ref()
        .map(|s| s.enis.iter().map(|e| e.ips.len() as i32 + 16 * e.prefixes.len() as i32).sum())
        .unwrap_or(0)
}

pub fn target(p: &ENIPool) -> i32 {
    p.status.as_ref().and_then(|s| s.target.as_ref()).map(|t| t.ips).unwrap_or(-1)
}
