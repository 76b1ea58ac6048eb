//! The end of a test bench built on the test platform: its processes, the VPC fabric, the test
//! API server and the EC2 simulator, for the `Drop` of benches that run real binaries.

use cluster::procs::Supervisor;
use ec2sim::Ec2Sim;
use fabric::Fabric;
use kubeapi::KubeApi;
use std::time::Duration;

/// How long the servers get to stop: a wedged one must not hang the test binary after a failure.
const SERVERS_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops everything in dependency order: the processes first (they live in the fabric's
/// namespaces and talk to the servers), then the fabric, then the API server and the simulator
/// (bounded by [`SERVERS_STOP_TIMEOUT`]). Best-effort: never panics, so it is safe in `Drop`,
/// also while a test unwinds.
pub fn teardown(
    rt: &tokio::runtime::Runtime,
    procs: &Supervisor,
    fabric: &Fabric,
    kube: Option<KubeApi>,
    sim: Option<Ec2Sim>,
) {
    procs.stop_all();
    fabric.teardown();
    rt.block_on(async {
        let stop = async {
            if let Some(k) = kube {
                k.shutdown().await;
            }
            if let Some(s) = sim {
                s.shutdown().await;
            }
        };
        let _ = tokio::time::timeout(SERVERS_STOP_TIMEOUT, stop).await;
    });
}
