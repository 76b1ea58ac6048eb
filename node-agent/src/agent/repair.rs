//! Putting back the host side of pods whose rules or route something else removed.

use super::Agent;
use crate::hostnet::drift::{pod_missing, HostSnapshot};
use crate::store::Allocation;

/// An allocation younger than this (seconds) at the snapshot may still be mid-ADD: its wiring is
/// not missing, only not finished.
const SETTLING_SECS: u64 = 2;

impl Agent {
    /// Re-program the host side of every pod whose route or rules `snap` (taken at unix second
    /// `taken`) lacks. Per pod under its container lock, and only while the allocation is still
    /// the one the snapshot was judged against: a DEL that released it meanwhile removed its
    /// rules on purpose. Pods without their veth are leak candidates, not repairs. Nothing while
    /// the store is unchecked or refused. Returns how many pods were repaired.
    pub fn repair_pods(&self, snap: &HostSnapshot, taken: u64) -> usize {
        if self.serving().is_err() {
            return 0;
        }
        let view = self.view();
        let allocs: Vec<Allocation> = self
            .state
            .lock()
            .unwrap()
            .allocations
            .values()
            .filter(|a| a.created_at + SETTLING_SECS <= taken)
            .cloned()
            .collect();
        let mut repaired = 0;
        for a in allocs {
            let pod = self.pod_config(&a, &view);
            let missing = pod_missing(&pod, snap);
            if missing.is_empty() {
                continue;
            }
            self.with_container_lock(&a.container_id, || {
                let current = self.state.lock().unwrap().allocations.get(&a.key()).cloned();
                if current.as_ref() != Some(&a) {
                    return;
                }
                let what: Vec<String> = missing.iter().map(ToString::to_string).collect();
                match self.host.ensure_pod_host(&pod) {
                    Ok(()) => {
                        repaired += 1;
                        self.metrics.host_repaired("pod");
                        tracing::warn!(container = %a.container_id, ip = %a.ip, missing = ?what, "pod host state was missing; put back");
                    }
                    Err(e) => {
                        tracing::error!(container = %a.container_id, ip = %a.ip, missing = ?what, error = &e as &dyn std::error::Error, "putting back missing pod host state");
                    }
                }
            });
        }
        repaired
    }
}
