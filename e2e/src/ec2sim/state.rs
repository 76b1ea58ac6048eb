//! The VPC model: pure data and address accounting, no I/O and no clock of its own (callers pass
//! `now`), so every rule is unit-testable. Mutating operations live in `ops.rs`.

use super::hooks::HookEvent;
use super::Error;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Tags of a resource.
pub type Tags = BTreeMap<String, String>;

/// A VPC.
#[derive(Debug, Clone, Serialize)]
pub struct Vpc {
    /// `vpc-…`.
    pub id: String,
    /// Primary IPv4 CIDR.
    pub cidr: Ipv4Net,
    /// Tags.
    pub tags: Tags,
}

/// A subnet with EC2's address accounting.
#[derive(Debug, Clone, Serialize)]
pub struct Subnet {
    /// `subnet-…`.
    pub id: String,
    /// VPC id.
    pub vpc_id: String,
    /// IPv4 CIDR.
    pub cidr: Ipv4Net,
    /// Availability zone.
    pub az: String,
    /// Tags.
    pub tags: Tags,
    /// Addresses held by ENIs (secondary IPs, primaries and every address of /28 prefixes); the 5
    /// reserved addresses are not in here, they are excluded by [`Subnet::is_reserved`].
    pub used: BTreeSet<Ipv4Addr>,
}

impl Subnet {
    /// EC2 reserves the network address, .1 (router), .2 (DNS), .3 (future use) and broadcast.
    pub fn is_reserved(&self, a: Ipv4Addr) -> bool {
        let off = u32::from(a) - u32::from(self.cidr.network());
        off <= 3 || a == self.cidr.broadcast()
    }

    /// Free addresses as EC2 reports them in `AvailableIpAddressCount`.
    pub fn available(&self) -> u32 {
        let size = 1u32 << (32 - self.cidr.prefix_len());
        size.saturating_sub(5).saturating_sub(self.used.len() as u32)
    }

    fn is_free(&self, a: Ipv4Addr) -> bool {
        self.cidr.contains(&a) && !self.is_reserved(a) && !self.used.contains(&a)
    }

    /// Takes `n` free addresses (lowest first, deterministic) or none at all.
    pub fn take_ips(&mut self, n: u32) -> Result<Vec<Ipv4Addr>, Error> {
        if n > self.available() {
            return Err(Error::api(
                "InsufficientFreeAddressesInSubnet",
                format!(
                    "The specified subnet {} has insufficient free addresses to satisfy the request.",
                    self.id
                ),
            ));
        }
        let picked: Vec<Ipv4Addr> =
            self.cidr.hosts().filter(|a| self.is_free(*a)).take(n as usize).collect();
        self.used.extend(picked.iter().copied());
        Ok(picked)
    }

    /// Takes specific addresses (all or none).
    pub fn take_exact(&mut self, ips: &[Ipv4Addr]) -> Result<(), Error> {
        for (i, a) in ips.iter().enumerate() {
            if !self.cidr.contains(a) || self.is_reserved(*a) {
                return Err(Error::api(
                    "InvalidParameterValue",
                    format!("Address {a} does not fall within the subnet's address range or is reserved"),
                ));
            }
            if self.used.contains(a) || ips[..i].contains(a) {
                return Err(Error::api(
                    "InvalidIPAddress.InUse",
                    format!("The specified address {a} is already in use."),
                ));
            }
        }
        self.used.extend(ips.iter().copied());
        Ok(())
    }

    /// Carves `n` /28 prefixes whose 16 addresses are all free, aligned on /28 boundaries.
    pub fn take_prefixes(&mut self, n: u32) -> Result<Vec<Ipv4Net>, Error> {
        let mut picked = Vec::new();
        if n > 0 && self.cidr.prefix_len() <= 28 {
            for block in self.cidr.subnets(28).expect("prefix <= 28") {
                if picked.len() == n as usize {
                    break;
                }
                if block_addrs(block).all(|a| self.is_free(a)) {
                    picked.push(block);
                }
            }
        }
        if picked.len() < n as usize {
            return Err(Error::api(
                "InsufficientCidrBlocks",
                format!(
                    "The specified subnet {} does not have enough free cidr blocks to satisfy the request.",
                    self.id
                ),
            ));
        }
        for p in &picked {
            self.used.extend(block_addrs(*p));
        }
        Ok(picked)
    }

