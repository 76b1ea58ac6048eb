//! What a failed test prints before teardown (from `Drop for Env`).

use super::probes::http_get;
use super::Env;
use cluster::procs;

impl Env {
    /// Everything useful after a failure: per node, agent log, host rules and routes, nftables,
    /// allocations, ENIs, pool status; the fabric's hook errors.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "VPC {} subnets {:?}; fabric hook errors: {:?}\n",
            self.vpc_id,
            self.subnet_ids,
            self.fabric().hook_errors()
        ));
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for n in &nodes {
            out.push_str(&format!(
                "===== node {} ({}, {}, netns {}, primary {}) =====\n",
                n.label, n.name, n.instance_id, n.netns, n.primary_ip
            ));
            for argv in [
                &["ip", "-br", "link"][..],
                &["ip", "-4", "-br", "addr"],
                &["ip", "rule"],
                &["ip", "-4", "route", "show", "table", "all"],
                &["nft", "list", "table", "ip", "enipool"],
                &["iptables-save", "-t", "nat"],
            ] {
                let o = fabric::exec_in(&n.netns, argv)
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_else(|e| format!("{e:#}"));
                out.push_str(&format!("--- {}\n{o}", argv.join(" ")));
            }
            if let Some(a) = &n.agent {
                for (addr, path) in [
                    (a.introspection, "/v1/allocations"),
                    (a.introspection, "/v1/enis"),
                    (a.metrics, "/readyz"),
                ] {
                    let r = http_get(addr, path)
                        .map(|(c, b)| format!("{c} {b}"))
                        .unwrap_or_else(|e| format!("{e:#}"));
                    out.push_str(&format!("--- GET {path}\n{r}\n"));
                }
                if let Some(log) = self.base.procs.log_path(&a.proc_name) {
                    out.push_str(&format!(
                        "--- agent log {}\n{}",
                        log.display(),
                        procs::tail(&log, 80)
                    ));
                }
            }
            out.push_str(&format!("--- cni.log\n{}", procs::tail(&n.dir.join("cni.log"), 30)));
            match self.pool(n) {
                Ok(p) => out.push_str(&format!(
                    "--- ENIPool status\n{}\n",
                    serde_json::to_string_pretty(&p["status"]).unwrap_or_default()
                )),
                Err(e) => out.push_str(&format!("--- ENIPool: {e:#}\n")),
            }
        }
        out
    }
}
