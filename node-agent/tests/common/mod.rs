//! A compact VPC on one machine for the root tests (a copy of the idea of `e2e/fabric`, which
//! node-agent cannot depend on). Everything lives in network namespaces named `<prefix>-*` that
//! [`Lab`]'s Drop removes, even when the test fails.
//!
//! ```text
//!   pod netns --veth-- node netns [eth0 = primary ENI (MAC ..:00, 10.77.0.10/24, default via .1)
//!                                  eth1 = secondary ENI (MAC ..:01, left for the agent to program)]
//!                          | peers n0, n1 on br0
//!   vpc netns: br0 = the subnet 10.77.0.0/24, router/gateway 10.77.0.1
//!              - proxy ARP for everything, a permanent neighbour per assigned address → owning ENI's
//!                MAC (the VPC fabric routes an address to the ENI it is assigned to);
//!              - source/destination check: an IP frame entering br0 is dropped unless its
//!                (source IP, source MAC) pair is an assignment (leaving by the wrong ENI fails);
//!              - v0 → "vpchost" netns 10.77.1.50 (another host in the VPC, another subnet);
//!              - up0 → "internet" netns 203.0.113.2, forwarded only from the node's primary IP;
//!                the internet knows a route back to that one address only (like an IGW).
//!   internet netns: a UDP echo on 203.0.113.2:7007 that answers with the source address it saw.
//! ```
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const VPC_CIDR: &str = "10.77.0.0/16";
pub const SUBNET: &str = "10.77.0.0/24";
pub const GATEWAY: &str = "10.77.0.1";
pub const PRIMARY_IP: &str = "10.77.0.10";
pub const ENI1_IP: &str = "10.77.0.11";
pub const MAC0: &str = "02:00:00:77:00:00";
pub const MAC1: &str = "02:00:00:77:00:01";
pub const VPC_HOST: &str = "10.77.1.50";
pub const INTERNET_HOST: &str = "203.0.113.2";
pub const ECHO_PORT: u16 = 7007;

/// Run a shell command, panic with its stderr on failure, return stdout.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Whether a shell command succeeds.
pub fn ok(cmd: &str) -> bool {
    Command::new("sh").args(["-c", cmd]).output().map(|o| o.status.success()).unwrap_or(false)
}

pub fn assert_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (it creates network namespaces); it never skips"
    );
}

/// A netns removed on drop.
pub struct Netns(pub String);
impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&format!("ip netns add {name} && ip -n {name} link set lo up"));
        Netns(name.to_string())
    }
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Run `f` on a fresh thread that entered `netns` (sockets it creates stay in that netns).
pub fn in_netns<R: Send + 'static>(netns: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Ask the internet echo from `netns` (optionally bound to `src`): the source address it saw.
pub fn ask_echo(netns: &str, src: Option<Ipv4Addr>) -> Option<String> {
    in_netns(netns, move || {
        let bind: SocketAddr = (src.unwrap_or(Ipv4Addr::UNSPECIFIED), 0).into();
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let dst: SocketAddr = (INTERNET_HOST.parse::<Ipv4Addr>().unwrap(), ECHO_PORT).into();
        for _ in 0..4 {
            let _ = s.send_to(b"who am i", dst);
            let mut buf = [0u8; 64];
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).to_string());
            }
        }
        None
    })
}

/// The topology. Field order matters for Drop: the echo stops before the namespaces go.
pub struct Lab {
    stop: Arc<AtomicBool>,
    echo: Option<std::thread::JoinHandle<()>>,
    pub node: Netns,
    pub vpc: Netns,
    pub vpchost: Netns,
    pub internet: Netns,
    pub pods: Vec<Netns>,
    prefix: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.echo.take() {
            let _ = h.join();
        }
    }
}

