//! Network limits of the instance types the tests use, with the real EC2 numbers.
//!
//! Source: the EC2 user guide table "Maximum IP addresses per network interface" (the same numbers
//! the VPC CNI ships in `eni-max-pods.txt`). All but one have one network card; `p4d.24xlarge` has
//! four, and an attach that names no card goes to card 0, which takes a quarter of its ENIs. In
//! prefix mode each /28 takes one of the ENI's IPv4 slots, so an ENI holds at most
//! `ipv4_per_eni - 1` prefixes next to
//! its primary address.

/// Network limits and sizing facts of one instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeLimits {
    /// API name, e.g. `m5.large`.
    pub name: &'static str,
    /// Maximum network interfaces (primary included).
    pub max_enis: u32,
    /// IPv4 addresses per interface, primary included; also the slot count for /28 prefixes.
    pub ipv4_per_eni: u32,
    /// IPv6 addresses per interface.
    pub ipv6_per_eni: u32,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Marketing text of the network performance.
    pub network_performance: &'static str,
    /// Network cards; `max_enis` is shared equally among them.
    pub network_cards: u32,
}

impl TypeLimits {
    /// ENIs one network card takes (card 0 is where an attach without a card index goes).
    pub const fn enis_per_card(&self) -> u32 {
        self.max_enis / self.network_cards
    }
}

const fn t(
    name: &'static str,
    max_enis: u32,
    ipv4_per_eni: u32,
    vcpus: u32,
    memory_mib: u64,
    network_performance: &'static str,
) -> TypeLimits {
    TypeLimits {
        name,
        max_enis,
        ipv4_per_eni,
        ipv6_per_eni: ipv4_per_eni,
        vcpus,
        memory_mib,
        network_performance,
        network_cards: 1,
    }
}

/// The built-in table. Sorted by name so DescribeInstanceTypes output is stable.
pub const INSTANCE_TYPES: &[TypeLimits] = &[
    t("c5.2xlarge", 4, 15, 8, 16384, "Up to 10 Gigabit"),
    t("c5.4xlarge", 8, 30, 16, 32768, "Up to 10 Gigabit"),
    t("c5.large", 3, 10, 2, 4096, "Up to 10 Gigabit"),
    t("c5.xlarge", 4, 15, 4, 8192, "Up to 10 Gigabit"),
    t("m5.12xlarge", 8, 30, 48, 196608, "12 Gigabit"),
    t("m5.16xlarge", 15, 50, 64, 262144, "20 Gigabit"),
    t("m5.24xlarge", 15, 50, 96, 393216, "25 Gigabit"),
    t("m5.2xlarge", 4, 15, 8, 32768, "Up to 10 Gigabit"),
    t("m5.4xlarge", 8, 30, 16, 65536, "Up to 10 Gigabit"),
    t("m5.8xlarge", 8, 30, 32, 131072, "10 Gigabit"),
    t("m5.large", 3, 10, 2, 8192, "Up to 10 Gigabit"),
    t("m5.xlarge", 4, 15, 4, 16384, "Up to 10 Gigabit"),
    t("m6i.large", 3, 10, 2, 8192, "Up to 12.5 Gigabit"),
    t("m6i.xlarge", 4, 15, 4, 16384, "Up to 12.5 Gigabit"),
    TypeLimits { network_cards: 4, ..t("p4d.24xlarge", 60, 50, 96, 1179648, "4x 100 Gigabit") },
    t("r5.large", 3, 10, 2, 16384, "Up to 10 Gigabit"),
    t("t3.2xlarge", 4, 15, 8, 32768, "Up to 5 Gigabit"),
    t("t3.large", 3, 12, 2, 8192, "Up to 5 Gigabit"),
    t("t3.medium", 3, 6, 2, 4096, "Up to 5 Gigabit"),
    t("t3.micro", 2, 2, 2, 1024, "Up to 5 Gigabit"),
    t("t3.nano", 2, 2, 2, 512, "Up to 5 Gigabit"),
    t("t3.small", 3, 4, 2, 2048, "Up to 5 Gigabit"),
    t("t3.xlarge", 4, 15, 4, 16384, "Up to 5 Gigabit"),
];

/// IPv4 slots of an ENI that is not attached: EC2 lets it hold more than a small instance type
/// allows (the excess only fails at attach, `InvalidInterface.IpAddressLimitExceeded`), up to the
/// largest per-ENI limit of any type.
pub const UNATTACHED_IPV4_SLOTS: u32 = 50;

/// Limits of one type, if the table knows it.
pub fn lookup(name: &str) -> Option<&'static TypeLimits> {
    INSTANCE_TYPES.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_numbers_for_the_types_tests_use() {
        for (name, enis, ips) in [
            ("t3.medium", 3, 6),
            ("t3.large", 3, 12),
            ("m5.large", 3, 10),
            ("m5.xlarge", 4, 15),
            ("m5.2xlarge", 4, 15),
            ("c5.large", 3, 10),
            ("m5.4xlarge", 8, 30),
        ] {
            let l = lookup(name).unwrap();
            assert_eq!((l.max_enis, l.ipv4_per_eni), (enis, ips), "{name}");
        }
        assert!(lookup("x9.huge").is_none());
    }

    #[test]
    fn table_is_sorted() {
        let names: Vec<_> = INSTANCE_TYPES.iter().map(|t| t.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
}
