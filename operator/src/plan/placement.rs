//! Where new addresses go, in the fewest EC2 calls: fill existing ENIs (lowest device index first),
//! then create ENIs carrying all their addresses in one call, at the next free device index, in the
//! subnet with the most free addresses. Prefix modes ask for /28s; `PrefixWithFallback` asks for /32s
//! in subnets known to have no aligned /28 left.

use super::EniView;
use enipool_crds::settings::PREFIX_SIZE;
use std::collections::{BTreeMap, BTreeSet};

/// The subnet tag the Amazon VPC CNI's subnet discovery reads: a subnet tagged `0` holds no
/// pod ENIs (reserved for load balancers, databases, ...), whatever selects it.
pub const SUBNET_ROLE_TAG: &str = "kubernetes.io/role/cni";

/// Whether a subnet with these tags may hold new ENIs.
pub fn subnet_allowed(tags: &BTreeMap<String, String>) -> bool {
    tags.get(SUBNET_ROLE_TAG).map(String::as_str) != Some("0")
}

/// A subnet a new ENI may be created in (already filtered to the node's AZ and VPC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetView {
    /// `subnet-…`.
    pub id: String,
    /// Free addresses as EC2 counts them.
    pub available: i32,
}

/// One EC2 mutation the growth plan asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// AssignPrivateIpAddresses(count) on an existing ENI.
    AssignIps { eni_id: String, count: i32 },
    /// AssignPrivateIpAddresses(Ipv4PrefixCount) on an existing ENI.
    AssignPrefixes { eni_id: String, count: i32 },
    /// CreateNetworkInterface with all its addresses, then attach and set DeleteOnTermination.
    CreateEni {
        subnet_id: String,
        /// Device index to attach at.
        device_index: i32,
        /// Secondary addresses at creation.
        ips: i32,
        prefixes: i32,
    },
}

impl Step {
    /// Addresses the step adds.
    pub fn addresses(&self) -> i32 {
        match self {
            Step::AssignIps { count, .. } => *count,
            Step::AssignPrefixes { count, .. } => count * PREFIX_SIZE,
            Step::CreateEni { ips, prefixes, .. } => ips + prefixes * PREFIX_SIZE,
        }
    }
}

/// Why growth stopped short of the deficit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// New ENIs are needed and the candidate subnets have not been listed yet: list them and plan
    /// again (keeps DescribeSubnets off the path when existing ENIs have room).
    NeedSubnets,
    /// No allowed subnet has room.
    Subnets,
    /// The instance (or `maxENIs`) cannot hold more ENIs or addresses.
    Capacity,
    /// New ENIs are needed and the account's regional ENI quota was reached a moment ago.
    EniQuota,
    /// The operation journal is full; finish what is in flight first.
    JournalFull,
}

/// Inputs of [`plan_growth`].
#[derive(Debug, Clone)]
pub struct GrowthInput<'a> {
    /// The node's ENIs.
    pub enis: &'a [EniView],
    /// Addresses missing (target − allocated).
    pub deficit: i32,
    /// Ask for /28 prefixes (prefix modes).
    pub prefixes: bool,
    /// `PrefixWithFallback`: use /32s where prefixes cannot be had.
    pub allow_fallback: bool,
    /// Subnets known to have no aligned /28 left (recent `InsufficientCidrBlocks`).
    pub no_cidr_subnets: &'a BTreeSet<String>,
    /// ENIs being released (see `release::pending_releases`): never filled; they still take
    /// their device index and ENI slot until EC2 has them gone.
    pub releasing_enis: &'a BTreeSet<String>,
    /// Lowest device index handing out pod addresses.
    pub first_interface_index: i32,
    /// ENIs the node may have, primary included.
    pub max_enis: i32,
    /// New ENIs may be created: false while the account's regional ENI quota is known to be
    /// reached, when only existing ENIs are filled.
    pub create_enis: bool,
    /// Address slots per ENI (IPv4 addresses per ENI − the ENI's own primary).
    pub slots_per_eni: i32,
    /// Candidate subnets for new ENIs; `None` until listed.
    pub subnets: Option<&'a [SubnetView]>,
    /// At most this many steps (room left in the operation journal).
    pub max_steps: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Growth {
    /// Mutations, in order.
    pub steps: Vec<Step>,
    /// Addresses the steps add.
    pub planned: i32,
    /// Why the plan falls short of the deficit, if it does.
    pub blocked: Option<Blocked>,
}

fn div_ceil(a: i32, b: i32) -> i32 {
    if a <= 0 {
        0
    } else {
        (a + b - 1) / b
    }
}

/// The lowest device index ≥ 1 not in `used` (0 is always the primary ENI).
pub fn next_device_index(used: &[i32]) -> i32 {
    (1..).find(|i| !used.contains(i)).unwrap_or(1)
}