    /// Takes specific prefixes (each must be a free, aligned /28 of this subnet).
    pub fn take_exact_prefixes(&mut self, prefixes: &[Ipv4Net]) -> Result<(), Error> {
        for (i, p) in prefixes.iter().enumerate() {
            if p.prefix_len() != 28 || p.network() != p.addr() || !self.cidr.contains(p) {
                return Err(Error::api(
                    "InvalidParameterValue",
                    format!("Invalid value '{p}' for Ipv4Prefix: must be an aligned /28 inside the subnet"),
                ));
            }
            if !block_addrs(*p).all(|a| self.is_free(a)) || prefixes[..i].contains(p) {
                return Err(Error::api(
                    "InvalidParameterValue",
                    format!("The prefix {p} overlaps addresses already in use."),
                ));
            }
        }
        for p in prefixes {
            self.used.extend(block_addrs(*p));
        }
        Ok(())
    }

    /// Returns addresses to the free pool.
    pub fn release(&mut self, ips: impl IntoIterator<Item = Ipv4Addr>) {
        for a in ips {
            self.used.remove(&a);
        }
    }
}

/// Every address of a prefix.
pub fn block_addrs(p: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let base = u32::from(p.network());
    let n = 1u32 << (32 - p.prefix_len());
    (0..n).map(move |i| Ipv4Addr::from(base + i))
}

/// A security group.
#[derive(Debug, Clone, Serialize)]
pub struct SecurityGroup {
    /// `sg-…`.
    pub id: String,
    /// VPC id.
    pub vpc_id: String,
    /// Group name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Tags,
}

/// Instance lifecycle states the simulator models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Launched and usable (the simulator skips `pending`).
    Running,
    /// TerminateInstances accepted; ENIs still attached.
    ShuttingDown,
    /// Gone; ENIs deleted or detached.
    Terminated,
}

impl InstanceState {
    /// EC2's numeric state code.
    pub fn code(self) -> u32 {
        match self {
            InstanceState::Running => 16,
            InstanceState::ShuttingDown => 32,
            InstanceState::Terminated => 48,
        }
    }
    /// EC2's state name.
    pub fn name(self) -> &'static str {
        match self {
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
        }
    }
}

/// An instance.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    /// `i-…`.
    pub id: String,
    /// Reservation it was launched in.
    pub reservation_id: String,
    /// Instance type (a key of the limits table).
    pub instance_type: String,
    /// AMI id as given.
    pub image_id: String,
    /// Availability zone.
    pub az: String,
    /// Subnet of the primary ENI.
    pub subnet_id: String,
    /// VPC id.
    pub vpc_id: String,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Primary ENI id.
    pub primary_eni: String,
    /// Primary private address (kept after termination for display).
    pub private_ip: Ipv4Addr,
    /// Tags.
    pub tags: Tags,
    /// RFC 3339 launch time.
    pub launch_time: String,
    /// ClientToken of the launch, if any.
    pub client_token: Option<String>,
}

/// Attachment lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachState {
    /// AttachNetworkInterface accepted, not done yet.
    Attaching,
    /// Attached.
    Attached,
    /// DetachNetworkInterface accepted; still occupies the device index.
    Detaching,
}

impl AttachState {
    /// Attachment status string.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachState::Attaching => "attaching",
            AttachState::Attached => "attached",
            AttachState::Detaching => "detaching",
        }
    }
}

/// An ENI's attachment.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    /// `eni-attach-…`.
    pub id: String,
    /// Instance id.
    pub instance_id: String,
    /// Device index.
    pub device_index: u32,
    /// Status.
    pub state: AttachState,
    /// Whether termination deletes the ENI.
    pub delete_on_termination: bool,
    /// RFC 3339 time.
    pub attach_time: String,
}

