//! The VPC CIDR blocks published in `status.instance.vpcCIDRs`: the agent leaves traffic to them
//! unSNATed and sends replies from secondary-ENI pods to them by the pod's own ENI, so they must be
//! every block of the VPC, not only the blocks of the subnets a node happens to be in.
//!
//! A VPC gains or loses a block rarely, so each VPC is described once and then every
//! [`REFRESH`], by whichever pool reconcile first needs it, not once per pool per round. A failed
//! DescribeVpcs keeps the blocks known before; with none known, the pool keeps the list it already
//! shows, and a pool showing none is not synced at all (see [`publish`]).

use crate::ec2::{Ec2Api, Ec2Error, Ec2ErrorKind, Ec2Result, Vpc};
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How old known blocks may grow before they are described again.
pub const REFRESH: Duration = Duration::from_secs(300);
/// How soon a failed DescribeVpcs is tried again.
pub const RETRY: Duration = Duration::from_secs(30);

/// What is known about one VPC's blocks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// The blocks, from the last DescribeVpcs that answered.
    pub blocks: Option<Vec<String>>,
    pub fetched: Option<Instant>,
    /// When DescribeVpcs was last tried.
    pub tried: Option<Instant>,
    /// Why the last try failed, when it did.
    pub error: Option<Ec2Error>,
}

impl Entry {
    /// Take the answer of a DescribeVpcs tried at `now`; a failure keeps the blocks known before
    /// and is returned.
    pub fn record(&mut self, answer: Ec2Result<Vec<Ipv4Net>>, now: Instant) -> Option<Ec2Error> {
        self.tried = Some(now);
        match answer {
            Ok(blocks) => {
                self.blocks = Some(blocks.iter().map(|b| b.to_string()).collect());
                self.fetched = Some(now);
                self.error = None;
                None
            }
            Err(e) => {
                self.error = Some(e.clone());
                Some(e)
            }
        }
    }
}

/// Whether DescribeVpcs is due: never tried, a failure older than `retry`, or blocks older than
/// `refresh`.
pub fn due(e: &Entry, now: Instant, refresh: Duration, retry: Duration) -> bool {
    let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
    match (since(e.tried), e.error.is_some()) {
        (None, _) => true,
        (Some(tried), true) => tried >= retry,
        (Some(_), false) => since(e.fetched).is_none_or(|f| f >= refresh),
    }
}

/// The blocks of `vpc_id` in a DescribeVpcs answer; a VPC missing from it is an error (the
/// instance's own VPC cannot be gone while the instance runs, so the answer is not trusted).
pub fn blocks_of(answer: Vec<Vpc>, vpc_id: &str) -> Ec2Result<Vec<Ipv4Net>> {
    match answer.into_iter().find(|v| v.id == vpc_id) {
        Some(v) if !v.cidr_blocks.is_empty() => Ok(v.cidr_blocks),
        found => Err(Ec2Error {
            kind: Ec2ErrorKind::NotFound,
            action: "DescribeVpcs",
            code: "InvalidVpcID.NotFound".into(),
            message: match found {
                Some(_) => format!("VPC {vpc_id:?} has no IPv4 CIDR block"),
                None => format!("VPC {vpc_id:?} is not in the answer"),
            },
        }),
    }
}

/// The list a pool publishes: the VPC's blocks when known, else the list the pool already shows
/// (published by an earlier round or replica; replacing it with nothing would make the agent
/// SNAT all pod traffic), else nothing — the caller then leaves the pool unsynced rather than
/// publish a wrong list.
pub fn publish(known: Option<&[String]>, shown: &[String]) -> Option<Vec<String>> {
    match known {
        Some(k) => Some(k.to_vec()),
        None if !shown.is_empty() => Some(shown.to_vec()),
        None => None,
    }
}

/// A pool's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// The blocks (configured, or as last described), when known.
    pub blocks: Option<Vec<String>>,
    /// The failure of the DescribeVpcs this lookup made, or, with no blocks known, the last one.
    pub error: Option<Ec2Error>,
}

/// The VPC blocks of every VPC the cluster's nodes are in, described on demand and cached.
#[derive(Debug)]
pub struct VpcCidrs {
    configured: Vec<String>,
    refresh: Duration,
    retry: Duration,
    known: Mutex<HashMap<String, Entry>>,
    /// Held while describing, so concurrent reconciles make one call, not one each.
    fetching: tokio::sync::Mutex<()>,
}

impl VpcCidrs {
    /// `configured` (`--vpc-cidrs`) replaces DescribeVpcs when not empty.
    pub fn new(configured: Vec<String>) -> Self {
        Self::with_periods(configured, REFRESH, RETRY)
    }

    /// With other refresh and retry periods.
    pub fn with_periods(configured: Vec<String>, refresh: Duration, retry: Duration) -> Self {
        VpcCidrs {
            configured,
            refresh,
            retry,
            known: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn entry(&self, vpc_id: &str) -> Entry {
        self.known.lock().expect("vpc cache lock").get(vpc_id).cloned().unwrap_or_default()
    }

    fn answer(e: Entry) -> Lookup {
        let error = if e.blocks.is_none() { e.error } else { None };
        Lookup { blocks: e.blocks, error }
    }

    /// The blocks of `vpc_id`, describing the VPC when [`due`].
    pub async fn lookup(&self, ec2: &dyn Ec2Api, vpc_id: &str) -> Lookup {
        if !self.configured.is_empty() {
            return Lookup { blocks: Some(self.configured.clone()), error: None };
        }
        let entry = self.entry(vpc_id);
        if !due(&entry, Instant::now(), self.refresh, self.retry) {
            return Self::answer(entry);
        }
        let _fetching = match self.fetching.try_lock() {
            Ok(g) => g,
            // Another reconcile is describing: stale blocks serve until it is done.
            Err(_) if entry.blocks.is_some() => return Self::answer(entry),
            Err(_) => self.fetching.lock().await,
        };
        let now = Instant::now();
        let entry = self.entry(vpc_id);
        if !due(&entry, now, self.refresh, self.retry) {
            return Self::answer(entry);
        }
        let answer =
            ec2.describe_vpcs(&[vpc_id.to_string()]).await.and_then(|v| blocks_of(v, vpc_id));
        let mut known = self.known.lock().expect("vpc cache lock");
        let e = known.entry(vpc_id.to_string()).or_default();
        let error = e.record(answer, now);
        let mut out = Self::answer(e.clone());
        out.error = error.or(out.error);
        out
    }
}

#[cfg(test)]
mod tests;
