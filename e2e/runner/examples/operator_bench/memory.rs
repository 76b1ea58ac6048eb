//! `operator_bench memory`: the operator binary against N nodes, its RSS and CPU over the first
//! resync round (see the bench's own doc).

use super::*;

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds of a process (`/proc/<pid>/stat`; Linux reports ticks of
/// USER_HZ = 100). The bench's own figure shows how much of the machine the in-process simulator
/// and API server took from the operator.
fn cpu_secs(pid: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command name (which may contain spaces).
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0 // utime, stime (fields 14, 15)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Ready pools counted from one watch. Listing every pool each poll (as `World::ready` does)
/// costs O(N) deep copies under the test API's single lock plus O(N) decoding in the bench, four
/// times a second: with 5,000 pools that competes with the operator for the 2 cores.
struct ReadyWatch {
    counts: tokio::sync::watch::Receiver<(usize, usize)>,
    task: tokio::task::JoinHandle<()>,
}

/// Pool names seen by the watch, and those Ready.
#[derive(Default)]
struct Names {
    all: HashSet<String>,
    ready: HashSet<String>,
}

impl Names {
    fn put(&mut self, p: &ENIPool) {
        let name = p.name_any();
        if is_ready(p) {
            self.ready.insert(name.clone());
        } else {
            self.ready.remove(&name);
        }
        self.all.insert(name);
    }

    fn remove(&mut self, name: &str) {
        self.all.remove(name);
        self.ready.remove(name);
    }
}

impl ReadyWatch {
    fn start(client: kube::Client) -> Self {
        use futures::StreamExt;
        use kube::runtime::watcher::{self, Event};
        let (tx, counts) = tokio::sync::watch::channel((0, 0));
        let task = tokio::spawn(async move {
            // (all pools, Ready pools) by name; `fresh` collects a relist until InitDone.
            let (mut seen, mut fresh) = (Names::default(), Names::default());
            let mut events =
                watcher::watcher(Api::<ENIPool>::all(client), Default::default()).boxed();
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(Event::Apply(p)) => seen.put(&p),
                    Ok(Event::Delete(p)) => seen.remove(&p.name_any()),
                    Ok(Event::Init) => fresh = Names::default(),
                    Ok(Event::InitApply(p)) => fresh.put(&p),
                    Ok(Event::InitDone) => seen = std::mem::take(&mut fresh),
                    Err(e) => eprintln!("bench pool watch: {e}"),
                }
                tx.send_replace((seen.all.len(), seen.ready.len()));
            }
        });
        ReadyWatch { counts, task }
    }

    /// (pools seen, pools Ready).
    fn counts(&self) -> (usize, usize) {
        *self.counts.borrow()
    }
}

/// The operator's `--resync-seconds` in the memory phase.
const RESYNC_SECS: u64 = 300;

/// Operator RSS with `n` pools, until all are Ready and over one resync period after. Prints a
/// progress line every 30 s; gives up when not all are Ready after `limit`.
pub async fn memory(n: usize, limit: Duration) -> anyhow::Result<()> {
    let w = world().await?;
    let dir = std::env::temp_dir().join(format!("enipool-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    w.kube.write_kubeconfig(&kubeconfig)?;
    let t0 = Instant::now();
    for i in 0..n {
        w.join(&format!("node-{i}")).await?;
    }
    println!("{n} instances and Nodes created in {:.1}s", t0.elapsed().as_secs_f64());
    let exe = std::env::var("ENIPOOL_OPERATOR_BIN")
        .unwrap_or_else(|_| "target/release/enipool-operator".into());
    let watch = ReadyWatch::start(w.client.clone());
    let bench_cpu0 = cpu_secs("self");
    let mut child = tokio::process::Command::new(&exe)
        .args([
            "--cluster-name",
            "bench",
            "--ec2-endpoint",
            &w.sim.endpoint_url(),
            "--region",
            "us-west-2",
        ])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--lease-namespace",
            "kube-system",
            "--identity",
            "bench",
        ])
        // Budgets far above EC2's so the run measures memory, not the account's rate limits
        // (5,000 pools × ~4 describes at EC2's 20/s would take over 15 minutes by themselves).
        .args([
            "--mutate-qps",
            "1000",
            "--mutate-burst",
            "1000",
            "--describe-qps",
            "2000",
            "--describe-burst",
            "2000",
        ])
        .args([
            "--budget-share",
            "1",
            "--workers",
            "32",
            "--resync-seconds",
            &RESYNC_SECS.to_string(),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let start = Instant::now();
    let (mut rss_max, mut last_report) = (0, Duration::ZERO);
    let report = |w: &World, what: &str| {
        let (pools, ready) = watch.counts();
        let c = w.sim.counters();
        let describes: u64 =
            c.iter().filter(|(a, _)| a.starts_with("Describe")).map(|(_, c)| c.calls).sum();
        println!(
            "{what} {:>6.1}s: pools {pools}, Ready {ready}/{n}; RSS {:.1} MiB, VmHWM {:.1} MiB; \
             CPU s operator {:.0}, bench {:.0}; EC2 describes {describes}, mutating {}",
            start.elapsed().as_secs_f64(),
            mib(status_kib(pid, "VmRSS:").unwrap_or(0)),
            mib(status_kib(pid, "VmHWM:").unwrap_or(0)),
            cpu_secs(&pid.to_string()),
            cpu_secs("self") - bench_cpu0,
            w.mutating()
        );
    };
    // After all are Ready, keep sampling for one resync period stretched by its largest jitter
    // (+20 %) and 60 s more: the whole first resync round (the last pool made Ready is due at most
    // 1.2 periods later) and a GC run (every 300 s by default) fall inside it.
    let steady = Duration::from_secs(RESYNC_SECS * 6 / 5 + 60);
    let (mut ready_at, mut at_ready, mut steady_max) = (None, 0, 0);
    let settled = loop {
        let rss = status_kib(pid, "VmRSS:").unwrap_or(0);
        rss_max = rss_max.max(rss);
        let now = start.elapsed();
        if ready_at.is_none() && watch.counts().1 >= n {
            (ready_at, at_ready) = (Some(now), rss);
            report(&w, "all Ready");
        }
        if let Some(t) = ready_at {
            steady_max = steady_max.max(rss);
            if now >= t + steady {
                break rss;
            }
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("operator exited early: {status}");
        }
        if ready_at.is_none() && now >= limit {
            report(&w, "gave up at");
            anyhow::bail!("not all Ready within {}s", limit.as_secs());
        }
        if now >= last_report + Duration::from_secs(30) {
            last_report = now;
            report(&w, if ready_at.is_some() { "steady" } else { "progress" });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let took = ready_at.unwrap_or_default();
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    let lists =
        w.kube.audit().iter().filter(|r| r.verb == "list" && r.resource == "enipools").count();
    println!("pools: {n}; all Ready after {:.1}s", took.as_secs_f64());
    println!(
        "operator RSS: {:.1} MiB when all Ready; max {:.1} MiB over the {} s after; {:.1} MiB at \
         the end; peak during the run {:.1} MiB (VmHWM; sampled max {:.1} MiB)",
        mib(at_ready),
        mib(steady_max),
        steady.as_secs(),
        mib(settled),
        mib(hwm),
        mib(rss_max)
    );
    println!("ENIPool list requests (initial lists + relists, bench watch included): {lists}");
    child.kill().await?;
    watch.task.abort();
    Ok(())
}
