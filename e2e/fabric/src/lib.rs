//! The VPC fabric: a VPC emulated with network namespaces on one machine, driven by the EC2
//! simulator through [`FabricHook`](ec2sim::hooks::FabricHook).
//!
//! Pods are wired into a node's namespace by a real libcni client ([`cnidriver`]), the way a
//! container runtime does.
//!
//! This is the test platform, not the product: it shells out to `ip` (iproute2) and `nft` instead
//! of speaking netlink, because clarity beats speed here and every command can be replayed by hand.
//!
//! # Topology
//!
//! ```text
//!  node netns <prefix>-n-<instance>        vpc netns <prefix>-vpc               internet netns <prefix>-inet
//!  eth0 (primary ENI, MAC of the ENI) ─veth─ eni<N> ┐
//!  eth1 (secondary ENI)               ─veth─ eni<M> ┴ sn<K> bridge = subnet, gateway .1
//!                                                     inet0 198.18.255.254 ─veth─ vpc0 198.18.0.1 (UDP echo :7)
//! ```
//!
//! * A subnet is a bridge in the vpc netns holding the gateway (`.1`). The vpc netns routes between
//!   subnets (connected routes) and sends everything else to the internet netns.
//! * An attached ENI is a veth whose node end is `eth<device index>` with the ENI's MAC; the peer
//!   is an *isolated* bridge port, so nodes never talk to each other at layer 2: every frame goes
//!   through the vpc netns, as in a VPC. The bridge answers every ARP request on behalf of the
//!   subnet (`proxy_arp` + `proxy_arp_pvlan`, no delay).
//! * The vpc netns never resolves an address by ARP (an nft rule drops its ARP requests). It reaches
//!   an address only through a permanent neighbour entry `<ip> lladdr <ENI MAC>`, written when EC2
//!   assigns the address to the ENI and deleted when EC2 unassigns it. So traffic reaches an address
//!   only while EC2 says it belongs to that ENI.
//! * Source/destination check: frames entering the vpc netns from an ENI are dropped unless their
//!   (source IP, source MAC) pair is assigned in EC2 (an nft set in a `bridge` table, for IP and ARP
//!   alike). A pod whose traffic leaves by the wrong ENI is dropped, as AWS would drop it.
//! * Internet egress (the IGW): every instance gets a public IP from 198.19.0.0/16 when its primary
//!   ENI is attached with its primary private IP. The vpc netns forwards to the internet only packets
//!   whose source is an instance's primary private IP, and translates that source 1:1 to the public
//!   IP (nft set + map); anything else is dropped. The internet netns has no route to private
//!   ranges. So egress works only if the node SNATed its pods to its primary IP, as with a real IGW.
//!   The echo server answers with the source it saw: the public IP ([`Fabric::public_ip`]).
//! * IPv6, declared with [`Fabric::add_vpc_ipv6`] and [`Fabric::add_subnet_ipv6`], follows the same
//!   rules without NAT: see the `ipv6` module.
//!
//! # What the fabric assumes about the hook calls
//!
//! The first address ever reported for an ENI is its primary private IP (EC2 lists it first). An ENI
//! attached at device index 0 is configured the way EC2's DHCP would configure it: primary IP with
//! the subnet's prefix length on `eth0`, link up, default route via the subnet gateway. Secondary
//! ENIs are left down and unconfigured: that is the agent's job. Subnets must be declared with
//! [`Fabric::add_subnet`] before the simulator reports anything in them.
//!
//! # Clean-up
//!
//! Everything lives in namespaces named `<prefix>-…` and a run directory (see [`stale`]). `Drop`
//! and [`Fabric::teardown`] end the processes inside the namespaces and delete them (their links go
//! with them); [`cleanup_stale`] removes what an interrupted run left.
//!
//! # Files
//!
//! This file builds the fabric and keeps its registry; `hook.rs` mirrors the simulator's events
//! into the namespaces, `ipv6.rs` adds IPv6 to both, `nft.rs` holds the vpc netns' nftables, [`sh`]
//! runs commands in namespaces, `echo.rs` is the internet host and [`stale`] owns run directories
//! and leftovers.

pub mod cnidriver;
mod echo;
mod hook;
mod ipv6;
mod nft;
pub mod sh;
pub mod stale;

pub use echo::{udp_echo, udp_echo6, EchoServer, ECHO_PORT};
pub use ipv6::{INTERNET_HOST_V6, VPC_ROUTER_V6};
pub use sh::{command_in, exec_in, in_netns, ping, ping6, ping6_from, ping_from, run_in};
pub use stale::cleanup_stale;

