//! Instance-type network limits: [`InstanceTypeCache`] answers from DescribeInstanceTypes (asked
//! once per type and refreshed rarely, never per node on a hot path) and falls back to
//! [`static_limits`] when EC2 cannot answer.
//!
//! The static table is real DescribeInstanceTypes data (`NetworkInfo.MaximumNetworkInterfaces`,
//! `Ipv4AddressesPerInterface`) for common current families; `tests/moto.rs` checks every row
//! against the DescribeInstanceTypes answers moto serves, which are AWS's own data. A static table
//! drifts (Cilium's did), so it is only the fallback and the source is reported
//! ([`CapacitySource::Static`]).

use super::{Ec2Api, Ec2ErrorKind};
use enipool_crds::settings::{CapacitySource, InstanceLimits};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// `(instance type, max ENIs, IPv4 addresses per ENI)`.
pub const STATIC_LIMITS: &[(&str, i32, i32)] = &[
    // t2
    ("t2.nano", 2, 2),
    ("t2.micro", 2, 2),
    ("t2.small", 3, 4),
    ("t2.medium", 3, 6),
    ("t2.large", 3, 12),
    ("t2.xlarge", 3, 15),
    ("t2.2xlarge", 3, 15),
    // t3
    ("t3.nano", 2, 2),
    ("t3.micro", 2, 2),
    ("t3.small", 3, 4),
    ("t3.medium", 3, 6),
    ("t3.large", 3, 12),
    ("t3.xlarge", 4, 15),
    ("t3.2xlarge", 4, 15),
    // t3a
    ("t3a.nano", 2, 2),
    ("t3a.micro", 2, 2),
    ("t3a.small", 2, 4),
    ("t3a.medium", 3, 6),
    ("t3a.large", 3, 12),
    ("t3a.xlarge", 4, 15),
    ("t3a.2xlarge", 4, 15),
    // m5
    ("m5.large", 3, 10),
    ("m5.xlarge", 4, 15),
    ("m5.2xlarge", 4, 15),
    ("m5.4xlarge", 8, 30),
    ("m5.8xlarge", 8, 30),
    ("m5.12xlarge", 8, 30),
    ("m5.16xlarge", 15, 50),
    ("m5.24xlarge", 15, 50),
    ("m5.metal", 15, 50),
    // m5a
    ("m5a.large", 3, 10),
    ("m5a.xlarge", 4, 15),
    ("m5a.2xlarge", 4, 15),
    ("m5a.4xlarge", 8, 30),
    ("m5a.8xlarge", 8, 30),
    ("m5a.12xlarge", 8, 30),
    ("m5a.16xlarge", 15, 50),
    ("m5a.24xlarge", 15, 50),
    // c5
    ("c5.large", 3, 10),
    ("c5.xlarge", 4, 15),
    ("c5.2xlarge", 4, 15),
    ("c5.4xlarge", 8, 30),
    ("c5.9xlarge", 8, 30),
    ("c5.12xlarge", 8, 30),
    ("c5.18xlarge", 15, 50),
    ("c5.24xlarge", 15, 50),
    ("c5.metal", 15, 50),
    // c5a
    ("c5a.large", 3, 10),
    ("c5a.xlarge", 4, 15),
    ("c5a.2xlarge", 4, 15),
    ("c5a.4xlarge", 8, 30),
    ("c5a.8xlarge", 8, 30),
    ("c5a.12xlarge", 8, 30),
    ("c5a.16xlarge", 15, 50),
    ("c5a.24xlarge", 15, 50),
    // r5
    ("r5.large", 3, 10),
    ("r5.xlarge", 4, 15),
    ("r5.2xlarge", 4, 15),
    ("r5.4xlarge", 8, 30),
    ("r5.8xlarge", 8, 30),
    ("r5.12xlarge", 8, 30),
    ("r5.16xlarge", 15, 50),
    ("r5.24xlarge", 15, 50),
    ("r5.metal", 15, 50),
    // r5a
    ("r5a.large", 3, 10),
    ("r5a.xlarge", 4, 15),
    ("r5a.2xlarge", 4, 15),
    ("r5a.4xlarge", 8, 30),
    ("r5a.8xlarge", 8, 30),
    ("r5a.12xlarge", 8, 30),
    ("r5a.16xlarge", 15, 50),
    ("r5a.24xlarge", 15, 50),
    // m6i
    ("m6i.large", 3, 10),
    ("m6i.xlarge", 4, 15),
    ("m6i.2xlarge", 4, 15),
    ("m6i.4xlarge", 8, 30),
    ("m6i.8xlarge", 8, 30),
    ("m6i.12xlarge", 8, 30),
    ("m6i.16xlarge", 15, 50),
    ("m6i.24xlarge", 15, 50),
    ("m6i.32xlarge", 15, 50),
    ("m6i.metal", 15, 50),
    // m6a
    ("m6a.large", 3, 10),
    ("m6a.xlarge", 4, 15),
    ("m6a.2xlarge", 4, 15),
    ("m6a.4xlarge", 8, 30),
    ("m6a.8xlarge", 8, 30),
    ("m6a.12xlarge", 8, 30),
    ("m6a.16xlarge", 15, 50),
    ("m6a.24xlarge", 15, 50),
    ("m6a.32xlarge", 15, 50),
    ("m6a.48xlarge", 15, 50),
    ("m6a.metal", 15, 50),
    // m6g
    ("m6g.medium", 2, 4),
    ("m6g.large", 3, 10),
    ("m6g.xlarge", 4, 15),
    ("m6g.2xlarge", 4, 15),
    ("m6g.4xlarge", 8, 30),
    ("m6g.8xlarge", 8, 30),
    ("m6g.12xlarge", 8, 30),
    ("m6g.16xlarge", 15, 50),
    ("m6g.metal", 15, 50),
    // c6i
    ("c6i.large", 3, 10),
    ("c6i.xlarge", 4, 15),
    ("c6i.2xlarge", 4, 15),
    ("c6i.4xlarge", 8, 30),
    ("c6i.8xlarge", 8, 30),
    ("c6i.12xlarge", 8, 30),
    ("c6i.16xlarge", 15, 50),
    ("c6i.24xlarge", 15, 50),
    ("c6i.32xlarge", 15, 50),
    ("c6i.metal", 15, 50),
    // c6a
    ("c6a.large", 3, 10),
    ("c6a.xlarge", 4, 15),
    ("c6a.2xlarge", 4, 15),
    ("c6a.4xlarge", 8, 30),
    ("c6a.8xlarge", 8, 30),
    ("c6a.12xlarge", 8, 30),
    ("c6a.16xlarge", 15, 50),
    ("c6a.24xlarge", 15, 50),
    ("c6a.32xlarge", 15, 50),
    ("c6a.48xlarge", 15, 50),
    ("c6a.metal", 15, 50),
    // c6g
    ("c6g.medium", 2, 4),
    ("c6g.large", 3, 10),
    ("c6g.xlarge", 4, 15),
    ("c6g.2xlarge", 4, 15),
    ("c6g.4xlarge", 8, 30),
    ("c6g.8xlarge", 8, 30),
    ("c6g.12xlarge", 8, 30),
    ("c6g.16xlarge", 15, 50),
    ("c6g.metal", 15, 50),
    // r6i
    ("r6i.large", 3, 10),
    ("r6i.xlarge", 4, 15),
    ("r6i.2xlarge", 4, 15),
    ("r6i.4xlarge", 8, 30),
    ("r6i.8xlarge", 8, 30),
    ("r6i.12xlarge", 8, 30),
    ("r6i.16xlarge", 15, 50),
    ("r6i.24xlarge", 15, 50),
    ("r6i.32xlarge", 15, 50),
    ("r6i.metal", 15, 50),
    // r6a
    ("r6a.large", 3, 10),
    ("r6a.xlarge", 4, 15),
    ("r6a.2xlarge", 4, 15),
    ("r6a.4xlarge", 8, 30),
    ("r6a.8xlarge", 8, 30),
    ("r6a.12xlarge", 8, 30),
    ("r6a.16xlarge", 15, 50),
    ("r6a.24xlarge", 15, 50),
    ("r6a.32xlarge", 15, 50),
    ("r6a.48xlarge", 15, 50),
    ("r6a.metal", 15, 50),
    // r6g
    ("r6g.medium", 2, 4),
    ("r6g.large", 3, 10),
    ("r6g.xlarge", 4, 15),
    ("r6g.2xlarge", 4, 15),
    ("r6g.4xlarge", 8, 30),
    ("r6g.8xlarge", 8, 30),
    ("r6g.12xlarge", 8, 30),
    ("r6g.16xlarge", 15, 50),
    ("r6g.metal", 15, 50),
    // m7i
    ("m7i.large", 3, 10),
    ("m7i.xlarge", 4, 15),
    ("m7i.2xlarge", 4, 15),
    ("m7i.4xlarge", 8, 30),
    ("m7i.8xlarge", 8, 30),
    ("m7i.12xlarge", 8, 30),
    ("m7i.16xlarge", 15, 50),
    ("m7i.24xlarge", 15, 50),
    ("m7i.48xlarge", 15, 50),
    // m7g
    ("m7g.medium", 2, 4),
    ("m7g.large", 3, 10),
    ("m7g.xlarge", 4, 15),
    ("m7g.2xlarge", 4, 15),
    ("m7g.4xlarge", 8, 30),
    ("m7g.8xlarge", 8, 30),
    ("m7g.12xlarge", 8, 30),
    ("m7g.16xlarge", 15, 50),
    ("m7g.metal", 15, 50),
    // c7i
    ("c7i.large", 3, 10),
    ("c7i.xlarge", 4, 15),
    ("c7i.2xlarge", 4, 15),
    ("c7i.4xlarge", 8, 30),
    ("c7i.8xlarge", 8, 30),
    ("c7i.12xlarge", 8, 30),
    ("c7i.16xlarge", 15, 50),
    ("c7i.24xlarge", 15, 50),
    ("c7i.48xlarge", 15, 50),
    // c7g
    ("c7g.medium", 2, 4),
    ("c7g.large", 3, 10),
    ("c7g.xlarge", 4, 15),
    ("c7g.2xlarge", 4, 15),
    ("c7g.4xlarge", 8, 30),
    ("c7g.8xlarge", 8, 30),
    ("c7g.12xlarge", 8, 30),
    ("c7g.16xlarge", 15, 50),
    ("c7g.metal", 15, 50),
    // r7i
    ("r7i.large", 3, 10),
    ("r7i.xlarge", 4, 15),
    ("r7i.2xlarge", 4, 15),
    ("r7i.4xlarge", 8, 30),
    ("r7i.8xlarge", 8, 30),
    ("r7i.12xlarge", 8, 30),
    ("r7i.16xlarge", 15, 50),
    ("r7i.24xlarge", 15, 50),
    ("r7i.48xlarge", 15, 50),
    // r7g
    ("r7g.medium", 2, 4),
    ("r7g.large", 3, 10),
    ("r7g.xlarge", 4, 15),
    ("r7g.2xlarge", 4, 15),
    ("r7g.4xlarge", 8, 30),
    ("r7g.8xlarge", 8, 30),
    ("r7g.12xlarge", 8, 30),
    ("r7g.16xlarge", 15, 50),
    ("r7g.metal", 15, 50),
];

