//! The strong RBAC check: run the operator (in process) and the agent (the real
//! `enipool-agent` binary) against the EC2 simulator, the VPC fabric and the test Kubernetes API,
//! each with the bearer token of the ServiceAccount the chart runs it as, drive a representative
//! lifecycle, then authorize every request the API server audited for those users against the
//! RENDERED chart's RBAC (`helm template`) with the API server's own RBAC authorizer
//! (`kubeapi::rbac`). The test fails when the code makes a call the chart does not
//! grant; grants never exercised are printed, not failed (some cover paths this lifecycle does not
//! reach, e.g. pool deletion of an orphan or the finalizers subresource that only
//! OwnerReferencesPermissionEnforcement checks).
//!
//! Lifecycle: CRDs and a policy (admin), the operator starts (Lease, watches), a Node joins
//! (pool created by server-side apply, finalizer, addresses allocated, status, events), the agent
//! starts and publishes `status.agent`, a Pod bound to the node is pending (the agent counts it,
//! the operator grows the pool), the Pod goes (the operator asks for a release, the agent offers,
//! the operator releases), and the Node is deleted (finalizer path: EC2 cleanup, finalizer
//! removed, pool gone).
//!
//! Needs root (the fabric's namespaces and the agent's host programming), `helm`, and a current
//! `target/debug/enipool-agent` (`cargo build -p enipool-agent`). Everything is torn down by Drop.

// The bench (and its helpers) is tests/rbac_audit/bench.rs: a test crate root's `mod x;` would be
// tests/x.rs, which cargo builds as a test binary of its own.
#[path = "rbac_audit/bench.rs"]
mod bench;
#[path = "common/binaries.rs"]
mod binaries;
#[path = "common/chart_rbac.rs"]
mod chart_rbac;

use bench::{agent_binary, allocated, ready, token_client, wait_pool, write_kubeconfig, Bench};
use chart_rbac::Grant;
use cluster::flags::{agent_args, AgentFlags};
use cluster::node::STARTUP_TAINT;
use cluster::procs::{ProcSpec, Supervisor};
use cluster::Platform;
use ec2sim::RunReq;
use enipool_crds::{ENIPool, INSTANCE_TYPE_LABEL, ZONE_LABEL};
use enipool_operator::ec2::aws::{AwsEc2, AwsEc2Config, StaticCredentials};
use enipool_operator::{Operator, OperatorConfig};
use fabric::{self, Fabric};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kubeapi::authn::AUTHENTICATED;
use kubeapi::rbac::{Decision, Rbac};
use kubeapi::{AuditRecord, KubeApiConfig, UserInfo};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Release and namespace the chart is rendered with (the ServiceAccounts live there).
const RELEASE: &str = "enipool";
const NAMESPACE: &str = "kube-system";
const CLUSTER: &str = "rbac-audit";
const AZ: &str = "us-west-2a";
const INSTANCE_TYPE: &str = "m5.large";
const OPERATOR_TOKEN: &str = "rbac-audit-operator-token";
const AGENT_TOKEN: &str = "rbac-audit-agent-token";
const T: Duration = Duration::from_secs(60);

/// (apiGroup, resource[/subresource], verb, namespace) of a resource request, or ("", path, verb,
/// "") of a non-resource one.
type Use = (String, String, String, String);

fn use_of(r: &AuditRecord) -> Use {
    if r.is_resource() {
        (r.api_group.clone(), r.resource_path(), r.verb.clone(), r.namespace.clone())
    } else {
        (String::new(), r.path.clone(), r.verb.clone(), String::new())
    }
}

/// The uses among `records` that the RBAC objects of `docs` do not allow `user`.
fn denied(docs: &[Value], user: &UserInfo, records: &[&AuditRecord]) -> BTreeSet<Use> {
    let rbac = Rbac::from_objects(docs);
    records
        .iter()
        .filter(|r| rbac.authorize(user, r) != Decision::Allow)
        .map(|r| use_of(r))
        .collect()
}

