//! Whether a journal entry or release intent read back from a pool's status may be acted on (no
//! I/O: the reconcile describes, this module judges). The status is not the operator's alone: the
//! node's agent patches its own pool's status, and an admin or a hole in admission can write any
//! of it. The operator holds EC2 rights over every ENI of the cluster, so an entry is only ever
//! acted on when EC2 confirms it concerns this pool: its ENI attached to this pool's instance (or
//! `available` and created for it), its subnet and security groups the ones growth would choose,
//! its device index free. Everything else is rejected — dropped with a Warning, never acted on.

use super::{is_managed, PREFIXES_MARKER};
use crate::ec2::Eni;
use enipool_crds::{tags, ENIPoolStatus, Operation, OperationKind};
use std::collections::{BTreeMap, BTreeSet};

/// Why an entry was rejected. Stable categories: the `reason` label of
/// `enipool_operator_journal_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The id is not one the operator generates (a random UUID, lowercase and hyphenated).
    BadId,
    /// An AttachENI: the operator never journals one (a CreateENI attaches its own ENI).
    AttachNotJournaled,
    /// EC2 has no ENI with that id.
    EniNotFound,
    /// The ENI lacks this cluster's tag or the operator's owner tag.
    EniNotManaged,
    /// The instance's primary ENI.
    PrimaryEni,
    /// The ENI is attached to another instance, or is `available` but was not created for this
    /// pool's instance (or, for a CreateENI, not by this entry).
    EniNotThisPool,
    /// A CreateENI in a subnet the pool's policy does not select.
    SubnetNotAllowed,
    /// A CreateENI with security groups the pool's policy does not select.
    SecurityGroupNotAllowed,
    /// A CreateENI asking for no addresses or more than an ENI of the instance holds.
    BadCount,
    /// A CreateENI without a device index, or at 0 or beyond the instance's ENI limit.
    BadDeviceIndex,
    /// A CreateENI at a device index another ENI occupies.
    DeviceIndexInUse,
    /// A `releasing` that answers no outstanding `releaseRequest`: the operator publishes one only
    /// for the request the agent's offer answered, and clears it when it sets
    /// `releasedRevision`.
    ReleasingWithoutRequest,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadId => "bad_id",
            Reason::AttachNotJournaled => "attach_not_journaled",
            Reason::EniNotFound => "eni_not_found",
            Reason::EniNotManaged => "eni_not_managed",
            Reason::PrimaryEni => "primary_eni",
            Reason::EniNotThisPool => "eni_not_this_pool",
            Reason::SubnetNotAllowed => "subnet_not_allowed",
            Reason::SecurityGroupNotAllowed => "security_group_not_allowed",
            Reason::BadCount => "bad_count",
            Reason::BadDeviceIndex => "bad_device_index",
            Reason::DeviceIndexInUse => "device_index_in_use",
            Reason::ReleasingWithoutRequest => "releasing_without_request",
        }
    }
}

/// A rejected entry: the category and, for people, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    /// Why, naming what EC2 showed.
    pub detail: String,
}

/// What to do with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// EC2 confirms it concerns this pool: replay it.
    Act,
    /// EC2 could not be asked this round (a describe failed): keep it, do nothing with it.
    Unverified,
    /// Drop it, never act on it.
    Reject(Rejection),
}

/// What a CreateENI may ask for: what growth itself would create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateRules {
    /// Subnets the pool's policy selects (growth's candidates).
    pub subnets: BTreeSet<String>,
    /// Security groups the pool's policy selects.
    pub security_groups: BTreeSet<String>,
    /// ENIs the instance may have, primary included.
    pub max_enis: i32,
    /// Address slots of one ENI besides its primary address.
    pub slots_per_eni: i32,
}

/// What EC2 showed this round.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Cluster name (the ENI tag).
    pub cluster: &'a str,
    /// This pool's instance.
    pub instance_id: &'a str,
    /// The ENIs attached to the instance (the per-node sync).
    pub attached: &'a [Eni],
    /// The ENIs the entries name, by id (`None`: the describe failed).
    pub described: Option<&'a BTreeMap<String, Eni>>,
    /// What a CreateENI may ask for (`None`: unknown, the describes failed).
    pub create: Option<&'a CreateRules>,
}

