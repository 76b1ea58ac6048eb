//! The operator, in process, against the EC2 simulator and the test Kubernetes API: node join,
//! scale up and down through the agent protocol, exhaustion, throttling, crash replay, failover
//! (also of a leader cut off from the API server), node deletion (and the finalizer's tag-based
//! cleanup), GitOps edits of policies and forged journal entries in a pool's status. The agent is
//! played by the test (SSA of `status.agent` under the agent's field manager).

#[path = "operator/cleanup.rs"]
mod cleanup;
#[path = "operator/cordon.rs"]
mod cordon;
#[path = "operator/failures.rs"]
mod failures;
#[path = "operator/finalizer.rs"]
mod finalizer;
#[path = "operator/handover.rs"]
mod handover;
#[path = "operator/harness.rs"]
mod harness;
#[path = "operator/iam.rs"]
mod iam;
#[path = "operator/ipv6.rs"]
mod ipv6;
#[path = "operator/lag.rs"]
mod lag;
#[path = "operator/partition.rs"]
mod partition;
#[path = "operator/placement.rs"]
mod placement;
#[path = "operator/quota.rs"]
mod quota;
#[path = "operator/scenarios.rs"]
mod scenarios;
#[path = "operator/startup.rs"]
mod startup;
#[path = "operator/trust.rs"]
mod trust;
#[path = "operator/vpc.rs"]
mod vpc;
