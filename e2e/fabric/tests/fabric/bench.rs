//! The fabric tests' bench: one test at a time (with root), and the nodes A, B, C as the EC2
//! simulator would report them to the fabric's hooks.

use ec2sim::hooks::FabricHook;
use enipool_fabric::Fabric;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};

/// The tests run one at a time: the teardown test counts this process's children and links.
static SERIAL: Mutex<()> = Mutex::new(());

/// Fails (never skips) without root, then takes the serial lock.
pub(super) fn serial() -> MutexGuard<'static, ()> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the fabric tests need root (network namespaces, veths, nftables): run them as root"
    );
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn setup() -> (MutexGuard<'static, ()>, Fabric) {
    let guard = serial();
    (guard, Fabric::new().expect("building the fabric"))
}

pub(super) const SUBNET: &str = "subnet-a";
pub(super) const SUBNET_B: &str = "subnet-b";

/// A launched instance with its primary ENI attached and addressed, as the simulator reports it.
pub(super) struct Node {
    pub(super) instance: &'static str,
    pub(super) eni: &'static str,
    pub(super) mac: &'static str,
    pub(super) subnet: &'static str,
    pub(super) primary: Ipv4Addr,
    /// The IPv6 address EC2 gives the node at launch in an IPv6 subnet ([`subnets6`]).
    pub(super) ipv6: Ipv6Addr,
}

impl Node {
    pub(super) fn launch(&self, f: &Fabric) -> String {
        f.instance_launched(self.instance, self.subnet);
        f.eni_attached(self.instance, self.eni, self.mac, 0, self.subnet);
        f.addresses_assigned(self.eni, self.mac, self.subnet, &[self.primary]);
        assert_eq!(f.hook_errors(), Vec::<String>::new());
        assert_eq!(f.primary_ip(self.instance), Some(self.primary));
        f.node_netns(self.instance).expect("node netns")
    }

    /// [`Node::launch`] in an IPv6 subnet: the primary ENI also gets its IPv6 address.
    pub(super) fn launch6(&self, f: &Fabric) -> String {
        let ns = self.launch(f);
        f.ipv6_assigned(self.eni, self.mac, self.subnet, &[self.ipv6], &[]);
        assert_eq!(f.hook_errors(), Vec::<String>::new());
        assert_eq!(f.primary_ipv6(self.instance), Some(self.ipv6));
        ns
    }
}

pub(super) const A: Node = Node {
    instance: "i-0aaaaaaaaaaaaaaa1",
    eni: "eni-0aaaaaaaaaaaaaaa1",
    mac: "02:00:0a:00:01:0a",
    subnet: SUBNET,
    primary: Ipv4Addr::new(10, 0, 1, 10),
    ipv6: Ipv6Addr::new(0x2600, 0x1f14, 0, 0x101, 0, 0, 0, 0x10),
};
pub(super) const B: Node = Node {
    instance: "i-0bbbbbbbbbbbbbbb2",
    eni: "eni-0bbbbbbbbbbbbbbb2",
    mac: "02:00:0a:00:02:14",
    subnet: SUBNET_B,
    primary: Ipv4Addr::new(10, 0, 2, 20),
    ipv6: Ipv6Addr::new(0x2600, 0x1f14, 0, 0x102, 0, 0, 0, 0x20),
};
/// A second node in A's subnet (same bridge: checks that nodes cannot bypass the VPC at layer 2).
pub(super) const C: Node = Node {
    instance: "i-0ccccccccccccccc3",
    eni: "eni-0ccccccccccccccc3",
    mac: "02:00:0a:00:01:1e",
    subnet: SUBNET,
    primary: Ipv4Addr::new(10, 0, 1, 30),
    ipv6: Ipv6Addr::new(0x2600, 0x1f14, 0, 0x101, 0, 0, 0, 0x30),
};

pub(super) fn subnets(f: &Fabric) {
    f.add_subnet(SUBNET, "10.0.1.0/24".parse().unwrap()).unwrap();
    f.add_subnet(SUBNET_B, "10.0.2.0/24".parse().unwrap()).unwrap();
}

/// [`subnets`] with IPv6: the VPC's /56 and a /64 for each subnet, as EC2 carves them.
pub(super) fn subnets6(f: &Fabric) {
    subnets(f);
    f.add_vpc_ipv6("2600:1f14:0:100::/56".parse().unwrap()).unwrap();
    f.add_subnet_ipv6(SUBNET, "2600:1f14:0:101::/64".parse().unwrap()).unwrap();
    f.add_subnet_ipv6(SUBNET_B, "2600:1f14:0:102::/64".parse().unwrap()).unwrap();
}