/// Whether `id` has the form of the ids [`super::new_op`] generates.
pub fn is_operator_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok_and(|u| {
        u.get_version() == Some(uuid::Version::Random)
            && u.get_variant() == uuid::Variant::RFC4122
            && u.hyphenated().to_string() == id
    })
}

/// Whether EC2 must be asked about the entry's ENI by id before it is judged.
pub fn needs_describe(op: &Operation) -> bool {
    is_operator_id(&op.id)
        && !op.eni_id.is_empty()
        && matches!(
            op.kind,
            OperationKind::DetachENI | OperationKind::DeleteENI | OperationKind::CreateENI
        )
}

/// Whether the operator created `eni` for `instance_id` (its instance tag; every ENI the operator
/// creates carries it from the CreateNetworkInterface call itself, and instance ids are never
/// reused). The pool-uid tag is not required: a pool recreated for a live node adopts its
/// predecessor's ENIs.
pub fn created_for(eni: &Eni, instance_id: &str) -> bool {
    !instance_id.is_empty() && eni.tags.get(tags::INSTANCE_ID).is_some_and(|i| i == instance_id)
}

fn reject(reason: Reason, detail: impl Into<String>) -> Verdict {
    Verdict::Reject(Rejection { reason, detail: detail.into() })
}

pub fn check(op: &Operation, f: &Facts<'_>) -> Verdict {
    if !is_operator_id(&op.id) {
        return reject(Reason::BadId, "its id is not one the operator generates");
    }
    match op.kind {
        OperationKind::AttachENI => {
            reject(Reason::AttachNotJournaled, "the operator never journals an AttachENI")
        }
        OperationKind::AssignIPs
        | OperationKind::AssignPrefixes
        | OperationKind::AssignIPv6Prefixes
        | OperationKind::UnassignIPs
        | OperationKind::UnassignPrefixes => {
            if f.attached.iter().any(|e| e.id == op.eni_id) {
                Verdict::Act
            } else {
                reject(Reason::EniNotThisPool, "the ENI is not attached to this pool's instance")
            }
        }
        OperationKind::DetachENI | OperationKind::DeleteENI => {
            let Some(described) = f.described else { return Verdict::Unverified };
            match described.get(&op.eni_id) {
                None => reject(Reason::EniNotFound, "EC2 has no such ENI"),
                Some(eni) => releasable(eni, f),
            }
        }
        OperationKind::CreateENI => create(op, f),
    }
}

/// A Detach/Delete target: this cluster's, created by the operator, a secondary ENI of this pool.
fn releasable(eni: &Eni, f: &Facts<'_>) -> Verdict {
    if !is_managed(eni, f.cluster) {
        return reject(Reason::EniNotManaged, "the ENI does not carry this cluster's owner tags");
    }
    match &eni.attachment {
        Some(a) if a.instance_id != f.instance_id => reject(
            Reason::EniNotThisPool,
            format!("the ENI is attached to {}, not to {}", a.instance_id, f.instance_id),
        ),
        Some(a) if a.device_index == 0 => {
            reject(Reason::PrimaryEni, "the ENI is the instance's primary ENI")
        }
        Some(_) => Verdict::Act,
        None if created_for(eni, f.instance_id) => Verdict::Act,
        None => reject(
            Reason::EniNotThisPool,
            format!("the ENI is {} and was not created for {}", eni.status, f.instance_id),
        ),
    }
}

