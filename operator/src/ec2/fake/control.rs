//! What a test does to [`FakeEc2`] besides calling it: seed subnets and instances, terminate an
//! instance, inject faults, make ENI describes lag, and read or reset the call log.

use super::FakeEc2;
use crate::ec2::{
    Attachment, Ec2ErrorKind, Eni, Instance, InstanceTypeInfo, SecurityGroup, Subnet, Vpc,
};
use std::collections::BTreeMap;

impl FakeEc2 {
    /// A VPC `vpc-1` (10.0.0.0/16) with one subnet `subnet-a` (10.0.0.0/24, zone `az-a`), one
    /// security group and the instance types `m5.large` (3×10) and `t3.small` (3×4).
    pub fn new() -> Self {
        let fake = FakeEc2::default();
        fake.add_subnet("subnet-a", "10.0.0.0/24", "az-a", 251);
        {
            let mut s = fake.state.lock().expect("lock");
            let vpc = Vpc { id: "vpc-1".into(), cidr_blocks: vec!["10.0.0.0/16".parse().unwrap()] };
            s.vpcs.insert(vpc.id.clone(), vpc);
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

    /// Give subnet `id` an IPv6 /64, from which /80 prefixes are handed out in order.
    pub fn add_subnet_ipv6(&self, id: &str, cidr: &str) {
        let cidr = cidr.parse().expect("IPv6 cidr");
        self.state.lock().expect("lock").ipv6_subnets.insert(id.into(), (cidr, 0));
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
    /// EC2 keeps a ClientToken for a limited time (at least a day): after that a create with the
    /// same token makes a new ENI.
    pub fn expire_client_tokens(&self) {
        self.state.lock().expect("lock").tokens.clear();
    }

    pub fn fail_next(&self, action: &'static str, kind: Ec2ErrorKind) {
        self.state.lock().expect("lock").faults.push_back((action, kind));
    }

    /// From now on ENI describes answer with the ENIs as they are now, as EC2's eventually
    /// consistent describes do right after a change, until [`Self::catch_up`].
    pub fn lag_describes(&self) {
        let mut s = self.state.lock().expect("lock");
        s.described_enis = Some(s.enis.clone());
    }

    /// ENI describes show the ENIs as they are again.
    pub fn catch_up(&self) {
        self.state.lock().expect("lock").described_enis = None;
    }

    /// Describe calls made so far.
    pub fn describes(&self) -> Vec<&'static str> {
        self.calls().into_iter().filter(|c| c.starts_with("Describe")).collect()
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

    pub fn enis(&self) -> Vec<Eni> {
        self.state.lock().expect("lock").enis.values().cloned().collect()
    }
}