/// An elastic network interface.
#[derive(Debug, Clone, Serialize)]
pub struct Eni {
    /// `eni-…`.
    pub id: String,
    /// Subnet id.
    pub subnet_id: String,
    /// VPC id.
    pub vpc_id: String,
    /// Availability zone.
    pub az: String,
    /// MAC, lower case.
    pub mac: String,
    /// Description.
    pub description: String,
    /// Primary private address.
    pub primary_ip: Ipv4Addr,
    /// Secondary addresses in assignment order.
    pub secondary: Vec<Ipv4Addr>,
    /// Delegated /28 prefixes in assignment order.
    pub prefixes: Vec<Ipv4Net>,
    /// Security group ids.
    pub groups: Vec<String>,
    /// Tags.
    pub tags: Tags,
    /// Attachment, when attaching/attached/detaching.
    pub attachment: Option<Attachment>,
    /// Source/destination check flag.
    pub source_dest_check: bool,
}

impl Eni {
    /// ENI status as DescribeNetworkInterfaces reports it.
    pub fn status(&self) -> &'static str {
        match self.attachment.as_ref().map(|a| a.state) {
            None => "available",
            Some(AttachState::Attaching) => "attaching",
            Some(AttachState::Attached) => "in-use",
            Some(AttachState::Detaching) => "detaching",
        }
    }

    /// IPv4 slots in use: the primary, each secondary and each /28 prefix.
    pub fn slots(&self) -> u32 {
        1 + self.secondary.len() as u32 + self.prefixes.len() as u32
    }

    /// Every address that routes to this ENI.
    pub fn all_addrs(&self) -> Vec<Ipv4Addr> {
        let mut v = vec![self.primary_ip];
        v.extend(self.secondary.iter().copied());
        for p in &self.prefixes {
            v.extend(block_addrs(*p));
        }
        v
    }

    pub(crate) fn assigned_event(&self, addrs: Vec<Ipv4Addr>) -> HookEvent {
        HookEvent::AddressesAssigned {
            eni_id: self.id.clone(),
            mac: self.mac.clone(),
            subnet_id: self.subnet_id.clone(),
            addrs,
        }
    }

    pub(crate) fn unassigned_event(&self, addrs: Vec<Ipv4Addr>) -> HookEvent {
        HookEvent::AddressesUnassigned {
            eni_id: self.id.clone(),
            mac: self.mac.clone(),
            subnet_id: self.subnet_id.clone(),
            addrs,
        }
    }
}

/// What an earlier call with a ClientToken produced, to answer a retry identically.
#[derive(Debug, Clone, Serialize)]
pub struct TokenEntry {
    /// The action.
    pub action: String,
    /// The request's parameters without the token; a retry must match them exactly.
    pub fingerprint: String,
    /// Resource ids created (an ENI id, or the instance ids of a reservation).
    pub resources: Vec<String>,
}

/// A state change due later (attach/detach/terminate take time in EC2).
#[derive(Debug, Clone, Serialize)]
pub enum Timer {
    /// Attachment `attaching` → `attached`.
    AttachDone {
        /// ENI id.
        eni: String,
        /// Attachment id it applies to (ignored if the ENI moved on).
        attachment: String,
    },
    /// Attachment `detaching` → gone, ENI `available`.
    DetachDone {
        /// ENI id.
        eni: String,
        /// Attachment id.
        attachment: String,
    },
    /// Instance `shutting-down` → `terminated`.
    TerminateDone {
        /// Instance id.
        instance: String,
    },
}

/// How long the asynchronous transitions take.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Timing {
    /// `attaching` → `attached`.
    pub attach: Duration,
    /// `detaching` → `available`.
    pub detach: Duration,
    /// `shutting-down` → `terminated`.
    pub terminate: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            attach: Duration::ZERO,
            detach: Duration::from_secs(2),
            terminate: Duration::from_secs(1),
        }
    }
}

