//! The [`Ec2Api`] calls of [`FakeEc2`]: each records itself, consumes an injected fault if one
//! matches, and enforces the limits EC2 would.

use super::{err, FakeEc2};
use crate::ec2::{
    Attachment, CreateEni, Ec2Api, Ec2ErrorKind, Ec2Result, Eni, Instance, InstanceTypeInfo, Query,
    SecurityGroup, Subnet, Vpc,
};
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

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

    async fn describe_vpcs(&self, ids: &[String]) -> Ec2Result<Vec<Vpc>> {
        let mut s = self.state.lock().expect("lock");
        s.enter("DescribeVpcs")?;
        Ok(ids.iter().filter_map(|id| s.vpcs.get(id).cloned()).collect())
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
        Ok(s.described_enis()
            .values()
            .filter(|e| e.attachment.as_ref().is_some_and(|a| a.instance_id == instance_id))
            .cloned()
            .collect())
    }

    async fn describe_enis(&self, ids: &[String]) -> Ec2Result<Vec<Eni>> {
        let mut s = self.state.lock().expect("lock");
        s.enter("DescribeNetworkInterfaces")?;
        Ok(ids.iter().filter_map(|id| s.described_enis().get(id).cloned()).collect())
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
        // No token, no idempotency (as in EC2): an empty token is not a key.
        let token = Some(&req.client_token).filter(|t| !t.is_empty());
        if let Some(id) = token.and_then(|t| s.tokens.get(t)).cloned() {
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
            ipv6_prefixes: vec![],
            security_groups: req.security_groups.clone(),
            tags: req.tags.clone(),
            description: req.description.clone(),
        };
        s.enis.insert(id.clone(), eni.clone());
        if let Some(t) = token {
            s.tokens.insert(t.clone(), id);
        }
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

    async fn assign_ipv6_prefixes(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv6Net>> {
        const A: &str = "AssignIpv6Addresses";
        let mut s = self.state.lock().expect("lock");
        s.enter(A)?;
        let eni =
            s.enis.get(eni_id).cloned().ok_or_else(|| err(Ec2ErrorKind::NotFound, A, "eni"))?;
        let instance = eni.attachment.as_ref().map(|a| a.instance_id.clone()).unwrap_or_default();
        if eni.ipv6_prefixes.len() as i32 + count > s.limits_of(&instance).ipv4_per_eni {
            return Err(err(Ec2ErrorKind::AddressLimit, A, "PrivateIpAddressLimitExceeded"));
        }
        let Some((block, used)) = s.ipv6_subnets.get_mut(&eni.subnet_id) else {
            return Err(err(Ec2ErrorKind::InvalidRequest, A, "the subnet has no IPv6 CIDR block"));
        };
        // The /64's first /80 is for single addresses, as in EC2's simulator.
        let prefixes: Vec<Ipv6Net> = block
            .subnets(80)
            .expect("80 >= 64")
            .skip(1 + *used as usize)
            .take(count as usize)
            .collect();
        *used += count as u32;
        s.eni_mut(eni_id, A)?.ipv6_prefixes.extend(prefixes.iter().copied());
        Ok(prefixes)
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
}
