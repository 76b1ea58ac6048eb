//! An in-memory [`Ec2Api`] for unit tests (house style practice 4: a stateful fake with fault
//! injection). It enforces the limits the operator must respect — ENIs per instance, addresses per
//! ENI, free addresses per subnet — honours ClientToken idempotency on create, counts calls by
//! action, and lets a test inject errors (`Throttled`, `NoCidrBlocks`, `SubnetFull`, …) per action.

use crate::ec2::{
    Attachment, CreateEni, Ec2Api, Ec2Error, Ec2ErrorKind, Ec2Result, Eni, Instance,
    InstanceTypeInfo, Query, SecurityGroup, Subnet,
};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// Mutable state of the fake.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Instances by id.
    pub instances: BTreeMap<String, Instance>,
    /// Limits per instance type.
    pub types: BTreeMap<String, InstanceTypeInfo>,
    /// ENIs by id.
    pub enis: BTreeMap<String, Eni>,
    /// Subnets by id.
    pub subnets: BTreeMap<String, Subnet>,
    /// Security groups.
    pub security_groups: Vec<SecurityGroup>,
    /// ClientToken → ENI id.
    pub tokens: BTreeMap<String, String>,
    /// Addresses in use per subnet (as u32).
    pub used: BTreeMap<String, BTreeSet<u32>>,
    /// Injected failures: (action, kind), consumed first-match in order.
    pub faults: VecDeque<(&'static str, Ec2ErrorKind)>,
    /// Actions called, in order.
    pub calls: Vec<&'static str>,
    /// Subnets with no aligned /28 left (prefix requests fail with NoCidrBlocks).
    pub no_cidr: BTreeSet<String>,
    next_id: u64,
}

/// The fake EC2.
#[derive(Debug, Default)]
pub struct FakeEc2 {
    /// State; tests may inspect and edit it directly.
    pub state: Mutex<FakeState>,
}

fn err(kind: Ec2ErrorKind, action: &'static str, message: impl Into<String>) -> Ec2Error {
    Ec2Error { kind, action, code: kind.as_str().into(), message: message.into() }
}

impl FakeState {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:08x}", self.next_id)
    }

    /// Record the call and fail it when a fault was injected for the action.
    fn enter(&mut self, action: &'static str) -> Ec2Result<()> {
        self.calls.push(action);
        if let Some(pos) = self.faults.iter().position(|(a, _)| *a == action || *a == "*") {
            let (_, kind) = self.faults.remove(pos).expect("position is valid");
            return Err(err(kind, action, "injected"));
        }
        Ok(())
    }

    fn limits_of(&self, instance_id: &str) -> InstanceTypeInfo {
        let t =
            self.instances.get(instance_id).map(|i| i.instance_type.clone()).unwrap_or_default();
        self.types.get(&t).copied().unwrap_or(InstanceTypeInfo { max_enis: 3, ipv4_per_eni: 10 })
    }

    /// Take `n` free addresses (or `n` aligned /28s when `prefix`) from a subnet.
    fn take(
        &mut self,
        subnet_id: &str,
        n: i32,
        prefix: bool,
        action: &'static str,
    ) -> Ec2Result<Vec<Ipv4Net>> {
        let subnet = self
            .subnets
            .get(subnet_id)
            .cloned()
            .ok_or_else(|| err(Ec2ErrorKind::NotFound, action, "subnet"))?;
        let size = if prefix { 16 } else { 1 };
        if subnet.available_ips < n * size {
            return Err(err(Ec2ErrorKind::SubnetFull, action, "InsufficientFreeAddressesInSubnet"));
        }
        if prefix && self.no_cidr.contains(subnet_id) {
            return Err(err(Ec2ErrorKind::NoCidrBlocks, action, "InsufficientCidrBlocks"));
        }
        let base = u32::from(subnet.cidr.network());
        let hosts = 1u32 << (32 - subnet.cidr.prefix_len());
        let used = self.used.entry(subnet_id.to_string()).or_default();
        let mut out = Vec::new();
        // Addresses from the bottom (skipping the 4 AWS reserves), prefixes from the top, aligned.
        if prefix {
            let mut start = hosts - 32;
            while out.len() < n as usize && start >= 16 {
                if (start..start + 16).all(|o| !used.contains(&(base + o))) {
                    (start..start + 16).for_each(|o| {
                        used.insert(base + o);
                    });
                    out.push(Ipv4Net::new(Ipv4Addr::from(base + start), 28).expect("valid"));
                }
                start -= 16;
            }
            if out.len() < n as usize {
                return Err(err(Ec2ErrorKind::NoCidrBlocks, action, "InsufficientCidrBlocks"));
            }
        } else {
            let mut o = 4;
            while out.len() < n as usize && o < hosts - 1 {
                if used.insert(base + o) {
                    out.push(Ipv4Net::new(Ipv4Addr::from(base + o), 32).expect("valid"));
                }
                o += 1;
            }
        }
        let s = self.subnets.get_mut(subnet_id).expect("checked");
        s.available_ips -= n * size;
        Ok(out)
    }

    fn give_back(&mut self, subnet_id: &str, net: Ipv4Net) {
        let base = u32::from(net.network());
        let count = 1u32 << (32 - net.prefix_len());
        if let Some(used) = self.used.get_mut(subnet_id) {
            (base..base + count).for_each(|a| {
                used.remove(&a);
            });
        }
        if let Some(s) = self.subnets.get_mut(subnet_id) {
            s.available_ips += count as i32;
        }
    }

    fn eni_mut(&mut self, id: &str, action: &'static str) -> Ec2Result<&mut Eni> {
        self.enis
            .get_mut(id)
            .ok_or_else(|| err(Ec2ErrorKind::NotFound, action, format!("{id} not found")))
    }
}

