//! The observer interface the VPC fabric implements, and the events the state emits for it.
//!
//! State changes collect [`HookEvent`]s while the state lock is held; the server delivers them after
//! the lock is released, so a slow or re-entrant hook can never deadlock or stall EC2 calls.

use ipnet::Ipv6Net;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Observer of data-plane-relevant EC2 changes; the VPC fabric implements it to mirror EC2 into netns.
pub trait FabricHook: Send + Sync + 'static {
    /// An instance was launched (its primary ENI is attached at device index 0).
    fn instance_launched(&self, instance_id: &str, subnet_id: &str);
    /// An instance reached `terminated`.
    fn instance_terminated(&self, instance_id: &str);
    /// An ENI finished attaching to an instance.
    fn eni_attached(
        &self,
        instance_id: &str,
        eni_id: &str,
        mac: &str,
        device_index: u32,
        subnet_id: &str,
    );
    /// An ENI finished detaching (now `available`) or was deleted while attached (termination).
    fn eni_detached(&self, instance_id: &str, eni_id: &str, mac: &str);
    /// Addresses now route to this ENI (primary, secondary and every address of assigned /28 prefixes).
    fn addresses_assigned(&self, eni_id: &str, mac: &str, subnet_id: &str, addrs: &[Ipv4Addr]);
    /// Addresses no longer route to this ENI.
    fn addresses_unassigned(&self, eni_id: &str, mac: &str, subnet_id: &str, addrs: &[Ipv4Addr]);
    /// IPv6 now routes to this ENI: single addresses (/128) and delegated prefixes (/80).
    fn ipv6_assigned(
        &self,
        eni_id: &str,
        mac: &str,
        subnet_id: &str,
        addrs: &[Ipv6Addr],
        prefixes: &[Ipv6Net],
    );
    /// IPv6 addresses and prefixes no longer route to this ENI.
    fn ipv6_unassigned(
        &self,
        eni_id: &str,
        mac: &str,
        subnet_id: &str,
        addrs: &[Ipv6Addr],
        prefixes: &[Ipv6Net],
    );
}

/// One recorded call of [`FabricHook`], in the order the state produced it.
///
/// Ordering the fabric can rely on: at launch `InstanceLaunched`, then `EniAttached` (index 0), then
/// `AddressesAssigned` of the primary ENI, then (in a subnet with an IPv6 block) `Ipv6Assigned` of
/// its one IPv6 address; a created ENI reports its addresses at creation (before it is attached);
/// an ENI that goes away (deleted, or deleted by termination) reports `AddressesUnassigned`, then
/// `Ipv6Unassigned` if it held IPv6; at termination `EniDetached`, `AddressesUnassigned` and
/// `Ipv6Unassigned` of its ENIs come before `InstanceTerminated`. IPv6 events never carry empty
/// lists of both kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum HookEvent {
    InstanceLaunched {
        instance_id: String,
        subnet_id: String,
    },
    InstanceTerminated {
        instance_id: String,
    },
    EniAttached {
        instance_id: String,
        eni_id: String,
        mac: String,
        device_index: u32,
        subnet_id: String,
    },
    EniDetached {
        instance_id: String,
        eni_id: String,
        mac: String,
    },
    AddressesAssigned {
        eni_id: String,
        mac: String,
        subnet_id: String,
        addrs: Vec<Ipv4Addr>,
    },
    AddressesUnassigned {
        eni_id: String,
        mac: String,
        subnet_id: String,
        addrs: Vec<Ipv4Addr>,
    },
    Ipv6Assigned {
        eni_id: String,
        mac: String,
        subnet_id: String,
        addrs: Vec<Ipv6Addr>,
        prefixes: Vec<Ipv6Net>,
    },
    Ipv6Unassigned {
        eni_id: String,
        mac: String,
        subnet_id: String,
        addrs: Vec<Ipv6Addr>,
        prefixes: Vec<Ipv6Net>,
    },
}

impl HookEvent {
    /// Calls the matching method of `hook`. A panicking hook is caught and logged: the EC2 call
    /// that caused the event has already succeeded and must not fail because of an observer.
    pub fn deliver(&self, hook: &dyn FabricHook) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match self {
            HookEvent::InstanceLaunched { instance_id, subnet_id } => {
                hook.instance_launched(instance_id, subnet_id)
            }
            HookEvent::InstanceTerminated { instance_id } => hook.instance_terminated(instance_id),
            HookEvent::EniAttached { instance_id, eni_id, mac, device_index, subnet_id } => {
                hook.eni_attached(instance_id, eni_id, mac, *device_index, subnet_id)
            }
            HookEvent::EniDetached { instance_id, eni_id, mac } => {
                hook.eni_detached(instance_id, eni_id, mac)
            }
            HookEvent::AddressesAssigned { eni_id, mac, subnet_id, addrs } => {
                hook.addresses_assigned(eni_id, mac, subnet_id, addrs)
            }
            HookEvent::AddressesUnassigned { eni_id, mac, subnet_id, addrs } => {
                hook.addresses_unassigned(eni_id, mac, subnet_id, addrs)
            }
            HookEvent::Ipv6Assigned { eni_id, mac, subnet_id, addrs, prefixes } => {
                hook.ipv6_assigned(eni_id, mac, subnet_id, addrs, prefixes)
            }
            HookEvent::Ipv6Unassigned { eni_id, mac, subnet_id, addrs, prefixes } => {
                hook.ipv6_unassigned(eni_id, mac, subnet_id, addrs, prefixes)
            }
        }));
        if r.is_err() {
            tracing::error!(event = ?self, "ec2sim: fabric hook panicked; EC2 call unaffected");
        }
    }
}
