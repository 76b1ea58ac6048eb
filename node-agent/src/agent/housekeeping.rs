//! Work outside the request path: draining the shim's DEL journal and reconciling the host at
//! restart, freeing leaked allocations, and the periodic tick.

/// When a leak candidate found at restart (an allocation without its host veth) may be freed:
/// after `grace` seconds, in case the runtime still DELs or re-ADDs it; at once when the node
/// rebooted since the store was last opened (`previous_boot` differs from `this_boot`): no pod
/// survives a reboot, its netns is gone. An unknown boot id (empty) is never taken for a reboot.
pub fn leak_deadline(previous_boot: &str, this_boot: &str, now: u64, grace: u64) -> u64 {
    if rebooted(previous_boot, this_boot) {
        now
    } else {
        now + grace
    }
}

fn rebooted(previous_boot: &str, this_boot: &str) -> bool {
    !previous_boot.is_empty() && !this_boot.is_empty() && previous_boot != this_boot
}

use super::{Agent, DEMAND_WINDOW};
use crate::error::{Error, Result};
use crate::store::{now_secs, AllocKey, Allocation};
use enipool_cni::proto::{Command, Response};
use std::collections::BTreeSet;

impl Agent {
    /// DEL every journaled request the shim recorded while the agent was down.
    /// Uses the shim's own journal reader, so both sides share one format; entries that cannot be
    /// parsed are renamed `*.corrupt` by it and kept for a person to look at.
    pub fn drain_journal(&self, dir: &std::path::Path) -> usize {
        let entries = match enipool_cni::journal::drain(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = &e as &dyn std::error::Error, "reading the DEL journal");
                return 0;
            }
        };
        let mut n = 0;
        for (path, req) in entries {
            if req.command != Command::Del {
                tracing::warn!(path = %path.display(), command = ?req.command, "DEL journal entry is not a DEL; ignored");
                continue;
            }
            let resp = self.handle(req);
            if matches!(resp, Response::Error(_)) {
                tracing::warn!(path = %path.display(), ?resp, "journaled DEL failed; kept for the next tick");
                continue;
            }
            if let Err(e) = enipool_cni::journal::remove(&path) {
                tracing::warn!(path = %path.display(), error = &e as &dyn std::error::Error, "removing DEL journal entry");
            }
            n += 1;
        }
        n
    }

    /// Restart reconcile: torn-down veths are deleted; allocations whose host veth exists are
    /// re-programmed (host side); the others become leak candidates, freed after the grace
    /// (unless the runtime DELs or re-ADDs them first), or at once after a reboot
    /// (`leak_deadline`), through the same release as a DEL.
    pub fn reconcile_host(&self) -> Result<()> {
        // Never on a store that forgot allocations: its leak candidates' teardown would delete
        // the routes of running pods that hold their addresses now.
        self.serving()?;
        // Veths a DEL tore down before the last exit but did not delete yet (a crash between the
        // DEL's reply and the reaper): delete them first, so they count as absent below.
        if let Err(e) = self.host.reap_links() {
            tracing::warn!(error = &e as &dyn std::error::Error, "deleting torn-down veths");
        }
        let links: BTreeSet<String> = self.host.host_links()?.into_iter().collect();
        let view = self.view();
        let allocs: Vec<Allocation> =
            self.state.lock().unwrap().allocations.values().cloned().collect();
        let (previous_boot, this_boot) = (self.opened.boot_id.as_str(), self.boot_id.as_str());
        let deadline =
            leak_deadline(previous_boot, this_boot, now_secs(), self.cfg.leak_grace_seconds);
        if rebooted(previous_boot, this_boot) {
            let stale = allocs.iter().filter(|a| !links.contains(&a.host_if)).count();
            tracing::info!(
                previous_boot,
                this_boot,
                allocations = stale,
                "the node rebooted since the allocation store was last opened: reclaiming the previous boot's allocations at once, without the leak grace"
            );
        }
        for a in allocs {
            if links.contains(&a.host_if) {
                if let Err(e) = self.host.ensure_pod_host(&self.pod_config(&a, &view)) {
                    tracing::warn!(container = %a.container_id, error = &e as &dyn std::error::Error, "re-programming pod host side");
                }
            } else {
                tracing::info!(container = %a.container_id, ip = %a.ip, "allocation without host veth: leak candidate");
                self.leaks.lock().unwrap().insert(a.key(), deadline);
            }
        }
        self.free_leaks()?;
        Ok(())
    }

    /// Free leak candidates whose grace passed and whose veth is still absent.
    pub fn free_leaks(&self) -> Result<usize> {
        let now = now_secs();
        let due: Vec<AllocKey> = self
            .leaks
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let links: BTreeSet<String> = self.host.host_links()?.into_iter().collect();
        let view = self.view();
        let mut n = 0;
        for k in due {
            self.with_container_lock(&k.container_id, || {
                let a = self.state.lock().unwrap().allocations.get(&k).cloned();
                match a {
                    Some(a) if !links.contains(&a.host_if) => {
                        tracing::info!(container = %k.container_id, ip = %a.ip, "freeing leaked allocation");
                        self.release(&a, &view)?;
                        n += 1;
                    }
                    _ => {
                        self.leaks.lock().unwrap().remove(&k);
                    }
                }
                Ok::<_, Error>(())
            })?;
        }
        Ok(n)
    }

    /// Periodic housekeeping: expire cooldowns, watch records rebuilt from the host, free due
    /// leaks, forget old refusals. Nothing while the store is unchecked or refused.
    pub fn tick(&self) -> Result<()> {
        if self.serving().is_err() {
            return Ok(());
        }
        {
            let mut st = self.state.lock().unwrap();
            if self.store.expire_cooling(&mut st, now_secs())? > 0 {
                self.changed.notify_one();
            }
        }
        self.watch_rebuilt()?;
        self.free_leaks()?;
        let journal = self.del_journal.lock().unwrap().clone();
        if let Some(dir) = journal {
            let n = self.drain_journal(&dir);
            if n > 0 {
                tracing::info!(drained = n, "late DEL journal entries drained");
            }
        }
        let expired = {
            let mut refused = self.refused.lock().unwrap();
            let before = refused.len();
            refused.retain(|_, t| t.elapsed() < DEMAND_WINDOW);
            refused.len() != before
        };
        if expired {
            // The published pending count fell: tell the operator so the target can shrink.
            self.changed.notify_one();
        }
        self.update_gauges();
        Ok(())
    }
}