impl Lab {
    /// Build the topology with namespaces `<prefix>-node`, `-vpc`, `-vpchost`, `-inet`.
    /// `assigned` = (address, ENI MAC) pairs the "EC2" side has assigned (besides the ENIs' own).
    pub fn new(prefix: &str, assigned: &[(&str, &str)]) -> Lab {
        let node = Netns::new(&format!("{prefix}-node"));
        let vpc = Netns::new(&format!("{prefix}-vpc"));
        let vpchost = Netns::new(&format!("{prefix}-vpchost"));
        let internet = Netns::new(&format!("{prefix}-inet"));
        let (n, v, h, i) = (&node.0, &vpc.0, &vpchost.0, &internet.0);
        // The subnet: br0 with the router address, the node's two "ENIs" as bridge ports.
        sh(&format!(
            "ip -n {v} link add br0 type bridge && ip -n {v} addr add {GATEWAY}/24 dev br0 && \
             ip -n {v} link set br0 up && \
             ip -n {n} link add eth0 address {MAC0} type veth peer name n0 netns {v} && \
             ip -n {n} link add eth1 address {MAC1} type veth peer name n1 netns {v} && \
             ip -n {v} link set n0 master br0 up && ip -n {v} link set n1 master br0 up && \
             ip -n {n} addr add {PRIMARY_IP}/24 dev eth0 && ip -n {n} link set eth0 up && \
             ip -n {n} route add default via {GATEWAY} dev eth0"
        ));
        for (k, val) in [
            ("ipv4/ip_forward", "1"),
            ("ipv4/conf/all/rp_filter", "0"),
            ("ipv4/conf/default/rp_filter", "0"),
            ("ipv4/conf/br0/rp_filter", "0"),
            ("ipv4/conf/br0/proxy_arp", "1"),
            ("ipv4/conf/br0/proxy_arp_pvlan", "1"),
            ("ipv4/neigh/br0/proxy_delay", "0"),
            ("ipv4/conf/all/send_redirects", "0"),
            ("ipv4/conf/br0/send_redirects", "0"),
        ] {
            sh(&format!("ip netns exec {v} sh -c 'echo {val} > /proc/sys/net/{k}'"));
        }
        // Another VPC subnet with one host; the internet behind an uplink.
        sh(&format!(
            "ip -n {v} link add v0 type veth peer name eth0 netns {h} && \
             ip -n {v} addr add 10.77.1.1/24 dev v0 && ip -n {v} link set v0 up && \
             ip -n {h} addr add {VPC_HOST}/24 dev eth0 && ip -n {h} link set eth0 up && \
             ip -n {h} route add default via 10.77.1.1 && \
             ip -n {v} link add up0 type veth peer name eth0 netns {i} && \
             ip -n {v} addr add 203.0.113.1/24 dev up0 && ip -n {v} link set up0 up && \
             ip -n {i} addr add {INTERNET_HOST}/24 dev eth0 && ip -n {i} link set eth0 up && \
             ip -n {i} route add {PRIMARY_IP}/32 via 203.0.113.1"
        ));
        let mut pairs = vec![(PRIMARY_IP, MAC0), (ENI1_IP, MAC1)];
        pairs.extend_from_slice(assigned);
        for (ip, mac) in &pairs {
            sh(&format!("ip -n {v} neigh replace {ip} lladdr {mac} dev br0 nud permanent"));
        }
        let owned: Vec<String> = pairs.iter().map(|(ip, mac)| format!("{ip} . {mac}")).collect();
        let ruleset = format!(
            "table bridge fabric {{\n\
             \tset owned {{ type ipv4_addr . ether_addr; elements = {{ {} }} }}\n\
             \tchain pre {{ type filter hook prerouting priority 0; policy accept;\n\
             \t\tether type ip ip saddr . ether saddr != @owned counter drop\n\t}}\n}}\n\
             table ip fabric {{\n\
             \tchain uplink {{ type filter hook forward priority 0; policy accept;\n\
             \t\toifname \"up0\" ip saddr != {PRIMARY_IP} counter drop\n\t}}\n}}\n",
            owned.join(", ")
        );
        sh(&format!("ip netns exec {v} nft -f - <<'EOF'\n{ruleset}EOF"));
        // The echo: answers with the source address it saw.
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let echo = {
            let stop = stop.clone();
            let path = internet.path();
            std::thread::spawn(move || {
                let fd = std::fs::File::open(&path).unwrap();
                nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let s = UdpSocket::bind((INTERNET_HOST, ECHO_PORT)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                ready_tx.send(()).unwrap();
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((_, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(from.ip().to_string().as_bytes(), from);
                    }
                }
            })
        };
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("echo started");
        Lab {
            stop,
            echo: Some(echo),
            node,
            vpc,
            vpchost,
            internet,
            pods: Vec::new(),
            prefix: prefix.to_string(),
        }
    }

    /// A new pod netns `<prefix>-<name>`; returns its path.
    pub fn pod(&mut self, name: &str) -> String {
        let ns = Netns::new(&format!("{}-{name}", self.prefix));
        let p = ns.path();
        self.pods.push(ns);
        p
    }

    /// `ping` from a netns; on failure, panic with a dump of the node's and the pod's wiring.
    pub fn ping(&self, from: &str, to: &str) {
        let cmd = format!("ip netns exec {from} ping -c1 -W2 {to}");
        if ok(&cmd) || ok(&cmd) {
            return;
        }
        panic!("{cmd} failed\n{}", self.dump(from));
    }

    /// Diagnostics: links, addresses, routes, rules, neighbours, nft counters.
    pub fn dump(&self, pod: &str) -> String {
        let mut s = String::new();
        for (ns, cmds) in [
            (
                self.node.0.as_str(),
                &[
                    "ip -d link",
                    "ip addr",
                    "ip route show table all",
                    "ip rule",
                    "ip neigh",
                    "nft list ruleset",
                ][..],
            ),
            (pod, &["ip addr", "ip route", "ip neigh"][..]),
            (self.vpc.0.as_str(), &["ip neigh", "nft list ruleset"][..]),
        ] {
            for c in cmds {
                let out = Command::new("sh")
                    .args(["-c", &format!("ip netns exec {ns} {c} 2>&1")])
                    .output()
                    .unwrap();
                s.push_str(&format!("== {ns}: {c}\n{}\n", String::from_utf8_lossy(&out.stdout)));
            }
        }
        s
    }
}

// The pool and CNI requests the agent-level root tests share.

/// A pod on the primary ENI.
pub const POD_A: &str = "10.77.0.20";
/// A pod on the secondary ENI (device index 1 → table 2).
pub const POD_B: &str = "10.77.0.21";

/// The lab's pool as the operator would publish it: the primary ENI holding [`POD_A`], the
/// secondary holding [`POD_B`].
pub fn view() -> enipool_agent::pool::PoolView {
    use enipool_agent::pool::{EniView, PoolView};
    let eni = |id: &str, dev: i32, mac: &str, primary: &str, ip: &str| EniView {
        id: id.into(),
        device_index: dev,
        mac: mac.into(),
        subnet: Some(SUBNET.parse().unwrap()),
        primary_ip: Some(primary.parse().unwrap()),
        ips: vec![ip.parse().unwrap()],
        prefixes: vec![],
        ipv6_prefixes: vec![],
        attached: true,
        ready: false,
    };
    PoolView {
        enis: vec![eni("eni-0", 0, MAC0, PRIMARY_IP, POD_A), eni("eni-1", 1, MAC1, ENI1_IP, POD_B)],
        node_primary_ip: Some(PRIMARY_IP.parse().unwrap()),
        vpc_cidrs: vec![VPC_CIDR.parse().unwrap()],
        cooldown_seconds: 30,
        revision: 1,
        ..Default::default()
    }
}

/// A CNI request of `cmd` for container `cid` in `netns`.
pub fn req(
    cmd: enipool_cni::proto::Command,
    cid: &str,
    netns: &str,
) -> enipool_cni::proto::Request {
    enipool_cni::proto::Request {
        protocol: enipool_cni::proto::PROTOCOL_VERSION,
        command: cmd,
        container_id: cid.into(),
        if_name: "eth0".into(),
        netns: netns.into(),
        args: Default::default(),
        mtu: None,
        network: "enipool".into(),
        valid_attachments: None,
    }
}
