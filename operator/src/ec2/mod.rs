//! The operator's view of EC2: domain types and the [`Ec2Api`] trait the controller calls.
//!
//! The trait speaks in enipool's terms (an instance's ENIs, "assign N addresses to this ENI"), not in
//! SDK request builders, so the planner and controller are tested against the EC2 simulator or a
//! fake without knowing the SDK, and every call passes through one place that rate-limits,
//! classifies errors and records metrics (`aws.rs`).
//!
//! ClientToken: EC2 accepts one only on CreateNetworkInterface (and RunInstances). Other mutations
//! are made safe to repeat by the journal: before retrying, the operator describes the ENI and
//! compares (e.g. an AssignIPs whose addresses already appeared is done).

use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// An EC2 instance, as far as enipool cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instance {
    /// `i-…`.
    pub id: String,
    /// e.g. `m5.large`.
    pub instance_type: String,
    pub zone: String,
    pub vpc_id: String,
    /// Subnet of the primary ENI.
    pub subnet_id: String,
    /// pending | running | stopping | stopped | shutting-down | terminated.
    pub state: String,
    pub primary_eni: String,
    /// Primary private IPv4 address.
    pub primary_ip: Option<Ipv4Addr>,
    /// Security groups of the primary ENI (copied to new ENIs when the policy names none).
    pub security_groups: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// Attachment of an ENI to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    /// `eni-attach-…`.
    pub id: String,
    /// Instance it is attached to.
    pub instance_id: String,
    /// Device index on the instance.
    pub device_index: i32,
    /// attaching | attached | detaching | detached.
    pub status: String,
    /// Whether EC2 deletes the ENI when the instance terminates.
    pub delete_on_termination: bool,
}

/// An elastic network interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Eni {
    /// `eni-…`.
    pub id: String,
    /// MAC address, lower case.
    pub mac: String,
    pub subnet_id: String,
    pub vpc_id: String,
    pub zone: String,
    /// available | attaching | in-use | detaching.
    pub status: String,
    /// Present when attached (or attaching/detaching).
    pub attachment: Option<Attachment>,
    /// The ENI's primary private address.
    pub primary_ip: Option<Ipv4Addr>,
    /// Secondary private addresses (the primary excluded).
    pub secondary_ips: Vec<Ipv4Addr>,
    /// Delegated IPv4 prefixes.
    pub prefixes: Vec<Ipv4Net>,
    /// Delegated IPv6 prefixes (/80).
    pub ipv6_prefixes: Vec<Ipv6Net>,
    pub security_groups: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// `subnet-…`.
    pub id: String,
    /// IPv4 CIDR.
    pub cidr: Ipv4Net,
    pub zone: String,
    pub vpc_id: String,
    /// Free addresses as EC2 counts them.
    pub available_ips: i32,
    pub tags: BTreeMap<String, String>,
}

/// A VPC: the CIDR blocks its subnets (and so its pods) are numbered from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vpc {
    /// `vpc-…`.
    pub id: String,
    /// The primary IPv4 block and every secondary block in state `associated`, sorted; blocks
    /// being associated or disassociated are left out (no subnet of theirs can carry pods).
    pub cidr_blocks: Vec<Ipv4Net>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecurityGroup {
    /// `sg-…`.
    pub id: String,
    pub vpc_id: String,
    pub tags: BTreeMap<String, String>,
}

/// Network limits of an instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceTypeInfo {
    /// Maximum ENIs (all network cards).
    pub max_enis: i32,
    /// IPv4 addresses per ENI, primary included.
    pub ipv4_per_eni: i32,
}

/// Which subnets or security groups to list: by ids, or by VPC (+ zone) and tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// Explicit ids (when non-empty, the other fields still filter).
    pub ids: Vec<String>,
    pub vpc_id: Option<String>,
    /// Availability zone (subnets only).
    pub zone: Option<String>,
    /// Tag filters (empty value = tag key present).
    pub tags: BTreeMap<String, String>,
}

/// A CreateNetworkInterface request carrying all the addresses it needs, so a new ENI costs one call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateEni {
    /// Subnet to create in.
    pub subnet_id: String,
    pub security_groups: Vec<String>,
    /// Secondary addresses to assign at creation.
    pub secondary_ips: i32,
    /// /28 prefixes to assign at creation (mutually exclusive with `secondary_ips` in EC2).
    pub prefixes: i32,
    /// Tags written at creation (TagSpecifications), so a leaked ENI is always attributable.
    pub tags: BTreeMap<String, String>,
    pub description: String,
    /// Idempotency token: the journal operation id.
    pub client_token: String,
}

