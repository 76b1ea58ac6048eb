use super::*;
use crate::common::{EniPlacement, IpFamily, Surge};

const M5_LARGE: InstanceLimits = InstanceLimits { max_enis: 3, ips_per_eni: 10 };

fn policy(sizing: Sizing, mode: IpMode) -> ENIPoolPolicySpec {
    ENIPoolPolicySpec { sizing, mode, ..Default::default() }
}

#[test]
fn capacity_follows_the_vpc_cni_formula() {
    // (mode, limits, maxENIs, firstInterfaceIndex) -> (maxPodIPs, maxPods)
    let cases = [
        (IpMode::SecondaryIP, M5_LARGE, 0, 0, 27, 29),
        (IpMode::SecondaryIP, InstanceLimits { max_enis: 3, ips_per_eni: 6 }, 0, 0, 15, 17),
        (IpMode::SecondaryIP, InstanceLimits { max_enis: 4, ips_per_eni: 15 }, 0, 0, 56, 58),
        (IpMode::SecondaryIP, M5_LARGE, 2, 0, 18, 20),
        (IpMode::SecondaryIP, M5_LARGE, 0, 1, 18, 20),
        (IpMode::SecondaryIP, M5_LARGE, 9, 0, 27, 29), // maxENIs above the limit is clamped
        (IpMode::Prefix, M5_LARGE, 0, 0, 432, 434),
        (IpMode::PrefixWithFallback, InstanceLimits { max_enis: 3, ips_per_eni: 6 }, 1, 0, 80, 82),
        (IpMode::SecondaryIP, InstanceLimits { max_enis: 0, ips_per_eni: 0 }, 0, 0, 0, 2),
    ];
    for (mode, limits, max_enis, first, pod_ips, max_pods) in cases {
        let c = capacity(mode, limits, max_enis, first, CapacitySource::Static);
        assert_eq!(
            (c.max_pod_ips, c.max_pods),
            (pod_ips, max_pods),
            "{mode:?} {limits:?} maxENIs={max_enis} first={first}"
        );
    }
}

#[test]
fn defaults_apply_without_a_policy() {
    let e = resolve(IpFamily::IPv4, None, None, M5_LARGE, CapacitySource::EC2API);
    assert_eq!(e.mode, IpMode::SecondaryIP);
    assert_eq!(e.warm_ips, defaults::WARM_IPS);
    assert_eq!(e.batch, 1);
    assert_eq!(e.min_allocate, 0);
    assert_eq!(e.max_allocate, 27);
    assert_eq!(e.hysteresis_ips, defaults::WARM_IPS / 2);
    assert_eq!(e.cooldown_seconds, defaults::COOLDOWN_SECONDS);
    assert_eq!(e.release_delay_seconds, defaults::RELEASE_DELAY_SECONDS);
    assert!(e.release_enabled && e.release_empty_enis);
    assert_eq!(e.surge_max_extra, defaults::SURGE_MAX_EXTRA);
    assert_eq!(e.capacity.source, CapacitySource::EC2API);
}

#[test]
fn prefix_mode_defaults_batch_to_a_whole_prefix() {
    let e = resolve(
        IpFamily::IPv4,
        Some(&policy(Sizing::default(), IpMode::Prefix)),
        None,
        M5_LARGE,
        CapacitySource::EC2API,
    );
    assert_eq!(e.batch, 16);
    assert_eq!(e.max_allocate, 432);
}

#[test]
fn overrides_win_field_by_field_over_the_policy() {
    let p = policy(
        Sizing { warm_ips: Some(4), batch: Some(2), min_allocate: Some(6), ..Default::default() },
        IpMode::SecondaryIP,
    );
    let o = PoolOverrides {
        sizing: Some(Sizing { warm_ips: Some(10), ..Default::default() }),
        cooldown_seconds: Some(5),
        ..Default::default()
    };
    let e = resolve(IpFamily::IPv4, Some(&p), Some(&o), M5_LARGE, CapacitySource::EC2API);
    assert_eq!(e.warm_ips, 10, "override wins");
    assert_eq!(e.batch, 2, "policy value kept where the override is silent");
    assert_eq!(e.min_allocate, 6);
    assert_eq!(e.cooldown_seconds, 5);
    assert_eq!(e.hysteresis_ips, 5, "hysteresis defaults to half the effective warm");
}