impl FakeEc2 {
    /// A VPC `vpc-1` with one subnet `subnet-a` (10.0.0.0/24, zone `az-a`), one security group and
    /// the instance types `m5.large` (3×10) and `t3.small` (3×4).
    pub fn new() -> Self {
        let fake = FakeEc2::default();
        fake.add_subnet("subnet-a", "10.0.0.0/24", "az-a", 251);
        {
            let mut s = fake.state.lock().expect("lock");
            s.types.insert("m5.large".into(), InstanceTypeInfo { max_enis: 3, ipv4_per_eni: 10 });
            s.types.insert("t3.small".into(), InstanceTypeInfo { max_enis: 3, ipv4_per_eni: 4 });
            s.security_groups.push(SecurityGroup {
                id: "sg-node".into(),
                vpc_id: "vpc-1".into(),
                tags: BTreeMap::new(),
            });
        }
        fake
    }

    /// Add a subnet with `available` free addresses.
    pub fn add_subnet(&self, id: &str, cidr: &str, zone: &str, available: i32) {
        let mut s = self.state.lock().expect("lock");
        s.subnets.insert(
            id.into(),
            Subnet {
                id: id.into(),
                cidr: cidr.parse().expect("cidr"),
                zone: zone.into(),
                vpc_id: "vpc-1".into(),
                available_ips: available,
                tags: BTreeMap::new(),
            },
        );
    }

    /// Launch an instance in `subnet-a` with a primary ENI carrying `secondary` launch-time
    /// addresses. Returns the primary ENI id.
    pub fn launch(&self, instance_id: &str, instance_type: &str, secondary: i32) -> String {
        let mut s = self.state.lock().expect("lock");
        let nets = s
            .take("subnet-a", 1 + secondary, false, "RunInstances")
            .expect("room for the instance");
        let eni_id = s.id("eni");
        let mac = format!("02:00:00:00:{:02x}:{:02x}", s.next_id >> 8 & 0xff, s.next_id & 0xff);
        let primary_ip = nets[0].addr();
        s.enis.insert(
            eni_id.clone(),
            Eni {
                id: eni_id.clone(),
                mac,
                subnet_id: "subnet-a".into(),
                vpc_id: "vpc-1".into(),
                zone: "az-a".into(),
                status: "in-use".into(),
                attachment: Some(Attachment {
                    id: format!("eni-attach-{instance_id}-0"),
                    instance_id: instance_id.into(),
                    device_index: 0,
                    status: "attached".into(),
                    delete_on_termination: true,
                }),
                primary_ip: Some(primary_ip),
                secondary_ips: nets[1..].iter().map(|n| n.addr()).collect(),
                security_groups: vec!["sg-node".into()],
                ..Default::default()
            },
        );
        s.instances.insert(
            instance_id.into(),
            Instance {
                id: instance_id.into(),
                instance_type: instance_type.into(),
                zone: "az-a".into(),
                vpc_id: "vpc-1".into(),
                subnet_id: "subnet-a".into(),
                state: "running".into(),
                primary_eni: eni_id.clone(),
                primary_ip: Some(primary_ip),
                security_groups: vec!["sg-node".into()],
                tags: BTreeMap::new(),
            },
        );
        eni_id
    }