#[test]
fn operator_and_agent_use_only_what_the_rendered_chart_grants() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "rbac_audit needs root (the fabric's network namespaces, the agent's host programming): \
         run it as root"
    );
    // The chart first: the users are its ServiceAccounts in the release namespace.
    let docs = chart_rbac::render(RELEASE, NAMESPACE, "default-values.yaml").expect("render");
    // Each component as its ServiceAccount's token authenticates it.
    let mut who: BTreeMap<&str, (UserInfo, BTreeSet<Grant>)> = BTreeMap::new();
    for c in ["operator", "agent"] {
        let (ns, sa) = chart_rbac::service_account(&docs, c);
        assert_eq!(ns, NAMESPACE);
        let user = UserInfo::service_account(&ns, &sa).with_groups([AUTHENTICATED]);
        who.insert(c, (user, chart_rbac::grants(&docs, &ns, &sa)));
    }
    let lease_ns = chart_rbac::operator_flag(&docs, "lease-namespace")
        .expect("--lease-namespace in the chart");
    let agent_bin = agent_binary();

    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("ENIPOOL_E2E_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fabric = Arc::new(Fabric::new().expect("building the VPC fabric"));
    let rt = Arc::new(rt);
    let mut b = Bench {
        rt: rt.clone(),
        fabric,
        procs: Supervisor::default(),
        platform: None,
        operator: None,
    };
    // Clients spawn their buffers on the current runtime. Dropped before `b` (declared after it).
    let _enter = rt.enter();
    // From here a panic drops `b`, which tears down what exists.
    enipool_operator::ec2::aws::install_crypto_provider();
    // RBAC stays off on the server: every gap is listed below instead of failing the lifecycle.
    let mut kcfg = KubeApiConfig::default();
    kcfg.tokens.push((OPERATOR_TOKEN.into(), who["operator"].0.clone()));
    kcfg.tokens.push((AGENT_TOKEN.into(), who["agent"].0.clone()));
    // No CRDs yet: installing them is the first step of the audited lifecycle.
    let platform = Platform::builder("10.0.0.0/16")
        .fabric(b.fabric.clone())
        .subnet("10.0.1.0/24", AZ, &[])
        .kube(kcfg);
    let platform = b.rt.block_on(platform.start()).expect("starting the platform");
    let (subnet, sg) = (platform.subnet_ids[0].clone(), platform.sg_id.clone());
    b.platform = Some(platform);
    let url = b.kube().url();
    let admin = b.kube().client().expect("admin client");
    let pools: Api<ENIPool> = Api::all(admin.clone());
    let nodes: Api<Node> = Api::all(admin.clone());

    // CRDs and a policy that makes the release cheap to reach: 2 warm, no dead band, 1 s delay.
    b.rt.block_on(async {
        let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
        for (_, crd) in enipool_crds::generate::crds() {
            crds.create(&PostParams::default(), &crd).await.expect("create CRD");
        }
        let start = Instant::now();
        while pools.list(&Default::default()).await.is_err() {
            assert!(start.elapsed() < T, "CRDs not served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let policy = json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPoolPolicy",
            "metadata": {"name": "all"},
            "spec": {"sizing": {"warmIPs": 2}, "cooldownSeconds": 1,
                     "release": {"delaySeconds": 1, "hysteresisIPs": 0}}});
        Api::<enipool_crds::ENIPoolPolicy>::all(admin.clone())
            .patch("all", &PatchParams::apply("gitops"), &Patch::Apply(&policy))
            .await
            .expect("apply policy");
    });

    // The operator, in process, with its ServiceAccount's token.
    let ec2 = b.rt.block_on(AwsEc2::new(AwsEc2Config {
        region: Some("us-west-2".into()),
        endpoint_url: Some(b.sim().endpoint_url()),
        static_credentials: Some(StaticCredentials::test()),
        budget_share: 1.0,
        ..Default::default()
    }));
    let mut cfg = OperatorConfig::new(CLUSTER);
    cfg.identity = "op-0".into();
    cfg.lease_namespace = lease_ns.clone();
    cfg.lease_duration = Duration::from_secs(3);
    cfg.resync = Duration::from_secs(1);
    cfg.gc_interval = Duration::from_secs(1);
    cfg.leak_grace_secs = 2;
    cfg.termination_wait = Duration::from_secs(30);
    let op_client = token_client(&url, OPERATOR_TOKEN);
    let ec2: Arc<dyn enipool_operator::ec2::Ec2Api> = Arc::new(ec2.expect("AwsEc2"));
    b.operator = Some(Operator::start(cfg, op_client, ec2, Default::default()));

    // A node joins.
    let inst = b
        .sim()
        .run_instances(&RunReq {
            image_id: "ami-12345678".into(),
            instance_type: INSTANCE_TYPE.into(),
            count: 1,
            subnet_id: subnet.clone(),
            groups: vec![sg.clone()],
            delete_on_termination: true,
            ..Default::default()
        })
        .expect("run_instances")
        .remove(0);
    let netns = b.fabric.node_netns(&inst).expect("node netns");
    let primary_ip = b.fabric.primary_ip(&inst).expect("primary ip");
    let node_name =
        format!("ip-{}.us-west-2.compute.internal", primary_ip.to_string().replace('.', "-"));
    b.rt.block_on(async {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node_name, "labels": {
                "kubernetes.io/hostname": node_name, ZONE_LABEL: AZ, INSTANCE_TYPE_LABEL: INSTANCE_TYPE}},
            "spec": {"providerID": format!("aws:///{AZ}/{inst}"),
                     "taints": [{"key": STARTUP_TAINT, "effect": "NoSchedule"}]},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.expect("create node");
        let st = json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "rbac_audit"}],
            "addresses": [{"type": "InternalIP", "address": primary_ip.to_string()}],
        }});
        nodes.patch_status(&node_name, &PatchParams::default(), &Patch::Merge(&st)).await.expect("node status");
        wait_pool(&pools, &b.procs, &node_name, "operator: pool Ready with 2 warm addresses", |p| {
            p.is_some_and(|p| ready(p) && allocated(p) == 2)
        })
        .await;
    });

    // The agent binary, with its ServiceAccount's token, programming the node's netns.
    let dir = b.fabric.run_dir().join("agent");
    for d in ["run", "state", "journal"] {
        std::fs::create_dir_all(dir.join(d)).expect("agent dirs");
    }
    let kubeconfig = dir.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &url, AGENT_TOKEN);
    // Below the ephemeral range, not bind(0): see cluster::ports.
    let free = || {
        let port = cluster::ports::free_local_port().expect("a free port");
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    };
    let mut flags = AgentFlags::new(&node_name);
    flags.socket = dir.join("run/cni.sock").display().to_string();
    flags.state_dir = dir.join("state").display().to_string();
    flags.del_journal_dir = dir.join("journal").display().to_string();
    flags.metrics_addr = free().to_string();
    flags.introspection_addr = free().to_string();
    flags.publish_debounce_ms = 100;
    flags.netns = Some(Path::new(fabric::sh::NETNS_DIR).join(&netns).display().to_string());
    flags.startup_taint = Some(STARTUP_TAINT.into());
    b.procs
        .start(
            "agent",
            ProcSpec {
                program: agent_bin,
                args: agent_args(&flags),
                env: vec![
                    ("KUBECONFIG".into(), kubeconfig.into()),
                    ("RUST_LOG".into(), "info".into()),
                    ("NO_COLOR".into(), "1".into()),
                ],
                log: dir.join("agent.log"),
            },
        )
        .expect("starting the agent");
    b.rt.block_on(async {
        wait_pool(
            &pools,
            &b.procs,
            &node_name,
            "agent: status.agent published for the current revision",
            |p| {
                p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
                    s.agent.as_ref().is_some_and(|a| {
                        a.observed_revision == s.revision && !a.ready_enis.is_empty()
                    })
                })
            },
        )
        .await;

        // The agent removed the startup taint from its Node.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let n = nodes.get(&node_name).await.expect("get node");
            let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
            if !taints.iter().any(|t| t.key == STARTUP_TAINT) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the startup taint stayed: {taints:?}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }

        // A pod bound to the node, waiting for an address: the agent reports it, the pool grows.
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "pause"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.expect("create pod");
        wait_pool(
            &pools,
            &b.procs,
            &node_name,
            "agent reports the pending pod, operator grows the pool",
            |p| {
                p.is_some_and(|p| {
                    allocated(p) > 2
                        && p.status
                            .as_ref()
                            .and_then(|s| s.agent.as_ref())
                            .is_some_and(|a| a.pending_pods == 1)
                })
            },
        )
        .await;

        // The pod goes: release request, the agent's offer, the release.
        pods.delete("web", &DeleteParams::default()).await.expect("delete pod");
        let p = wait_pool(&pools, &b.procs, &node_name, "operator requests a release", |p| {
            p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
                s.release_request.as_ref().is_some_and(|r| r.count > 0) || s.released_revision > 0
            })
        })
        .await
        .unwrap();
        let rev = p.status.as_ref().unwrap().release_request.as_ref().map_or(1, |r| r.revision);
        wait_pool(
            &pools,
            &b.procs,
            &node_name,
            "agent offers and operator releases (released_revision)",
            |p| {
                p.and_then(|p| p.status.as_ref())
                    .is_some_and(|s| s.released_revision >= rev && s.releasing.is_none())
            },
        )
        .await;

        // The node goes: the finalizer path (EC2 cleanup, finalizer removed, pool gone).
        b.sim().terminate_instances(std::slice::from_ref(&inst)).expect("terminate");
        nodes.delete(&node_name, &DeleteParams::default()).await.expect("delete node");
        wait_pool(&pools, &b.procs, &node_name, "operator finalizes and the pool is gone", |p| {
            p.is_none()
        })
        .await;
        // A few more rounds of Lease renewal and resyncs.
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    if let Some(op) = b.operator.take() {
        op.abort();
    }
    b.procs.stop_all();
    let audit = b.kube().audit();

    // Only the three known users spoke; components never went anonymous.
    let users: BTreeSet<&str> = audit.iter().map(|r| r.user.as_str()).collect();
    let known: BTreeSet<&str> =
        ["admin", &who["operator"].0.username, &who["agent"].0.username].into_iter().collect();
    assert!(users.is_subset(&known), "unexpected users {users:?} (known {known:?})");
    let mut failures = Vec::new();
    for (component, (user, grants)) in &who {
        let mine: Vec<&AuditRecord> = audit.iter().filter(|r| r.user == user.username).collect();
        assert!(!mine.is_empty(), "no request of {component} ({}) was audited", user.username);
        let refused = denied(&docs, user, &mine);
        let mut used: BTreeMap<Use, usize> = BTreeMap::new();
        for r in &mine {
            *used.entry(use_of(r)).or_default() += 1;
        }
        println!("{component} ({}) used:", user.username);
        for (u, n) in &used {
            let ok = !refused.contains(u);
            println!(
                "  {:<4} {:>5}x {:?} {:<28} {:<17} ns={:?}",
                if ok { "ok" } else { "DENY" },
                n,
                u.0,
                u.1,
                u.2,
                u.3
            );
            if !ok {
                failures.push(format!(
                    "{component} ({}) used apiGroup {:?} resource/path {} verb {} in namespace \
                     {:?} ({n} requests), which the rendered chart does not grant",
                    user.username, u.0, u.1, u.2, u.3
                ));
            }
        }
        for g in grants {
            let exercised = used.keys().any(|(ag, r, v, ns)| {
                ag == &g.api_group
                    && r == &g.resource
                    && v == &g.verb
                    && g.namespace.as_ref().is_none_or(|gns| gns == ns)
            });
            if !exercised {
                println!(
                    "  note: granted but not exercised by this lifecycle: {:?} {} {}{}",
                    g.api_group,
                    g.resource,
                    g.verb,
                    g.namespace.as_ref().map(|n| format!(" (Role in {n})")).unwrap_or_default()
                );
            }
        }
    }
    // Negative controls of the check itself, on this run's requests: without the operator's
    // status patch grant, or with its Lease Role and binding in another namespace, it must deny.
    let op_user = &who["operator"].0;
    let op_records: Vec<&AuditRecord> =
        audit.iter().filter(|r| r.user == op_user.username).collect();
    let edited = |f: &dyn Fn(&mut Value)| -> Vec<Value> {
        docs.iter()
            .cloned()
            .map(|mut d| {
                f(&mut d);
                d
            })
            .collect()
    };
    let no_status = edited(&|d| {
        for rule in d["rules"].as_array_mut().into_iter().flatten() {
            if rule["resources"].as_array().is_some_and(|r| r.contains(&json!("enipools/status"))) {
                if let Some(v) = rule["verbs"].as_array_mut() {
                    v.retain(|v| v != "patch");
                }
            }
        }
    });
    assert!(
        denied(&no_status, op_user, &op_records)
            .iter()
            .any(|u| u.1 == "enipools/status" && u.2 == "patch"),
        "negative control: a missing enipools/status patch grant went unnoticed"
    );
    let moved = edited(&|d| {
        if d["kind"] == "Role" || d["kind"] == "RoleBinding" {
            d["metadata"]["namespace"] = json!("elsewhere");
        }
    });
    assert!(
        denied(&moved, op_user, &op_records).iter().any(|u| u.1 == "leases"),
        "negative control: a Lease Role in the wrong namespace went unnoticed"
    );
    assert!(
        failures.is_empty(),
        "RBAC gaps (fix the chart and rbac-expectations.yaml):\n{}",
        failures.join("\n")
    );
    // The lifecycle really went through the components' write paths.
    for (component, verb, resource) in [
        ("operator", "patch", "enipools/status"),
        ("operator", "create", "enipools"),
        ("agent", "patch", "enipools/status"),
        ("agent", "watch", "pods"),
    ] {
        let user = &who[component].0.username;
        assert!(
            audit
                .iter()
                .any(|r| &r.user == user && r.verb == verb && r.resource_path() == resource),
            "{component} never did {verb} {resource}: the lifecycle did not exercise it"
        );
    }
}
