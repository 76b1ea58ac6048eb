//! The vpc netns' nftables: the ruleset the fabric loads at build time and the names and element
//! syntax the hooks use to update its sets. Kept together so the table names and the set shapes
//! (`owned` holds `ip . mac` pairs, `owned6` `ip6-or-prefix . mac` intervals) are defined next to
//! the code that writes elements into them.

use super::UPLINK_VPC;
use std::fmt::Display;

/// nft tables in the vpc netns.
pub(super) const NFT_BRIDGE: &str = "bridge enipool_fabric";
pub(super) const NFT_IP: &str = "ip enipool_fabric";
pub(super) const NFT_IP6: &str = "ip6 enipool_fabric";

/// `a1 . mac, a2 . mac, …` for the `owned` sets (addresses, or prefixes for `owned6`).
pub(super) fn pairs<A: Display>(mac: &str, addrs: impl IntoIterator<Item = A>) -> String {
    addrs.into_iter().map(|a| format!("{a} . {mac}")).collect::<Vec<_>>().join(", ")
}

/// `a1, a2, …` for a set of addresses or prefixes.
pub(super) fn elements<A: Display>(addrs: impl IntoIterator<Item = A>) -> String {
    addrs.into_iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
}

/// The vpc netns' nftables: the VPC's source/destination check and ARP/NDP policy (table
/// `bridge`), and the "IGW" (tables `ip` and `ip6`). See the crate doc.
pub(super) fn vpc_ruleset() -> String {
    format!(
        r#"table {NFT_BRIDGE} {{
    # (IP, MAC) pairs EC2 has assigned: an ENI may only send from its own addresses.
    set owned {{ type ipv4_addr . ether_addr; }}
    # (IPv6 address or /80 prefix, MAC) pairs EC2 has assigned.
    set owned6 {{ type ipv6_addr . ether_addr; flags interval; }}
    chain from_enis {{
        type filter hook prerouting priority 0; policy accept;
        ether type arp arp saddr ip . arp saddr ether != @owned drop
        ether type ip ip saddr . ether saddr != @owned drop
        # Neighbour discovery speaks from link-local addresses, and DAD from none.
        ether type ip6 ip6 saddr {{ ::, fe80::/10 }} accept
        ether type ip6 ip6 saddr . ether saddr != @owned6 drop
    }}
    chain to_enis {{
        type filter hook output priority 0; policy accept;
        # The VPC knows where addresses are; it never asks (only permanent neighbours work).
        ether type arp arp operation request drop
        ether type ip6 icmpv6 type nd-neighbor-solicit drop
        # Nodes cannot reach each other at layer 2; a redirect would send them there.
        ether type ip6 icmpv6 type nd-redirect drop
    }}
}}
table {NFT_IP} {{
    # Primary private IPs of instances, and their public IPs (the IGW's 1:1 NAT).
    set primaries {{ type ipv4_addr; }}
    map public {{ type ipv4_addr : ipv4_addr; }}
    chain igw_filter {{
        type filter hook forward priority 0; policy accept;
        oifname "{UPLINK_VPC}" ip saddr != @primaries drop
    }}
    chain igw_nat {{
        type nat hook postrouting priority 100; policy accept;
        oifname "{UPLINK_VPC}" snat ip to ip saddr map @public
    }}
}}
table {NFT_IP6} {{
    # Every IPv6 address and prefix EC2 has assigned in the VPC: the IGW forwards them untranslated.
    set assigned {{ type ipv6_addr; flags interval; }}
    chain igw_filter {{
        type filter hook forward priority 0; policy accept;
        oifname "{UPLINK_VPC}" ip6 saddr != @assigned drop
    }}
}}
"#
    )
}