/// Plan the fewest calls that add `deficit` addresses (pure).
pub fn plan_growth(input: &GrowthInput<'_>) -> Growth {
    let mut g = Growth::default();
    let mut remaining = input.deficit;
    if remaining <= 0 {
        return g;
    }
    // In Prefix mode (no fallback), a subnet without /28s is unusable; with fallback it takes /32s.
    let unit_prefix = |subnet: &str| input.prefixes && !input.no_cidr_subnets.contains(subnet);
    let usable = |subnet: &str| {
        !input.prefixes || input.allow_fallback || !input.no_cidr_subnets.contains(subnet)
    };

    // 1. Fill existing ENIs, lowest device index first.
    let mut existing: Vec<&EniView> = input
        .enis
        .iter()
        .filter(|e| e.attached && !e.excluded && e.device_index >= input.first_interface_index)
        .filter(|e| !input.releasing_enis.contains(&e.id))
        .collect();
    existing.sort_by_key(|e| e.device_index);
    for eni in existing {
        if remaining <= 0 {
            break;
        }
        if g.steps.len() >= input.max_steps {
            g.blocked = Some(Blocked::JournalFull);
            break;
        }
        let room = input.slots_per_eni - eni.used_slots();
        if room <= 0 || !usable(&eni.subnet_id) {
            continue;
        }
        let step = if unit_prefix(&eni.subnet_id) {
            let n = room.min(div_ceil(remaining, PREFIX_SIZE));
            Step::AssignPrefixes { eni_id: eni.id.clone(), count: n }
        } else {
            let n = room.min(remaining);
            Step::AssignIps { eni_id: eni.id.clone(), count: n }
        };
        remaining -= step.addresses();
        g.planned += step.addresses();
        g.steps.push(step);
    }

    // 2. Create ENIs, each with all the addresses it can carry.
    let mut used: Vec<i32> = input.enis.iter().map(|e| e.device_index).collect();
    let mut count = input.enis.len() as i32;
    let mut subnets: Vec<SubnetView> = input.subnets.map(<[_]>::to_vec).unwrap_or_default();
    while remaining > 0 && g.blocked.is_none() {
        if count >= input.max_enis || input.slots_per_eni <= 0 {
            g.blocked = Some(Blocked::Capacity);
            break;
        }
        if !input.create_enis {
            g.blocked = Some(Blocked::EniQuota);
            break;
        }
        if input.subnets.is_none() {
            g.blocked = Some(Blocked::NeedSubnets);
            break;
        }
        if g.steps.len() >= input.max_steps {
            g.blocked = Some(Blocked::JournalFull);
            break;
        }
        // Most free addresses first; ties by id so the choice is stable.
        subnets.sort_by(|a, b| b.available.cmp(&a.available).then_with(|| a.id.cmp(&b.id)));
        let pick = subnets.iter_mut().filter(|s| usable(&s.id)).find_map(|s| {
            // One address of the subnet goes to the new ENI's own primary.
            let free = s.available - 1;
            let (ips, prefixes) = if unit_prefix(&s.id) {
                let n = input
                    .slots_per_eni
                    .min(div_ceil(remaining, PREFIX_SIZE))
                    .min(free / PREFIX_SIZE);
                (0, n)
            } else {
                (0.max(input.slots_per_eni.min(remaining).min(free)), 0)
            };
            (ips + prefixes > 0).then(|| {
                s.available -= 1 + ips + prefixes * PREFIX_SIZE;
                (s.id.clone(), ips, prefixes)
            })
        });
        let Some((subnet_id, ips, prefixes)) = pick else {
            g.blocked = Some(Blocked::Subnets);
            break;
        };
        let device_index = next_device_index(&used);
        used.push(device_index);
        count += 1;
        let step = Step::CreateEni { subnet_id, device_index, ips, prefixes };
        remaining -= step.addresses();
        g.planned += step.addresses();
        g.steps.push(step);
    }
    g
}

/// The /32 equivalent of a prefix step after `InsufficientCidrBlocks` (`PrefixWithFallback`):
/// the same number of addresses, capped by the slots the ENI has (`room`). `None` for steps that
/// carry no prefixes.
pub fn prefix_fallback(step: &Step, room: i32) -> Option<Step> {
    match step {
        Step::AssignPrefixes { eni_id, count } => {
            let n = (count * PREFIX_SIZE).min(room);
            (n > 0).then(|| Step::AssignIps { eni_id: eni_id.clone(), count: n })
        }
        Step::CreateEni { subnet_id, device_index, prefixes, .. } if *prefixes > 0 => {
            let n = (prefixes * PREFIX_SIZE).min(room);
            (n > 0).then(|| Step::CreateEni {
                subnet_id: subnet_id.clone(),
                device_index: *device_index,
                ips: n,
                prefixes: 0,
            })
        }
        _ => None,
    }
}
