//! Scale down through the agent's offer (invariant: release only what the agent offered,
//! docs/design.md): the operator decides how many, the agent decides which. This module is the
//! state machine of that handshake as a pure function of the pool status.

use enipool_crds::settings::{EffectiveSettings, PREFIX_SIZE};
use enipool_crds::{
    AgentStatus, ENIPoolStatus, EniStatus, Operation, OperationKind, ReleaseRequest, Releasing,
};
use std::collections::{BTreeMap, BTreeSet};

/// Inputs of [`decide_release`].
#[derive(Debug, Clone)]
pub struct ReleaseInput<'a> {
    /// Effective settings.
    pub eff: &'a EffectiveSettings,
    /// Current target.
    pub target: i32,
    /// Pod addresses held now.
    pub allocated: i32,
    /// Seconds the current excess has persisted (0 when it just appeared).
    pub excess_held_secs: i64,
    /// The last release request.
    pub request: Option<&'a ReleaseRequest>,
    /// Last fully released offer revision.
    pub released_revision: i64,
    /// Releases in flight.
    pub releasing: Option<&'a Releasing>,
    /// The agent's report.
    pub agent: Option<&'a AgentStatus>,
    /// The node's ENIs as EC2 reports them.
    pub enis: &'a [EniStatus],
}

/// Items of one ENI to unassign in one call per kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EniRelease {
    /// ENI.
    pub eni_id: String,
    /// Secondary addresses.
    pub ips: Vec<String>,
    /// Prefixes.
    pub prefixes: Vec<String>,
}

/// The next step of the release handshake.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseDecision {
    /// Nothing to release (no excess above the hysteresis band, or release disabled).
    Idle,
    /// Excess exists but has not held for the delay yet.
    Wait {
        /// Addresses that would be requested.
        excess: i32,
        /// Seconds left.
        remaining_secs: i64,
    },
    /// Write this `releaseRequest` and wait for the agent's offer.
    Request(ReleaseRequest),
    /// A request is outstanding and the agent has not answered it yet.
    AwaitOffer,
    /// The agent answered: publish this `releasing` (status write) before any EC2 call.
    Commit(Releasing),
    /// `releasing` is published: unassign what EC2 still holds, one call per ENI and kind.
    Unassign(Vec<EniRelease>),
    /// Everything in the offer is gone from EC2: set `releasedRevision`, clear `releasing`.
    Finish {
        /// The offer revision completed.
        revision: i64,
    },
}

/// Index of where each item lives now: address or prefix → ENI id.
fn locate(enis: &[EniStatus]) -> BTreeMap<&str, &str> {
    let mut m = BTreeMap::new();
    for e in enis {
        for i in e.ips.iter().chain(e.prefixes.iter()) {
            m.insert(i.as_str(), e.id.as_str());
        }
    }
    m
}

/// Group the items still held in EC2 by ENI (items already gone are done).
pub fn group_present(enis: &[EniStatus], ips: &[String], prefixes: &[String]) -> Vec<EniRelease> {
    let at = locate(enis);
    let mut by: BTreeMap<&str, EniRelease> = BTreeMap::new();
    for (item, is_prefix) in
        ips.iter().map(|i| (i, false)).chain(prefixes.iter().map(|p| (p, true)))
    {
        if let Some(eni) = at.get(item.as_str()) {
            let r = by
                .entry(eni)
                .or_insert_with(|| EniRelease { eni_id: eni.to_string(), ..Default::default() });
            if is_prefix {
                r.prefixes.push(item.clone());
            } else {
                r.ips.push(item.clone());
            }
        }
    }
    by.into_values().collect()
}

/// Addresses to request: the whole excess down to the target, once it exceeds the hysteresis band;
/// whole prefixes in prefix modes.
pub fn excess(eff: &EffectiveSettings, allocated: i32, target: i32) -> i32 {
    let over = allocated - target;
    if !eff.release_enabled || over <= eff.hysteresis_ips.max(0) {
        return 0;
    }
    if eff.mode.uses_prefixes() {
        over / PREFIX_SIZE * PREFIX_SIZE
    } else {
        over
    }
}

