//! Cache readiness that any number of tasks can wait for.
//!
//! kube-runtime's `Store::wait_until_ready` keeps only the waker of the task that polled it last
//! (a oneshot receiver inside `DelayedInit`): with two tasks waiting on one store, one of them is
//! never woken. The controller's own runner waits on its store that way, so a second waiter (the
//! readiness probe, a reconcile asking whether the Node caches are complete) could leave the
//! runner — and every reconcile of that kind — asleep for good; seen as a restarted operator that
//! reconciled nothing. So the operator never calls it: a watch stream marks its cache synced when
//! the reflector has applied the initial list (`InitDone`), on a `tokio::sync::watch`, which wakes
//! every waiter.

use futures::{Stream, TryStreamExt};
use kube::runtime::watcher;
use tokio::sync::watch;

/// Whether a cache has its initial list; cheap to clone, any number of waiters.
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<bool>);

impl Synced {
    /// Waits until the cache has its initial list (returns at once after that). Also returns if
    /// the stream that would set it is gone: waiting longer could never succeed.
    pub async fn wait(&self) {
        let _ = self.0.clone().wait_for(|v| *v).await;
    }
}

/// Passes a reflector's event stream through, setting the flag once the reflector has applied an
/// `InitDone` (put it after `reflector(..)`, so the store is complete when the flag is set).
pub fn mark<K, E, S>(events: S) -> (impl Stream<Item = Result<watcher::Event<K>, E>>, Synced)
where
    S: Stream<Item = Result<watcher::Event<K>, E>>,
{
    let (tx, rx) = watch::channel(false);
    let events = events.inspect_ok(move |e| {
        if matches!(e, watcher::Event::InitDone) {
            tx.send_replace(true);
        }
    });
    (events, Synced(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn every_waiter_is_woken_once_the_initial_list_is_applied() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<watcher::Event<String>, ()>>();
        let (events, synced) = mark(rx);
        // Many concurrent waiters: the case kube-runtime's Store::wait_until_ready loses.
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let s = synced.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        let drive = tokio::spawn(events.for_each(|_| async {}));
        tx.unbounded_send(Ok(watcher::Event::Init)).unwrap();
        tx.unbounded_send(Ok(watcher::Event::InitApply("a".into()))).unwrap();
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()), "ready before InitDone");
        tx.unbounded_send(Ok(watcher::Event::InitDone)).unwrap();
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), w)
                .await
                .expect("a waiter was never woken")
                .unwrap();
        }
        drop(tx);
        drive.await.unwrap();
        // After that, waiting returns at once.
        tokio::time::timeout(std::time::Duration::from_millis(100), synced.wait()).await.unwrap();
    }
}
