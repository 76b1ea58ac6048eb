//! EC2 for the leader only: every mutating call is refused unless this replica leads, and dropped
//! if its term ends before the call returns. A call waiting for the mutate rate limiter or for a
//! retry is thus never sent once the term is over. One already on the wire is abandoned as a crash
//! would abandon it: its journal entry, written before it, lets the next leader find out what it
//! did. Describes pass: reading EC2 changes nothing.
//!
//! A refused or dropped call fails with [`Ec2ErrorKind::Transient`] and the code `NotLeader`:
//! nothing was decided by EC2, and it may succeed unchanged once this replica leads again.

use super::gate::Leadership;
use crate::ec2::mutations::{MutationHook, Mutations};
use crate::ec2::{Ec2Api, Ec2Error, Ec2ErrorKind, Ec2Result};
use futures::future::BoxFuture;
use std::sync::Arc;

/// The error code of a mutating call this replica did not (finish to) make.
pub const NOT_LEADER: &str = "NotLeader";

/// [`Ec2Api`] whose mutations only the leader makes.
pub type LeaderOnlyEc2 = Mutations<LeaderGate>;

/// Gate `inner`'s mutations by `leadership`.
pub fn leader_only(inner: Arc<dyn Ec2Api>, leadership: Leadership) -> LeaderOnlyEc2 {
    Mutations::new(inner, LeaderGate(leadership))
}

/// Lets a mutation through while this replica leads, and drops it when the term ends first.
pub struct LeaderGate(Leadership);

impl MutationHook for LeaderGate {
    fn around<'a, T: Send + 'a>(
        &'a self,
        action: &'static str,
        call: BoxFuture<'a, Ec2Result<T>>,
    ) -> BoxFuture<'a, Ec2Result<T>> {
        Box::pin(async move {
            let refused = |message: &str| Ec2Error {
                kind: Ec2ErrorKind::Transient,
                action,
                code: NOT_LEADER.into(),
                message: message.into(),
            };
            if !self.0.is_leader() {
                return Err(refused("not sent: this replica does not hold the leader Lease"));
            }
            tokio::select! {
                r = call => r,
                _ = self.0.lost() => {
                    Err(refused("abandoned: this replica's term as leader ended before the answer"))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec2::fake::FakeEc2;
    use crate::ec2::{CreateEni, Query};
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn only_the_leader_mutates_and_describes_always_pass() {
        let fake = Arc::new(FakeEc2::new());
        let leadership = Leadership::new();
        let ec2 = leader_only(fake.clone(), leadership.clone());
        let req = CreateEni { subnet_id: "subnet-a".into(), ..Default::default() };
        let err = ec2.create_eni(&req).await.unwrap_err();
        assert_eq!((err.kind, err.code.as_str()), (Ec2ErrorKind::Transient, NOT_LEADER));
        ec2.describe_subnets(&Query::default()).await.expect("a standby may read");
        assert!(fake.calls().iter().all(|c| c.starts_with("Describe")), "{:?}", fake.calls());
        leadership.set(Some(Instant::now() + Duration::from_secs(10)));
        ec2.create_eni(&req).await.expect("the leader creates");
        // The term ends (no renewal): refused again, without a watchdog having said so.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let err = ec2.create_eni(&req).await.unwrap_err();
        assert_eq!(err.code, NOT_LEADER);
        assert_eq!(fake.calls().iter().filter(|c| **c == "CreateNetworkInterface").count(), 1);
    }

    /// A mutation that waits (as in the rate limiter) until it is let go.
    struct Slow(tokio::sync::Semaphore, std::sync::atomic::AtomicBool);

    impl Slow {
        async fn call(&self) -> Ec2Result<()> {
            let _permit = self.0.acquire().await.expect("open");
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_still_waiting_when_the_term_ends_is_never_sent() {
        let leadership = Leadership::new();
        let ec2 = leader_only(Arc::new(FakeEc2::new()), leadership.clone());
        leadership.set(Some(Instant::now() + Duration::from_secs(10)));
        let slow = Slow(tokio::sync::Semaphore::new(0), false.into());
        let started = Instant::now();
        let call = Box::pin(slow.call());
        let err = ec2.hook().around("AssignPrivateIpAddresses", call).await.unwrap_err();
        assert_eq!(err.code, NOT_LEADER);
        assert_eq!(Instant::now() - started, Duration::from_secs(10), "dropped at the deadline");
        slow.0.add_permits(1);
        assert!(!slow.1.load(std::sync::atomic::Ordering::SeqCst), "sent after the term ended");
    }
}
