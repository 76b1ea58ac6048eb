//! Running commands and code inside a network namespace.
//!
//! Commands go through `ip netns exec`, which also remounts `/sys` for the namespace; Rust code runs
//! on a dedicated thread that entered the namespace with `setns` (its sockets and `/proc/sys/net`
//! writes belong to that namespace; `/sys/class/net` does not follow, so read links over netlink or
//! `ip`, never sysfs).

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use std::ffi::OsStr;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output, Stdio};

/// Where `ip netns add` mounts named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Runs `argv` and returns its stdout; a non-zero exit becomes an error carrying stderr.
pub fn run(argv: &[&str]) -> Result<String> {
    let (program, args) = argv.split_first().context("empty command")?;
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {argv:?}"))?;
    check(argv, out)
}

/// Runs `argv` with `stdin` fed to it (for `nft -f -`).
pub fn run_with_stdin(argv: &[&str], stdin: &str) -> Result<String> {
    use std::io::Write;
    let (program, args) = argv.split_first().context("empty command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {argv:?}"))?;
    let mut pipe = child.stdin.take().context("stdin pipe")?;
    pipe.write_all(stdin.as_bytes()).with_context(|| format!("writing stdin of {argv:?}"))?;
    drop(pipe);
    check(argv, child.wait_with_output()?)
}

fn check(argv: &[&str], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!("{argv:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A [`Command`] that runs `program` inside `netns` (via `ip netns exec`); add arguments, env and
/// stdio before running it.
pub fn command_in(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).arg(program);
    cmd
}

/// Runs `argv` inside `netns` and returns its output, whatever the exit status.
pub fn exec_in(netns: &str, argv: &[&str]) -> Result<Output> {
    let (program, args) = argv.split_first().context("empty command")?;
    command_in(netns, program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {argv:?} in netns {netns}"))
}

/// Runs `argv` inside `netns`; a non-zero exit becomes an error carrying stderr.
pub fn run_in(netns: &str, argv: &[&str]) -> Result<String> {
    let out = exec_in(netns, argv)?;
    check(argv, out).with_context(|| format!("in netns {netns}"))
}

/// `ip -n <netns> <args>`.
pub fn ip(netns: &str, args: &[&str]) -> Result<String> {
    let mut argv = vec!["ip", "-n", netns];
    argv.extend_from_slice(args);
    run(&argv)
}

/// A permanent neighbour entry `addr → mac` on `dev` in `netns`: how the VPC router knows which
/// ENI an address (or an ENI's link-local next hop) belongs to without asking.
pub fn permanent_neighbour(netns: &str, addr: &str, mac: &str, dev: &str) -> Result<()> {
    ip(netns, &["neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent"]).map(drop)
}

/// Feeds an nft script to `nft -f -` inside `netns`.
pub fn nft(netns: &str, script: &str) -> Result<String> {
    run_with_stdin(&["ip", "netns", "exec", netns, "nft", "-f", "-"], script)
        .with_context(|| format!("nft in netns {netns}"))
}

/// Runs `f` on a dedicated thread that entered `netns`; the calling thread stays where it is.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let file = File::open(format!("{NETNS_DIR}/{netns}"))
        .with_context(|| format!("opening netns {netns}"))?;
    std::thread::scope(|s| {
        s.spawn(move || -> Result<T> {
            setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {netns}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns {netns} panicked"))?
    })
}

/// Sets a sysctl under `/proc/sys/net` (path relative to it, e.g. `ipv4/ip_forward`) in `netns`.
pub fn sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    in_netns(netns, || std::fs::write(format!("/proc/sys/net/{key}"), value))?
        .with_context(|| format!("sysctl net/{key}={value} in netns {netns}"))
}

/// One bounded ICMP echo (`ping -c1 -W1`) from `netns`; true if a reply came back.
pub fn ping(netns: &str, to: Ipv4Addr) -> bool {
    ping_argv(netns, &["-c1", "-W1", &to.to_string()])
}

/// Like [`ping`], with the given source address (`-I <src>`).
pub fn ping_from(netns: &str, src: Ipv4Addr, to: Ipv4Addr) -> bool {
    ping_argv(netns, &["-c1", "-W1", "-I", &src.to_string(), &to.to_string()])
}

/// [`ping`] over IPv6.
pub fn ping6(netns: &str, to: Ipv6Addr) -> bool {
    ping_argv(netns, &["-6", "-c1", "-W1", &to.to_string()])
}

/// [`ping_from`] over IPv6.
pub fn ping6_from(netns: &str, src: Ipv6Addr, to: Ipv6Addr) -> bool {
    ping_argv(netns, &["-6", "-c1", "-W1", "-I", &src.to_string(), &to.to_string()])
}

fn ping_argv(netns: &str, args: &[&str]) -> bool {
    let mut argv = vec!["ping", "-q", "-n"];
    argv.extend_from_slice(args);
    exec_in(netns, &argv).map(|o| o.status.success()).unwrap_or(false)
}

/// Named network namespaces (`ip netns list`, names only).
pub fn list_netns() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

/// Pids of the processes inside `netns`.
pub fn netns_pids(netns: &str) -> Vec<i32> {
    run(&["ip", "netns", "pids", netns])
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Ends every process inside `netns` (see [`terminate`]), then deletes the namespace (its links go
/// with it).
pub fn delete_netns(netns: &str) -> Result<()> {
    if !std::path::Path::new(NETNS_DIR).join(netns).exists() {
        return Ok(());
    }
    terminate(&netns_pids(netns));
    run(&["ip", "netns", "delete", netns]).map(drop)
}

/// Bind-mounts the netns file `path` at `/run/netns/<name>` (as `ip netns add` makes one).
pub fn bind_netns(name: &str, path: &std::path::Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    let target = std::path::Path::new(NETNS_DIR).join(name);
    std::fs::create_dir_all(NETNS_DIR).with_context(|| format!("creating {NETNS_DIR}"))?;
    File::create(&target).with_context(|| format!("creating {}", target.display()))?;
    mount(Some(path), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>).with_context(|| {
        let _ = std::fs::remove_file(&target);
        format!("bind-mounting netns {} at {}", path.display(), target.display())
    })
}

/// Detaches every mount at or below `dir` (deepest first). Best-effort.
pub fn unmount_under(dir: &std::path::Path) {
    use nix::mount::{umount2, MntFlags};
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    // Field 5 is the mount point, with spaces and such octal-escaped.
    let mut points: Vec<std::path::PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Err(e) = umount2(&p, MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %p.display(), error = %e, "unmounting a leftover mount");
        }
    }
}

fn unescape_mount_point(s: &str) -> std::path::PathBuf {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|o| std::str::from_utf8(o).ok());
        match (b[i], octal.and_then(|o| u8::from_str_radix(o, 8).ok())) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::path::PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// SIGTERM to each process, up to 2 s for them to end, then SIGKILL to the rest. Zombies count as
/// ended (their parent reaps them).
pub fn terminate(pids: &[i32]) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut pids = pids.to_vec();
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !pids.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        pids.retain(|p| process_alive(*p));
    }
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
}

/// True if `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ") ".
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mount_points_are_unescaped() {
        let p = super::unescape_mount_point(r"/run/a\040b/c\134d");
        assert_eq!(p, std::path::PathBuf::from("/run/a b/c\\d"));
        assert_eq!(super::unescape_mount_point(r"/x\04"), std::path::PathBuf::from(r"/x\04"));
    }
}
