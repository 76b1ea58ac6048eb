//! The per-pod requests: ADD, DEL, CHECK and GC, and the release of one allocation they share
//! with the leak reaper.

use super::Agent;
use crate::alloc;
use crate::error::{Error, Result};
use crate::hostnet::{self, PodConfig};
use crate::pool::PoolView;
use crate::store::{now_secs, AllocKey, Allocation, Origin};
use enipool_cni::proto::{AddResult, Attachment, Request};
use std::collections::BTreeSet;
use std::time::Instant;

/// The key a refused ADD is remembered under: the pod when the runtime names it, else the
/// container. Runtimes retry a failed sandbox with a NEW container id, so keying by container would
/// count one waiting pod once per retry and keep the demand after the pod got its address.
fn demand_key(req: &enipool_cni::proto::Request) -> String {
    match (req.args.get("K8S_POD_NAMESPACE"), req.args.get("K8S_POD_NAME")) {
        (Some(ns), Some(name)) if !name.is_empty() => format!("pod:{ns}/{name}"),
        _ => format!("container:{}", req.container_id),
    }
}

impl Agent {
    pub(super) fn add(&self, req: &Request) -> Result<AddResult> {
        if req.netns.is_empty() {
            return Err(Error::InvalidRequest("ADD needs a netns".into()));
        }
        let key = AllocKey::new(&req.container_id, &req.if_name);
        let view = self.view();
        let existing = self.allocation_for(req)?;
        let mtu = req.mtu.unwrap_or(self.cfg.mtu);
        if let Some(a) = existing {
            let a = self.record_network(a, &req.network)?;
            // Repeated ADD: same address; re-wire only if the wiring is gone, with the MTU this
            // request asks for (as a first ADD would).
            let mut pod = self.pod_config(&a, &view);
            pod.mtu = mtu;
            let wired = match self.host.check_pod(&pod) {
                Ok(w) => w,
                Err(_) => {
                    self.host.teardown_pod(&pod);
                    self.host.setup_pod(&pod)?
                }
            };
            return Ok(result(&a, wired, mtu));
        }
        let a = {
            let mut st = self.state.lock().unwrap();
            let now = now_secs();
            let Some(p) = alloc::pick(&view, &st, now) else {
                drop(st);
                self.refused.lock().unwrap().insert(demand_key(req), Instant::now());
                self.urgent.notify_one();
                return Err(Error::PoolEmpty);
            };
            crate::fault::point("add-after-pick");
            let a = Allocation {
                container_id: req.container_id.clone(),
                if_name: req.if_name.clone(),
                ip: p.ip,
                eni_id: p.eni_id,
                table: p.table,
                netns: req.netns.clone(),
                host_if: hostnet::host_veth_name(&req.netns, &req.if_name),
                pod_namespace: req.args.get("K8S_POD_NAMESPACE").cloned().unwrap_or_default(),
                pod_name: req.args.get("K8S_POD_NAME").cloned().unwrap_or_default(),
                created_at: now,
                epoch: st.epoch,
                network: req.network.clone(),
                origin: Origin::Cni,
                ipv6: view.ipv6_of(p.ip),
            };
            // Durable before the netns is touched (invariant: durable allocation before wiring,
            // docs/design.md).
            self.store.add(&mut st, a.clone())?;
            a
        };
        crate::fault::point("add-after-commit");
        self.refused.lock().unwrap().remove(&demand_key(req));
        let mut pod = self.pod_config(&a, &view);
        pod.mtu = mtu;
        match self.host.setup_pod(&pod) {
            Ok(wired) => {
                crate::fault::point("add-after-wire");
                tracing::info!(container = %a.container_id, pod = %format!("{}/{}", a.pod_namespace, a.pod_name), ip = %a.ip, eni = %a.eni_id, "ADD: pod wired");
                self.update_gauges();
                self.changed.notify_one();
                self.announce(&a);
                Ok(result(&a, wired, mtu))
            }
            Err(e) => {
                for te in self.host.teardown_pod(&pod) {
                    tracing::warn!(error = &te as &dyn std::error::Error, "rollback teardown");
                }
                // Never served traffic: free at once, no cooldown.
                let mut st = self.state.lock().unwrap();
                self.store.remove(&mut st, &key, 0)?;
                Err(e.into())
            }
        }
    }

