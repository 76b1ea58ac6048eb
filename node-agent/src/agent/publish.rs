//! What the publisher reports: the release offer answering the operator, the counts in
//! `status.agent`, and the pool gauges derived from them.

use super::{Agent, DEMAND_WINDOW};
use crate::alloc;
use crate::error::Result;
use crate::store::{now_secs, Offer};
use ipnet::Ipv4Net;

/// What the publisher reports in `status.agent`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Epoch.
    pub epoch: u64,
    /// Boot id.
    pub boot_id: String,
    /// Operator revision applied.
    pub observed_revision: i64,
    /// Programmed ENIs.
    pub ready_enis: Vec<String>,
    /// Addresses in use.
    pub in_use: usize,
    /// Addresses cooling.
    pub cooling: usize,
    /// Allocatable now.
    pub available: usize,
    /// Refused ADDs in the demand window.
    pub refused_adds: usize,
    /// The current offer: revision and items.
    pub offer: Option<(i64, Vec<Ipv4Net>)>,
    /// Addresses in use that the pool no longer lists (alarm).
    pub orphaned: Vec<String>,
}

impl Agent {
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

    /// What to publish.
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