/// Limits from the built-in table.
pub fn static_limits(instance_type: &str) -> Option<InstanceLimits> {
    STATIC_LIMITS
        .iter()
        .find(|(t, _, _)| *t == instance_type)
        .map(|&(_, max_enis, ips_per_eni)| InstanceLimits { max_enis, ips_per_eni })
}

/// Limits of one type and where they came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeLimits {
    pub limits: InstanceLimits,
    /// DescribeInstanceTypes or the static table.
    pub source: CapacitySource,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// What EC2 said last (kept while stale if EC2 later fails).
    ec2: Option<InstanceLimits>,
    /// When to ask EC2 again.
    refresh_at: Instant,
}

/// Cache of instance-type limits in front of [`Ec2Api::describe_instance_types`].
pub struct InstanceTypeCache {
    api: Arc<dyn Ec2Api>,
    ttl: Duration,
    retry_after: Duration,
    entries: Mutex<HashMap<String, Entry>>,
    /// One DescribeInstanceTypes at a time: concurrent first asks for the same type wait for the
    /// first answer instead of each calling EC2.
    fetch: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for InstanceTypeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceTypeCache")
            .field("ttl", &self.ttl)
            .field("retry_after", &self.retry_after)
            .finish_non_exhaustive()
    }
}

impl InstanceTypeCache {
    /// Default refresh of known answers (limits of a type practically never change).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
    /// Default wait before asking EC2 again after a failure or an unknown type.
    pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(600);

