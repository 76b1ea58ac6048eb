//! Process supervisor: the operator replicas and the node agents run as real processes, each in its
//! own process group, with stdout+stderr in a log file under the run directory. The supervisor can
//! kill one (`SIGKILL`, like `kill -9`), restart it with the same command line, and stops them all at
//! teardown (SIGTERM, a short grace, SIGKILL, reap).

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How to (re)start one process.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, OsString)>,
    /// Log file (appended to across restarts).
    pub log: PathBuf,
}

struct Proc {
    spec: ProcSpec,
    child: Option<Child>,
    starts: u32,
}

/// The set of supervised processes, by name (`operator-0`, `agent-<node>`, ...).
#[derive(Default)]
pub struct Supervisor {
    procs: Mutex<BTreeMap<String, Proc>>,
}

impl Supervisor {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Proc>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `name` with `spec` (replacing a stopped process of the same name). Returns its pid.
    pub fn start(&self, name: &str, spec: ProcSpec) -> Result<u32> {
        let mut procs = self.lock();
        if let Some(p) = procs.get_mut(name) {
            if p.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))) {
                anyhow::bail!("process {name} is already running");
            }
        }
        let starts = procs.get(name).map_or(0, |p| p.starts);
        let child = spawn(name, &spec, starts)?;
        let pid = child.id();
        procs.insert(name.to_string(), Proc { spec, child: Some(child), starts: starts + 1 });
        Ok(pid)
    }

    /// Restarts a stopped (or killed) process with its original command line.
    pub fn restart(&self, name: &str) -> Result<u32> {
        let spec = self.lock().get(name).map(|p| p.spec.clone()).context("unknown process")?;
        self.start(name, spec)
    }

    /// The command line `name` was started with.
    pub fn spec(&self, name: &str) -> Option<ProcSpec> {
        self.lock().get(name).map(|p| p.spec.clone())
    }

    /// Pid of a running process.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let mut procs = self.lock();
        let p = procs.get_mut(name)?;
        let c = p.child.as_mut()?;
        matches!(c.try_wait(), Ok(None)).then(|| c.id())
    }

    /// True while the process runs.
    pub fn running(&self, name: &str) -> bool {
        self.pid(name).is_some()
    }

    /// Names of every process ever started.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// `kill -9` of one process (its whole group), reaped.
    pub fn kill9(&self, name: &str) -> Result<()> {
        let mut procs = self.lock();
        let p = procs.get_mut(name).with_context(|| format!("unknown process {name}"))?;
        let mut child = p.child.take().with_context(|| format!("{name} is not running"))?;
        let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    /// Stops one process gracefully (SIGTERM, 5 s, SIGKILL).
    pub fn stop(&self, name: &str) {
        let child = self.lock().get_mut(name).and_then(|p| p.child.take());
        if let Some(mut c) = child {
            terminate(&mut c, Duration::from_secs(5));
        }
    }

    /// Processes that exited on their own: `(name, exit status)`.
    pub fn exited(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, p) in self.lock().iter_mut() {
            if let Some(c) = p.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    out.push((name.clone(), st.to_string()));
                }
            }
        }
        out
    }

    /// Log file of a process.
    pub fn log_path(&self, name: &str) -> Option<PathBuf> {
        self.lock().get(name).map(|p| p.spec.log.clone())
    }

    /// Last `n` lines of every process log, for failure reports.
    pub fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for (name, p) in self.lock().iter() {
            out.push_str(&format!("----- {name} ({}) -----\n", p.spec.log.display()));
            out.push_str(&tail(&p.spec.log, n));
        }
        out
    }

    /// Stops everything (SIGTERM to all, then SIGKILL after a grace) and reaps.
    pub fn stop_all(&self) {
        let mut children: Vec<Child> =
            self.lock().values_mut().filter_map(|p| p.child.take()).collect();
        for c in &children {
            let _ = kill(Pid::from_raw(-(c.id() as i32)), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
            if children.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for mut c in children {
            let _ = kill(Pid::from_raw(-(c.id() as i32)), Signal::SIGKILL);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn spawn(name: &str, spec: &ProcSpec, starts: u32) -> Result<Child> {
    use std::io::Write;
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    writeln!(
        log,
        "===== enipool-e2e: start #{} of {name}: {} {}",
        starts + 1,
        spec.program.display(),
        spec.args.join(" ")
    )?;
    let err = log.try_clone()?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Own process group: the terminal's Ctrl-C reaches only the runner, which tears down in
        // order; a kill of the group takes helpers along.
        .process_group(0);
    cmd.spawn().with_context(|| format!("starting {name}: {}", spec.program.display()))
}

fn terminate(child: &mut Child, grace: Duration) {
    let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let mut s = lines[lines.len().saturating_sub(n)..].join("\n");
            s.push('\n');
            s
        }
        Err(e) => format!("(cannot read: {e})\n"),
    }
}

/// Kills processes left by runs whose runner died without tearing down: any process whose command
/// line or environment names a run directory (`/tmp/enipool-e2e-ep…/`) that no longer exists or whose owner is gone.
/// Call before [`fabric::Fabric::new`] (which removes the stale directories themselves).
pub fn kill_stale_processes() -> Vec<i32> {
    kill_matching(|text| {
        let Some(at) = text.find("/tmp/enipool-e2e-ep") else { return false };
        let prefix = &text[at + "/tmp/enipool-e2e-".len()..];
        let prefix: String = prefix.chars().take(6).collect();
        if !fabric::stale::is_run_prefix(&prefix) {
            return false;
        }
        let run_dir = fabric::stale::run_dir(&prefix);
        let owner_alive = std::fs::read_to_string(run_dir.join("owner"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()))
            .is_some_and(fabric::sh::process_alive);
        !owner_alive
    })
}

/// Kills the processes of this run that its supervisor does not own: the containers of the
/// platform's pods and their shims, which outlive a containerd stopped before them.
pub fn kill_run_processes(run_dir: &Path) -> Vec<i32> {
    let needle = format!("{}/", run_dir.display());
    kill_matching(|text| text.contains(&needle))
}

/// Kills every platform process (enipool-agent, enipool-operator, ..., a containerd shim; never a
/// shell that happens to name a run directory) whose command line and environment satisfy `f`.
/// The agents name the run directory in their flags, the operators in KUBECONFIG or, in a
/// container, in `ENIPOOL_E2E_RUN_DIR`; a shim in its `-address`.
fn kill_matching(f: impl Fn(&str) -> bool) -> Vec<i32> {
    let mut killed = Vec::new();
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else { return killed };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.starts_with("enipool-") && !comm.starts_with("containerd-shim") {
            continue;
        }
        let mut text = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        text.extend(std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default());
        if f(&String::from_utf8_lossy(&text)) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.push(pid);
        }
    }
    killed
}