    /// Terminate an instance: ENIs with DeleteOnTermination go, others are detached.
    pub fn terminate(&self, instance_id: &str) {
        let mut s = self.state.lock().expect("lock");
        if let Some(i) = s.instances.get_mut(instance_id) {
            i.state = "terminated".into();
        }
        let attached: Vec<Eni> = s
            .enis
            .values()
            .filter(|e| e.attachment.as_ref().is_some_and(|a| a.instance_id == instance_id))
            .cloned()
            .collect();
        for e in attached {
            if e.attachment.as_ref().is_some_and(|a| a.delete_on_termination) {
                s.enis.remove(&e.id);
            } else if let Some(x) = s.enis.get_mut(&e.id) {
                x.attachment = None;
                x.status = "available".into();
            }
        }
    }

    /// Fail the next call of `action` (or of any action with `"*"`) with `kind`.
    pub fn fail_next(&self, action: &'static str, kind: Ec2ErrorKind) {
        self.state.lock().expect("lock").faults.push_back((action, kind));
    }

    /// Calls made so far, by action.
    pub fn calls(&self) -> Vec<&'static str> {
        self.state.lock().expect("lock").calls.clone()
    }

    /// Mutating calls made so far.
    pub fn mutations(&self) -> Vec<&'static str> {
        self.calls()
            .into_iter()
            .filter(|c| !c.starts_with("Describe") && !c.starts_with("List"))
            .collect()
    }

    /// Forget the call log.
    pub fn reset_calls(&self) {
        self.state.lock().expect("lock").calls.clear();
    }

    /// All ENIs.
    pub fn enis(&self) -> Vec<Eni> {
        self.state.lock().expect("lock").enis.values().cloned().collect()
    }
}

fn tags_match(have: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k).is_some_and(|h| v.is_empty() || h == v))
}

#[async_trait::async_trait]
impl Ec2Api for FakeEc2 {
    async fn describe_instances(&self, ids: &[String]) -> Ec2Result<Vec<Instance>> {
        let mut s = self.state.lock().expect("lock");
        s.enter("DescribeInstances")?;
        Ok(ids.iter().filter_map(|id| s.instances.get(id).cloned()).collect())
    }

    async fn describe_instance_types(
        &self,
        types: &[String],
    ) -> Ec2Result<BTreeMap<String, InstanceTypeInfo>> {
        let mut s = self.state.lock().expect("lock");
        s.enter("DescribeInstanceTypes")?;
        Ok(types.iter().filter_map(|t| s.types.get(t).map(|i| (t.clone(), *i))).collect())
    }

    async fn describe_subnets(&self, q: &Query) -> Ec2Result<Vec<Subnet>> {
        let mut s = self.state.lock().expect("lock");
        s.enter("DescribeSubnets")?;
        Ok(s.subnets
            .values()
            .filter(|x| q.ids.is_empty() || q.ids.contains(&x.id))
            .filter(|x| q.vpc_id.as_ref().is_none_or(|v| *v == x.vpc_id))
            .filter(|x| q.zone.as_ref().is_none_or(|z| *z == x.zone))
            .filter(|x| tags_match(&x.tags, &q.tags))
            .cloned()
            .collect())
    }

