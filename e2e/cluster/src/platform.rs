//! The platform without enipool's processes: the EC2 simulator with one VPC (blocks, subnets, a
//! security group), optionally the VPC fabric the simulator mirrors its instances into, and
//! optionally the platform's Kubernetes API with enipool's CRDs. The runner's [`Cluster`] and the
//! tests that run the operator or the agents themselves all start here, so a platform is built
//! one way and torn down in one order.
//!
//! [`Cluster`]: crate::Cluster

use crate::{kube, wait};
use anyhow::{Context, Result};
use ec2sim::Ec2Sim;
use fabric::Fabric;
use kubeapi::{KubeApi, KubeApiConfig};
use std::sync::Arc;
use std::time::Duration;

/// How long the servers get to stop ([`Platform::shutdown`]).
const SERVERS_STOP_TIMEOUT: Duration = Duration::from_secs(10);

type Tags = Vec<(String, String)>;

fn tags(t: &Tags) -> Vec<(&str, &str)> {
    t.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn owned(t: &[(&str, &str)]) -> Tags {
    t.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// What to build; see [`Platform::builder`].
#[must_use]
pub struct PlatformBuilder {
    ec2: ec2sim::Config,
    fabric: Option<Arc<Fabric>>,
    vpc_blocks: Vec<String>,
    vpc_tags: Tags,
    subnets: Vec<(String, String, Tags)>,
    sg_tags: Tags,
    kube: Option<KubeApiConfig>,
    crds: bool,
    ipv6: bool,
}

impl PlatformBuilder {
    /// Give the VPC an Amazon-provided IPv6 /56 and each subnet a /64 of it (the k-th subnet the
    /// k-th /64), in the simulator and the fabric: an IPv6 cluster's VPC.
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// The simulator's settings (timing, faults); its fabric hook is set by [`Self::fabric`].
    pub fn ec2(mut self, config: ec2sim::Config) -> Self {
        self.ec2 = config;
        self
    }

    /// Mirror the simulator's instances into `fabric` and declare the VPC's subnets in it. The
    /// caller owns the fabric: it tears it down after the processes living in its namespaces.
    pub fn fabric(mut self, fabric: Arc<Fabric>) -> Self {
        self.fabric = Some(fabric);
        self
    }

    /// One more CIDR block associated with the VPC.
    pub fn secondary_block(mut self, cidr: &str) -> Self {
        self.vpc_blocks.push(cidr.to_string());
        self
    }

    /// A tag on the VPC.
    pub fn vpc_tag(mut self, key: &str, value: &str) -> Self {
        self.vpc_tags.push((key.to_string(), value.to_string()));
        self
    }

    /// A subnet; [`Platform::subnet_ids`] keeps the order of these calls.
    pub fn subnet(mut self, cidr: &str, az: &str, tags: &[(&str, &str)]) -> Self {
        self.subnets.push((cidr.to_string(), az.to_string(), owned(tags)));
        self
    }

    /// A tag on the nodes' security group.
    pub fn sg_tag(mut self, key: &str, value: &str) -> Self {
        self.sg_tags.push((key.to_string(), value.to_string()));
        self
    }

    /// Start the platform's Kubernetes API server with `config`.
    pub fn kube(mut self, config: KubeApiConfig) -> Self {
        self.kube = Some(config);
        self
    }

    /// Install enipool's CRDs from `crds/` in that API server and wait until they are served.
    pub fn crds(mut self) -> Self {
        self.crds = true;
        self
    }

    /// Starts everything; on failure shuts down what already runs (the fabric stays the
    /// caller's).
    pub async fn start(self) -> Result<Platform> {
        let PlatformBuilder {
            mut ec2,
            fabric,
            vpc_blocks,
            vpc_tags,
            subnets,
            sg_tags,
            kube,
            crds,
            ipv6,
        } = self;
        if let Some(f) = &fabric {
            ec2.fabric_hook = Some(f.clone());
        }
        let sim = Ec2Sim::start(ec2).await.context("starting the EC2 simulator")?;
        let mut p = Platform {
            sim,
            kube: None,
            vpc_id: String::new(),
            subnet_ids: Vec::new(),
            sg_id: String::new(),
        };
        let built = p.build(fabric.clone(), vpc_blocks, vpc_tags, subnets, sg_tags, kube, crds);
        let built = match built.await {
            Ok(()) if ipv6 => p.ipv6(fabric).await,
            r => r,
        };
        match built {
            Ok(()) => Ok(p),
            Err(e) => {
                p.shutdown().await;
                Err(e)
            }
        }
    }
}

/// The running servers and the VPC's ids.
pub struct Platform {
    /// The EC2 simulator.
    pub sim: Ec2Sim,
    /// The platform's Kubernetes API, when asked for.
    pub kube: Option<KubeApi>,
    pub vpc_id: String,
    /// Subnet ids, in the order they were declared.
    pub subnet_ids: Vec<String>,
    /// The nodes' security group (named `nodes`).
    pub sg_id: String,
}

impl Platform {
    /// A platform whose VPC has `vpc_cidr` as its primary block.
    pub fn builder(vpc_cidr: &str) -> PlatformBuilder {
        PlatformBuilder {
            ec2: ec2sim::Config::default(),
            fabric: None,
            vpc_blocks: vec![vpc_cidr.to_string()],
            vpc_tags: Vec::new(),
            subnets: Vec::new(),
            sg_tags: Vec::new(),
            kube: None,
            crds: false,
            ipv6: false,
        }
    }

    /// The VPC's IPv6 /56 and a /64 of it for every subnet, then the same in the fabric.
    async fn ipv6(&mut self, fabric: Option<Arc<Fabric>>) -> Result<()> {
        let block = self.sim.associate_vpc_ipv6(&self.vpc_id)?;
        let mut nets = Vec::new();
        for (k, id) in self.subnet_ids.iter().enumerate() {
            let index = u8::try_from(k).context("more than 256 subnets")?;
            nets.push((id.clone(), self.sim.associate_subnet_ipv6(id, index)?));
        }
        if let Some(f) = fabric {
            wait::blocking(move || {
                f.add_vpc_ipv6(block)?;
                nets.into_iter().try_for_each(|(id, net)| f.add_subnet_ipv6(&id, net))
            })
            .await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn build(
        &mut self,
        fabric: Option<Arc<Fabric>>,
        vpc_blocks: Vec<String>,
        vpc_tags: Tags,
        subnets: Vec<(String, String, Tags)>,
        sg_tags: Tags,
        kube: Option<KubeApiConfig>,
        crds: bool,
    ) -> Result<()> {
        let (primary, secondary) = vpc_blocks.split_first().context("no VPC block")?;
        self.vpc_id = self.sim.create_vpc(primary, &tags(&vpc_tags))?;
        for b in secondary {
            self.sim.associate_vpc_cidr(&self.vpc_id, b)?;
        }
        for (cidr, az, t) in &subnets {
            let id = self.sim.create_subnet(&self.vpc_id, cidr, az, &tags(t))?;
            if let Some(f) = &fabric {
                let net = cidr.parse().context("subnet CIDR")?;
                let (f, id) = (f.clone(), id.clone());
                wait::blocking(move || f.add_subnet(&id, net)).await?;
            }
            self.subnet_ids.push(id);
        }
        self.sg_id = self.sim.create_security_group(&self.vpc_id, "nodes", &tags(&sg_tags))?;
        if let Some(config) = kube {
            let api = KubeApi::start(config).await.context("starting the Kubernetes API")?;
            let client = api.client().context("client of the Kubernetes API");
            self.kube = Some(api);
            if crds {
                kube::install_crds(&client?).await?;
            }
        }
        Ok(())
    }

    /// The Kubernetes API (panics when the platform was built without one).
    pub fn kube(&self) -> &KubeApi {
        self.kube.as_ref().expect("the platform was built without a Kubernetes API")
    }

    /// Stops the API server, then the simulator, giving them 10 s in all: a wedged one must not hang
    /// a test binary. Processes that talk to them and the fabric go first, by their owner.
    pub async fn shutdown(self) {
        let Platform { sim, kube, .. } = self;
        let stop = async {
            if let Some(k) = kube {
                k.shutdown().await;
            }
            sim.shutdown().await;
        };
        let _ = tokio::time::timeout(SERVERS_STOP_TIMEOUT, stop).await;
    }
}