    /// A cache over `api` with default refresh periods.
    pub fn new(api: Arc<dyn Ec2Api>) -> Self {
        Self::with_periods(api, Self::DEFAULT_TTL, Self::DEFAULT_RETRY_AFTER)
    }

    /// A cache with explicit refresh periods.
    pub fn with_periods(api: Arc<dyn Ec2Api>, ttl: Duration, retry_after: Duration) -> Self {
        Self {
            api,
            ttl,
            retry_after,
            entries: Mutex::new(HashMap::new()),
            fetch: tokio::sync::Mutex::new(()),
        }
    }

    /// What is known now without calling EC2: the cached EC2 answer (even if due for refresh),
    /// else the static table.
    pub fn cached(&self, instance_type: &str) -> Option<TypeLimits> {
        let ec2 =
            self.entries.lock().expect("type cache lock").get(instance_type).and_then(|e| e.ec2);
        resolve(instance_type, ec2)
    }

    /// Limits of `instance_type`: from the cache, else DescribeInstanceTypes (once), else the
    /// static table. `None` when neither EC2 nor the table knows the type.
    pub async fn limits(&self, instance_type: &str) -> Option<TypeLimits> {
        if let Some(e) = self.fresh(instance_type) {
            return resolve(instance_type, e.ec2);
        }
        self.refresh(&[instance_type.to_owned()]).await;
        self.cached(instance_type)
    }