/// Stable categories of EC2 failures; decisions key on these, never on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ec2ErrorKind {
    /// `RequestLimitExceeded` (HTTP 503): slow down (AIMD), retry later.
    Throttled,
    /// `InsufficientFreeAddressesInSubnet`.
    SubnetFull,
    /// `InsufficientCidrBlocks`: no aligned /28 left; prefix mode falls back to /32s.
    NoCidrBlocks,
    /// `AttachmentLimitExceeded`: the instance cannot take another ENI.
    AttachmentLimit,
    /// `PrivateIpAddressLimitExceeded`: the ENI cannot take more addresses.
    AddressLimit,
    /// `NetworkInterfaceLimitExceeded`: the account's regional quota of ENIs is reached.
    EniQuota,
    /// `*.NotFound`.
    NotFound,
    /// `InvalidNetworkInterface.InUse` and similar state conflicts (`IncorrectState`).
    InUse,
    /// `IdempotentParameterMismatch`: a ClientToken reused with other parameters.
    IdempotencyMismatch,
    /// 4xx the caller caused (`InvalidParameterValue`, `MissingParameter`, ...).
    InvalidRequest,
    /// 5xx, timeouts, connection errors: retry with backoff.
    Transient,
    /// Credentials or permissions (`UnauthorizedOperation`, `AuthFailure`).
    Unauthorized,
}

impl Ec2ErrorKind {
    pub const ALL: [Ec2ErrorKind; 12] = [
        Ec2ErrorKind::Throttled,
        Ec2ErrorKind::SubnetFull,
        Ec2ErrorKind::NoCidrBlocks,
        Ec2ErrorKind::AttachmentLimit,
        Ec2ErrorKind::AddressLimit,
        Ec2ErrorKind::EniQuota,
        Ec2ErrorKind::NotFound,
        Ec2ErrorKind::InUse,
        Ec2ErrorKind::IdempotencyMismatch,
        Ec2ErrorKind::InvalidRequest,
        Ec2ErrorKind::Transient,
        Ec2ErrorKind::Unauthorized,
    ];

    /// The `result` label of the EC2 call metrics: [`Self::as_str`] in snake_case, the case of
    /// every category label value across enipool's metrics.
    pub fn label(self) -> &'static str {
        match self {
            Ec2ErrorKind::Throttled => "throttled",
            Ec2ErrorKind::SubnetFull => "subnet_full",
            Ec2ErrorKind::NoCidrBlocks => "no_cidr_blocks",
            Ec2ErrorKind::AttachmentLimit => "attachment_limit",
            Ec2ErrorKind::AddressLimit => "address_limit",
            Ec2ErrorKind::EniQuota => "eni_quota",
            Ec2ErrorKind::NotFound => "not_found",
            Ec2ErrorKind::InUse => "in_use",
            Ec2ErrorKind::IdempotencyMismatch => "idempotency_mismatch",
            Ec2ErrorKind::InvalidRequest => "invalid_request",
            Ec2ErrorKind::Transient => "transient",
            Ec2ErrorKind::Unauthorized => "unauthorized",
        }
    }

    /// The category as a Kubernetes reason (Events, conditions): PascalCase.
    pub fn as_str(self) -> &'static str {
        match self {
            Ec2ErrorKind::Throttled => "Throttled",
            Ec2ErrorKind::SubnetFull => "SubnetFull",
            Ec2ErrorKind::NoCidrBlocks => "NoCidrBlocks",
            Ec2ErrorKind::AttachmentLimit => "AttachmentLimit",
            Ec2ErrorKind::AddressLimit => "AddressLimit",
            Ec2ErrorKind::EniQuota => "EniQuota",
            Ec2ErrorKind::NotFound => "NotFound",
            Ec2ErrorKind::InUse => "InUse",
            Ec2ErrorKind::IdempotencyMismatch => "IdempotencyMismatch",
            Ec2ErrorKind::InvalidRequest => "InvalidRequest",
            Ec2ErrorKind::Transient => "Transient",
            Ec2ErrorKind::Unauthorized => "Unauthorized",
        }
    }

    /// Whether the same call may succeed later without changing it.
    pub fn is_retryable(self) -> bool {
        matches!(self, Ec2ErrorKind::Throttled | Ec2ErrorKind::Transient)
    }
}

