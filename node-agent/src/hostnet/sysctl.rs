//! Sysctl writes. Called on the netlink thread, which sits in the host netns, so `/proc/sys/net`
//! resolves to that netns (it follows the calling thread's namespace).

use super::HostError;

/// Write `value` to `/proc/sys/<key>` (`key` like `net/ipv4/ip_forward`).
pub fn write(key: &str, value: &str) -> Result<(), HostError> {
    std::fs::write(format!("/proc/sys/{key}"), value)
        .map_err(|source| HostError::Io { op: "sysctl write", source })
}
