//! Scale down through the agent's offer (invariant: release only what the agent offered,
//! docs/design.md): the operator decides how many, the agent decides which. This module is the
//! state machine of that handshake as a pure function of the pool status.

use enipool_crds::settings::{EffectiveSettings, PREFIX_SIZE};
use enipool_crds::{
    AgentStatus, ENIPoolStatus, EniStatus, Operation, OperationKind, ReleaseRequest, Releasing,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// Inputs of [`decide_release`].
#[derive(Debug, Clone)]
pub struct ReleaseInput<'a> {
    pub eff: &'a EffectiveSettings,
    pub target: i32,
    /// Pod addresses held now.
    pub allocated: i32,
    /// How long each part of the excess has lasted.
    pub excess_age: &'a ExcessTimer,
    /// The time of this round.
    pub now: Timestamp,
    /// The last release request.
    pub request: Option<&'a ReleaseRequest>,
    /// Last fully released offer revision.
    pub released_revision: i64,
    pub releasing: Option<&'a Releasing>,
    /// The agent's report.
    pub agent: Option<&'a AgentStatus>,
    /// The node's ENIs as EC2 reports them.
    pub enis: &'a [EniStatus],
}

/// Items of one ENI to unassign in one call per kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EniRelease {
    pub eni_id: String,
    pub ips: Vec<String>,
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
    let delay = SignedDuration::from_secs(i64::from(input.eff.release_delay_seconds.max(0)));
    let mut count = input.excess_age.lasted(input.now, delay).min(count);
    if input.eff.mode.uses_prefixes() {
        count = count / PREFIX_SIZE * PREFIX_SIZE;
    }
    if count <= 0 {
        let left = input.excess_age.next_due(input.now, delay).unwrap_or(delay);
        return ReleaseDecision::Wait {
            excess: excess(input.eff, input.allocated, input.target),
            remaining_secs: left.as_secs() + i64::from(left.subsec_nanos() > 0),
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

/// How long each part of a node's excess has lasted, as a staircase of (since, amount) steps with
/// both rising. Addresses freed after an excess began must wait their own delay (a rolling
/// restart reuses them), so one "excess since" time is not enough: the amount that may go is the
/// smallest excess seen over the last delay, which the steps give without keeping every sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExcessTimer {
    steps: Vec<(Timestamp, i32)>,
}

impl ExcessTimer {
    /// Record the excess seen at `now`. A drop caps the steps above it (those addresses were
    /// used or released; what is left has been excess since the earliest capped step); a rise
    /// adds a step starting now.
    pub fn observe(&mut self, now: Timestamp, excess: i32) {
        let mut earliest = None;
        while let Some(&(since, amount)) = self.steps.last() {
            if amount < excess {
                break;
            }
            earliest = Some(since);
            self.steps.pop();
        }
        if excess > 0 {
            self.steps.push((earliest.unwrap_or(now), excess));
        }
    }

    /// The excess that has lasted at least `delay` by `now`.
    pub fn lasted(&self, now: Timestamp, delay: SignedDuration) -> i32 {
        self.steps
            .iter()
            .take_while(|(since, _)| now.duration_since(*since) >= delay)
            .last()
            .map_or(0, |(_, amount)| *amount)
    }

    /// Time until the next part of the excess has lasted `delay`; `None` when nothing waits.
    pub fn next_due(&self, now: Timestamp, delay: SignedDuration) -> Option<SignedDuration> {
        self.steps
            .iter()
            .map(|(since, _)| delay - now.duration_since(*since))
            .find(|left| left.is_positive())
    }

    /// `count` addresses were requested: the oldest part of the excess is spoken for, and the
    /// rest keeps its age.
    pub fn consume(&mut self, count: i32) {
        self.steps.retain_mut(|(_, amount)| {
            *amount -= count;
            *amount > 0
        });
    }
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
