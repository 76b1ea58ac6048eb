//! Instance-type limits: DescribeInstanceTypes once per type (cached for the process), with a small
//! static fallback when EC2 cannot answer. Kept behind this one type so it can be switched to the
//! ec2 module's `InstanceTypeCache` when that lands without touching the controller.

use crate::ec2::Ec2Api;
use enipool_crds::settings::{CapacitySource, InstanceLimits};
use std::collections::HashMap;
use std::sync::Mutex;

/// A few common types (ENIs, IPv4 per ENI) from the public EC2 documentation; used only when
/// DescribeInstanceTypes fails or does not know the type.
const STATIC: &[(&str, i32, i32)] = &[
    ("t3.micro", 2, 2),
    ("t3.small", 3, 4),
    ("t3.medium", 3, 6),
    ("t3.large", 3, 12),
    ("m5.large", 3, 10),
    ("m5.xlarge", 4, 15),
    ("m5.2xlarge", 4, 15),
    ("m5.4xlarge", 8, 30),
    ("c5.large", 3, 10),
    ("c5.xlarge", 4, 15),
    ("c5.4xlarge", 8, 30),
    ("r5.large", 3, 10),
];

/// Used for a type neither EC2 nor the table knows: the smallest common Nitro shape, so the pool
/// works (conservatively) instead of failing.
const UNKNOWN: InstanceLimits = InstanceLimits { max_enis: 2, ips_per_eni: 4 };

/// Limits from the static table.
pub fn static_limits(instance_type: &str) -> Option<InstanceLimits> {
    STATIC
        .iter()
        .find(|(t, _, _)| *t == instance_type)
        .map(|(_, e, i)| InstanceLimits { max_enis: *e, ips_per_eni: *i })
}

/// Per-type cache of limits.
#[derive(Debug, Default)]
pub struct CapacityCache {
    known: Mutex<HashMap<String, InstanceLimits>>,
}

impl CapacityCache {
    /// Limits of a type and where they came from. Only an EC2 answer is cached; a fallback is
    /// retried on the next call so a transient EC2 failure does not stick.
    pub async fn limits(
        &self,
        ec2: &dyn Ec2Api,
        instance_type: &str,
    ) -> (InstanceLimits, CapacitySource) {
        if let Some(l) = self.known.lock().expect("capacity lock").get(instance_type) {
            return (*l, CapacitySource::EC2API);
        }
        match ec2.describe_instance_types(&[instance_type.to_string()]).await {
            Ok(m) if m.contains_key(instance_type) => {
                let i = m[instance_type];
                let l = InstanceLimits { max_enis: i.max_enis, ips_per_eni: i.ipv4_per_eni };
                self.known.lock().expect("capacity lock").insert(instance_type.to_string(), l);
                (l, CapacitySource::EC2API)
            }
            Ok(_) => (static_limits(instance_type).unwrap_or(UNKNOWN), CapacitySource::Static),
            Err(error) => {
                tracing::warn!(%error, instance_type, "DescribeInstanceTypes failed; static limits");
                (static_limits(instance_type).unwrap_or(UNKNOWN), CapacitySource::Static)
            }
        }
    }
}