use anyhow::{bail, Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use nft::vpc_ruleset;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;

/// Address of the internet host (echo server) in the internet netns.
pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The vpc netns' address on the internet link.
pub const VPC_UPLINK: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 254);
/// Prefix length of the internet link (198.18.0.0/16).
const UPLINK_PREFIX_LEN: u8 = 16;
/// Public IPs handed to instances (1:1 NAT of their primary private IP).
const PUBLIC_POOL: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(198, 19, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("bad pool"),
};
/// Link names in the vpc netns.
const UPLINK_VPC: &str = "inet0";
const UPLINK_INET: &str = "vpc0";

/// The emulated VPC. Cheap to share (`Arc<Fabric>`); all methods take `&self`.
pub struct Fabric {
    prefix: String,
    run_dir: PathBuf,
    state: Mutex<State>,
    errors: Mutex<Vec<String>>,
}

#[derive(Default)]
struct State {
    torn_down: bool,
    /// The internet host's echo servers (IPv4, IPv6).
    echo: Vec<EchoServer>,
    /// IPv6 blocks of the VPC ([`Fabric::add_vpc_ipv6`]).
    vpc_ipv6: BTreeSet<Ipv6Net>,
    /// Extra namespaces made with [`Fabric::add_netns`].
    extra_netns: BTreeSet<String>,
    subnets: BTreeMap<String, Subnet>,
    instances: BTreeMap<String, Instance>,
    enis: BTreeMap<String, Eni>,
    next_port: u32,
    next_public: u32,
    children: Vec<Child>,
}

struct Subnet {
    cidr: Ipv4Net,
    bridge: String,
    /// The /64, once declared with [`Fabric::add_subnet_ipv6`].
    ipv6: Option<Ipv6Net>,
}

impl Subnet {
    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }
}

struct Instance {
    netns: String,
    /// Set once the primary ENI is attached and its primary IP known.
    primary_ip: Option<Ipv4Addr>,
    public_ip: Option<Ipv4Addr>,
    /// The IPv6 address configured on `eth0`, and whether `eth0` has its IPv6 default route.
    primary_ip6: Option<Ipv6Addr>,
    ipv6_route: bool,
}

impl Instance {
    fn new(netns: String) -> Instance {
        Instance { netns, primary_ip: None, public_ip: None, primary_ip6: None, ipv6_route: false }
    }
}

struct Eni {
    subnet_id: String,
    primary_ip: Option<Ipv4Addr>,
    addrs: BTreeSet<Ipv4Addr>,
    /// The first IPv6 address reported (the node's, on a primary ENI).
    primary_ip6: Option<Ipv6Addr>,
    addrs6: BTreeSet<Ipv6Addr>,
    prefixes6: BTreeSet<Ipv6Net>,
    attachment: Option<Attachment>,
}

impl Eni {
    fn new(subnet_id: &str) -> Eni {
        Eni {
            subnet_id: subnet_id.to_string(),
            primary_ip: None,
            addrs: BTreeSet::new(),
            primary_ip6: None,
            addrs6: BTreeSet::new(),
            prefixes6: BTreeSet::new(),
            attachment: None,
        }
    }
}

struct Attachment {
    instance_id: String,
    device_index: u32,
    /// The veth end on the subnet bridge, in the vpc netns.
    port: String,
}

impl Fabric {
    /// Creates the vpc and internet namespaces (and the internet echo server) under a fresh run
    /// prefix, after removing what interrupted runs left behind. Needs root.
    pub fn new() -> Result<Fabric> {
        if !nix::unistd::geteuid().is_root() {
            bail!("the VPC fabric needs root (network namespaces, veths, nftables)");
        }
        let removed = cleanup_stale();
        if !removed.is_empty() {
            tracing::info!(?removed, "fabric: removed namespaces of interrupted runs");
        }
        let (prefix, run_dir) = stale::claim_run_dir()?;
        let fabric = Fabric {
            prefix,
            run_dir,
            state: Mutex::new(State { next_public: 1, ..State::default() }),
            errors: Mutex::new(Vec::new()),
        };
        // On error `fabric` is dropped here, which tears down whatever was made.
        fabric.build_core().context("building the VPC fabric")?;
        Ok(fabric)
    }

