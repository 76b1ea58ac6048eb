//! The VPC model: pure data and address accounting, no I/O and no clock of its own (callers pass
//! `now`), so every rule is unit-testable. Mutating operations live in `ops.rs`. A subnet's
//! address accounting lives in `subnet.rs`, re-exported here so `state::Subnet` keeps its path.

pub use super::subnet::{block_addrs, Subnet};
pub use super::Tags;

use super::hooks::HookEvent;
use super::Error;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct Vpc {
    /// `vpc-…`.
    pub id: String,
    /// Primary IPv4 CIDR.
    pub cidr: Ipv4Net,
    /// Every IPv4 block association, the primary's first, as `cidrBlockAssociationSet` lists them.
    pub blocks: Vec<VpcBlock>,
    /// The Amazon-provided IPv6 block, when one is associated.
    pub ipv6: Option<VpcIpv6>,
    pub tags: Tags,
}

/// A VPC's IPv6 block association.
#[derive(Debug, Clone, Serialize)]
pub struct VpcIpv6 {
    /// `vpc-cidr-assoc-…`.
    pub association_id: String,
    /// The /56.
    pub cidr: ipnet::Ipv6Net,
}

/// One IPv4 block association of a VPC.
#[derive(Debug, Clone, Serialize)]
pub struct VpcBlock {
    /// `vpc-cidr-assoc-…`.
    pub association_id: String,
    pub cidr: Ipv4Net,
    /// `associated`, or `disassociated` once removed (EC2 lists removed blocks for a while).
    pub state: String,
}

impl Vpc {
    /// The blocks subnets may be created in.
    pub fn associated(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.blocks.iter().filter(|b| b.state == "associated").map(|b| b.cidr)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SecurityGroup {
    /// `sg-…`.
    pub id: String,
    pub vpc_id: String,
    pub name: String,
    pub description: String,
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
    pub az: String,
    /// Subnet of the primary ENI.
    pub subnet_id: String,
    pub vpc_id: String,
    pub state: InstanceState,
    pub primary_eni: String,
    /// Primary private address (kept after termination for display).
    pub private_ip: Ipv4Addr,
    pub tags: Tags,
    /// RFC 3339 launch time.
    pub launch_time: String,
    /// ClientToken of the launch, if any.
    pub client_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachState {
    /// AttachNetworkInterface accepted, not done yet.
    Attaching,
    Attached,
    /// DetachNetworkInterface accepted; still occupies the device index.
    Detaching,
}

impl AttachState {
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
    pub instance_id: String,
    pub device_index: u32,
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
    pub subnet_id: String,
    pub vpc_id: String,
    pub az: String,
    /// MAC, lower case.
    pub mac: String,
    pub description: String,
    pub primary_ip: Ipv4Addr,
    /// Secondary addresses in assignment order.
    pub secondary: Vec<Ipv4Addr>,
    /// Delegated /28 prefixes in assignment order.
    pub prefixes: Vec<Ipv4Net>,
    /// IPv6 addresses in assignment order.
    pub ipv6_addrs: Vec<std::net::Ipv6Addr>,
    /// Delegated IPv6 /80 prefixes in assignment order.
    pub ipv6_prefixes: Vec<ipnet::Ipv6Net>,
    pub groups: Vec<String>,
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

    pub(crate) fn ipv6_assigned_event(
        &self,
        addrs: Vec<std::net::Ipv6Addr>,
        prefixes: Vec<ipnet::Ipv6Net>,
    ) -> HookEvent {
        HookEvent::Ipv6Assigned {
            eni_id: self.id.clone(),
            mac: self.mac.clone(),
            subnet_id: self.subnet_id.clone(),
            addrs,
            prefixes,
        }
    }

    pub(crate) fn ipv6_unassigned_event(
        &self,
        addrs: Vec<std::net::Ipv6Addr>,
        prefixes: Vec<ipnet::Ipv6Net>,
    ) -> HookEvent {
        HookEvent::Ipv6Unassigned {
            eni_id: self.id.clone(),
            mac: self.mac.clone(),
            subnet_id: self.subnet_id.clone(),
            addrs,
            prefixes,
        }
    }
}

/// What an earlier call with a ClientToken produced, to answer a retry identically.
#[derive(Debug, Clone, Serialize)]
pub struct TokenEntry {
    pub action: String,
    /// The request's parameters without the token; a retry must match them exactly.
    pub fingerprint: String,
    /// Resource ids created (an ENI id, or the instance ids of a reservation).
    pub resources: Vec<String>,
    /// When the call was answered ([`crate::Account::client_token_ttl`] counts from here).
    #[serde(skip)]
    pub at: Option<Instant>,
}

/// A state change due later (attach/detach/terminate take time in EC2).
#[derive(Debug, Clone, Serialize)]
pub enum Timer {
    /// Attachment `attaching` → `attached`.
    AttachDone {
        eni: String,
        /// Attachment id it applies to (ignored if the ENI moved on).
        attachment: String,
    },
    /// Attachment `detaching` → gone, ENI `available`.
    DetachDone { eni: String, attachment: String },
    /// Instance `shutting-down` → `terminated`.
    TerminateDone { instance: String },
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
    pub vpcs: BTreeMap<String, Vpc>,
    pub subnets: BTreeMap<String, Subnet>,
    /// Security groups by id.
    pub groups: BTreeMap<String, SecurityGroup>,
    /// Instances by id (terminated ones stay visible, as in EC2).
    pub instances: BTreeMap<String, Instance>,
    pub enis: BTreeMap<String, Eni>,
    /// ClientToken → outcome.
    pub tokens: BTreeMap<String, TokenEntry>,
    /// Pending transitions, in no particular order.
    #[serde(skip)]
    pub timers: Vec<(Instant, Timer)>,
    pub timing: Timing,
    pub account: crate::Account,
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
