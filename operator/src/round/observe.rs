//! Observe, the round's first step: describe the instance's ENIs (and their subnets, and the VPC's
//! CIDR blocks) and turn what EC2 reports into the pool's status, adopting everything attached to
//! the instance — addresses assigned at launch included — except ENIs carrying an excluded tag,
//! which still occupy a device index and an ENI slot. The conversions are pure; the I/O is
//! [`SubnetCache::get`] and the sync of the round's node.

use super::{note, unconfirmed, PoolRound};
use crate::ec2::vpc;
use crate::ec2::{Ec2Api, Ec2Result, Eni, Instance, Query, Subnet};
use crate::error::Result;
use crate::journal::is_managed;
use crate::plan::EniView;
use enipool_crds::{EniState, EniStatus, InstanceInfo};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Subnets by id. A subnet's CIDR never changes, so it is described once per subnet.
#[derive(Debug, Default)]
pub struct SubnetCache {
    subnets: Mutex<BTreeMap<String, Subnet>>,
}

impl SubnetCache {
    /// The subnets with these ids, describing only unknown ones.
    pub async fn get(
        &self,
        ec2: &dyn Ec2Api,
        ids: &[String],
    ) -> Ec2Result<BTreeMap<String, Subnet>> {
        let missing: Vec<String> = {
            let known = self.subnets.lock().expect("subnet cache lock");
            let mut m: Vec<String> =
                ids.iter().filter(|id| !known.contains_key(*id)).cloned().collect();
            m.sort();
            m.dedup();
            m
        };
        if !missing.is_empty() {
            let found = ec2.describe_subnets(&Query { ids: missing, ..Default::default() }).await?;
            let mut known = self.subnets.lock().expect("subnet cache lock");
            for s in found {
                known.insert(s.id.clone(), s);
            }
        }
        let known = self.subnets.lock().expect("subnet cache lock");
        Ok(ids.iter().filter_map(|id| known.get(id).map(|s| (id.clone(), s.clone()))).collect())
    }
}

/// Whether an ENI carries any of the excluded tags (empty value = any value).
pub fn is_excluded(eni: &Eni, exclude: &BTreeMap<String, String>) -> bool {
    exclude.iter().any(|(k, v)| eni.tags.get(k).is_some_and(|have| v.is_empty() || have == v))
}

fn state_of(eni: &Eni) -> EniState {
    match eni.attachment.as_ref().map(|a| a.status.as_str()) {
        Some("attaching") => EniState::Attaching,
        Some("detaching") => EniState::Detaching,
        Some(_) => EniState::Attached,
        None => EniState::Detaching,
    }
}

/// The published form of one ENI.
pub fn eni_status(eni: &Eni, subnet_cidr: &str, cluster: &str) -> EniStatus {
    let mut ips: Vec<String> = eni.secondary_ips.iter().map(|a| a.to_string()).collect();
    ips.sort();
    let mut prefixes: Vec<String> = eni.prefixes.iter().map(|p| p.to_string()).collect();
    prefixes.sort();
    let mut ipv6_prefixes: Vec<String> = eni.ipv6_prefixes.iter().map(|p| p.to_string()).collect();
    ipv6_prefixes.sort();
    EniStatus {
        id: eni.id.clone(),
        device_index: eni.attachment.as_ref().map(|a| a.device_index).unwrap_or(-1),
        mac: eni.mac.clone(),
        subnet_id: eni.subnet_id.clone(),
        subnet_cidr: subnet_cidr.to_string(),
        security_groups: eni.security_groups.clone(),
        primary_ip: eni.primary_ip.map(|a| a.to_string()).unwrap_or_default(),
        ips,
        prefixes,
        ipv6_prefixes,
        attachment_id: eni.attachment.as_ref().map(|a| a.id.clone()).unwrap_or_default(),
        state: state_of(eni),
        managed: is_managed(eni, cluster),
    }
}

/// The planner's view of one ENI.
pub fn eni_view(eni: &Eni, excluded: bool, cluster: &str) -> EniView {
    EniView {
        id: eni.id.clone(),
        device_index: eni.attachment.as_ref().map(|a| a.device_index).unwrap_or(-1),
        subnet_id: eni.subnet_id.clone(),
        ips: eni.secondary_ips.len() as i32,
        prefixes: eni.prefixes.len() as i32,
        ipv6_prefixes: eni.ipv6_prefixes.len() as i32,
        excluded,
        managed: is_managed(eni, cluster),
        // An ENI still attaching is filled too: EC2 assigns addresses to it whatever its
        // attachment state, and skipping it made the planner create yet another ENI while the
        // first was in transit (the agent only hands out addresses once it sees the link).
        attached: eni
            .attachment
            .as_ref()
            .is_some_and(|a| a.status == "attached" || a.status == "attaching"),
    }
}

/// What one per-node sync produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Synced {
    /// Published ENIs (excluded ones left out), by device index.
    pub enis: Vec<EniStatus>,
    /// Planner view (excluded ones included).
    pub views: Vec<EniView>,
}

/// Turn the instance's ENIs into status and planner views (pure).
pub fn build(
    enis: &[Eni],
    subnets: &BTreeMap<String, Subnet>,
    exclude: &BTreeMap<String, String>,
    cluster: &str,
) -> Synced {
    let mut out = Synced::default();
    for eni in enis {
        let excluded = is_excluded(eni, exclude);
        out.views.push(eni_view(eni, excluded, cluster));
        if !excluded {
            let cidr = subnets.get(&eni.subnet_id).map(|s| s.cidr.to_string()).unwrap_or_default();
            out.enis.push(eni_status(eni, &cidr, cluster));
        }
    }
    out.enis.sort_by_key(|e| e.device_index);
    out.views.sort_by_key(|e| e.device_index);
    out
}