    async fn describe_security_groups(&self, q: &Query) -> Ec2Result<Vec<SecurityGroup>> {
        let mut s = self.state.lock().expect("lock");
        s.enter("DescribeSecurityGroups")?;
        Ok(s.security_groups
            .iter()
            .filter(|x| q.ids.is_empty() || q.ids.contains(&x.id))
            .filter(|x| tags_match(&x.tags, &q.tags))
            .cloned()
            .collect())
    }

    async fn describe_instance_enis(&self, instance_id: &str) -> Ec2Result<Vec<Eni>> {
        let mut s = self.state.lock().expect("lock");
        s.enter("DescribeNetworkInterfaces")?;
        Ok(s.enis
            .values()
            .filter(|e| e.attachment.as_ref().is_some_and(|a| a.instance_id == instance_id))
            .cloned()
            .collect())
    }

    async fn describe_enis(&self, ids: &[String]) -> Ec2Result<Vec<Eni>> {
        let mut s = self.state.lock().expect("lock");
        s.enter("DescribeNetworkInterfaces")?;
        Ok(ids.iter().filter_map(|id| s.enis.get(id).cloned()).collect())
    }

    async fn list_cluster_enis(&self, cluster: &str) -> Ec2Result<Vec<Eni>> {
        let mut s = self.state.lock().expect("lock");
        s.enter("ListClusterNetworkInterfaces")?;
        let key = enipool_crds::tags::CLUSTER;
        Ok(s.enis
            .values()
            .filter(|e| e.tags.get(key).is_some_and(|c| c == cluster))
            .cloned()
            .collect())
    }

    async fn list_leftover_enis(&self, cluster: &str, instance_id: &str) -> Ec2Result<Vec<Eni>> {
        let mut s = self.state.lock().expect("lock");
        s.enter("DescribeNetworkInterfaces")?;
        let (c, i) = (enipool_crds::tags::CLUSTER, enipool_crds::tags::INSTANCE_ID);
        Ok(s.enis
            .values()
            .filter(|e| e.status == "available")
            .filter(|e| e.tags.get(c).is_some_and(|v| v == cluster))
            .filter(|e| e.tags.get(i).is_some_and(|v| v == instance_id))
            .cloned()
            .collect())
    }

    async fn create_eni(&self, req: &CreateEni) -> Ec2Result<Eni> {
        const A: &str = "CreateNetworkInterface";
        let mut s = self.state.lock().expect("lock");
        s.enter(A)?;
        if let Some(id) = s.tokens.get(&req.client_token).cloned() {
            // Idempotent replay: the same ENI (EC2 also checks the parameters; we check the subnet).
            return match s.enis.get(&id) {
                Some(e) if e.subnet_id == req.subnet_id => Ok(e.clone()),
                Some(_) => Err(err(Ec2ErrorKind::IdempotencyMismatch, A, "token reused")),
                None => Err(err(Ec2ErrorKind::IdempotencyMismatch, A, "token of a deleted ENI")),
            };
        }
        let limits = InstanceTypeInfo { max_enis: 0, ipv4_per_eni: 50 };
        if req.secondary_ips + req.prefixes > limits.ipv4_per_eni - 1 {
            return Err(err(Ec2ErrorKind::AddressLimit, A, "too many addresses"));
        }
        let primary = s.take(&req.subnet_id, 1, false, A)?;
        let (ips, prefixes) = if req.prefixes > 0 {
            match s.take(&req.subnet_id, req.prefixes, true, A) {
                Ok(p) => (vec![], p),
                Err(e) => {
                    let sub = req.subnet_id.clone();
                    s.give_back(&sub, primary[0]);
                    return Err(e);
                }
            }
        } else {
            match s.take(&req.subnet_id, req.secondary_ips, false, A) {
                Ok(i) => (i.iter().map(|n| n.addr()).collect(), vec![]),
                Err(e) => {
                    let sub = req.subnet_id.clone();
                    s.give_back(&sub, primary[0]);
                    return Err(e);
                }
            }
        };
        let id = s.id("eni");
        let subnet = s.subnets.get(&req.subnet_id).cloned().expect("taken from it");
        let eni = Eni {
            id: id.clone(),
            mac: format!("02:00:00:01:{:02x}:{:02x}", s.next_id >> 8 & 0xff, s.next_id & 0xff),
            subnet_id: req.subnet_id.clone(),
            vpc_id: subnet.vpc_id,
            zone: subnet.zone,
            status: "available".into(),
            attachment: None,
            primary_ip: Some(primary[0].addr()),
            secondary_ips: ips,
            prefixes,
            security_groups: req.security_groups.clone(),
            tags: req.tags.clone(),
            description: req.description.clone(),
        };
        s.enis.insert(id.clone(), eni.clone());
        s.tokens.insert(req.client_token.clone(), id);
        Ok(eni)
    }