    fn build_core(&self) -> Result<()> {
        let (vpc, inet) = (self.vpc_netns(), self.internet_netns());
        for ns in [&vpc, &inet] {
            new_netns(ns)?;
        }
        ipv6::router_sysctls(&vpc)?;
        sh::sysctl(&vpc, "ipv4/ip_forward", "1")?;
        for key in ["all", "default"] {
            sh::sysctl(&vpc, &format!("ipv4/conf/{key}/send_redirects"), "0")?;
            sh::sysctl(&vpc, &format!("ipv4/conf/{key}/rp_filter"), "0")?;
        }
        sh::ip(
            &vpc,
            &[
                "link",
                "add",
                UPLINK_VPC,
                "type",
                "veth",
                "peer",
                "name",
                UPLINK_INET,
                "netns",
                &inet,
            ],
        )?;
        let uplink = |a: Ipv4Addr| format!("{a}/{UPLINK_PREFIX_LEN}");
        sh::ip(&vpc, &["addr", "add", &uplink(VPC_UPLINK), "dev", UPLINK_VPC])?;
        sh::ip(&vpc, &["link", "set", UPLINK_VPC, "up"])?;
        sh::ip(&inet, &["addr", "add", &uplink(INTERNET_HOST), "dev", UPLINK_INET])?;
        sh::ip(&inet, &["link", "set", UPLINK_INET, "up"])?;
        sh::ip(&vpc, &["route", "replace", "default", "via", &INTERNET_HOST.to_string()])?;
        // The internet knows the public pool (behind the VPC's "IGW") and nothing private.
        sh::ip(
            &inet,
            &["route", "replace", &PUBLIC_POOL.to_string(), "via", &VPC_UPLINK.to_string()],
        )?;
        sh::nft(&vpc, &vpc_ruleset())?;
        let echo = EchoServer::start(&inet, INTERNET_HOST)?;
        self.lock().echo.push(echo);
        self.build_core_ipv6()
    }

    /// The run prefix (`ep<4 hex>`); every namespace of this fabric is named `<prefix>-…`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Scratch directory of this run (removed at teardown): put CNI caches, IPAM data, logs here.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The namespace holding the subnet bridges and the VPC router.
    pub fn vpc_netns(&self) -> String {
        format!("{}-vpc", self.prefix)
    }

    /// The namespace playing the internet (echo server at [`INTERNET_HOST`]).
    pub fn internet_netns(&self) -> String {
        format!("{}-inet", self.prefix)
    }

    /// Address of the internet host (UDP echo on [`ECHO_PORT`], answers ping).
    pub fn internet_host_ip(&self) -> Ipv4Addr {
        INTERNET_HOST
    }

    /// IPv6 address of the internet host (UDP echo on [`ECHO_PORT`], answers ping).
    pub fn internet_host_ipv6(&self) -> Ipv6Addr {
        INTERNET_HOST_V6
    }

    /// The node namespace of a launched (not terminated) instance.
    pub fn node_netns(&self, instance_id: &str) -> Option<String> {
        self.lock().instances.get(instance_id).map(|i| i.netns.clone())
    }

    /// The primary private IP of an instance, once its primary ENI is attached and addressed.
    pub fn primary_ip(&self, instance_id: &str) -> Option<Ipv4Addr> {
        self.lock().instances.get(instance_id).and_then(|i| i.primary_ip)
    }

    /// The public IP the "IGW" translates the instance's primary private IP to.
    pub fn public_ip(&self, instance_id: &str) -> Option<Ipv4Addr> {
        self.lock().instances.get(instance_id).and_then(|i| i.public_ip)
    }

    /// The addresses EC2 currently routes to an ENI (as reported through the hook).
    pub fn eni_addresses(&self, eni_id: &str) -> Vec<Ipv4Addr> {
        self.lock().enis.get(eni_id).map(|e| e.addrs.iter().copied().collect()).unwrap_or_default()
    }

    /// Errors the hook methods met (they cannot return them to the simulator). Tests should
    /// assert this is empty.
    pub fn hook_errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Declares a subnet: a bridge `sn<N>` in the vpc netns with the gateway (`.1`) address,
    /// proxy ARP for the whole subnet. Idempotent for the same CIDR.
    pub fn add_subnet(&self, subnet_id: &str, cidr: Ipv4Net) -> Result<()> {
        let mut st = self.lock();
        if let Some(s) = st.subnets.get(subnet_id) {
            if s.cidr == cidr.trunc() {
                return Ok(());
            }
            bail!("subnet {subnet_id} already declared as {}", s.cidr);
        }
        let bridge = format!("sn{}", st.subnets.len());
        let subnet = Subnet { cidr: cidr.trunc(), bridge, ipv6: None };
        let vpc = self.vpc_netns();
        let br = subnet.bridge.as_str();
        // A fixed MAC: a bridge otherwise takes its lowest port's, which changes as ENIs come and
        // go and would leave nodes with a stale gateway neighbour.
        let idx = st.subnets.len();
        let br_mac = format!("02:ee:00:00:{:02x}:{:02x}", (idx >> 8) & 0xff, idx & 0xff);
        sh::ip(&vpc, &["link", "add", br, "address", &br_mac, "type", "bridge"])?;
        sh::ip(&vpc, &["link", "set", br, "alias", subnet_id])?;
        let gw = format!("{}/{}", subnet.gateway(), subnet.cidr.prefix_len());
        sh::ip(&vpc, &["addr", "add", &gw, "dev", br])?;
        sh::sysctl(&vpc, &format!("ipv4/conf/{br}/proxy_arp"), "1")?;
        sh::sysctl(&vpc, &format!("ipv4/conf/{br}/proxy_arp_pvlan"), "1")?;
        sh::sysctl(&vpc, &format!("ipv4/neigh/{br}/proxy_delay"), "0")?;
        sh::ip(&vpc, &["link", "set", br, "up"])?;
        st.subnets.insert(subnet_id.to_string(), subnet);
        Ok(())
    }

