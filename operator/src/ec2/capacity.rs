//! Instance-type limits for sizing: the ec2 module's [`InstanceTypeCache`] (DescribeInstanceTypes
//! cached per type, static table fallback), plus a last-resort shape for types neither knows.

use crate::ec2::types_table::InstanceTypeCache;
use crate::ec2::Ec2Api;
use enipool_crds::settings::{CapacitySource, InstanceLimits};
use std::sync::Arc;

/// Used for a type neither EC2 nor the static table knows: the smallest common Nitro shape, so the
/// pool works conservatively instead of failing.
const UNKNOWN: InstanceLimits = InstanceLimits { max_enis: 2, ips_per_eni: 4 };

pub struct CapacityCache {
    inner: InstanceTypeCache,
}

impl CapacityCache {
    /// A cache over `ec2`.
    pub fn new(ec2: Arc<dyn Ec2Api>) -> Self {
        Self { inner: InstanceTypeCache::new(ec2) }
    }

    /// Limits of a type and where they came from.
    pub async fn limits(&self, instance_type: &str) -> (InstanceLimits, CapacitySource) {
        match self.inner.limits(instance_type).await {
            Some(t) => (t.limits, t.source),
            None => {
                tracing::warn!(instance_type, "unknown instance type; conservative limits");
                (UNKNOWN, CapacitySource::Static)
            }
        }
    }
}
