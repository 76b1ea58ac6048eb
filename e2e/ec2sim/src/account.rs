//! What EC2 keeps per account and region rather than per resource: the quota of network interfaces
//! a region may hold, and how long a ClientToken is remembered. Both are far away in a short test
//! and both are met by a long-lived cluster, so a test can bring them close.

use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Account {
    /// Network interfaces the region may hold (every existing ENI counts, attached or not);
    /// CreateNetworkInterface beyond it answers `NetworkInterfaceLimitExceeded`.
    pub eni_quota: usize,
    /// How long a ClientToken answers a retry with the resource it made; after that a call with
    /// the same token is a new request.
    pub client_token_ttl: Duration,
}

impl Default for Account {
    /// AWS's default "network interfaces per Region" quota, and the day EC2 documents as the
    /// least it remembers a token.
    fn default() -> Self {
        Account { eni_quota: 5000, client_token_ttl: Duration::from_secs(24 * 3600) }
    }
}

impl Account {
    /// A token remembered at `at` still answers at `now`.
    pub fn token_alive(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) < self.client_token_ttl
    }
}
