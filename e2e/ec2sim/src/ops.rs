//! Mutations of the VPC model with EC2's rules. Each returns the hook events it caused through
//! `ev`; nothing here does I/O, so the server decides when to deliver them (after unlocking).

use super::hooks::HookEvent;
use super::limits::{self, UNATTACHED_IPV4_SLOTS};
use super::state::*;
use super::Error;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::time::Instant;

type Events = Vec<HookEvent>;

/// A CreateNetworkInterface request, parsed.
#[derive(Debug, Clone, Default)]
pub struct CreateEniReq {
    pub subnet_id: String,
    pub groups: Vec<String>,
    pub description: String,
    pub primary_ip: Option<Ipv4Addr>,
    pub secondary_ips: Vec<Ipv4Addr>,
    pub secondary_count: Option<u32>,
    /// Ipv4PrefixCount.
    pub prefix_count: Option<u32>,
    pub prefixes: Vec<Ipv4Net>,
    pub tags: Tags,
}

/// A RunInstances request, parsed (one subnet, one primary ENI per instance).
#[derive(Debug, Clone, Default)]
pub struct RunReq {
    /// AMI id (not validated).
    pub image_id: String,
    /// Instance type; must be in the limits table.
    pub instance_type: String,
    pub count: u32,
    /// Subnet of the primary ENI.
    pub subnet_id: String,
    /// Security groups of the primary ENI.
    pub groups: Vec<String>,
    /// Primary address (only with count 1).
    pub private_ip: Option<Ipv4Addr>,
    /// Secondary addresses on the primary ENI at launch.
    pub secondary_count: u32,
    /// /28 prefixes on the primary ENI at launch.
    pub prefix_count: u32,
    /// DeleteOnTermination of the primary ENI (EC2's default is true).
    pub delete_on_termination: bool,
    pub tags: Tags,
    /// Tags for the primary ENI.
    pub eni_tags: Tags,
}

fn bad(code: &str, msg: impl Into<String>) -> Error {
    Error::api(code, msg)
}

impl State {
    fn check_groups(&self, groups: &[String], vpc_id: &str) -> Result<(), Error> {
        for g in groups {
            match self.groups.get(g) {
                Some(sg) if sg.vpc_id == vpc_id => {}
                Some(_) => {
                    return Err(bad(
                        "InvalidParameter",
                        format!("Security group {g} and subnet belong to different networks."),
                    ))
                }
                None => return Err(not_found("InvalidGroup.NotFound", "security group", g)),
            }
        }
        Ok(())
    }

    /// CreateNetworkInterface: all addresses or nothing.
    pub fn create_eni(&mut self, req: &CreateEniReq, ev: &mut Events) -> Result<String, Error> {
        if req.prefix_count.is_some()
            && (req.secondary_count.is_some()
                || !req.secondary_ips.is_empty()
                || !req.prefixes.is_empty())
        {
            return Err(bad(
                "InvalidParameterCombination",
                "Ipv4PrefixCount cannot be combined with private addresses or explicit prefixes.",
            ));
        }
        if req.secondary_count.is_some() && !req.secondary_ips.is_empty() {
            return Err(bad(
                "InvalidParameterCombination",
                "SecondaryPrivateIpAddressCount cannot be combined with explicit addresses.",
            ));
        }
        let n_sec = req.secondary_count.unwrap_or(0) + req.secondary_ips.len() as u32;
        let n_pfx = req.prefix_count.unwrap_or(0) + req.prefixes.len() as u32;
        if 1 + n_sec + n_pfx > UNATTACHED_IPV4_SLOTS {
            return Err(bad(
                "PrivateIpAddressLimitExceeded",
                "Number of private addresses will exceed limit.",
            ));
        }
        if self.enis.len() >= self.account.eni_quota {
            return Err(bad(
                "NetworkInterfaceLimitExceeded",
                format!(
                    "You have reached the maximum number of network interfaces ({}) for this \
                     account in this Region.",
                    self.account.eni_quota
                ),
            ));
        }
        let mut subnet = self.subnet_mut(&req.subnet_id)?.clone();
        self.check_groups(&req.groups, &subnet.vpc_id)?;
        // Work on a copy of the subnet so a failure part-way leaves nothing allocated.
        let primary = match req.primary_ip {
            Some(ip) => {
                subnet.take_exact(&[ip])?;
                ip
            }
            None => subnet.take_ips(1)?[0],
        };
        subnet.take_exact(&req.secondary_ips)?;
        let mut secondary = req.secondary_ips.clone();
        secondary.extend(subnet.take_ips(req.secondary_count.unwrap_or(0))?);
        subnet.take_exact_prefixes(&req.prefixes)?;
        let mut prefixes = req.prefixes.clone();
        prefixes.extend(subnet.take_prefixes(req.prefix_count.unwrap_or(0))?);
        let (vpc_id, az) = (subnet.vpc_id.clone(), subnet.az.clone());
        self.subnets.insert(subnet.id.clone(), subnet);
        let id = self.new_id("eni");
        let mac = self.new_mac();
        let groups = if req.groups.is_empty() {
            self.default_group(&vpc_id).into_iter().collect()
        } else {
            req.groups.clone()
        };
        let eni = Eni {
            id: id.clone(),
            subnet_id: req.subnet_id.clone(),
            vpc_id,
            az,
            mac,
            description: req.description.clone(),
            primary_ip: primary,
            secondary,
            prefixes,
            ipv6_addrs: Vec::new(),
            ipv6_prefixes: Vec::new(),
            groups,
            tags: req.tags.clone(),
            attachment: None,
            source_dest_check: true,
        };
        ev.push(eni.assigned_event(eni.all_addrs()));
        self.enis.insert(id.clone(), eni);
        Ok(id)
    }

