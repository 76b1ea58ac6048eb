//! Changes this operator made that EC2's describes do not show yet. EC2's Describe* calls are
//! eventually consistent: for a while after a CreateNetworkInterface or an
//! AssignPrivateIpAddresses answered, a describe can still show the instance without the new ENI
//! or the ENI without the new addresses. Planning from such an answer would create the ENI again
//! (at the same, taken, device index) or assign the addresses twice, so until a describe shows a
//! change (or [`KEEP`] passed) the planner's view counts it as done.
//!
//! Addresses EC2 named in its answer to an assign are published as well, on an ENI a describe
//! shows: EC2 assigned them, so the agent may use them at once, and a describe still lagging must
//! not take them back from pods already given one. An ENI created is published only once a
//! describe shows it: its attachment state and the addresses on it come from there. The
//! operator's own unassign ends the count of what it unassigned ([`unassigned`]).

use crate::ec2::Eni;
use crate::plan::EniView;
use enipool_crds::EniStatus;
use ipnet::{Ipv4Net, Ipv6Net};
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
    /// IPv6 /80 prefixes assigned to an ENI.
    AssignedIpv6Prefixes {
        eni_id: String,
        /// The prefixes EC2 assigned.
        prefixes: Vec<Ipv6Net>,
    },
}

/// A change and when it stops being counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub change: Change,
    pub until: Instant,
}

/// What [`overlay`] left.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Overlay {
    /// The changes still unconfirmed.
    pub kept: Vec<Pending>,
    /// Whether one of them is not published (a created ENI, or addresses on an ENI not
    /// published): the pool wants a describe soon.
    pub held_back: bool,
}