/// An EC2 failure: its category plus EC2's own code and message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EC2 {action}: {code}: {message}")]
pub struct Ec2Error {
    pub kind: Ec2ErrorKind,
    /// The EC2 action, e.g. `AssignPrivateIpAddresses`.
    pub action: &'static str,
    /// EC2's error code (empty for transport errors).
    pub code: String,
    /// EC2's message.
    pub message: String,
}

/// Result of an EC2 call.
pub type Ec2Result<T> = Result<T, Ec2Error>;

/// Everything the operator asks of EC2. Implemented over aws-sdk-ec2 in `aws.rs`; every call is
/// rate-limited by API class (describe / mutate) inside the implementation.
#[async_trait::async_trait]
pub trait Ec2Api: Send + Sync + 'static {
    /// DescribeInstances by ids (missing instances are simply absent from the result).
    async fn describe_instances(&self, ids: &[String]) -> Ec2Result<Vec<Instance>>;
    async fn describe_instance_types(
        &self,
        types: &[String],
    ) -> Ec2Result<BTreeMap<String, InstanceTypeInfo>>;
    async fn describe_subnets(&self, query: &Query) -> Ec2Result<Vec<Subnet>>;
    /// DescribeVpcs by ids (missing VPCs are simply absent from the result).
    async fn describe_vpcs(&self, ids: &[String]) -> Ec2Result<Vec<Vpc>>;
    async fn describe_security_groups(&self, query: &Query) -> Ec2Result<Vec<SecurityGroup>>;
    /// The ENIs attached to one instance (filter `attachment.instance-id`): the per-node sync.
    async fn describe_instance_enis(&self, instance_id: &str) -> Ec2Result<Vec<Eni>>;
    /// ENIs by id (missing ones are absent from the result).
    async fn describe_enis(&self, ids: &[String]) -> Ec2Result<Vec<Eni>>;
    /// Every ENI tagged with this cluster's name, all pages (garbage collection only).
    async fn list_cluster_enis(&self, cluster: &str) -> Ec2Result<Vec<Eni>>;
    /// The `available` ENIs tagged with this cluster's name and created for `instance_id` (its
    /// instance-id tag), all pages: what a deleted node may have left behind (the finalizer).
    async fn list_leftover_enis(&self, cluster: &str, instance_id: &str) -> Ec2Result<Vec<Eni>>;
    /// CreateNetworkInterface with addresses, tags and a ClientToken.
    async fn create_eni(&self, req: &CreateEni) -> Ec2Result<Eni>;
    /// AttachNetworkInterface; returns the attachment id.
    async fn attach_eni(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: i32,
    ) -> Ec2Result<String>;
    /// ModifyNetworkInterfaceAttribute: DeleteOnTermination of an attachment.
    async fn set_delete_on_termination(
        &self,
        eni_id: &str,
        attachment_id: &str,
        delete: bool,
    ) -> Ec2Result<()>;
    async fn detach_eni(&self, attachment_id: &str, force: bool) -> Ec2Result<()>;
    async fn delete_eni(&self, eni_id: &str) -> Ec2Result<()>;
    /// AssignPrivateIpAddresses with a count; returns the new addresses.
    async fn assign_ips(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Addr>>;
    /// AssignPrivateIpAddresses with an Ipv4PrefixCount; returns the new prefixes.
    async fn assign_prefixes(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Net>>;
    /// AssignIpv6Addresses with a count of /80 prefixes; returns the prefixes EC2 assigned.
    async fn assign_ipv6_prefixes(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv6Net>>;
    async fn unassign_ips(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Ec2Result<()>;
    async fn unassign_prefixes(&self, eni_id: &str, prefixes: &[Ipv4Net]) -> Ec2Result<()>;
    /// The sustained describe rate (calls/s) this client allows itself, when it limits itself: the
    /// periodic resync is sized to a share of it (`round/resync.rs`). `None`: unknown, no sizing.
    fn describe_qps(&self) -> Option<f64> {
        None
    }
}

// The aws-sdk-ec2 implementation and its parts.
pub mod aws;
pub mod capacity;
pub mod classify;
pub mod convert;
#[cfg(test)]
pub mod fake;
pub mod limiter;
pub mod metrics;
pub mod mutations;
pub mod types_table;
pub mod vpc;
