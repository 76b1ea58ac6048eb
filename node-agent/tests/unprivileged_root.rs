//! The agent as the chart runs it by default: not privileged. As root, in the namespaces of
//! [`common::Lab`] (removed in Drop, even on failure). Fails — never skips — when not root.
//!
//! [`confined`] gives a thread what a non-privileged container gets: its own mount namespace with
//! `/proc/sys` bind-mounted read-only (as runc does) and only the chart's capabilities
//! ([`CAPABILITIES`]), in the bounding set too, so the `nft` it execs gets no more. The threads it
//! starts (the netlink workers and the reaper, where every host change happens) inherit both.
//! With that, the proof:
//! - before `sysctl-init`, node setup fails and the agent stops at start, naming the sysctl, its
//!   value and the fix;
//! - `sysctl-init` itself cannot work confined, does work privileged, and afterwards succeeds
//!   confined too (it reads first and writes nothing);
//! - then node + ENI setup, ADD of two pods, DEL and uninstall all succeed confined: no
//!   `/proc/sys` write at all, and the per-interface settings the agent needs are in place, read
//!   back through `/proc/sys`, with real traffic.

mod common;

use common::*;
use enipool_agent::agent::{Agent, CoreConfig};
use enipool_agent::hostnet::netlink::NetlinkHost;
use enipool_agent::hostnet::{HostNet, NodeConfig, CAPABILITIES};
use enipool_agent::metrics::Metrics;
use enipool_agent::program::{HostSettings, Programmer};
use enipool_cni::proto::{Command as Cni, Response};
use nix::mount::{mount, MsFlags};
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;

const AGENT: &str = env!("CARGO_BIN_EXE_enipool-agent");

/// Capability numbers (linux/capability.h) of the names the chart uses.
fn cap_number(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        "SYS_ADMIN" => 21,
        other => panic!("capability {other}: add its number here"),
    }
}

/// Keep only `keep` on this thread: bounding set, then effective and permitted (capset v3).
fn keep_only_capabilities(keep: &[&str]) {
    let mask: u64 = keep.iter().fold(0, |m, n| m | 1 << cap_number(n));
    let last: u32 =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap().trim().parse().unwrap();
    for cap in (0..=last).filter(|c| mask & (1 << c) == 0) {
        // SAFETY: prctl with integer arguments only; it changes this thread's bounding set.
        let r = unsafe { nix::libc::prctl(nix::libc::PR_CAPBSET_DROP, cap as nix::libc::c_ulong) };
        assert_eq!(r, 0, "PR_CAPBSET_DROP {cap}: {}", std::io::Error::last_os_error());
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let hdr = Header { version: 0x2008_0522, pid: 0 }; // _LINUX_CAPABILITY_VERSION_3, this thread
    let (lo, hi) = (mask as u32, (mask >> 32) as u32);
    let data = [
        Data { effective: lo, permitted: lo, inheritable: 0 },
        Data { effective: hi, permitted: hi, inheritable: 0 },
    ];
    // SAFETY: capset reads one header and two data structs of the v3 layout, all live here.
    let r =
        unsafe { nix::libc::syscall(nix::libc::SYS_capset, &hdr as *const Header, data.as_ptr()) };
    assert_eq!(r, 0, "capset: {}", std::io::Error::last_os_error());
}

/// Run `f` on a thread confined like the chart's agent container (see the module doc).
fn confined<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        // Private first, or the read-only mount would propagate to the host's namespace.
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
            .unwrap();
        mount(Some("/proc/sys"), "/proc/sys", None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .unwrap();
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, "/proc/sys", None::<&str>, ro, None::<&str>).unwrap();
        keep_only_capabilities(CAPABILITIES);
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Negative controls, run where the agent's host changes run: writing `/proc/sys` fails (the
/// value read is written back, so even a broken confinement changes nothing), and so does an act
/// that needs a capability the chart does not grant (CAP_CHOWN). `Err` says what was not confined.
fn confinement() -> Result<(), String> {
    let key = "/proc/sys/net/ipv4/ip_forward";
    let cur = std::fs::read_to_string(key).map_err(|e| e.to_string())?;
    match std::fs::write(key, cur) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => {}
        other => return Err(format!("writing {key}: {other:?}, not EROFS")),
    }
    let f = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    match nix::unistd::chown(f.path(), Some(nix::unistd::Uid::from_raw(4242)), None) {
        Err(nix::errno::Errno::EPERM) => Ok(()),
        other => Err(format!("chown without CAP_CHOWN: {other:?}, not EPERM")),
    }
}