/// Decide the next release step (pure).
pub fn decide_release(input: &ReleaseInput<'_>) -> ReleaseDecision {
    // 1. Finish what is published as releasing, whatever the agent's epoch is now: those items
    //    were offered by the epoch recorded in `releasing` and are excluded by every epoch since.
    if let Some(r) = input.releasing {
        let groups = group_present(input.enis, &r.ips, &r.prefixes);
        return if groups.is_empty() {
            ReleaseDecision::Finish { revision: r.revision }
        } else {
            ReleaseDecision::Unassign(groups)
        };
    }
    // 2. An outstanding request: wait for the offer answering exactly this revision.
    if let Some(req) = input.request.filter(|r| r.revision > input.released_revision) {
        let offer = input.agent.and_then(|a| a.releasable.as_ref().map(|o| (a.epoch, o)));
        return match offer {
            Some((epoch, o)) if o.revision == req.revision => {
                // Only items EC2 still shows on this node's ENIs; never a primary address.
                let present = group_present(input.enis, &o.ips, &o.prefixes);
                if present.is_empty() {
                    ReleaseDecision::Finish { revision: req.revision }
                } else {
                    ReleaseDecision::Commit(Releasing {
                        revision: req.revision,
                        epoch,
                        ips: present.iter().flat_map(|g| g.ips.clone()).collect(),
                        prefixes: present.iter().flat_map(|g| g.prefixes.clone()).collect(),
                    })
                }
            }
            _ => ReleaseDecision::AwaitOffer,
        };
    }
    // 3. No handshake in progress: request once the excess has held for the delay.
    let count = excess(input.eff, input.allocated, input.target);
    if count <= 0 {
        return ReleaseDecision::Idle;
    }
    let delay = i64::from(input.eff.release_delay_seconds.max(0));
    if input.excess_held_secs < delay {
        return ReleaseDecision::Wait {
            excess: count,
            remaining_secs: delay - input.excess_held_secs,
        };
    }
    let mut prefer: Vec<&EniStatus> = input
        .enis
        .iter()
        .filter(|e| e.device_index >= input.eff.first_interface_index)
        .filter(|e| !e.ips.is_empty() || !e.prefixes.is_empty())
        .collect();
    prefer.sort_by_key(|e| std::cmp::Reverse(e.device_index));
    let last = input.request.map(|r| r.revision).unwrap_or(0).max(input.released_revision);
    ReleaseDecision::Request(ReleaseRequest {
        revision: last + 1,
        count,
        prefer_enis: prefer.into_iter().map(|e| e.id.clone()).collect(),
    })
}

/// Secondary ENIs enipool created that hold no address: detach and delete them when the policy
/// allows, no growth is planned, and no release is in flight. Never the primary ENI.
pub fn empty_enis(
    enis: &[EniStatus],
    eff: &EffectiveSettings,
    growing: bool,
    releasing: bool,
) -> Vec<String> {
    if !eff.release_empty_enis || growing || releasing {
        return vec![];
    }
    enis.iter()
        .filter(|e| e.device_index > 0 && e.managed && e.ips.is_empty() && e.prefixes.is_empty())
        .filter(|e| e.state == enipool_crds::EniState::Attached)
        .map(|e| e.id.clone())
        .collect()
}

/// ENIs with a journaled detach or delete. Such an ENI can still be attached and empty for a
/// while (the call failed, or EC2 answers later), and the entry's replay detaches it: growth must
/// not put addresses there, or the agent hands out addresses that are about to vanish.
pub fn pending_releases(ops: &[Operation]) -> BTreeSet<String> {
    ops.iter()
        .filter(|o| matches!(o.kind, OperationKind::DetachENI | OperationKind::DeleteENI))
        .filter(|o| !o.eni_id.is_empty())
        .map(|o| o.eni_id.clone())
        .collect()
}

/// Items the agent has given up for the outstanding release request: its offer answering that
/// revision and the `releasing` published for it. The agent never hands these out, so an ENI
/// holding nothing else is as good as empty. Anything not tied to the outstanding request counts
/// as in use.
pub fn offered_items(st: &ENIPoolStatus) -> BTreeSet<String> {
    let Some(req) = st.release_request.as_ref().filter(|r| r.revision > st.released_revision)
    else {
        return BTreeSet::new();
    };
    let releasing = st
        .releasing
        .as_ref()
        .filter(|r| r.revision == req.revision)
        .map(|r| r.ips.iter().chain(&r.prefixes));
    let offer = st
        .agent
        .as_ref()
        .and_then(|a| a.releasable.as_ref())
        .filter(|o| o.revision == req.revision)
        .map(|o| o.ips.iter().chain(&o.prefixes));
    releasing.into_iter().flatten().chain(offer.into_iter().flatten()).cloned().collect()
}
