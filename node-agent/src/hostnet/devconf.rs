//! Per-interface IPv4 settings (`net.ipv4.conf.<if>.*`) over rtnetlink instead of `/proc/sys`,
//! which is read-only in an unprivileged container. The kernel takes them in RTM_SETLINK as
//! IFLA_AF_SPEC → AF_INET → IFLA_INET_CONF (`inet_set_link_af`, the same per-device devconf the
//! sysctl file writes; needs only NET_ADMIN). What it skips compared with the file: the
//! RTM_NEWNETCONF notification, which nothing of ours listens to; rp_filter itself is read per
//! packet (`fib_validate_source`), so there is no cache to flush.

use super::HostError;
use rtnetlink::packet_route::link::{AfSpecInet, AfSpecUnspec, InetDevConf, LinkAttribute};
use rtnetlink::{Handle, LinkUnspec};

/// Loose reverse-path filtering (RFC 3704): a packet passes if its source is routable by any
/// link. Pods on a secondary ENI send through it with a source the main table routes elsewhere,
/// and NodePort replies leave by the primary ENI; strict mode (1) would drop both.
pub const RP_FILTER_LOOSE: i32 = 2;

/// The RTM_SETLINK body that sets rp_filter of link `index`. (The crate's request form leaves
/// out zero values, so it can raise a setting, never clear one; loose mode is non-zero.)
pub fn rp_filter_message(index: u32, value: i32) -> rtnetlink::packet_route::link::LinkMessage {
    let mut conf = InetDevConf::default();
    conf.rp_filter = value;
    let mut msg = LinkUnspec::new_with_index(index).build();
    msg.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
        AfSpecInet::DevConfRequest(conf),
    ])]));
    msg
}

/// Set `net.ipv4.conf.<link>.rp_filter` to loose on link `index`. Idempotent.
pub async fn set_rp_filter_loose(h: &Handle, index: u32) -> Result<(), HostError> {
    h.link().set(rp_filter_message(index, RP_FILTER_LOOSE)).execute().await.map_err(|e| {
        HostError::Netlink { op: "set rp_filter (IFLA_INET_CONF)", msg: e.to_string() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::Emitable;

    /// The bytes the kernel parses: IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF (nested) {
    /// IPV4_DEVCONF_RP_FILTER = 2 } } } and nothing else.
    #[test]
    fn message_carries_only_rp_filter_in_ifla_inet_conf() {
        let msg = rp_filter_message(7, RP_FILTER_LOOSE);
        assert_eq!(msg.header.index, 7);
        assert_eq!(msg.attributes.len(), 1, "{msg:?}");
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // After the 16-byte ifinfomsg header: nla lengths and types, native endian u16s.
        let u16_at = |o: usize| u16::from_ne_bytes([buf[o], buf[o + 1]]);
        let u32_at = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        const IFLA_AF_SPEC: u16 = 26;
        const AF_INET: u16 = 2;
        const IFLA_INET_CONF: u16 = 1;
        const NLA_F_NESTED: u16 = 0x8000;
        const IPV4_DEVCONF_RP_FILTER: u16 = 8;
        let o = 16;
        assert_eq!(u16_at(o + 2) & !NLA_F_NESTED, IFLA_AF_SPEC);
        assert_eq!(u16_at(o + 6) & !NLA_F_NESTED, AF_INET);
        assert_eq!(u16_at(o + 10), IFLA_INET_CONF | NLA_F_NESTED);
        assert_eq!(u16_at(o + 12), 8, "one u32 devconf attribute");
        assert_eq!(u16_at(o + 14), IPV4_DEVCONF_RP_FILTER);
        assert_eq!(u32_at(o + 16), 2);
        assert_eq!(buf.len(), o + 20);
    }
}