    pub(super) fn del(&self, req: &Request) -> Result<()> {
        let view = self.view();
        let existing = self.allocation_for(req)?;
        let Some(a) = existing else {
            // Unknown container: success (CNI DEL is idempotent). Clean a stray veth if we can name it.
            if !req.netns.is_empty() {
                let host_if = hostnet::host_veth_name(&req.netns, &req.if_name);
                if self.host.host_links().map(|l| l.contains(&host_if)).unwrap_or(false) {
                    let pod = PodConfig {
                        netns: req.netns.clone(),
                        if_name: req.if_name.clone(),
                        host_if,
                        ip: std::net::Ipv4Addr::UNSPECIFIED,
                        ipv6: None,
                        table: hostnet::MAIN_TABLE,
                        from_rule_dsts: Vec::new(),
                        mtu: self.cfg.mtu,
                    };
                    self.host.teardown_pod(&pod);
                }
            }
            return Ok(());
        };
        self.release(&a, &view)?;
        tracing::info!(container = %a.container_id, pod = %format!("{}/{}", a.pod_namespace, a.pod_name), ip = %a.ip, "DEL: address freed");
        Ok(())
    }

    /// Tear down and free one allocation (DEL, GC, leak). Teardown is best effort; the address
    /// cools for the pool's cooldown before reuse.
    pub(super) fn release(&self, a: &Allocation, view: &PoolView) -> Result<()> {
        for e in self.host.teardown_pod(&self.pod_config(a, view)) {
            tracing::warn!(container = %a.container_id, error = &e as &dyn std::error::Error, "teardown (continuing)");
        }
        crate::fault::point("del-after-teardown");
        let mut st = self.state.lock().unwrap();
        self.store.remove(&mut st, &a.key(), now_secs() + view.cooldown_seconds)?;
        drop(st);
        crate::fault::point("del-after-commit");
        self.leaks.lock().unwrap().remove(&a.key());
        self.update_gauges();
        self.changed.notify_one();
        Ok(())
    }

    /// Record the network of an allocation made before networks were recorded, when a repeated
    /// ADD names it; from then on its network's GC can judge it.
    fn record_network(&self, a: Allocation, network: &str) -> Result<Allocation> {
        if !a.network.is_empty() || network.is_empty() {
            return Ok(a);
        }
        let mut st = self.state.lock().unwrap();
        let recorded = Allocation { network: network.to_string(), ..a };
        self.store.replace(&mut st, &recorded.key(), recorded.clone())?;
        Ok(recorded)
    }

    pub(super) fn check(&self, req: &Request) -> Result<AddResult> {
        let a = self.allocation_for(req)?;
        let a = a.ok_or_else(|| Error::UnknownContainer(req.container_id.clone()))?;
        let view = self.view();
        let wired = self.host.check_pod(&self.pod_config(&a, &view))?;
        Ok(result(&a, wired, req.mtu.unwrap_or(self.cfg.mtu)))
    }

    /// GC of `network`: release its allocations the runtime's `valid` list does not name. Only
    /// with both: another network's GC (a Multus delegate, a second conflist) must not touch
    /// ours, and a runtime that sent no list has not said that anything is stale.
    pub(super) fn gc(&self, network: &str, valid: Option<&[Attachment]>) -> Result<u32> {
        if network.is_empty() {
            return Err(Error::InvalidRequest(
                "GC needs the network name (the shim predates GC scoping: upgrade it)".into(),
            ));
        }
        let Some(valid) = valid else {
            return Err(Error::InvalidRequest(format!(
                "GC of network {network:?} without {:?}: nothing released",
                enipool_cni::config::VALID_ATTACHMENTS
            )));
        };
        let valid: BTreeSet<AllocKey> =
            valid.iter().map(|a| AllocKey::new(&a.container_id, &a.if_name)).collect();
        let stale: Vec<Allocation> = self
            .state
            .lock()
            .unwrap()
            .allocations
            .values()
            // A record rebuilt from the host names no container the runtime could list; one
            // without a network predates its recording (a later ADD or DEL settles it).
            .filter(|a| a.origin == Origin::Cni && a.network == network)
            .filter(|a| !valid.contains(&a.key()))
            .cloned()
            .collect();
        let view = self.view();
        let mut n = 0;
        for a in stale {
            self.with_container_lock(&a.container_id, || {
                // Re-check under the container lock: an ADD may have raced us.
                if self.state.lock().unwrap().allocations.get(&a.key()) == Some(&a) {
                    self.release(&a, &view)?;
                    n += 1;
                }
                Ok::<_, Error>(())
            })?;
        }
        Ok(n)
    }
}

fn result(a: &Allocation, w: hostnet::PodWired, mtu: u32) -> AddResult {
    AddResult {
        ip: a.ip,
        gateway: hostnet::POD_GATEWAY,
        host_if_name: a.host_if.clone(),
        host_mac: w.host_mac,
        pod_if_name: a.if_name.clone(),
        pod_mac: w.pod_mac,
        eni_id: a.eni_id.clone(),
        mtu,
        ipv6: a.ipv6,
    }
}