    async fn attach_eni(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: i32,
    ) -> Ec2Result<String> {
        const A: &str = "AttachNetworkInterface";
        let mut s = self.state.lock().expect("lock");
        s.enter(A)?;
        let limits = s.limits_of(instance_id);
        let on_instance: Vec<i32> = s
            .enis
            .values()
            .filter_map(|e| {
                e.attachment
                    .as_ref()
                    .filter(|a| a.instance_id == instance_id)
                    .map(|a| a.device_index)
            })
            .collect();
        if !s.instances.contains_key(instance_id) {
            return Err(err(Ec2ErrorKind::NotFound, A, "instance"));
        }
        if on_instance.len() as i32 >= limits.max_enis {
            return Err(err(Ec2ErrorKind::AttachmentLimit, A, "AttachmentLimitExceeded"));
        }
        if on_instance.contains(&device_index) {
            return Err(err(Ec2ErrorKind::InvalidRequest, A, "device index in use"));
        }
        let attach_id = format!("eni-attach-{eni_id}");
        let eni = s.eni_mut(eni_id, A)?;
        if eni.attachment.is_some() {
            return Err(err(Ec2ErrorKind::InUse, A, "already attached"));
        }
        eni.status = "in-use".into();
        eni.attachment = Some(Attachment {
            id: attach_id.clone(),
            instance_id: instance_id.into(),
            device_index,
            status: "attached".into(),
            delete_on_termination: false,
        });
        Ok(attach_id)
    }

    async fn set_delete_on_termination(
        &self,
        eni_id: &str,
        attachment_id: &str,
        delete: bool,
    ) -> Ec2Result<()> {
        const A: &str = "ModifyNetworkInterfaceAttribute";
        let mut s = self.state.lock().expect("lock");
        s.enter(A)?;
        let eni = s.eni_mut(eni_id, A)?;
        match eni.attachment.as_mut().filter(|a| a.id == attachment_id) {
            Some(a) => {
                a.delete_on_termination = delete;
                Ok(())
            }
            None => Err(err(Ec2ErrorKind::NotFound, A, "attachment")),
        }
    }

    async fn detach_eni(&self, attachment_id: &str, _force: bool) -> Ec2Result<()> {
        const A: &str = "DetachNetworkInterface";
        let mut s = self.state.lock().expect("lock");
        s.enter(A)?;
        let eni = s
            .enis
            .values_mut()
            .find(|e| e.attachment.as_ref().is_some_and(|a| a.id == attachment_id));
        match eni {
            Some(e) => {
                e.attachment = None;
                e.status = "available".into();
                Ok(())
            }
            None => Err(err(Ec2ErrorKind::NotFound, A, "attachment")),
        }
    }

    async fn delete_eni(&self, eni_id: &str) -> Ec2Result<()> {
        const A: &str = "DeleteNetworkInterface";
        let mut s = self.state.lock().expect("lock");
        s.enter(A)?;
        let eni =
            s.enis.get(eni_id).cloned().ok_or_else(|| err(Ec2ErrorKind::NotFound, A, "eni"))?;
        if eni.attachment.is_some() {
            return Err(err(Ec2ErrorKind::InUse, A, "attached"));
        }
        s.enis.remove(eni_id);
        let nets: Vec<Ipv4Net> = eni
            .primary_ip
            .iter()
            .chain(eni.secondary_ips.iter())
            .map(|a| Ipv4Net::new(*a, 32).expect("valid"))
            .chain(eni.prefixes.iter().copied())
            .collect();
        nets.into_iter().for_each(|n| s.give_back(&eni.subnet_id, n));
        Ok(())
    }

