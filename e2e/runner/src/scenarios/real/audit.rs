//! The invariants `pools-match-ec2` checks, as a pure function of one snapshot ([`Observed`],
//! read by `observe.rs`): what every ENIPool records exists in EC2 where it says, no address is
//! held twice, no ENI of the cluster is leaked, and every pod's IP is unique and comes from its
//! node's pool. No I/O here, so the rules are table-tested without a cluster.

use enipool_crds::{tags, ENIPool, EniState};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Pod;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

/// An ENI as EC2 describes it (only what the audit reads).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ec2Eni {
    /// `eni-…`.
    pub id: String,
    /// `available`, `in-use`, `attaching`, ...
    pub status: String,
    /// Where it is attached, if it is.
    pub attachment: Option<Ec2Attachment>,
    /// Its primary private address.
    pub primary_ip: Option<Ipv4Addr>,
    /// Every private IPv4 address assigned to it, primary included.
    pub ips: BTreeSet<Ipv4Addr>,
    /// Its IPv4 prefixes.
    pub prefixes: BTreeSet<Ipv4Net>,
    pub tags: BTreeMap<String, String>,
}

/// An ENI's attachment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ec2Attachment {
    /// Instance it is attached to.
    pub instance_id: String,
    /// Device index, when EC2 reports one.
    pub device_index: Option<i32>,
}

/// A pod that must hold one of its node's pool addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct PodIp {
    /// `namespace/name`.
    pub pod: String,
    /// Node it runs on (and name of that node's ENIPool).
    pub node: String,
    /// `status.podIP`.
    pub ip: Ipv4Addr,
}

/// One snapshot of the cluster and EC2.
#[derive(Debug, Clone)]
pub struct Observed {
    pub pools: Vec<ENIPool>,
    /// ENIs from EC2: those the pools record plus those carrying the cluster tag, by id.
    pub enis: BTreeMap<String, Ec2Eni>,
    /// Pods that must hold pool addresses (see [`pod_ip`]).
    pub pods: Vec<PodIp>,
    /// When EC2 was read (for the leak allowance).
    pub now: jiff::Timestamp,
}

/// What the audit needs to know about the cluster.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The operator's `--cluster-name` (value of the [`tags::CLUSTER`] tag).
    pub cluster: String,
    /// How old an unattached cluster ENI may be before it counts as leaked: the operator's leak
    /// grace plus one GC interval, because GC only looks that often.
    pub leak_allowance: Duration,
}

/// A broken invariant. Fields are stable across snapshots, so findings of successive snapshots
/// can be intersected (a transient state shows up once, a real fault every time).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finding {
    /// A pool records an ENI that EC2 does not have.
    EniMissing { pool: String, eni: String },
    /// A pool records an attached ENI that EC2 shows elsewhere (or nowhere).
    EniNotOnInstance { pool: String, eni: String, instance: String, found: String },
    /// EC2 has the ENI on the instance at another device index than recorded.
    WrongDeviceIndex { pool: String, eni: String, recorded: i32, found: i32 },
    /// A pool records an address or prefix EC2 has not assigned to that ENI.
    NotAssigned { pool: String, eni: String, address: String },
    /// A pool records something that is not an address or prefix.
    Unparseable { pool: String, eni: String, value: String },
    /// One ENI recorded by two pools.
    EniInTwoPools { eni: String, pools: (String, String) },
    /// The same address held twice (two pools, two ENIs, or twice in one list).
    DoubleAssigned { address: String, first: String, second: String },
    /// An ENI with the cluster tag that no pool records or journals, and that is not a young
    /// `available` ENI.
    Leaked { eni: String, status: String, created_at: String },
    /// Two pods with one IP.
    PodIpDuplicate { ip: Ipv4Addr, pods: (String, String) },
    /// A pod whose IP is not in its node's pool.
    PodIpOutsidePool { pod: String, node: String, ip: Ipv4Addr },
    /// The agent reports addresses in use that the pool no longer lists (its own alarm).
    AgentOrphaned { pool: String, addresses: Vec<String> },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Finding::*;
        match self {
            EniMissing { pool, eni } => {
                write!(f, "ENIPool {pool} records {eni}, EC2 has no such ENI")
            }
            EniNotOnInstance { pool, eni, instance, found } => {
                write!(f, "ENIPool {pool} records {eni} attached to {instance}, EC2: {found}")
            }
            WrongDeviceIndex { pool, eni, recorded, found } => write!(
                f,
                "ENIPool {pool} records {eni} at device index {recorded}, EC2 has it at {found}"
            ),
            NotAssigned { pool, eni, address } => {
                write!(
                    f,
                    "ENIPool {pool} records {address} on {eni}, EC2 has not assigned it there"
                )
            }
            Unparseable { pool, eni, value } => {
                write!(f, "ENIPool {pool} records {value:?} on {eni}: not an address or prefix")
            }
            EniInTwoPools { eni, pools } => {
                write!(f, "{eni} is recorded by ENIPools {} and {}", pools.0, pools.1)
            }
            DoubleAssigned { address, first, second } => {
                write!(f, "{address} is held twice: by {first} and by {second}")
            }
            Leaked { eni, status, created_at } => write!(
                f,
                "leaked ENI {eni} ({status}, created-at {created_at}): cluster-tagged, recorded by \
                 no ENIPool"
            ),
            PodIpDuplicate { ip, pods } => {
                write!(f, "pods {} and {} both have IP {ip}", pods.0, pods.1)
            }
            PodIpOutsidePool { pod, node, ip } => {
                write!(f, "pod {pod} has IP {ip}, not an address of ENIPool {node}")
            }
            AgentOrphaned { pool, addresses } => write!(
                f,
                "the agent of {pool} serves addresses its ENIPool no longer lists: {addresses:?}"
            ),
        }
    }
}