/// `/proc/sys/net/<key>` in `netns`, read by `ip netns exec` (a fresh, writable mount there).
fn sysctl_in(netns: &str, key: &str) -> String {
    sh(&format!("ip netns exec {netns} cat /proc/sys/net/{key}")).trim().to_string()
}

/// Run the `enipool-agent` binary confined, with a `/dev` of its own holding `null` and the
/// `termination-log` file the kubelet would mount (never the machine's): (success, stderr,
/// termination message).
fn agent_confined(args: &[&str]) -> (bool, String, String) {
    let dev = tempfile::tempdir().unwrap();
    let d = dev.path().to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (ok, stderr) = confined(move || {
        for f in ["null", "termination-log"] {
            std::fs::write(d.join(f), "").unwrap();
        }
        let bind = |from: &std::path::Path, to: &std::path::Path| {
            mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap()
        };
        bind(std::path::Path::new("/dev/null"), &d.join("null"));
        bind(&d, std::path::Path::new("/dev"));
        let out = Command::new(AGENT).args(&args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    });
    let message = std::fs::read_to_string(dev.path().join("termination-log")).unwrap();
    (ok, stderr, message)
}

#[test]
fn agent_needs_no_proc_sys_write_and_only_its_capabilities_after_sysctl_init() {
    assert_root();
    let mut lab = Lab::new("enip-u", &[(POD_A, MAC0), (POD_B, MAC1)]);
    let (pa, pb) = (lab.pod("pa"), lab.pod("pb"));
    let (pod_a, pod_b) = (lab.pods[0].0.clone(), lab.pods[1].0.clone());
    let n = lab.node.0.clone();
    let node_path = lab.node.path();
    // A node as it boots: no forwarding, strict rp_filter on its links and on new ones (the
    // pods' veths inherit `default`).
    for (k, v) in [
        ("ipv4/ip_forward", "0"),
        ("ipv4/conf/all/rp_filter", "0"),
        ("ipv4/conf/default/rp_filter", "1"),
        ("ipv4/conf/eth0/rp_filter", "1"),
        ("ipv4/conf/eth1/rp_filter", "1"),
    ] {
        sh(&format!("ip netns exec {n} sh -c 'echo {v} > /proc/sys/net/{k}'"));
    }
    let host_forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let cfg = NodeConfig {
        primary_mac: Some(MAC0.into()),
        primary_ip: PRIMARY_IP.parse().unwrap(),
        vpc_cidrs: vec![VPC_CIDR.parse().unwrap()],
        snat_exclude: vec![],
        external_snat: false,
        snat_ports: Default::default(),
        ipv4_egress: None,
    };

    // 1. Before sysctl-init: node setup fails, saying what and how to fix it.
    let (p, c) = (node_path.clone(), cfg.clone());
    let err = confined(move || {
        confinement().unwrap();
        let host = NetlinkHost::start(Some(p.into())).unwrap();
        host.run(|_| confinement()).expect("the netlink workers are confined");
        host.setup_node(&c).expect_err("ip_forward is 0 and /proc/sys is read-only").to_string()
    });
    for needle in ["net.ipv4.ip_forward", "is 0", "needs 1", "read-only", "sysctl-init"] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    assert_eq!(sysctl_in(&n, "ipv4/ip_forward"), "0");
    // The agent binary stops at start, before serving any pod, and says why in the termination
    // message.
    let (ok_start, stderr, message) =
        agent_confined(&["--netns", &node_path, "--node-name=n", "--state-dir=/nonexistent"]);
    assert!(!ok_start, "{stderr}");
    for needle in ["net.ipv4.ip_forward", "needs 1", "sysctl-init"] {
        assert!(message.contains(needle), "{needle:?} not in the termination message: {message}");
    }

    // 2. sysctl-init cannot work confined (it is the privileged init container's job)...
    let sysctl_init = ["--netns", &node_path, "sysctl-init"];
    let (ok_confined, _, message) = agent_confined(&sysctl_init);
    assert!(!ok_confined && message.contains("read-only"), "{message}");
    // ...works privileged, in the node's netns only...
    let out = Command::new(AGENT).args(sysctl_init).output().unwrap();
    let (ok_priv, stderr) = (out.status.success(), String::from_utf8_lossy(&out.stderr));
    assert!(ok_priv, "{stderr}");
    assert!(stderr.contains("net.ipv4.ip_forward=1"), "reports what it wrote: {stderr}");
    assert_eq!(sysctl_in(&n, "ipv4/ip_forward"), "1");
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(), host_forwarding);
    // ...and once done, succeeds confined: it reads first and writes nothing (a write fails).
    let (ok_again, stderr, _) = agent_confined(&sysctl_init);
    assert!(ok_again, "{stderr}");

    // 3. The agent confined: node + ENI setup, restart reconcile, two ADDs.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("allocations.redb");
    let p = node_path.clone();
    let (agent, added) = confined(move || {
        let nl = Arc::new(NetlinkHost::start(Some(p.into())).unwrap());
        nl.run(|_| confinement()).expect("the netlink workers are confined");
        let cfg = CoreConfig { mtu: 1500, external_snat: false, leak_grace_seconds: 600 };
        let agent = Arc::new(
            Agent::open(&store, "boot", nl, cfg, Arc::new(Metrics::unregistered())).unwrap(),
        );
        let mut prog = Programmer::new(HostSettings { mtu: 1500, ..Default::default() });
        prog.apply_to(&agent, &view(), None);
        assert_eq!(prog.ready().len(), 2, "node and both ENIs programmed");
        agent.verify_store(None, false).unwrap();
        agent.reconcile_host().unwrap();
        let added: Vec<(Ipv4Addr, String)> = [("ctr-a", &pa), ("ctr-b", &pb)]
            .into_iter()
            .map(|(cid, ns)| match agent.handle(req(Cni::Add, cid, ns)) {
                Response::Added(a) => (a.ip, a.host_if_name),
                other => panic!("ADD {cid}: {other:?}"),
            })
            .collect();
        (agent, added)
    });
    assert_eq!(added[0].0.to_string(), POD_A);
    assert_eq!(added[1].0.to_string(), POD_B);
    // Per-interface settings, read back through /proc/sys: loose rp_filter on both ENIs, set
    // over rtnetlink. The pods' veths need none: they keep the node's strict default, and pods
    // on both ENIs still reach the node, the VPC and (SNATed) the internet.
    assert_eq!(sysctl_in(&n, "ipv4/conf/eth0/rp_filter"), "2", "primary ENI");
    assert_eq!(sysctl_in(&n, "ipv4/conf/eth1/rp_filter"), "2", "secondary ENI");
    for (_, veth) in &added {
        assert_eq!(sysctl_in(&n, &format!("ipv4/conf/{veth}/rp_filter")), "1", "{veth}");
    }
    for pod in [&pod_a, &pod_b] {
        lab.ping(pod, PRIMARY_IP);
        lab.ping(pod, VPC_HOST);
        assert_eq!(ask_echo(pod, None).as_deref(), Some(PRIMARY_IP), "{pod} egress not SNATed");
    }
    let rules = sh(&format!("ip -n {n} rule"));
    assert!(rules.contains(&format!("1536:\tfrom {POD_B} to {VPC_CIDR} lookup 2")), "{rules}");

    // 4. DEL and uninstall confined too.
    let (pa, pb) = (lab.pods[0].path(), lab.pods[1].path());
    confined(move || {
        for (cid, ns) in [("ctr-a", &pa), ("ctr-b", &pb)] {
            assert_eq!(agent.handle(req(Cni::Del, cid, ns)), Response::Done { released: 0 });
        }
        agent.host().reap_links().unwrap();
        assert!(agent.host().uninstall().is_empty(), "uninstall needs no /proc/sys write");
    });
    let rules = sh(&format!("ip -n {n} rule"));
    assert!(!rules.contains(POD_A) && !rules.contains(POD_B), "{rules}");
    assert!(!sh(&format!("ip netns exec {n} nft list tables")).contains("enipool"));
}