/// Instance facts for `status.instance`, with the VPC's CIDR blocks as `crate::vpc` found them.
pub fn instance_info(inst: &Instance, vpc_cidrs: Vec<String>) -> InstanceInfo {
    InstanceInfo {
        instance_type: inst.instance_type.clone(),
        zone: inst.zone.clone(),
        vpc_id: inst.vpc_id.clone(),
        subnet_id: inst.subnet_id.clone(),
        primary_eni: inst.primary_eni.clone(),
        primary_ip: inst.primary_ip.map(|a| a.to_string()).unwrap_or_default(),
        vpc_cidrs,
        state: inst.state.clone(),
    }
}

/// The last describe of a node's ENIs, with their subnets.
#[derive(Debug, Clone, Default)]
pub struct Described {
    pub enis: Vec<Eni>,
    pub subnets: BTreeMap<String, Subnet>,
}

impl PoolRound<'_> {
    /// Per-node sync (I/O): describe the instance's ENIs, then [`Self::show`] them.
    pub(super) async fn sync(&mut self) -> Result<Vec<Eni>> {
        let enis = match self.ec2().describe_instance_enis(&self.inst.id).await {
            Ok(e) => e,
            Err(e) => {
                self.round.sync_error = Some(e.to_string());
                self.round.note_error(&e);
                return Err(e.into());
            }
        };
        let ids: Vec<String> =
            enis.iter().map(|e| e.subnet_id.clone()).chain([self.inst.subnet_id.clone()]).collect();
        let subnets = self.shared.subnets.get(self.ec2(), &ids).await?;
        let vpc_cidrs = self.vpc_cidrs().await?;
        self.described = Described { enis: enis.clone(), subnets };
        self.show();
        self.st.instance = Some(instance_info(&self.inst, vpc_cidrs));
        self.round.synced = true;
        Ok(enis)
    }

    /// The ENIs into status and the planner's view (no I/O): the last describe, plus the changes
    /// made since that it does not show yet; bumps `revision` when the published ENIs changed.
    pub(super) fn show(&mut self) {
        let exclude = self
            .input
            .policy
            .as_ref()
            .map(|p| p.eni.exclude_interface_tags.clone())
            .unwrap_or_default();
        let d = &self.described;
        let Synced { enis: mut published, mut views } =
            build(&d.enis, &d.subnets, &exclude, &self.shared.cluster);
        if self.shared.memory.overlay(&self.input.name, &d.enis, &mut views, &mut published) {
            self.round.wake_in(unconfirmed::LOOK_AGAIN);
        }
        if published != self.st.enis {
            self.st.enis = published;
            self.st.revision += 1;
        }
        self.views = views;
    }

    /// The VPC CIDRs to publish (see [`vpc::publish`]). With none known, the sync fails before
    /// anything is published: ENIs published without the VPC's blocks would give pods addresses
    /// whose traffic the agent SNATs or routes by the wrong ENI.
    async fn vpc_cidrs(&mut self) -> Result<Vec<String>> {
        let found = self.shared.vpc.lookup(self.ec2(), &self.inst.vpc_id).await;
        let shown = self.st.instance.as_ref().map(|i| i.vpc_cidrs.as_slice()).unwrap_or_default();
        match (vpc::publish(found.blocks.as_deref(), shown), found.error) {
            (Some(cidrs), None) => Ok(cidrs),
            (Some(cidrs), Some(e)) => {
                tracing::warn!(pool = %self.input.name, vpc = %self.inst.vpc_id, error = &e as &dyn std::error::Error, "VPC CIDR blocks not refreshed; publishing the ones known");
                self.notes.push(note(
                    true,
                    "VPCCIDRsNotRefreshed",
                    format!("keeping VPC CIDRs {}: {e}", cidrs.join(",")),
                ));
                Ok(cidrs)
            }
            (None, e) => {
                let e = e.unwrap_or_else(|| crate::ec2::Ec2Error {
                    kind: crate::ec2::Ec2ErrorKind::Transient,
                    action: "DescribeVpcs",
                    code: String::new(),
                    message: "not described yet".into(),
                });
                tracing::warn!(pool = %self.input.name, vpc = %self.inst.vpc_id, error = &e as &dyn std::error::Error, "VPC CIDR blocks unknown; pool not synced");
                self.notes.push(note(
                    true,
                    "VPCCIDRsUnknown",
                    format!("the VPC's CIDR blocks are not known, nothing is published: {e}"),
                ));
                self.round.sync_error = Some(format!("VPC CIDR blocks unknown: {e}"));
                self.round.note_error(&e);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec2::Attachment;

    fn eni_in(status: &str) -> Eni {
        Eni {
            id: "eni-1".into(),
            attachment: Some(Attachment {
                id: "eni-attach-1".into(),
                instance_id: "i-1".into(),
                device_index: 1,
                status: status.into(),
                delete_on_termination: true,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn attaching_enis_are_filled_and_detaching_ones_are_not() {
        let fillable = |status: &str| eni_view(&eni_in(status), false, "c").attached;
        assert!(fillable("attached"));
        assert!(fillable("attaching"), "an ENI in transit is filled, not duplicated");
        assert!(!fillable("detaching"));
        assert!(!fillable("detached"));
        assert!(!eni_view(&Eni::default(), false, "c").attached, "unattached ENI");
    }
}