    fn default_group(&self, vpc_id: &str) -> Option<String> {
        let mut gs = self.groups.values().filter(|g| g.vpc_id == vpc_id);
        gs.clone().find(|g| g.name == "default").or_else(|| gs.next()).map(|g| g.id.clone())
    }

    /// IPv4 slots the ENI may hold where it is now (its instance type's limit when attached).
    /// The limits of the type of the instance the ENI is attached to.
    pub(crate) fn attached_type(&self, eni: &Eni) -> Option<&'static limits::TypeLimits> {
        eni.attachment
            .as_ref()
            .and_then(|a| self.instances.get(&a.instance_id))
            .and_then(|i| limits::lookup(&i.instance_type))
    }

    fn slot_limit(&self, eni: &Eni) -> u32 {
        self.attached_type(eni).map_or(UNATTACHED_IPV4_SLOTS, |l| l.ipv4_per_eni)
    }

    pub fn attach(
        &mut self,
        eni_id: &str,
        instance_id: &str,
        device_index: u32,
        now: Instant,
        ev: &mut Events,
    ) -> Result<String, Error> {
        let eni = self.eni(eni_id)?;
        let inst = self.instance(instance_id)?;
        if inst.state != InstanceState::Running {
            return Err(bad(
                "IncorrectInstanceState",
                format!("The instance '{instance_id}' is not in a valid state for this operation."),
            ));
        }
        if eni.attachment.is_some() {
            return Err(bad(
                "InvalidNetworkInterface.InUse",
                format!("Interface: [{eni_id}] in use."),
            ));
        }
        if eni.az != inst.az || eni.vpc_id != inst.vpc_id {
            return Err(bad("InvalidParameterCombination", "You may not attach a network interface to an instance if they are not in the same availability zone"));
        }
        let lim =
            limits::lookup(&inst.instance_type).copied().expect("launched types are in the table");
        let attached: Vec<&Eni> = self.instance_enis(instance_id).collect();
        if attached
            .iter()
            .any(|e| e.attachment.as_ref().is_some_and(|a| a.device_index == device_index))
        {
            return Err(bad("InvalidParameterValue", format!("Instance '{instance_id}' already has an interface attached at device index '{device_index}'.")));
        }
        // Every attachment of the simulator is on card 0 (no NetworkCardIndex), which takes
        // only its share of a multi-card type's interfaces.
        if attached.len() as u32 + 1 > lim.enis_per_card() {
            return Err(bad(
                "AttachmentLimitExceeded",
                format!(
                    "Interface count {} exceeds the limit for {} on network card 0",
                    attached.len() + 1,
                    lim.name
                ),
            ));
        }
        if eni.slots() > lim.ipv4_per_eni {
            let short = eni_id.trim_start_matches("eni-");
            return Err(bad(
                "InvalidInterface.IpAddressLimitExceeded",
                format!(
                    "Address count {} on interface-{short} exceeds the limit for {}",
                    eni.slots(),
                    lim.name
                ),
            ));
        }
        let att_id = self.new_id("eni-attach");
        let instant = self.timing.attach.is_zero();
        let eni = self.enis.get_mut(eni_id).expect("checked");
        eni.attachment = Some(Attachment {
            id: att_id.clone(),
            instance_id: instance_id.into(),
            device_index,
            state: if instant { AttachState::Attached } else { AttachState::Attaching },
            delete_on_termination: false,
            attach_time: now_rfc3339(),
        });
        if instant {
            ev.push(attached_event(eni));
        } else {
            let t = Timer::AttachDone { eni: eni_id.into(), attachment: att_id.clone() };
            self.timers.push((now + self.timing.attach, t));
        }
        Ok(att_id)
    }

    fn eni_by_attachment(&self, attachment_id: &str) -> Result<String, Error> {
        self.enis
            .values()
            .find(|e| e.attachment.as_ref().is_some_and(|a| a.id == attachment_id))
            .map(|e| e.id.clone())
            .ok_or_else(|| {
                not_found("InvalidAttachmentID.NotFound", "attachment ID", attachment_id)
            })
    }

    /// DetachNetworkInterface: the ENI keeps its slot as `detaching` for `timing.detach`.
    pub fn detach(
        &mut self,
        attachment_id: &str,
        now: Instant,
        ev: &mut Events,
    ) -> Result<(), Error> {
        let eni_id = self.eni_by_attachment(attachment_id)?;
        let delay = self.timing.detach;
        let eni = self.enis.get_mut(&eni_id).expect("found");
        let att = eni.attachment.as_mut().expect("found by attachment");
        if att.device_index == 0 {
            return Err(bad(
                "OperationNotPermitted",
                "The network interface at device index 0 cannot be detached.",
            ));
        }
        if att.state == AttachState::Detaching {
            return Ok(()); // EC2 accepts a repeated detach while one is in progress.
        }
        if delay.is_zero() {
            finish_detach(eni, ev);
        } else {
            att.state = AttachState::Detaching;
            let t = Timer::DetachDone { eni: eni_id, attachment: attachment_id.into() };
            self.timers.push((now + delay, t));
        }
        Ok(())
    }

    /// DeleteNetworkInterface: only `available` ENIs.
    pub fn delete_eni(&mut self, eni_id: &str, ev: &mut Events) -> Result<(), Error> {
        if self.eni(eni_id)?.attachment.is_some() {
            return Err(bad(
                "InvalidNetworkInterface.InUse",
                format!("The network interface '{eni_id}' is currently in use."),
            ));
        }
        self.remove_eni(eni_id, ev);
        Ok(())
    }

    /// Deletes an ENI, giving its addresses of both families back to the subnet.
    pub(crate) fn remove_eni(&mut self, eni_id: &str, ev: &mut Events) {
        if let Some(eni) = self.enis.remove(eni_id) {
            let addrs = eni.all_addrs();
            if let Some(s) = self.subnets.get_mut(&eni.subnet_id) {
                s.release(addrs.iter().copied());
                if let Some(v6) = s.ipv6.as_mut() {
                    v6.release(&eni.ipv6_addrs, &eni.ipv6_prefixes);
                }
            }
            ev.push(eni.unassigned_event(addrs));
            if eni.ipv6_slots() > 0 {
                ev.push(
                    eni.ipv6_unassigned_event(eni.ipv6_addrs.clone(), eni.ipv6_prefixes.clone()),
                );
            }
        }
    }

    /// ModifyNetworkInterfaceAttribute (one attribute per call, as EC2 requires).
    pub fn modify_eni(
        &mut self,
        eni_id: &str,
        attachment: Option<(String, bool)>,
        description: Option<String>,
        groups: Option<Vec<String>>,
        source_dest_check: Option<bool>,
    ) -> Result<(), Error> {
        let n = [
            attachment.is_some(),
            description.is_some(),
            groups.is_some(),
            source_dest_check.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n != 1 {
            return Err(bad(
                "InvalidParameterCombination",
                "Exactly one attribute must be specified.",
            ));
        }
        let vpc = self.eni(eni_id)?.vpc_id.clone();
        if let Some(gs) = &groups {
            self.check_groups(gs, &vpc)?;
        }
        let eni = self.enis.get_mut(eni_id).expect("checked");
        if let Some((att_id, dot)) = attachment {
            match eni.attachment.as_mut() {
                Some(a) if a.id == att_id => a.delete_on_termination = dot,
                _ => {
                    return Err(not_found("InvalidAttachmentID.NotFound", "attachment ID", &att_id))
                }
            }
        }
        if let Some(d) = description {
            eni.description = d;
        }
        if let Some(gs) = groups {
            eni.groups = gs;
        }
        if let Some(b) = source_dest_check {
            eni.source_dest_check = b;
        }
        Ok(())
    }

    /// AssignPrivateIpAddresses: addresses by count or explicitly, or prefixes; all or nothing.
    pub fn assign(
        &mut self,
        eni_id: &str,
        count: Option<u32>,
        ips: &[Ipv4Addr],
        prefix_count: Option<u32>,
        prefixes: &[Ipv4Net],
        ev: &mut Events,
    ) -> Result<(Vec<Ipv4Addr>, Vec<Ipv4Net>), Error> {
        let want_ips = count.is_some() || !ips.is_empty();
        let want_pfx = prefix_count.is_some() || !prefixes.is_empty();
        if (want_ips && want_pfx)
            || (count.is_some() && !ips.is_empty())
            || (prefix_count.is_some() && !prefixes.is_empty())
        {
            return Err(bad(
                "InvalidParameterCombination",
                "Specify either a count or explicit addresses, and either addresses or prefixes.",
            ));
        }
        if !want_ips && !want_pfx {
            return Err(bad("MissingParameter", "Either SecondaryPrivateIpAddressCount, PrivateIpAddress, Ipv4PrefixCount or Ipv4Prefix must be specified."));
        }
        if count == Some(0) || prefix_count == Some(0) {
            return Err(bad("InvalidParameterValue", "The count must be greater than 0."));
        }
        let eni = self.eni(eni_id)?;
        let extra = count.unwrap_or(0)
            + ips.len() as u32
            + prefix_count.unwrap_or(0)
            + prefixes.len() as u32;
        if eni.slots() + extra > self.slot_limit(eni) {
            return Err(bad(
                "PrivateIpAddressLimitExceeded",
                "Number of private addresses will exceed limit.",
            ));
        }
        let mut subnet = self.subnets.get(&eni.subnet_id).expect("ENI subnet exists").clone();
        subnet.take_exact(ips)?;
        let mut new_ips = ips.to_vec();
        new_ips.extend(subnet.take_ips(count.unwrap_or(0))?);
        subnet.take_exact_prefixes(prefixes)?;
        let mut new_pfx = prefixes.to_vec();
        new_pfx.extend(subnet.take_prefixes(prefix_count.unwrap_or(0))?);
        self.subnets.insert(subnet.id.clone(), subnet);
        let eni = self.enis.get_mut(eni_id).expect("checked");
        eni.secondary.extend(new_ips.iter().copied());
        eni.prefixes.extend(new_pfx.iter().copied());
        let mut addrs = new_ips.clone();
        addrs.extend(new_pfx.iter().flat_map(|p| block_addrs(*p)));
        ev.push(eni.assigned_event(addrs));
        Ok((new_ips, new_pfx))
    }

    /// UnassignPrivateIpAddresses: every address/prefix must be a secondary of this ENI.
    pub fn unassign(
        &mut self,
        eni_id: &str,
        ips: &[Ipv4Addr],
        prefixes: &[Ipv4Net],
        ev: &mut Events,
    ) -> Result<(), Error> {
        if ips.is_empty() && prefixes.is_empty() {
            return Err(bad(
                "MissingParameter",
                "Either PrivateIpAddress or Ipv4Prefix must be specified.",
            ));
        }
        let eni = self.eni(eni_id)?;
        for ip in ips {
            if *ip == eni.primary_ip {
                return Err(bad(
                    "InvalidParameterValue",
                    format!("The primary private IP address {ip} cannot be unassigned."),
                ));
            }
            if !eni.secondary.contains(ip) {
                return Err(bad(
                    "InvalidParameterValue",
                    format!(
                        "Some of the specified addresses are not assigned to interface {eni_id}"
                    ),
                ));
            }
        }
        if let Some(p) = prefixes.iter().find(|p| !eni.prefixes.contains(p)) {
            return Err(bad(
                "InvalidParameterValue",
                format!("The prefix {p} is not assigned to interface {eni_id}"),
            ));
        }
        let eni = self.enis.get_mut(eni_id).expect("checked");
        eni.secondary.retain(|a| !ips.contains(a));
        eni.prefixes.retain(|p| !prefixes.contains(p));
        let mut addrs = ips.to_vec();
        addrs.extend(prefixes.iter().flat_map(|p| block_addrs(*p)));
        let event = eni.unassigned_event(addrs.clone());
        let subnet_id = eni.subnet_id.clone();
        self.subnets.get_mut(&subnet_id).expect("ENI subnet exists").release(addrs);
        ev.push(event);
        Ok(())
    }
}

pub(crate) fn attached_event(eni: &Eni) -> HookEvent {
    let a = eni.attachment.as_ref().expect("attached");
    HookEvent::EniAttached {
        instance_id: a.instance_id.clone(),
        eni_id: eni.id.clone(),
        mac: eni.mac.clone(),
        device_index: a.device_index,
        subnet_id: eni.subnet_id.clone(),
    }
}

pub(crate) fn finish_detach(eni: &mut Eni, ev: &mut Events) {
    if let Some(a) = eni.attachment.take() {
        ev.push(HookEvent::EniDetached {
            instance_id: a.instance_id,
            eni_id: eni.id.clone(),
            mac: eni.mac.clone(),
        });
    }
}