    async fn assign_ips(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Addr>> {
        const A: &str = "AssignPrivateIpAddresses";
        let mut s = self.state.lock().expect("lock");
        s.enter(A)?;
        let eni =
            s.enis.get(eni_id).cloned().ok_or_else(|| err(Ec2ErrorKind::NotFound, A, "eni"))?;
        let instance = eni.attachment.as_ref().map(|a| a.instance_id.clone()).unwrap_or_default();
        let slots = s.limits_of(&instance).ipv4_per_eni - 1;
        if (eni.secondary_ips.len() + eni.prefixes.len()) as i32 + count > slots {
            return Err(err(Ec2ErrorKind::AddressLimit, A, "PrivateIpAddressLimitExceeded"));
        }
        let nets = s.take(&eni.subnet_id, count, false, A)?;
        let ips: Vec<Ipv4Addr> = nets.iter().map(|n| n.addr()).collect();
        s.eni_mut(eni_id, A)?.secondary_ips.extend(ips.iter().copied());
        Ok(ips)
    }

    async fn assign_prefixes(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Net>> {
        const A: &str = "AssignPrivateIpAddresses";
        let mut s = self.state.lock().expect("lock");
        s.enter(A)?;
        let eni =
            s.enis.get(eni_id).cloned().ok_or_else(|| err(Ec2ErrorKind::NotFound, A, "eni"))?;
        let instance = eni.attachment.as_ref().map(|a| a.instance_id.clone()).unwrap_or_default();
        let slots = s.limits_of(&instance).ipv4_per_eni - 1;
        if (eni.secondary_ips.len() + eni.prefixes.len()) as i32 + count > slots {
            return Err(err(Ec2ErrorKind::AddressLimit, A, "PrivateIpAddressLimitExceeded"));
        }
        let nets = s.take(&eni.subnet_id, count, true, A)?;
        s.eni_mut(eni_id, A)?.prefixes.extend(nets.iter().copied());
        Ok(nets)
    }

    async fn unassign_ips(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Ec2Result<()> {
        const A: &str = "UnassignPrivateIpAddresses";
        let mut s = self.state.lock().expect("lock");
        s.enter(A)?;
        let eni = s.eni_mut(eni_id, A)?;
        let subnet = eni.subnet_id.clone();
        let gone: Vec<Ipv4Addr> =
            eni.secondary_ips.iter().copied().filter(|a| ips.contains(a)).collect();
        eni.secondary_ips.retain(|a| !ips.contains(a));
        gone.into_iter().for_each(|a| s.give_back(&subnet, Ipv4Net::new(a, 32).expect("valid")));
        Ok(())
    }

    async fn unassign_prefixes(&self, eni_id: &str, prefixes: &[Ipv4Net]) -> Ec2Result<()> {
        const A: &str = "UnassignPrivateIpAddresses";
        let mut s = self.state.lock().expect("lock");
        s.enter(A)?;
        let eni = s.eni_mut(eni_id, A)?;
        let subnet = eni.subnet_id.clone();
        let gone: Vec<Ipv4Net> =
            eni.prefixes.iter().copied().filter(|p| prefixes.contains(p)).collect();
        eni.prefixes.retain(|p| !prefixes.contains(p));
        gone.into_iter().for_each(|p| s.give_back(&subnet, p));
        Ok(())
    }

    async fn create_tags(&self, ids: &[String], tags: &BTreeMap<String, String>) -> Ec2Result<()> {
        let mut s = self.state.lock().expect("lock");
        s.enter("CreateTags")?;
        for id in ids {
            if let Some(e) = s.enis.get_mut(id) {
                e.tags.extend(tags.clone());
            }
        }
        Ok(())
    }
}