#[test]
fn limits_clamp_min_and_max() {
    let p = policy(
        Sizing { min_allocate: Some(100), max_allocate: Some(500), ..Default::default() },
        IpMode::SecondaryIP,
    );
    let e = resolve(IpFamily::IPv4, Some(&p), None, M5_LARGE, CapacitySource::Static);
    assert_eq!(e.max_allocate, 27, "maxAllocate never exceeds capacity");
    assert_eq!(e.min_allocate, 27, "minAllocate never exceeds the ceiling");
}

#[test]
fn surge_off_counts_no_pending_pods() {
    let p = policy(
        Sizing {
            surge: Some(Surge { enabled: Some(false), max_extra: Some(10) }),
            ..Default::default()
        },
        IpMode::SecondaryIP,
    );
    assert_eq!(
        resolve(IpFamily::IPv4, Some(&p), None, M5_LARGE, CapacitySource::Static).surge_max_extra,
        0
    );
}

#[test]
fn placement_limits_reach_capacity() {
    let p = ENIPoolPolicySpec {
        eni: EniPlacement {
            max_enis: Some(2),
            first_interface_index: Some(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let e = resolve(IpFamily::IPv4, Some(&p), None, M5_LARGE, CapacitySource::Static);
    assert_eq!(e.first_interface_index, 1);
    assert_eq!(e.capacity.max_enis, 2);
    assert_eq!(e.capacity.max_pod_ips, 9);
    assert_eq!(e.max_allocate, 9);
}

#[test]
fn freezing_when_cordoned_comes_from_the_policy_and_is_off_by_default() {
    assert!(
        !resolve(IpFamily::IPv4, None, None, M5_LARGE, CapacitySource::Static).freeze_when_cordoned
    );
    let p = ENIPoolPolicySpec { freeze_when_cordoned: true, ..Default::default() };
    assert!(
        resolve(IpFamily::IPv4, Some(&p), None, M5_LARGE, CapacitySource::Static)
            .freeze_when_cordoned
    );
}

#[test]
fn an_ipv6_node_is_bounded_by_pods_not_addresses() {
    // m5.large: 432 addresses' worth of /28s, capped at EKS's largest pod limit.
    let e = resolve(IpFamily::IPv6, None, None, M5_LARGE, CapacitySource::EC2API);
    assert_eq!(e.ip_family, IpFamily::IPv6);
    assert_eq!(e.mode, IpMode::Prefix);
    assert_eq!((e.capacity.max_pod_ips, e.capacity.max_pods), (248, 250));
    assert_eq!(e.max_allocate, 248);
    assert!(!e.release_enabled, "a node's /80 is never released");
    // A small instance's prefix formula is below the cap: t3.micro holds 2 ENIs × 1 slot × 16.
    let small = InstanceLimits { max_enis: 2, ips_per_eni: 2 };
    let e = resolve(IpFamily::IPv6, None, None, small, CapacitySource::Static);
    assert_eq!((e.capacity.max_pod_ips, e.capacity.max_pods), (32, 34));
    // The policy's mode, custom networking and release do not apply; maxAllocate lowers pods.
    let mut p =
        policy(Sizing { max_allocate: Some(100), ..Default::default() }, IpMode::SecondaryIP);
    p.eni = EniPlacement { first_interface_index: Some(1), ..Default::default() };
    let e = resolve(IpFamily::IPv6, Some(&p), None, M5_LARGE, CapacitySource::EC2API);
    assert_eq!((e.mode, e.first_interface_index, e.max_allocate), (IpMode::Prefix, 0, 100));
}
