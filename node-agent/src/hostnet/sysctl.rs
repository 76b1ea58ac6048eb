//! The host-wide sysctls the agent needs, read and (only if they differ) written through
//! `/proc/sys`.
//!
//! Container runtimes mount `/proc/sys` read-only in every non-privileged container. So the agent
//! writes as little as possible there:
//! - per-interface settings (rp_filter on the primary and the secondary ENIs) go over rtnetlink
//!   (`netlink::set_rp_filter_loose`), which needs only NET_ADMIN, and pods' veths need none;
//! - the host-wide ones ([`HOST_WIDE`]) are set once per node by `enipool-agent sysctl-init`, run
//!   by the chart as a privileged init container. The agent then only reads them: [`ensure`]
//!   writes only what differs, and when that write fails it says which sysctl, which value and
//!   how to fix it.
//!
//! The decision ([`to_write`]) is pure; [`ensure`] and [`init`] do the I/O. Call [`ensure`] on a
//! thread that sits in the host netns: `/proc/sys/net` resolves to the calling thread's netns.

use super::HostError;
use std::path::{Path, PathBuf};

/// One sysctl and the value enipool needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sysctl {
    /// Path under `/proc/sys`, e.g. `net/ipv4/ip_forward`.
    pub key: &'static str,
    /// The value enipool needs (compared with the current one trimmed).
    pub value: &'static str,
}

impl Sysctl {
    /// The dotted name (`net.ipv4.ip_forward`), as `sysctl(8)` spells it.
    pub fn name(&self) -> String {
        self.key.replace('/', ".")
    }
}

/// The host-wide sysctls: node settings, not tied to a link the agent manages. Forwarding is the
/// whole data path (pod ↔ ENI); the kernel has no per-netns netlink setter for it, so it stays a
/// `/proc/sys` write, done by `sysctl-init`.
pub const HOST_WIDE: &[Sysctl] = &[Sysctl { key: "net/ipv4/ip_forward", value: "1" }];

/// What an IPv6 cluster needs on top: IPv6 forwarding (pods' /128s are routed through the node).
/// Only there: forwarding makes the kernel ignore router advertisements on links whose
/// `accept_ra` is 1, which a dual-stack node of an IPv4 cluster may rely on.
pub const IPV6: &[Sysctl] = &[Sysctl { key: "net/ipv6/conf/all/forwarding", value: "1" }];

/// The host-wide sysctls of a cluster of `family`.
pub fn wanted(family: enipool_crds::IpFamily) -> Vec<Sysctl> {
    let mut out = HOST_WIDE.to_vec();
    if family == enipool_crds::IpFamily::IPv6 {
        out.extend_from_slice(IPV6);
    }
    out
}

/// Which of `wanted` must be written, given `current` (the value read now; `None`: unreadable,
/// so it is written). Pure: the I/O is in [`ensure`].
pub fn to_write(wanted: &[Sysctl], current: impl Fn(&Sysctl) -> Option<String>) -> Vec<Sysctl> {
    wanted
        .iter()
        .filter(|s| current(s).as_deref().map(str::trim) != Some(s.value))
        .copied()
        .collect()
}

fn read(s: &Sysctl) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(s.key)).ok()
}

/// Make every sysctl of `wanted` hold its value: read each, write only those that differ. Returns
/// the ones written. Fails on the first write that fails, naming the sysctl, its value and the fix.
pub fn ensure(wanted: &[Sysctl]) -> Result<Vec<Sysctl>, HostError> {
    let todo = to_write(wanted, read);
    for s in &todo {
        std::fs::write(Path::new("/proc/sys").join(s.key), s.value).map_err(|source| {
            HostError::Sysctl {
                name: s.name(),
                want: s.value,
                current: read(s).map_or_else(|| "unreadable".into(), |v| v.trim().to_string()),
                source,
            }
        })?;
        tracing::info!(sysctl = %s.name(), value = s.value, "sysctl set");
    }
    Ok(todo)
}

/// `enipool-agent sysctl-init`: [`ensure`] the sysctls a cluster of `family` needs ([`wanted`])
/// in `netns` (default: this process's). On its own thread, because entering a netns changes
/// only the calling thread.
pub fn init(
    netns: Option<&Path>,
    family: enipool_crds::IpFamily,
) -> Result<Vec<Sysctl>, HostError> {
    let netns: Option<PathBuf> = netns.map(Path::to_path_buf);
    std::thread::spawn(move || {
        if let Some(p) = netns {
            let f = std::fs::File::open(&p)
                .map_err(|_| HostError::NotFound(format!("netns {}", p.display())))?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| HostError::Io { op: "setns", source: e.into() })?;
        }
        ensure(&wanted(family))
    })
    .join()
    .unwrap_or_else(|_| Err(HostError::NotFound("sysctl thread panicked".into())))
}

/// The fix for a failed write, by cause: a read-only `/proc/sys` is the unprivileged container.
pub(super) fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(nix::libc::EROFS) | Some(nix::libc::EACCES) | Some(nix::libc::EPERM) => {
            "/proc/sys is read-only in an unprivileged container: run `enipool-agent sysctl-init` \
             in a privileged init container first (the Helm chart's `sysctl-init`, unless \
             agent.privileged=true), or set it on the node (sysctl.d)"
        }
        _ => "set it on the node (sysctl.d) or with `enipool-agent sysctl-init`",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const RP: Sysctl = Sysctl { key: "net/ipv4/conf/all/rp_filter", value: "2" };

    fn current(values: &[(&str, &str)]) -> impl Fn(&Sysctl) -> Option<String> {
        let m: BTreeMap<String, String> =
            values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |s: &Sysctl| m.get(s.key).cloned()
    }

    #[test]
    fn already_set_needs_no_write() {
        // As read from /proc/sys: with the trailing newline.
        let cur = current(&[("net/ipv4/ip_forward", "1\n"), (RP.key, "2\n")]);
        assert_eq!(to_write(&[HOST_WIDE[0], RP], cur), vec![]);
    }

    #[test]
    fn only_the_differing_ones_are_written() {
        let cur = current(&[("net/ipv4/ip_forward", "0\n"), (RP.key, "2\n")]);
        assert_eq!(to_write(&[HOST_WIDE[0], RP], cur), vec![HOST_WIDE[0]]);
        let cur = current(&[("net/ipv4/ip_forward", "1\n"), (RP.key, "1\n")]);
        assert_eq!(to_write(&[HOST_WIDE[0], RP], cur), vec![RP]);
    }

    #[test]
    fn unreadable_is_written() {
        assert_eq!(to_write(HOST_WIDE, current(&[])), HOST_WIDE.to_vec());
    }

    #[test]
    fn ip_forward_is_the_host_wide_one() {
        assert_eq!(HOST_WIDE, &[Sysctl { key: "net/ipv4/ip_forward", value: "1" }]);
        assert_eq!(HOST_WIDE[0].name(), "net.ipv4.ip_forward");
    }

    #[test]
    fn a_read_only_proc_sys_error_names_the_sysctl_value_and_fix() {
        let e = HostError::Sysctl {
            name: HOST_WIDE[0].name(),
            want: "1",
            current: "0".into(),
            source: std::io::Error::from_raw_os_error(nix::libc::EROFS),
        };
        let msg = e.to_string();
        for needle in ["net.ipv4.ip_forward", "is 0", "needs 1", "read-only", "sysctl-init"] {
            assert!(msg.contains(needle), "{needle} not in {msg}");
        }
    }
}