    /// Creates an extra namespace `<prefix>-<suffix>` (e.g. a pod's), deleted at teardown. Returns
    /// its name; its path is `/run/netns/<name>`.
    pub fn add_netns(&self, suffix: &str) -> Result<String> {
        let name = format!("{}-{suffix}", self.prefix);
        let mut st = self.lock();
        if st.extra_netns.insert(name.clone()) {
            new_netns(&name)?;
        }
        Ok(name)
    }

    /// Names an existing network namespace (a file such as a container runtime's mount of a pod's
    /// netns) `<prefix>-<suffix>` under `/run/netns`, by a bind mount, so that everything that
    /// works on named namespaces works on it; deleted (with the processes in it) at teardown like
    /// [`Fabric::add_netns`]'s. Returns the name.
    pub fn adopt_netns(&self, suffix: &str, path: &Path) -> Result<String> {
        let name = format!("{}-{suffix}", self.prefix);
        let mut st = self.lock();
        sh::bind_netns(&name, path)?;
        st.extra_netns.insert(name.clone());
        Ok(name)
    }

    /// Deletes a namespace made with [`Fabric::add_netns`] (and ends the processes in it).
    pub fn remove_netns(&self, name: &str) -> Result<()> {
        self.lock().extra_netns.remove(name);
        sh::delete_netns(name)
    }

    /// Spawns `cmd` (build it with [`command_in`] to run inside a namespace) and keeps the child:
    /// teardown ends and reaps it. Returns its pid.
    pub fn spawn(&self, cmd: &mut std::process::Command) -> Result<u32> {
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let pid = child.id();
        self.lock().children.push(child);
        Ok(pid)
    }

    /// Tears everything down: ends spawned processes and every process inside the fabric's
    /// namespaces, stops the echo server, deletes the namespaces (their links go with them) and the
    /// run directory. Best-effort and idempotent; also what `Drop` does. Safe to call from a
    /// Ctrl-C handler thread.
    pub fn teardown(&self) {
        let mut st = self.lock();
        if st.torn_down {
            return;
        }
        st.torn_down = true;
        let pids: Vec<i32> = st.children.iter().map(|c| c.id() as i32).collect();
        sh::terminate(&pids);
        for mut child in std::mem::take(&mut st.children) {
            let _ = child.wait();
        }
        for mut echo in std::mem::take(&mut st.echo) {
            echo.stop();
        }
        let mut names: Vec<String> = st.instances.values().map(|i| i.netns.clone()).collect();
        names.extend(std::mem::take(&mut st.extra_netns));
        st.instances.clear();
        st.enis.clear();
        st.subnets.clear();
        drop(st);
        // Anything else with our prefix (a node whose registration failed half-way, say).
        for ns in sh::list_netns() {
            if stale::prefix_of_netns(&ns) == Some(self.prefix.as_str()) && !names.contains(&ns) {
                names.push(ns);
            }
        }
        // Nodes and pods first, the vpc and internet last.
        names.sort_by_key(|n| n == &self.vpc_netns() || n == &self.internet_netns());
        for ns in names {
            if let Err(e) = sh::delete_netns(&ns) {
                tracing::warn!(netns = %ns, error = %e, "fabric: teardown could not delete netns");
            }
        }
        // A container runtime's mounts (sandbox netns, root filesystems) outlive it when it was
        // killed; the run directory cannot go while they are there.
        sh::unmount_under(&self.run_dir);
        if let Err(e) = std::fs::remove_dir_all(&self.run_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.run_dir.display(), error = %e, "fabric: teardown");
            }
        }
    }

    /// For the runner: on Ctrl-C or SIGTERM, tear the fabric down and exit with status 130.
    /// Call it inside a tokio runtime (it spawns a task). Without it, an interrupted run leaves its
    /// namespaces to the next run's [`cleanup_stale`].
    pub fn teardown_on_signal(fabric: std::sync::Arc<Fabric>) -> Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::warn!("fabric: interrupted, tearing down");
            let _ = tokio::task::spawn_blocking(move || fabric.teardown()).await;
            std::process::exit(130);
        });
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the registry usable for teardown.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// `ip netns add` (idempotent) with `lo` up.
fn new_netns(name: &str) -> Result<()> {
    if !Path::new(sh::NETNS_DIR).join(name).exists() {
        sh::run(&["ip", "netns", "add", name])?;
    }
    sh::ip(name, &["link", "set", "lo", "up"]).map(drop)
}
