//! The test as the operator: instances and ENIs through the real SDK client, the Node and
//! ENIPool objects, and the ENIPool status written the way the operator writes it (server-side
//! apply, operator field manager), computed from the simulator's state (EC2's truth).

use super::probes::wait_for;
use super::{Env, Node, NodeSpec, AZ, COOLDOWN_SECONDS, INSTANCE_TYPE};
use anyhow::{bail, Context, Result};
use ec2sim::state::AttachState;
use ec2sim::{self, RunReq};
use enipool_crds::settings::{CapacitySource, InstanceLimits};
use enipool_crds::{ENIPool, ENIPoolSpec, OPERATOR_FIELD_MANAGER};
use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use std::time::Duration;

impl Env {
    /// Launches an instance and plays the operator for it: addresses and ENIs through the real
    /// SDK client, Node and ENIPool objects, the ENIPool status as the operator writes it. Then
    /// installs the CNI config (shim + Debian plugins + conflist) and starts the agent.
    pub fn launch(&self, spec: NodeSpec) -> Node {
        self.try_launch(&spec).unwrap_or_else(|e| panic!("launching node {}: {e:#}", spec.label))
    }

    fn try_launch(&self, spec: &NodeSpec) -> Result<Node> {
        let subnet_id = self.subnet_ids[spec.subnet].clone();
        let ids = self.sim().run_instances(&RunReq {
            image_id: "ami-0123456789abcdef0".into(),
            instance_type: INSTANCE_TYPE.into(),
            count: 1,
            subnet_id: subnet_id.clone(),
            groups: vec![self.sg_id.clone()],
            delete_on_termination: true,
            ..Default::default()
        })?;
        let instance_id = ids.first().context("RunInstances returned no instance")?.clone();
        let f = self.fabric();
        let netns = f.node_netns(&instance_id).context("fabric made no node netns")?;
        let primary_ip = f.primary_ip(&instance_id).context("fabric has no primary IP")?;
        let public_ip = f.public_ip(&instance_id).context("fabric has no public IP")?;
        let snap = self.sim().snapshot();
        let primary_eni = snap.instances[&instance_id].primary_eni.clone();
        let secondary_eni = self.block_on(async {
            if spec.primary_ips > 0 {
                self.ec2
                    .assign_private_ip_addresses()
                    .network_interface_id(&primary_eni)
                    .secondary_private_ip_address_count(spec.primary_ips)
                    .send()
                    .await
                    .context("AssignPrivateIpAddresses on the primary ENI")?;
            }
            let Some(n) = spec.secondary_eni_ips else { return Ok::<_, anyhow::Error>(None) };
            let out = self
                .ec2
                .create_network_interface()
                .subnet_id(&subnet_id)
                .groups(&self.sg_id)
                .secondary_private_ip_address_count(n)
                .description("enipool-e2e cni_chain secondary ENI")
                .send()
                .await
                .context("CreateNetworkInterface")?;
            let eni = out
                .network_interface()
                .and_then(|e| e.network_interface_id())
                .context("CreateNetworkInterface returned no id")?
                .to_string();
            self.ec2
                .attach_network_interface()
                .network_interface_id(&eni)
                .instance_id(&instance_id)
                .device_index(1)
                .send()
                .await
                .context("AttachNetworkInterface")?;
            Ok(Some(eni))
        })?;
        if let Some(eni) = &secondary_eni {
            wait_for("the secondary ENI to be attached", Duration::from_secs(10), || {
                let snap = self.sim().snapshot();
                match snap.enis[eni].attachment.as_ref().map(|a| a.state) {
                    Some(AttachState::Attached) => Ok(()),
                    s => bail!("attachment {s:?}"),
                }
            })?;
            wait_for("eth1 in the node netns", Duration::from_secs(10), || {
                fabric::run_in(&netns, &["ip", "link", "show", "eth1"]).map(drop)
            })?;
        }
        let name =
            format!("ip-{}.us-west-2.compute.internal", primary_ip.to_string().replace('.', "-"));
        let status = self.operator_status(&instance_id, 1)?;
        let dir = f.run_dir().join("nodes").join(spec.label);
        let (driver, check_driver) = self.install_cni(&dir, &netns)?;
        let mut node = Node {
            label: spec.label.to_string(),
            name,
            instance_id,
            netns,
            primary_ip,
            public_ip,
            primary_eni,
            secondary_eni,
            dir,
            driver,
            check_driver,
            agent: None,
            status,
        };
        self.block_on(self.register(&node))?;
        if spec.agent {
            node.agent = Some(self.start_agent(&node)?);
        }
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).push(node.clone());
        if spec.agent {
            let enis = 1 + usize::from(node.secondary_eni.is_some());
            self.wait_agent_ready(&node, enis, None)?;
        }
        Ok(node)
    }

    /// The operator part of `status` for an instance, from the simulator's state (EC2's truth).
    fn operator_status(&self, instance_id: &str, revision: i64) -> Result<Value> {
        let snap = self.sim().snapshot();
        let inst = snap.instances.get(instance_id).context("instance")?;
        let vpc = snap.vpcs.get(&inst.vpc_id).context("vpc")?;
        let mut enis: Vec<_> = snap
            .enis
            .values()
            .filter_map(|e| {
                let a = e.attachment.as_ref()?;
                (a.instance_id == instance_id && a.state == AttachState::Attached).then_some((a, e))
            })
            .collect();
        enis.sort_by_key(|(a, _)| a.device_index);
        let enis: Vec<Value> = enis
            .iter()
            .map(|(a, e)| {
                json!({
                    "id": e.id,
                    "deviceIndex": a.device_index,
                    "mac": e.mac,
                    "subnetID": e.subnet_id,
                    "subnetCIDR": snap.subnets[&e.subnet_id].cidr.to_string(),
                    "securityGroups": e.groups,
                    "primaryIP": e.primary_ip.to_string(),
                    "ips": e.secondary.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                    "attachmentId": a.id,
                    "state": "Attached",
                    "managed": a.device_index > 0,
                })
            })
            .collect();
        let limits = ec2sim::limits::lookup(&inst.instance_type).context("instance type limits")?;
        let mut effective = enipool_crds::settings::resolve(
            enipool_crds::IpFamily::IPv4,
            None,
            None,
            InstanceLimits {
                max_enis: limits.max_enis as i32,
                ips_per_eni: limits.ipv4_per_eni as i32,
            },
            CapacitySource::Static,
        );
        effective.cooldown_seconds = COOLDOWN_SECONDS;
        Ok(json!({
            "instance": {
                "type": inst.instance_type,
                "zone": inst.az,
                "vpcID": inst.vpc_id,
                "subnetID": inst.subnet_id,
                "primaryENI": inst.primary_eni,
                "primaryIP": inst.private_ip.to_string(),
                "vpcCIDRs": [vpc.cidr.to_string()],
                "state": "running",
            },
            "policy": "",
            "effective": effective,
            "enis": enis,
            "revision": revision,
        }))
    }

    /// Node object (Ready, InternalIP) and ENIPool (spec + operator status).
    async fn register(&self, n: &Node) -> Result<()> {
        let nodes: Api<KubeNode> = Api::all(self.client.clone());
        let obj: KubeNode = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n.name, "labels": {
                "kubernetes.io/hostname": n.name,
                enipool_crds::ZONE_LABEL: AZ,
                enipool_crds::INSTANCE_TYPE_LABEL: INSTANCE_TYPE,
            }},
            "spec": {"providerID": format!("aws:///{AZ}/{}", n.instance_id)},
        }))?;
        nodes.create(&PostParams::default(), &obj).await.context("creating the Node")?;
        let st = json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "cni_chain", "lastHeartbeatTime": now(),
                            "lastTransitionTime": now()}],
            "addresses": [{"type": "InternalIP", "address": n.primary_ip.to_string()},
                          {"type": "Hostname", "address": n.name}],
        }});
        nodes
            .patch_status(&n.name, &PatchParams::default(), &Patch::Merge(&st))
            .await
            .context("Node status")?;
        let pools: Api<ENIPool> = Api::all(self.client.clone());
        let pool = ENIPool::new(
            &n.name,
            ENIPoolSpec {
                node_name: n.name.clone(),
                instance_id: n.instance_id.clone(),
                ..Default::default()
            },
        );
        pools.create(&PostParams::default(), &pool).await.context("creating the ENIPool")?;
        self.apply_status(&n.name, &n.status).await
    }

    /// Server-side apply of the operator's status fields (forced, operator field manager).
    pub async fn apply_status(&self, name: &str, status: &Value) -> Result<()> {
        let pools: Api<ENIPool> = Api::all(self.client.clone());
        let patch = json!({
            "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool",
            "metadata": {"name": name},
            "status": status,
        });
        pools
            .patch_status(
                name,
                &PatchParams::apply(OPERATOR_FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .with_context(|| format!("applying the operator status of ENIPool {name}"))?;
        Ok(())
    }

    /// Changes the node's operator status (`edit`), bumps `revision`, applies it and waits until
    /// the agent reports that revision as observed.
    pub fn update_status(&self, node: &mut Node, edit: impl FnOnce(&mut Value)) {
        edit(&mut node.status);
        let rev = node.status["revision"].as_i64().unwrap_or(0) + 1;
        node.status["revision"] = json!(rev);
        self.block_on(self.apply_status(&node.name, &node.status)).expect("applying status");
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = nodes.iter_mut().find(|n| n.name == node.name) {
            n.status = node.status.clone();
        }
        drop(nodes);
        wait_for(
            &format!("agent of {} to observe revision {rev}", node.label),
            Duration::from_secs(20),
            || {
                let p = self.pool(node)?;
                let seen = p["status"]["agent"]["observedRevision"].as_i64();
                if seen == Some(rev) {
                    Ok(())
                } else {
                    bail!("status.agent.observedRevision = {seen:?}")
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// The ENIPool as JSON.
    pub fn pool(&self, node: &Node) -> Result<Value> {
        let pools: Api<ENIPool> = Api::all(self.client.clone());
        let p = self.block_on(pools.get(&node.name)).context("getting the ENIPool")?;
        Ok(serde_json::to_value(p)?)
    }
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