/// Adds the changes `described` (the instance's ENIs as a describe answered) does not show yet to
/// `views`, and the addresses among them to their ENI in `published`. Pure.
pub fn overlay(
    pending: Vec<Pending>,
    described: &[Eni],
    views: &mut Vec<EniView>,
    published: &mut [EniStatus],
    now: Instant,
) -> Overlay {
    let mut out = Overlay::default();
    // Creations first, so addresses assigned to an ENI not described yet find its view.
    let (created, assigned): (Vec<_>, Vec<_>) =
        pending.into_iter().partition(|p| matches!(p.change, Change::Created(_)));
    for p in created.into_iter().chain(assigned) {
        if p.until <= now {
            continue;
        }
        let eni_of = |id: &str| described.iter().find(|e| e.id == id);
        let not_shown = |items: &[String], shown: Vec<String>| -> Vec<String> {
            items.iter().filter(|a| !shown.contains(a)).cloned().collect()
        };
        let missing = match &p.change {
            Change::Created(v) => {
                if eni_of(&v.id).is_some() {
                    continue;
                }
                views.retain(|x| x.id != v.id);
                views.push(v.clone());
                views.sort_by_key(|x| x.device_index);
                out.kept.push(p);
                out.held_back = true;
                continue;
            }
            Change::AssignedIps { eni_id, ips } => {
                let shown = eni_of(eni_id).map(|e| strings(&e.secondary_ips)).unwrap_or_default();
                (eni_id, not_shown(&strings(ips), shown), vec![], vec![])
            }
            Change::AssignedPrefixes { eni_id, prefixes } => {
                let shown = eni_of(eni_id).map(|e| strings(&e.prefixes)).unwrap_or_default();
                (eni_id, vec![], not_shown(&strings(prefixes), shown), vec![])
            }
            Change::AssignedIpv6Prefixes { eni_id, prefixes } => {
                let shown = eni_of(eni_id).map(|e| strings(&e.ipv6_prefixes)).unwrap_or_default();
                (eni_id, vec![], vec![], not_shown(&strings(prefixes), shown))
            }
        };
        let (eni_id, ips, prefixes, ipv6) = missing;
        if ips.is_empty() && prefixes.is_empty() && ipv6.is_empty() {
            continue;
        }
        if let Some(v) = views.iter_mut().find(|v| &v.id == eni_id) {
            v.ips += ips.len() as i32;
            v.prefixes += prefixes.len() as i32;
            v.ipv6_prefixes += ipv6.len() as i32;
        }
        match published.iter_mut().find(|e| &e.id == eni_id) {
            Some(e) => {
                add_sorted(&mut e.ips, ips);
                add_sorted(&mut e.prefixes, prefixes);
                add_sorted(&mut e.ipv6_prefixes, ipv6);
            }
            None => out.held_back = true,
        }
        out.kept.push(p);
    }
    out
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// Adds `items` to a published list, kept in the order an ENI's status lists them.
fn add_sorted(list: &mut Vec<String>, items: Vec<String>) {
    list.extend(items);
    list.sort();
    list.dedup();
}

/// Ends the count of `items` (addresses or prefixes, as the journal writes them) the operator
/// unassigned from `eni_id`; a change left with nothing to count is dropped. Pure.
pub fn unassigned(pending: &mut Vec<Pending>, eni_id: &str, items: &[String]) {
    let gone = |a: &dyn ToString| items.contains(&a.to_string());
    for p in pending.iter_mut() {
        match &mut p.change {
            Change::AssignedIps { eni_id: e, ips } if e == eni_id => ips.retain(|a| !gone(a)),
            Change::AssignedPrefixes { eni_id: e, prefixes } if e == eni_id => {
                prefixes.retain(|a| !gone(a))
            }
            _ => {}
        }
    }
    pending.retain(|p| match &p.change {
        Change::AssignedIps { ips, .. } => !ips.is_empty(),
        Change::AssignedPrefixes { prefixes, .. } => !prefixes.is_empty(),
        Change::AssignedIpv6Prefixes { .. } | Change::Created(_) => true,
    });
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
            ipv6_prefixes: 0,
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
        let kept =
            overlay(vec![created.clone()], &[eni("eni-1", &[])], &mut views, &mut [], now).kept;
        assert_eq!(views, vec![view("eni-1", 0, 9), view("eni-2", 1, 9)]);
        assert_eq!(kept, vec![created.clone()]);

        let mut views = vec![view("eni-1", 0, 9), view("eni-2", 1, 9)];
        let described = [eni("eni-1", &[]), eni("eni-2", &[])];
        let kept = overlay(vec![created], &described, &mut views, &mut [], now).kept;
        assert!(kept.is_empty(), "described: confirmed");
        assert_eq!(views.len(), 2, "not counted twice");
    }

    #[test]
    fn assigned_addresses_count_until_every_one_is_described() {
        let now = Instant::now();
        let p = pending(assigned("eni-1", &["10.0.0.5", "10.0.0.6"]), now);
        let mut views = vec![view("eni-1", 0, 1)];
        let kept =
            overlay(vec![p.clone()], &[eni("eni-1", &["10.0.0.5"])], &mut views, &mut [], now).kept;
        assert_eq!(views[0].ips, 2, "the one not shown yet is added");
        assert_eq!(kept, vec![p.clone()]);

        let mut views = vec![view("eni-1", 0, 2)];
        let shown = [eni("eni-1", &["10.0.0.5", "10.0.0.6"])];
        assert!(overlay(vec![p], &shown, &mut views, &mut [], now).kept.is_empty());
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
        let kept = overlay(changes, &[eni("eni-1", &[])], &mut views, &mut [], now).kept;
        assert_eq!(views[1], view("eni-2", 1, 10));
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn expired_changes_are_dropped() {
        let now = Instant::now();
        let old = Pending { change: Change::Created(view("eni-2", 1, 9)), until: now };
        let mut views = vec![view("eni-1", 0, 9)];
        assert!(overlay(vec![old], &[eni("eni-1", &[])], &mut views, &mut [], now).kept.is_empty());
        assert_eq!(views.len(), 1);
    }

    fn published(id: &str, ips: &[&str]) -> EniStatus {
        EniStatus {
            id: id.into(),
            ips: ips.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn answered_addresses_are_published_on_a_published_eni_only() {
        let now = Instant::now();
        let changes = vec![
            pending(assigned("eni-1", &["10.0.0.9", "10.0.0.10"]), now),
            pending(assigned("eni-2", &["10.0.0.7"]), now),
        ];
        let mut views = vec![view("eni-1", 0, 1), view("eni-2", 1, 0)];
        let mut shown = vec![published("eni-1", &["10.0.0.9"])];
        let o = overlay(changes, &[eni("eni-1", &["10.0.0.9"])], &mut views, &mut shown, now);
        assert_eq!(
            shown,
            vec![published("eni-1", &["10.0.0.10", "10.0.0.9"])],
            "as an ENI lists them"
        );
        assert_eq!(o.kept.len(), 2);
        assert!(o.held_back, "eni-2 is not published: its address waits for a describe");

        let mut shown = vec![published("eni-1", &[])];
        let only_eni_1 = vec![pending(assigned("eni-1", &["10.0.0.9"]), now)];
        let o = overlay(
            only_eni_1,
            &[eni("eni-1", &[])],
            &mut vec![view("eni-1", 0, 0)],
            &mut shown,
            now,
        );
        assert_eq!(shown[0].ips, vec!["10.0.0.9"]);
        assert!(!o.held_back, "all published: nothing to look at again for");
    }

    #[test]
    fn an_unassigned_address_is_no_longer_counted() {
        let now = Instant::now();
        let mut changes = vec![
            pending(assigned("eni-1", &["10.0.0.5", "10.0.0.6"]), now),
            pending(assigned("eni-2", &["10.0.0.5"]), now),
            pending(Change::Created(view("eni-3", 2, 9)), now),
        ];
        unassigned(&mut changes, "eni-1", &["10.0.0.5".into()]);
        assert_eq!(changes[0], pending(assigned("eni-1", &["10.0.0.6"]), now));
        assert_eq!(changes[1], pending(assigned("eni-2", &["10.0.0.5"]), now), "another ENI");
        unassigned(&mut changes, "eni-1", &["10.0.0.6".into()]);
        assert_eq!(changes.len(), 2, "nothing left of it");
        assert!(matches!(changes[1].change, Change::Created(_)));
    }
}
