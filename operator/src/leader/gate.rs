//! Leadership as the rest of the operator sees it: a term that ends at an instant, checked
//! against the clock on every use, so a replica stops acting at its renew deadline even while
//! the renewal that would extend it hangs. The watch channel only announces the edges (to start a
//! full reconcile on gaining leadership, and for the metric); the decision is [`Leadership::is_leader`].

use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// This replica's leadership; cheap to clone, shared by the election, the controllers, the EC2
/// and Kubernetes clients.
#[derive(Clone, Debug)]
pub struct Leadership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// End of the current term (exclusive); `None`: not holding the Lease.
    until: Mutex<Option<Instant>>,
    /// The last published state.
    edges: watch::Sender<bool>,
    /// The term was set anew.
    set: Notify,
}

impl Default for Leadership {
    fn default() -> Self {
        Self::new()
    }
}

impl Leadership {
    pub fn new() -> Self {
        let inner =
            Inner { until: Mutex::new(None), edges: watch::channel(false).0, set: Notify::new() };
        Leadership { inner: Arc::new(inner) }
    }

    fn until(&self) -> Option<Instant> {
        *self.inner.until.lock().expect("leadership lock")
    }

    /// Whether this replica leads now: its term has not ended.
    pub fn is_leader(&self) -> bool {
        self.until().is_some_and(|until| Instant::now() < until)
    }

    /// Announces gaining (`true`) and losing (`false`) leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.edges.subscribe()
    }

    /// Set the term from the election (`None`: another replica holds the Lease); `true` when
    /// that gained or lost leadership.
    pub(crate) fn set(&self, until: Option<Instant>) -> bool {
        *self.inner.until.lock().expect("leadership lock") = until;
        let changed = self.publish();
        self.inner.set.notify_one();
        changed
    }

    /// Announce the state now, when it changed.
    fn publish(&self) -> bool {
        let leader = self.is_leader();
        self.inner.edges.send_if_modified(|cur| std::mem::replace(cur, leader) != leader)
    }

    /// Announces the end of each term when it comes, renewed or not; runs forever (drive it next
    /// to the election).
    pub(crate) async fn watchdog(&self) {
        loop {
            match self.until() {
                Some(until) if *self.inner.edges.borrow() => tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = self.inner.set.notified() => {}
                },
                _ => self.inner.set.notified().await,
            }
            if self.publish() && !*self.inner.edges.borrow() {
                tracing::warn!("stepping down: lease not renewed within the renew deadline");
            }
        }
    }

    /// Returns once this replica does not lead (at once when it does not now); work that must
    /// not outlive the term races against it.
    pub async fn lost(&self) {
        let mut edges = self.subscribe();
        loop {
            let Some(until) = self.until().filter(|u| Instant::now() < *u) else { return };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = edges.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[tokio::test(start_paused = true)]
    async fn the_term_ends_on_time_without_anyone_saying_so() {
        let l = Leadership::new();
        let watchdog = tokio::spawn({
            let l = l.clone();
            async move { l.watchdog().await }
        });
        let mut edges = l.subscribe();
        assert!(!l.is_leader());
        l.set(Some(Instant::now() + S(10)));
        assert!(l.is_leader());
        assert!(edges.has_changed().unwrap() && *edges.borrow_and_update());
        // Nothing renews (the renewal hangs): at the deadline the gate closes and it is announced.
        tokio::time::sleep(S(9)).await;
        assert!(l.is_leader());
        tokio::time::sleep(S(1)).await;
        assert!(!l.is_leader(), "still leading at the deadline");
        tokio::time::timeout(S(1), edges.changed()).await.expect("announced").unwrap();
        assert!(!*edges.borrow_and_update());
        // A renewal extends the term without an edge; losing the Lease ends it at once.
        l.set(Some(Instant::now() + S(10)));
        assert!(*edges.borrow_and_update());
        l.set(Some(Instant::now() + S(20)));
        tokio::time::sleep(S(15)).await;
        assert!(l.is_leader() && !edges.has_changed().unwrap());
        l.set(None);
        assert!(!l.is_leader() && !*edges.borrow_and_update());
        watchdog.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn lost_returns_at_the_end_of_the_term_however_it_was_extended() {
        let l = Leadership::new();
        tokio::time::timeout(S(1), l.lost()).await.expect("not leading: at once");
        let start = Instant::now();
        l.set(Some(start + S(10)));
        let lost = tokio::spawn({
            let l = l.clone();
            async move {
                l.lost().await;
                Instant::now()
            }
        });
        tokio::time::sleep(S(5)).await;
        l.set(Some(start + S(12)));
        assert_eq!(lost.await.unwrap(), start + S(12));
    }
}
