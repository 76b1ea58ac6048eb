//! Failure diagnostics: the EC2 simulator's view, the pools as kubectl shows them, the pods,
//! fabric errors and the tail of every process log. Synchronous, so `Drop` can use it too.

use super::Cluster;
use std::fmt::Write;

impl Cluster {
    /// A report of the whole platform's state.
    pub fn diagnose(&self) -> String {
        let mut out = String::new();
        if let Some(sim) = &self.sim {
            let st = sim.snapshot();
            let _ = writeln!(out, "--- EC2 (simulator) ---");
            for i in st.instances.values() {
                let _ = writeln!(
                    out,
                    "instance {} {} {:?} primary {} ({})",
                    i.id, i.instance_type, i.state, i.private_ip, i.primary_eni
                );
            }
            for e in st.enis.values() {
                let att = e.attachment.as_ref().map_or("available".to_string(), |a| {
                    format!("{} idx {} {}", a.instance_id, a.device_index, a.state.as_str())
                });
                let _ = writeln!(
                    out,
                    "eni {} {} [{att}] primary {} secondary {} prefixes {:?}",
                    e.id,
                    e.subnet_id,
                    e.primary_ip,
                    e.secondary.len(),
                    e.prefixes
                );
            }
            for s in st.subnets.values() {
                let _ = writeln!(out, "subnet {} {} available {}", s.id, s.cidr, s.available());
            }
            let counters: Vec<String> = sim
                .counters()
                .iter()
                .map(|(k, v)| format!("{k}={}/{}thr/{}err", v.calls, v.throttled, v.errors))
                .collect();
            let _ = writeln!(out, "calls: {}", counters.join(" "));
        }
        // On an external API: this run's pools (labelled with its policy) and policy only.
        let label = format!("{}={}", enipool_crds::POLICY_LABEL, self.names.policy);
        let (pools, policies): (Vec<&str>, Vec<&str>) = match self.names.run {
            Some(_) => (vec!["get", "enipools", "-l", &label], vec![&self.names.policy]),
            None => (vec!["get", "enipools"], vec![]),
        };
        let with = |extra: &[&str]| -> Vec<String> {
            pools.iter().chain(extra).map(|s| s.to_string()).collect()
        };
        let _ = writeln!(out, "--- kubectl {} -o wide ---", pools.join(" "));
        let _ = writeln!(out, "{}", kubectl_or_err(self, &with(&["-o", "wide"])));
        let _ = writeln!(out, "--- kubectl get enipoolpolicies ---");
        let mut args = vec!["get", "enipoolpolicies", "-o", "wide"];
        args.extend(policies);
        let _ = writeln!(out, "{}", kubectl_or_err(self, &args));
        let _ = writeln!(out, "--- pools (yaml, operations and agent) ---");
        let _ = writeln!(out, "{}", kubectl_or_err(self, &with(&["-o", "yaml"])));
        let _ = writeln!(out, "--- pods (kubelet) ---");
        for p in self.pods() {
            let _ = writeln!(out, "pod {} on {} ip {:?} netns {}", p.name, p.node, p.ip, p.netns);
        }
        let errs = self.fabric().hook_errors();
        if !errs.is_empty() {
            let _ = writeln!(out, "--- fabric hook errors ---\n{}", errs.join("\n"));
        }
        let exited = self.core.procs.exited();
        if !exited.is_empty() {
            let _ = writeln!(out, "--- exited processes: {exited:?}");
        }
        let _ = writeln!(out, "--- process logs (last 40 lines) ---");
        out.push_str(&self.core.procs.log_tails(40));
        for i in (0..self.spec.operator_replicas).filter(|_| !self.node_images.is_empty()) {
            let log = self.run_dir().join("logs").join(format!("operator-{i}.log"));
            let _ = writeln!(out, "----- container of the operator pod operator-{i} -----");
            out.push_str(&super::procs::tail(&log, 40));
        }
        for n in self.nodes() {
            // An agent pod's containers log where the kubelet's sandbox says (the run's logs).
            for c in
                ["agent", "sysctl-init", "install-cni"].iter().filter(|_| n.containerd.is_some())
            {
                let name = if *c == "agent" {
                    n.agent.clone()
                } else {
                    format!("enipool-agent-{}-{c}", n.name)
                };
                let log = self.run_dir().join("logs").join(format!("{name}.log"));
                if log.exists() {
                    let _ =
                        writeln!(out, "----- container {c} of the agent pod on {} -----", n.name);
                    out.push_str(&super::procs::tail(&log, 40));
                }
            }
            let log = n.dir.join("cni.log");
            if log.exists() {
                let _ = writeln!(out, "----- shim log {} -----", n.name);
                out.push_str(&super::procs::tail(&log, 15));
            }
        }
        out
    }
}

fn kubectl_or_err(c: &Cluster, args: &[impl AsRef<str>]) -> String {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let args = args.as_slice();
    match c.kubectl(args) {
        Ok(s) => {
            // Full YAML of many pools is long; keep the report readable.
            let lines: Vec<&str> = s.lines().collect();
            if lines.len() > 400 {
                format!("{}\n... ({} more lines)", lines[..400].join("\n"), lines.len() - 400)
            } else {
                s
            }
        }
        Err(e) => format!("({e:#})"),
    }
}
