//! Schema limits for the ENI and address fields of ENIPool status, so the apiserver refuses a
//! malformed value before any reader sees it (the node agent checks them again). Regular expressions rather than CEL's `isIP`/`isCIDR`:
//! patterns are enforced by every apiserver version the chart supports, and they also check what
//! CEL cannot say in one call (a /28 prefix starting on a multiple of 16).
//!
//! Dotted decimal without leading zeros, the form both Go's and Rust's parsers accept.

macro_rules! octet {
    () => {
        "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    };
}

macro_rules! ipv4 {
    () => {
        concat!(octet!(), "(\\.", octet!(), "){3}")
    };
}

/// An IPv4 address.
pub const IPV4: &str = concat!("^", ipv4!(), "$");

/// An IPv4 address, or empty where the operator has not learnt it yet.
pub const IPV4_OR_EMPTY: &str = concat!("^(", ipv4!(), ")?$");

/// One IPv4 address, plain or written as a /32.
pub const IPV4_HOST: &str = concat!("^", ipv4!(), "(/32)?$");

/// An IPv4 CIDR (any length), or empty where the operator has not learnt it yet.
pub const IPV4_CIDR_OR_EMPTY: &str = concat!("^(", ipv4!(), "/(3[0-2]|[12]?[0-9]))?$");

/// A delegated IPv4 prefix: /28, its last octet a multiple of 16 (the network address).
pub const IPV4_PREFIX_28: &str = concat!(
    "^",
    octet!(),
    "(\\.",
    octet!(),
    "){2}\\.(0|16|32|48|64|80|96|112|128|144|160|176|192|208|224|240)/28$"
);

/// A delegated IPv6 prefix: a /80 in any of the textual forms. Loose on purpose (a full IPv6
/// grammar as a regular expression is unreadable); the operator writes the canonical form and the
/// agent parses every value again.
pub const IPV6_PREFIX_80: &str = "^[0-9a-fA-F:.]{2,45}/80$";

/// A MAC address, six hex pairs separated by colons.
pub const MAC: &str = "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$";

/// Highest device index: a secondary ENI's route table is its device index + 1, and tables 253,
/// 254 and 255 are the kernel's `default`, `main` and `local` tables.
pub const MAX_DEVICE_INDEX: i32 = 251;

/// Most ENIs one node lists (EC2's largest instance types attach fewer).
pub const MAX_ENIS: usize = 128;
/// Most addresses or prefixes one ENI lists (EC2 allows at most 50 IPv4 slots per ENI).
pub const MAX_PER_ENI: usize = 256;
/// Most items of a node-wide list of addresses or prefixes (above every ENI's 50 slots on
/// [`MAX_ENIS`] ENIs).
pub const MAX_PER_NODE: usize = 8192;
