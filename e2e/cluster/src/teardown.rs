//! What a run must take away when it ends, however it ends: the processes it started, its objects
//! in an external API, its namespaces and run directory ([`Core`]), for a finished or dropped
//! [`crate::Cluster`], a bring-up that failed half-way, and SIGINT/SIGTERM ([`teardown_all`]).

use crate::external::ExternalRun;
use crate::procs::{self, Supervisor};
use fabric::Fabric;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The parts that must go away at teardown, shared with the signal handler.
pub struct Core {
    /// Operator and agent processes.
    pub procs: Supervisor,
    pub fabric: Arc<Fabric>,
    /// What the run created in an external Kubernetes API (set once it is connected).
    pub external: OnceLock<Arc<ExternalRun>>,
    torn_down: Mutex<bool>,
}

impl Core {
    /// A run's core, registered for [`teardown_all`].
    pub(crate) fn register(fabric: Arc<Fabric>) -> Arc<Core> {
        let core = Arc::new(Core {
            procs: Supervisor::default(),
            fabric,
            external: OnceLock::new(),
            torn_down: Mutex::new(false),
        });
        ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&core));
        core
    }

    /// Stops processes, removes the run's objects from an external API, deletes namespaces and the
    /// run directory. Idempotent, synchronous.
    pub fn teardown(&self) {
        let mut done = self.torn_down.lock().unwrap_or_else(|e| e.into_inner());
        if *done {
            return;
        }
        *done = true;
        self.procs.stop_all();
        let orphans = procs::kill_run_processes(self.fabric.run_dir());
        if !orphans.is_empty() {
            tracing::warn!(?orphans, "killed containers that outlived their runtime");
        }
        if let Some(x) = self.external.get() {
            x.sweep_blocking();
        }
        self.fabric.teardown();
    }
}

static ACTIVE: Mutex<Vec<Weak<Core>>> = Mutex::new(Vec::new());

/// Tears down every live cluster (the SIGINT/SIGTERM path).
pub fn teardown_all() {
    let cores: Vec<Arc<Core>> =
        ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
    for c in cores {
        c.teardown();
    }
}

/// Tears the core down if bring-up fails before the [`crate::Cluster`] exists.
pub(crate) struct TeardownGuard(pub(crate) Option<Arc<Core>>);

impl Drop for TeardownGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.teardown();
        }
    }
}
