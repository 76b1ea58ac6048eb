//! Changes this operator made that EC2's describes do not show yet. EC2's Describe* calls are
//! eventually consistent: for a while after a CreateNetworkInterface or an
//! AssignPrivateIpAddresses answered, a describe can still show the instance without the new ENI
//! or the ENI without the new addresses. Planning from such an answer would create the ENI again
//! (at the same, taken, device index) or assign the addresses twice, so until a describe shows a
//! change (or [`KEEP`] passed) the planner's view counts it as done. Only the planner's view is
//! changed: what the pool publishes to the agent stays what EC2 shows.

use crate::ec2::Eni;
use crate::plan::EniView;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long a change is counted without a describe showing it: far longer than EC2's usual
/// describe delay, short enough that a change undone behind the operator's back (its ENI deleted
/// by someone else) leaves the pool short only briefly. Then the describes are believed again.
pub const KEEP: Duration = Duration::from_secs(30);

/// How soon a pool with a change not described yet is looked at again: about EC2's usual
/// describe delay. What the pool publishes waits for the describe, so the agent's first addresses
/// on a new node, or on a new ENI, arrive this much after EC2 shows them at most.
pub const LOOK_AGAIN: Duration = Duration::from_secs(2);

/// One change not yet confirmed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An ENI created (with its addresses) and attached to the pool's instance.
    Created(EniView),
    /// Secondary addresses assigned to an ENI.
    AssignedIps {
        eni_id: String,
        /// The addresses EC2 assigned.
        ips: Vec<Ipv4Addr>,
    },
    /// Prefixes assigned to an ENI.
    AssignedPrefixes {
        eni_id: String,
        /// The prefixes EC2 assigned.
        prefixes: Vec<Ipv4Net>,
    },
}

/// A change and when it stops being counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub change: Change,
    pub until: Instant,
}

/// Adds the changes `described` (the instance's ENIs as a describe answered) does not show yet to
/// `views`, and returns the changes still unconfirmed. Pure.
pub fn overlay(
    pending: Vec<Pending>,
    described: &[Eni],
    views: &mut Vec<EniView>,
    now: Instant,
) -> Vec<Pending> {
    let mut kept = Vec::new();
    // Creations first, so addresses assigned to an ENI not described yet find its view.
    let (created, assigned): (Vec<_>, Vec<_>) =
        pending.into_iter().partition(|p| matches!(p.change, Change::Created(_)));
    for p in created.into_iter().chain(assigned) {
        if p.until <= now {
            continue;
        }
        let eni_of = |id: &str| described.iter().find(|e| e.id == id);
        let missing = match &p.change {
            Change::Created(v) => {
                if eni_of(&v.id).is_some() {
                    continue;
                }
                views.retain(|x| x.id != v.id);
                views.push(v.clone());
                views.sort_by_key(|x| x.device_index);
                kept.push(p);
                continue;
            }
            Change::AssignedIps { eni_id, ips } => {
                let shown = eni_of(eni_id).map(|e| e.secondary_ips.as_slice()).unwrap_or_default();
                (eni_id, ips.iter().filter(|a| !shown.contains(a)).count() as i32, 0)
            }
            Change::AssignedPrefixes { eni_id, prefixes } => {
                let shown = eni_of(eni_id).map(|e| e.prefixes.as_slice()).unwrap_or_default();
                (eni_id, 0, prefixes.iter().filter(|a| !shown.contains(a)).count() as i32)
            }
        };
        let (eni_id, ips, prefixes) = missing;
        if ips + prefixes == 0 {
            continue;
        }
        if let Some(v) = views.iter_mut().find(|v| &v.id == eni_id) {
            v.ips += ips;
            v.prefixes += prefixes;
        }
        kept.push(p);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, index: i32, ips: i32) -> EniView {
        EniView {
            id: id.into(),
            device_index: index,
            subnet_id: "subnet-1".into(),
            ips,
            prefixes: 0,
            excluded: false,
            managed: index > 0,
            attached: true,
        }
    }

    fn eni(id: &str, ips: &[&str]) -> Eni {
        Eni {
            id: id.into(),
            secondary_ips: ips.iter().map(|a| a.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    fn pending(change: Change, now: Instant) -> Pending {
        Pending { change, until: now + KEEP }
    }

    fn assigned(eni_id: &str, ips: &[&str]) -> Change {
        Change::AssignedIps {
            eni_id: eni_id.into(),
            ips: ips.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn an_eni_not_described_yet_is_planned_until_described() {
        let now = Instant::now();
        let created = pending(Change::Created(view("eni-2", 1, 9)), now);
        let mut views = vec![view("eni-1", 0, 9)];
        let kept = overlay(vec![created.clone()], &[eni("eni-1", &[])], &mut views, now);
        assert_eq!(views, vec![view("eni-1", 0, 9), view("eni-2", 1, 9)]);
        assert_eq!(kept, vec![created.clone()]);

        let mut views = vec![view("eni-1", 0, 9), view("eni-2", 1, 9)];
        let kept = overlay(vec![created], &[eni("eni-1", &[]), eni("eni-2", &[])], &mut views, now);
        assert!(kept.is_empty(), "described: confirmed");
        assert_eq!(views.len(), 2, "not counted twice");
    }

    #[test]
    fn assigned_addresses_count_until_every_one_is_described() {
        let now = Instant::now();
        let p = pending(assigned("eni-1", &["10.0.0.5", "10.0.0.6"]), now);
        let mut views = vec![view("eni-1", 0, 1)];
        let kept = overlay(vec![p.clone()], &[eni("eni-1", &["10.0.0.5"])], &mut views, now);
        assert_eq!(views[0].ips, 2, "the one not shown yet is added");
        assert_eq!(kept, vec![p.clone()]);

        let mut views = vec![view("eni-1", 0, 2)];
        let shown = [eni("eni-1", &["10.0.0.5", "10.0.0.6"])];
        assert!(overlay(vec![p], &shown, &mut views, now).is_empty());
        assert_eq!(views[0].ips, 2);
    }

    #[test]
    fn assigns_to_an_eni_not_described_yet_add_to_its_creation() {
        let now = Instant::now();
        let changes = vec![
            pending(assigned("eni-2", &["10.0.0.7"]), now),
            pending(Change::Created(view("eni-2", 1, 9)), now),
        ];
        let mut views = vec![view("eni-1", 0, 9)];
        let kept = overlay(changes, &[eni("eni-1", &[])], &mut views, now);
        assert_eq!(views[1], view("eni-2", 1, 10));
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn expired_changes_are_dropped() {
        let now = Instant::now();
        let old = Pending { change: Change::Created(view("eni-2", 1, 9)), until: now };
        let mut views = vec![view("eni-1", 0, 9)];
        assert!(overlay(vec![old], &[eni("eni-1", &[])], &mut views, now).is_empty());
        assert_eq!(views.len(), 1);
    }
}
