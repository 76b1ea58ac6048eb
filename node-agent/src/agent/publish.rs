//! What the publisher reports: the release offer answering the operator, the counts in
//! `status.agent`, and the pool gauges derived from them.

use super::{Agent, DEMAND_WINDOW};
use crate::alloc;
use crate::error::Result;
use crate::report::Report;
use crate::store::{now_secs, Offer};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;

/// Whether the view now comes from another pool than before: the ENIPool was deleted and created
/// again under the node's name (a new uid). An empty uid is unknown (no pool read yet): never a
/// replacement.
pub fn pool_replaced(last: &str, now: &str) -> bool {
    !last.is_empty() && !now.is_empty() && last != now
}

impl Agent {
    /// Hand the agent the view of the pool whose uid is `uid` (see [`Agent::set_view`]), after
    /// starting the offer state afresh when that pool replaced the one before.
    pub fn set_pool_view(&self, uid: &str, v: crate::pool::PoolView) {
        // Held to the end: a view of the old pool applied concurrently cannot slip in between.
        let mut last = self.pool_uid.lock().unwrap();
        if pool_replaced(&last, uid) {
            tracing::warn!(old = %last, new = %uid, "ENIPool created again; release offers start afresh");
            if let Err(e) = self.restart_offers() {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "restarting release offers failed"
                );
            }
        }
        if !uid.is_empty() {
            *last = uid.to_string();
        }
        self.set_view(v);
    }

    /// A new pool's release requests count from 1 again and it never saw this agent's offers.
    /// Drop the offer published to the old pool, so the next request is answered whatever its
    /// revision, and tie every offered item to no request (revision 0): one the new pool does not
    /// list is forgotten at once; one it lists stays out of allocation (the old pool may have
    /// been releasing it) and is the first offered again.
    fn restart_offers(&self) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        *self.offer.lock().unwrap() = None;
        let mut by_epoch: BTreeMap<u64, Vec<Ipv4Net>> = BTreeMap::new();
        for (n, o) in st.offered.iter().filter(|(_, o)| o.revision != 0) {
            by_epoch.entry(o.epoch).or_default().push(*n);
        }
        for (epoch, items) in by_epoch {
            self.store.offer(&mut st, &items, Offer { revision: 0, epoch })?;
        }
        Ok(())
    }

    /// Answer the operator's release request (if new) and forget finished offers.
    pub(super) fn settle_offers(&self) -> Result<()> {
        let view = self.view();
        let mut st = self.state.lock().unwrap();
        let done = alloc::offers_done(&view, &st);
        self.store.forget_offers(&mut st, &done)?;
        let mut cur = self.offer.lock().unwrap();
        if let Some((rev, count, prefer)) = &view.release_request {
            let answered = cur.as_ref().is_some_and(|(r, _)| r >= rev);
            if !answered && *rev > view.released_revision {
                let items =
                    alloc::plan_offer(&view, &st, (*count).max(0) as usize, prefer, now_secs());
                let offer = Offer { revision: *rev, epoch: st.epoch };
                self.store.offer(&mut st, &items, offer)?;
                tracing::info!(
                    revision = rev,
                    items = items.len(),
                    "offered addresses for release"
                );
                *cur = Some((*rev, items));
                self.urgent.notify_one();
            }
        }
        if let Some((_, items)) = cur.as_mut() {
            items.retain(|n| st.offered.contains_key(n));
        }
        Ok(())
    }

    pub fn report(&self) -> Report {
        let view = self.view();
        let st = self.state.lock().unwrap();
        let now = now_secs();
        let orphaned = st
            .by_ip
            .keys()
            .filter(|ip| view.eni_of(**ip).is_none())
            .map(|ip| ip.to_string())
            .collect();
        Report {
            epoch: st.epoch,
            boot_id: st.boot_id.clone(),
            observed_revision: view.revision,
            ready_enis: view.enis.iter().filter(|e| e.ready).map(|e| e.id.clone()).collect(),
            in_use: st.allocations.len(),
            served_pods: st
                .allocations
                .values()
                .filter(|a| !a.pod_name.is_empty())
                .map(|a| format!("{}/{}", a.pod_namespace, a.pod_name))
                .collect(),
            cooling: st.cooling.values().filter(|t| **t > now).count(),
            available: alloc::available(&view, &st, now),
            refused_adds: self
                .refused
                .lock()
                .unwrap()
                .values()
                .filter(|t| t.elapsed() < DEMAND_WINDOW)
                .count(),
            offer: self.offer.lock().unwrap().clone(),
            orphaned,
        }
    }

    pub(super) fn update_gauges(&self) {
        let r = self.report();
        self.metrics.set_pool(&r, self.state.lock().unwrap().offered.len());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pool_replaced_table() {
        let cases = [
            ("", "uid-1", false, "the first pool read"),
            ("uid-1", "uid-1", false, "the same pool again"),
            ("uid-1", "uid-2", true, "deleted and created again"),
            ("uid-1", "", false, "a view without a uid says nothing"),
            ("", "", false, "nothing known"),
        ];
        for (last, now, want, case) in cases {
            assert_eq!(super::pool_replaced(last, now), want, "{case}");
        }
    }
}
