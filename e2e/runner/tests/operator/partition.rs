//! A leader cut off from the API server (every request of its client hangs, no answer, no error:
//! a partition, or a connection gone silent) must stop acting before a standby can take the
//! Lease over, and never act again once the standby leads; not even when the partition heals and
//! its requests held meanwhile arrive. Two replicas with a client each, so the API server's audit
//! log tells their writes apart, and an EC2 client each that records when every mutating call
//! started and ended.

use crate::harness::*;
use enipool_operator::ec2::mutations::{MutationHook, Mutations};
use enipool_operator::ec2::Ec2Result;
use enipool_operator::{Operator, OperatorHandle};
use futures::future::BoxFuture;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
/// Long enough for a loaded machine: the old leader must stop within the renew deadline (two
/// thirds of it) after its last renewal, the standby may take over a whole duration after it.
const LEASE: Duration = Duration::from_secs(6);

/// One mutating EC2 call: its action, when it was made and when it returned (or was dropped).
#[derive(Debug, Clone)]
struct Call {
    action: &'static str,
    start: Instant,
    end: Option<Instant>,
}

/// Records the replica's mutating EC2 calls.
struct Recorder(Arc<Mutex<Vec<Call>>>);

/// Sets the end of call `i` when the call returns or its future is dropped.
struct Ended(Arc<Mutex<Vec<Call>>>, usize);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.lock().unwrap()[self.1].end = Some(Instant::now());
    }
}

impl MutationHook for Recorder {
    fn around<'a, T: Send + 'a>(
        &'a self,
        action: &'static str,
        call: BoxFuture<'a, Ec2Result<T>>,
    ) -> BoxFuture<'a, Ec2Result<T>> {
        let i = {
            let mut calls = self.0.lock().unwrap();
            calls.push(Call { action, start: Instant::now(), end: None });
            calls.len() - 1
        };
        let ended = Ended(self.0.clone(), i);
        Box::pin(async move {
            let _ended = ended;
            call.await
        })
    }
}