/// The pod's IP if it must come from a pool: bound to a node in `pool_nodes`, not hostNetwork,
/// not finished (a finished pod's address may already be someone else's) and not terminating
/// (after CNI DEL its address is released while the object still shows it), with an IPv4 podIP.
pub fn pod_ip(pod: &Pod, pool_nodes: &BTreeSet<String>) -> Option<PodIp> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    let node = spec.node_name.as_ref().filter(|n| pool_nodes.contains(*n))?;
    if spec.host_network == Some(true) || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = status.pod_ip.as_deref()?.parse().ok()?;
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    Some(PodIp { pod: name, node: node.clone(), ip })
}

/// Every address and prefix a pool records, as networks (a secondary IP is a /32), with the ENI
/// holding it; unparseable entries become findings.
pub fn pool_addresses(pool: &ENIPool, out: &mut Vec<Finding>) -> Vec<(Ipv4Net, String)> {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let mut nets = Vec::new();
    for e in pool.status.iter().flat_map(|s| &s.enis) {
        for v in &e.ips {
            match v.parse::<Ipv4Addr>() {
                Ok(a) => nets.push((Ipv4Net::from(a), e.id.clone())),
                Err(_) => out.push(unparseable(&name, &e.id, v)),
            }
        }
        for v in &e.prefixes {
            match v.parse::<Ipv4Net>() {
                Ok(n) => nets.push((n.trunc(), e.id.clone())),
                Err(_) => out.push(unparseable(&name, &e.id, v)),
            }
        }
    }
    nets
}

fn unparseable(pool: &str, eni: &str, value: &str) -> Finding {
    Finding::Unparseable { pool: pool.into(), eni: eni.into(), value: value.into() }
}

/// Runs every check on one snapshot. Sorted, without duplicates.
pub fn audit(o: &Observed, r: &Rules) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut held: Vec<(Ipv4Net, String)> = Vec::new();
    let mut by_node: BTreeMap<String, Vec<Ipv4Net>> = BTreeMap::new();
    for p in &o.pools {
        check_pool(p, &o.enis, &mut out);
        let name = p.metadata.name.clone().unwrap_or_default();
        let nets = pool_addresses(p, &mut out);
        by_node.insert(name.clone(), nets.iter().map(|(n, _)| *n).collect());
        held.extend(nets.into_iter().map(|(n, eni)| (n, format!("{name}/{eni}"))));
    }
    double_assigned(held, &mut out);
    enis_in_two_pools(&o.pools, &mut out);
    leaks(o, r, &mut out);
    agent_alarms(&o.pools, &mut out);
    pods(&o.pods, &by_node, &mut out);
    out.sort();
    out.dedup();
    out
}

/// The pool's ENIs against EC2. ENIs still being created, detached or deleted are in flux and
/// only checked once EC2 must have them (attaching) or must show them in place (attached).
fn check_pool(p: &ENIPool, enis: &BTreeMap<String, Ec2Eni>, out: &mut Vec<Finding>) {
    let pool = p.metadata.name.clone().unwrap_or_default();
    let Some(st) = p.status.as_ref() else { return };
    // Published as releasing before the unassign call: EC2 may already have let them go.
    let releasing: BTreeSet<&str> = st
        .releasing
        .iter()
        .flat_map(|r| r.ips.iter().chain(&r.prefixes))
        .map(String::as_str)
        .collect();
    for e in &st.enis {
        if !matches!(e.state, EniState::Attached | EniState::Attaching) {
            continue;
        }
        let Some(x) = enis.get(&e.id) else {
            out.push(Finding::EniMissing { pool: pool.clone(), eni: e.id.clone() });
            continue;
        };
        if e.state == EniState::Attached {
            let instance = &p.spec.instance_id;
            match &x.attachment {
                Some(a) if &a.instance_id == instance => {
                    if let Some(found) = a.device_index.filter(|d| *d != e.device_index) {
                        out.push(Finding::WrongDeviceIndex {
                            pool: pool.clone(),
                            eni: e.id.clone(),
                            recorded: e.device_index,
                            found,
                        });
                    }
                }
                other => out.push(Finding::EniNotOnInstance {
                    pool: pool.clone(),
                    eni: e.id.clone(),
                    instance: instance.clone(),
                    found: match other {
                        Some(a) => format!("attached to {}", a.instance_id),
                        None => format!("not attached ({})", x.status),
                    },
                }),
            }
        }
        for v in e.ips.iter().filter(|v| !releasing.contains(v.as_str())) {
            if v.parse::<Ipv4Addr>().is_ok_and(|a| !x.ips.contains(&a) || x.primary_ip == Some(a)) {
                out.push(not_assigned(&pool, &e.id, v));
            }
        }
        for v in e.prefixes.iter().filter(|v| !releasing.contains(v.as_str())) {
            if v.parse::<Ipv4Net>().is_ok_and(|n| !x.prefixes.contains(&n.trunc())) {
                out.push(not_assigned(&pool, &e.id, v));
            }
        }
    }
}