    /// Asks EC2 in one call about every type in `types` that is not cached or is due for refresh
    /// (e.g. all types of the cluster's nodes at start-up).
    pub async fn prefetch(&self, types: &[String]) {
        self.refresh(types).await;
    }

    fn fresh(&self, instance_type: &str) -> Option<Entry> {
        let now = Instant::now();
        self.entries
            .lock()
            .expect("type cache lock")
            .get(instance_type)
            .copied()
            .filter(|e| now < e.refresh_at)
    }

    async fn refresh(&self, types: &[String]) {
        let _one_at_a_time = self.fetch.lock().await;
        // Re-check under the fetch lock: another task may have just answered.
        let mut due: Vec<String> =
            types.iter().filter(|t| !t.is_empty() && self.fresh(t).is_none()).cloned().collect();
        due.sort();
        due.dedup();
        if due.is_empty() {
            return;
        }
        let answer = self.api.describe_instance_types(&due).await;
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("type cache lock");
        match answer {
            Ok(found) => {
                for t in due {
                    let entry = match found.get(&t) {
                        Some(info) => Entry {
                            ec2: Some(InstanceLimits {
                                max_enis: info.max_enis,
                                ips_per_eni: info.ipv4_per_eni,
                            }),
                            refresh_at: now + self.ttl,
                        },
                        None => {
                            tracing::warn!(instance_type = %t, "DescribeInstanceTypes does not know this type; using the static table");
                            Entry { ec2: None, refresh_at: now + self.retry_after }
                        }
                    };
                    entries.insert(t, entry);
                }
            }
            Err(e) => {
                let level_is_error = e.kind == Ec2ErrorKind::Unauthorized;
                if level_is_error {
                    tracing::error!(
                        error = &e as &dyn std::error::Error,
                        "DescribeInstanceTypes not permitted; using the static table"
                    );
                } else {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "DescribeInstanceTypes failed; using cached or static limits"
                    );
                }
                for t in due {
                    let ec2 = entries.get(&t).and_then(|e| e.ec2);
                    entries.insert(t, Entry { ec2, refresh_at: now + self.retry_after });
                }
            }
        }
    }
}

fn resolve(instance_type: &str, ec2: Option<InstanceLimits>) -> Option<TypeLimits> {
    match ec2 {
        Some(limits) => Some(TypeLimits { limits, source: CapacitySource::EC2API }),
        None => static_limits(instance_type)
            .map(|limits| TypeLimits { limits, source: CapacitySource::Static }),
    }
}

#[cfg(test)]
mod tests;