struct Replica {
    name: &'static str,
    op: Arc<OperatorHandle>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Replica {
    async fn start(env: &Env, name: &'static str) -> Replica {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let ec2 = Arc::new(Mutations::new(env.ec2(None).await, Recorder(calls.clone())));
        let mut cfg = env.config(name);
        cfg.lease_duration = LEASE;
        let op = Operator::start(cfg, env.client_as(name), ec2, Default::default());
        Replica { name, op: Arc::new(op), calls }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// When this replica's writes reached the API server (the Lease, its election, aside).
    fn writes(&self, env: &Env) -> Vec<(Instant, String)> {
        env.kube
            .audit_timed()
            .into_iter()
            .filter(|(_, r)| r.user == self.name && !r.implied && r.resource != "leases")
            .filter(|(_, r)| {
                matches!(
                    r.verb.as_str(),
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                )
            })
            .map(|(at, r)| (at, format!("{} {}", r.verb, r.path)))
            .collect()
    }
}

/// What a sampler saw of both replicas' leadership, every few milliseconds.
#[derive(Debug, Default)]
struct Leadership {
    /// First sample with both replicas leading.
    both: Option<Instant>,
    /// First sample, after the partition began, with the old leader not leading.
    old_stepped_down: Option<Instant>,
    /// First sample with the standby leading.
    new_leads: Option<Instant>,
}

fn sample(
    old: Arc<OperatorHandle>,
    new: Arc<OperatorHandle>,
    since: Instant,
) -> (Arc<Mutex<Leadership>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Leadership::default()));
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            loop {
                let (a, b, now) = (old.is_leader(), new.is_leader(), Instant::now());
                {
                    let mut s = seen.lock().unwrap();
                    if a && b {
                        s.both.get_or_insert(now);
                    }
                    if !a && now >= since {
                        s.old_stepped_down.get_or_insert(now);
                    }
                    if b {
                        s.new_leads.get_or_insert(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_stops_acting_before_the_standby_takes_over() {
    let env = env().await;
    let a = Replica::start(&env, "op-a").await;
    wait_for("op-a leads", T, || async { a.op.is_leader().then_some(()) }).await;
    let b = Replica::start(&env, "op-b").await;
    wait_for("op-b ready", T, || async { b.op.is_ready().then_some(()) }).await;
    env.join("node-a", "m5.large", &env.subnet).await;
    let pool = env.wait_pool("node-a", "Ready", T, |p| is_ready(p) && allocated(p) == 8).await;
    assert!(!a.calls().is_empty(), "the leader made the pool's addresses");
    assert!(b.calls().is_empty(), "the standby called EC2: {:?}", b.calls());
    assert!(b.writes(&env).is_empty(), "the standby wrote: {:?}", b.writes(&env));

    // The partition: op-a's requests, the Lease renewals among them, get no answer any more.
    let cut = Instant::now();
    env.kube.freeze_user("op-a");
    let (seen, sampler) = sample(a.op.clone(), b.op.clone(), cut);
    // Work for whoever leads: three of the pool's addresses vanish from EC2 (someone ran
    // `aws ec2 unassign-private-ip-addresses`). op-a sees it in EC2 at its next resync.
    let eni = pool.status.as_ref().unwrap().enis.iter().find(|e| e.ips.len() >= 3).unwrap();
    let gone: Vec<Ipv4Addr> = eni.ips[..3].iter().map(|ip| ip.parse().unwrap()).collect();
    env.ec2(None).await.unassign_ips(&eni.id, &gone).await.expect("out-of-band unassign");

    wait_for("op-b leads", LEASE + T, || async { b.op.is_leader().then_some(()) }).await;
    env.wait_pool("node-a", "the new leader restored the addresses", T, |p| {
        allocated(p) == 8 && p.status.as_ref().is_some_and(|s| s.operations.is_empty())
    })
    .await;
    // The partition heals: whatever op-a still had on its way now reaches the API server.
    env.kube.unfreeze_user("op-a");
    tokio::time::sleep(LEASE * 2).await;
    sampler.abort();
    let seen = std::mem::take(&mut *seen.lock().unwrap());

    // The old leader's last action (EC2 call or write) came before the new leader's first.
    let stepped_down = seen.old_stepped_down.expect("op-a never stopped leading");
    let new_leads = seen.new_leads.expect("op-b never led");
    let b_calls = b.calls();
    let b_writes = b.writes(&env);
    let b_first = b_calls.iter().map(|c| c.start).chain(b_writes.iter().map(|w| w.0)).min();
    let b_first = b_first.expect("op-b, leading, neither called EC2 nor wrote");
    assert!(b_first >= new_leads - Duration::from_millis(50), "op-b acted as a standby");
    assert!(
        b_calls.iter().any(|c| c.action == "AssignPrivateIpAddresses"),
        "op-b restored the addresses: {b_calls:?}"
    );
    for c in a.calls() {
        let end = c.end.unwrap_or_else(|| panic!("op-a's {} never returned", c.action));
        assert!(
            end < stepped_down && end < b_first,
            "op-a's {} ended {:?} after the partition, op-a stepped down at {:?}, op-b acted at \
             {:?}",
            c.action,
            end - cut,
            stepped_down - cut,
            b_first - cut,
        );
    }
    for (at, what) in a.writes(&env) {
        assert!(
            at < cut,
            "op-a wrote `{what}` {:?} after the partition began (op-b acted at {:?})",
            at - cut,
            b_first - cut,
        );
    }
    assert_eq!(seen.both, None, "both replicas led at once: {seen:?}");
    assert!(stepped_down < new_leads, "{seen:?}");
    // Healed, op-a stays a standby.
    assert!(!a.op.is_leader() && b.op.is_leader());
    a.op.abort();
    b.op.abort();
}
