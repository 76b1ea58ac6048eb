//! The vpc netns' nftables: the ruleset the fabric loads at build time and the names and element
//! syntax the hooks use to update its sets. Kept together so the table names and the set shapes
//! (`owned` holds `ip . mac` pairs) are defined next to the code that writes elements into them.

use super::UPLINK_VPC;
use std::net::Ipv4Addr;

/// nft tables in the vpc netns.
pub(super) const NFT_BRIDGE: &str = "bridge enipool_fabric";
pub(super) const NFT_IP: &str = "ip enipool_fabric";

/// `ip1 . mac, ip2 . mac, …` for the `owned` set.
pub(super) fn pairs(mac: &str, addrs: &[Ipv4Addr]) -> String {
    addrs.iter().map(|a| format!("{a} . {mac}")).collect::<Vec<_>>().join(", ")
}

/// The vpc netns' nftables: the VPC's source/destination check and ARP policy (table `bridge`),
/// and the "IGW" (table `ip`). See the module doc.
pub(super) fn vpc_ruleset() -> String {
    format!(
        r#"table {NFT_BRIDGE} {{
    # (IP, MAC) pairs EC2 has assigned: an ENI may only send from its own addresses.
    set owned {{ type ipv4_addr . ether_addr; }}
    chain from_enis {{
        type filter hook prerouting priority 0; policy accept;
        ether type arp arp saddr ip . arp saddr ether != @owned drop
        ether type ip ip saddr . ether saddr != @owned drop
    }}
    chain to_enis {{
        type filter hook output priority 0; policy accept;
        # The VPC knows where addresses are; it never asks (only permanent neighbours work).
        ether type arp arp operation request drop
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
"#
    )
}