/// A CreateENI: what growth would ask for, and an ENI already created only by this entry, for
/// this pool's instance.
fn create(op: &Operation, f: &Facts<'_>) -> Verdict {
    let Some(rules) = f.create else { return Verdict::Unverified };
    if !op.eni_id.is_empty() {
        let Some(described) = f.described else { return Verdict::Unverified };
        let Some(eni) = described.get(&op.eni_id) else {
            return reject(Reason::EniNotFound, "EC2 has no such ENI");
        };
        if !is_managed(eni, f.cluster) {
            return reject(
                Reason::EniNotManaged,
                "the ENI does not carry this cluster's owner tags",
            );
        }
        let ours = eni.tags.get(tags::OPERATION) == Some(&op.id) && created_for(eni, f.instance_id);
        let elsewhere = eni.attachment.as_ref().filter(|a| a.instance_id != f.instance_id);
        if !ours || elsewhere.is_some() {
            return reject(
                Reason::EniNotThisPool,
                "the ENI was not created by this entry for this pool's instance",
            );
        }
    }
    let subnet = op.items.first().map(String::as_str).unwrap_or_default();
    if !rules.subnets.contains(subnet) {
        return reject(
            Reason::SubnetNotAllowed,
            format!("subnet {} is not one the pool's policy selects", shown(subnet)),
        );
    }
    let groups: Vec<&String> = op.items.iter().skip(1).filter(|i| *i != PREFIXES_MARKER).collect();
    let foreign: Vec<String> = groups
        .iter()
        .filter(|g| !rules.security_groups.contains(g.as_str()))
        .map(|g| shown(g))
        .collect();
    if !foreign.is_empty() || (groups.is_empty() && !rules.security_groups.is_empty()) {
        let named = if foreign.is_empty() { "none".to_string() } else { foreign.join(", ") };
        return reject(
            Reason::SecurityGroupNotAllowed,
            format!("security groups {named}: not the ones the pool's policy selects"),
        );
    }
    if op.count < 1 || op.count > rules.slots_per_eni {
        return reject(
            Reason::BadCount,
            format!("count {} is outside 1..={} for one ENI", op.count, rules.slots_per_eni),
        );
    }
    let Some(index) = op.device_index.filter(|d| (1..rules.max_enis).contains(d)) else {
        return reject(
            Reason::BadDeviceIndex,
            format!("device index {:?} is outside 1..{}", op.device_index, rules.max_enis),
        );
    };
    let taken = f.attached.iter().find(|e| {
        e.attachment.as_ref().is_some_and(|a| a.device_index == index)
            && e.tags.get(tags::OPERATION) != Some(&op.id)
    });
    if let Some(e) = taken {
        return reject(Reason::DeviceIndexInUse, format!("device index {index} holds {}", e.id));
    }
    Verdict::Act
}

/// Judge `status.releasing` (no EC2 needed: what is unassigned is only ever what EC2 shows on the
/// instance's ENIs, see `plan::release`). `None`: it may be finished.
pub fn releasing(st: &ENIPoolStatus) -> Option<Rejection> {
    let r = st.releasing.as_ref()?;
    let request = st.release_request.as_ref().map(|q| q.revision);
    if request == Some(r.revision) && r.revision > st.released_revision {
        return None;
    }
    let mut items: Vec<String> =
        r.ips.iter().chain(&r.prefixes).take(8).map(|i| shown(i)).collect();
    if r.ips.len() + r.prefixes.len() > items.len() {
        items.push("…".into());
    }
    Some(Rejection {
        reason: Reason::ReleasingWithoutRequest,
        detail: format!(
            "releasing revision {} answers no outstanding releaseRequest (request revision {}, \
             released revision {}); its items {} are not unassigned",
            r.revision,
            request.map_or("none".to_string(), |q| q.to_string()),
            st.released_revision,
            items.join(", ")
        ),
    })
}

/// A value read from the status, for a message: quoted when odd, cut when long.
pub fn shown(s: &str) -> String {
    let plain = !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-./:_".contains(c));
    if plain {
        return s.to_string();
    }
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// The Event message of a rejected entry.
pub fn message(op: &Operation, r: &Rejection) -> String {
    let eni = if op.eni_id.is_empty() { "none".to_string() } else { shown(&op.eni_id) };
    format!(
        "journal entry {} ({:?}, ENI {eni}) rejected ({}), not acted on: {}",
        shown(&op.id),
        op.kind,
        r.reason.as_str(),
        r.detail
    )
}

/// The Event message of a rejected `releasing`.
pub fn releasing_message(r: &Rejection) -> String {
    format!("status.releasing rejected ({}), not acted on: {}", r.reason.as_str(), r.detail)
}

#[cfg(test)]
mod tests;