/// The whole simulated region.
#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    /// VPCs by id.
    pub vpcs: BTreeMap<String, Vpc>,
    /// Subnets by id.
    pub subnets: BTreeMap<String, Subnet>,
    /// Security groups by id.
    pub groups: BTreeMap<String, SecurityGroup>,
    /// Instances by id (terminated ones stay visible, as in EC2).
    pub instances: BTreeMap<String, Instance>,
    /// ENIs by id.
    pub enis: BTreeMap<String, Eni>,
    /// ClientToken → outcome.
    pub tokens: BTreeMap<String, TokenEntry>,
    /// Pending transitions, in no particular order.
    #[serde(skip)]
    pub timers: Vec<(Instant, Timer)>,
    /// Transition durations.
    pub timing: Timing,
    /// Id counter: ids are deterministic so failures reproduce.
    pub next_id: u64,
}

impl State {
    /// A fresh id with EC2's shape (`prefix-` + 17 hex digits).
    pub fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", self.next_id)
    }

    /// A locally administered unicast MAC, unique within the state.
    pub fn new_mac(&mut self) -> String {
        self.next_id += 1;
        let b = self.next_id.to_be_bytes();
        format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[3], b[4], b[5], b[6], b[7])
    }

    /// Subnet or `InvalidSubnetID.NotFound`.
    pub fn subnet_mut(&mut self, id: &str) -> Result<&mut Subnet, Error> {
        self.subnets.get_mut(id).ok_or_else(|| not_found("InvalidSubnetID.NotFound", "subnet", id))
    }

    /// ENI or `InvalidNetworkInterfaceID.NotFound`.
    pub fn eni(&self, id: &str) -> Result<&Eni, Error> {
        self.enis
            .get(id)
            .ok_or_else(|| not_found("InvalidNetworkInterfaceID.NotFound", "network interface", id))
    }

    /// Instance or `InvalidInstanceID.NotFound`.
    pub fn instance(&self, id: &str) -> Result<&Instance, Error> {
        self.instances
            .get(id)
            .ok_or_else(|| not_found("InvalidInstanceID.NotFound", "instance ID", id))
    }

    /// The ENIs attached (in any attachment state) to an instance.
    pub fn instance_enis(&self, instance_id: &str) -> impl Iterator<Item = &Eni> {
        let id = instance_id.to_string();
        self.enis
            .values()
            .filter(move |e| e.attachment.as_ref().is_some_and(|a| a.instance_id == id))
    }

    /// Tags of any taggable resource, by id prefix.
    pub fn tags_mut(&mut self, id: &str) -> Result<&mut Tags, Error> {
        let t = if id.starts_with("eni-") {
            self.enis.get_mut(id).map(|r| &mut r.tags)
        } else if id.starts_with("i-") {
            self.instances.get_mut(id).map(|r| &mut r.tags)
        } else if id.starts_with("subnet-") {
            self.subnets.get_mut(id).map(|r| &mut r.tags)
        } else if id.starts_with("sg-") {
            self.groups.get_mut(id).map(|r| &mut r.tags)
        } else if id.starts_with("vpc-") {
            self.vpcs.get_mut(id).map(|r| &mut r.tags)
        } else {
            return Err(Error::api("InvalidID", format!("The ID '{id}' is not valid")));
        };
        t.ok_or_else(|| {
            let code = match id.split('-').next() {
                Some("eni") => "InvalidNetworkInterfaceID.NotFound",
                Some("i") => "InvalidInstanceID.NotFound",
                Some("subnet") => "InvalidSubnetID.NotFound",
                Some("sg") => "InvalidGroup.NotFound",
                _ => "InvalidVpcID.NotFound",
            };
            not_found(code, "resource", id)
        })
    }
}

/// `*.NotFound` with EC2's message shape.
pub fn not_found(code: &str, what: &str, id: &str) -> Error {
    Error::api(code, format!("The {what} '{id}' does not exist"))
}

/// Now as RFC 3339 with second precision (what EC2 prints).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default()
}