fn not_assigned(pool: &str, eni: &str, address: &str) -> Finding {
    Finding::NotAssigned { pool: pool.into(), eni: eni.into(), address: address.into() }
}

/// Overlaps among everything held, by a sweep over the networks sorted by first address: each
/// one is compared with the widest reaching one before it.
fn double_assigned(mut held: Vec<(Ipv4Net, String)>, out: &mut Vec<Finding>) {
    held.sort_by_key(|(n, _)| (n.network(), std::cmp::Reverse(n.broadcast())));
    let mut widest: Option<&(Ipv4Net, String)> = None;
    for h in &held {
        match widest {
            Some(w) if h.0.network() <= w.0.broadcast() => {
                out.push(Finding::DoubleAssigned {
                    address: h.0.to_string(),
                    first: w.1.clone(),
                    second: h.1.clone(),
                });
                if h.0.broadcast() > w.0.broadcast() {
                    widest = Some(h);
                }
            }
            _ => widest = Some(h),
        }
    }
}

fn enis_in_two_pools(pools: &[ENIPool], out: &mut Vec<Finding>) {
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for p in pools {
        let name = p.metadata.name.as_deref().unwrap_or_default();
        let ids: BTreeSet<&str> =
            p.status.iter().flat_map(|s| &s.enis).map(|e| e.id.as_str()).collect();
        for id in ids {
            if let Some(first) = owner.insert(id, name) {
                out.push(Finding::EniInTwoPools {
                    eni: id.into(),
                    pools: (first.into(), name.into()),
                });
            }
        }
    }
}

/// Cluster-tagged ENIs nobody accounts for. Recorded ENIs and ENIs of in-flight journaled
/// operations are accounted for; an `available` ENI younger than the allowance may be one the
/// operator is about to record or GC is about to delete.
fn leaks(o: &Observed, r: &Rules, out: &mut Vec<Finding>) {
    let mut known: BTreeSet<&str> = BTreeSet::new();
    for s in o.pools.iter().filter_map(|p| p.status.as_ref()) {
        known.extend(s.enis.iter().map(|e| e.id.as_str()));
        for op in &s.operations {
            known.insert(op.id.as_str());
            known.insert(op.eni_id.as_str());
        }
    }
    for e in o.enis.values() {
        if e.tags.get(tags::CLUSTER) != Some(&r.cluster) {
            continue;
        }
        if known.contains(e.id.as_str())
            || e.tags.get(tags::OPERATION).is_some_and(|op| known.contains(op.as_str()))
        {
            continue;
        }
        let created = e.tags.get(tags::CREATED_AT);
        // A created-at in the future (clock skew) is young too.
        let allowance =
            jiff::SignedDuration::try_from(r.leak_allowance).unwrap_or(jiff::SignedDuration::MAX);
        let young = created
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| o.now.duration_since(t) < allowance);
        if e.status == "available" && young {
            continue;
        }
        out.push(Finding::Leaked {
            eni: e.id.clone(),
            status: e.status.clone(),
            created_at: created.cloned().unwrap_or_else(|| "missing".into()),
        });
    }
}

fn pods(pods: &[PodIp], by_node: &BTreeMap<String, Vec<Ipv4Net>>, out: &mut Vec<Finding>) {
    let mut seen: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for p in pods {
        if let Some(first) = seen.insert(p.ip, &p.pod) {
            out.push(Finding::PodIpDuplicate { ip: p.ip, pods: (first.into(), p.pod.clone()) });
        }
        let inside =
            by_node.get(&p.node).is_some_and(|nets| nets.iter().any(|n| n.contains(&p.ip)));
        if !inside {
            out.push(Finding::PodIpOutsidePool {
                pod: p.pod.clone(),
                node: p.node.clone(),
                ip: p.ip,
            });
        }
    }
}

/// The agents' own alarm: addresses in use that their pool no longer lists.
fn agent_alarms(pools: &[ENIPool], out: &mut Vec<Finding>) {
    for p in pools {
        let Some(a) = p.status.as_ref().and_then(|s| s.agent.as_ref()) else { continue };
        if !a.orphaned_in_use.is_empty() {
            out.push(Finding::AgentOrphaned {
                pool: p.metadata.name.clone().unwrap_or_default(),
                addresses: a.orphaned_in_use.clone(),
            });
        }
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
