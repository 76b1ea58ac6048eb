//! Programming the host from a pool view: the node-wide wiring (sysctls, fwmark rule, the
//! `ip enipool` nftables table) and every attached secondary ENI (link by MAC, MTU, up, table
//! device index + 1, rp_filter loose). One code path for the ENIPool watch, the restart reconcile
//! and the tests: re-running it on an already programmed host changes nothing.

use crate::agent::Agent;
use crate::error::{Error, Result};
use crate::hostnet::drift::{self, Missing};
use crate::hostnet::{EniConfig, HostNet, NodeConfig};
use crate::pool::PoolView;
use crate::store::now_secs;
use enipool_crds::ENIPoolStatus;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Node-wide settings that do not come from the ENIPool (flags).
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    /// MTU of secondary ENIs.
    pub mtu: u32,
    pub snat_exclude: Vec<Ipv4Net>,
    /// SNAT done outside the node.
    pub external_snat: bool,
    /// Source-port selection of the SNAT rule.
    pub snat_ports: crate::hostnet::SnatPorts,
    /// IPv6 clusters: the pods' node-local IPv4 range (default
    /// [`crate::hostnet::IPV4_EGRESS_DEFAULT`]).
    pub ipv4_egress: Option<Ipv4Net>,
}

impl HostSettings {
    /// The egress range a pool of `view`'s family uses: only IPv6 clusters have one.
    fn egress_for(&self, view: &PoolView) -> Option<Ipv4Net> {
        (view.ip_family == enipool_crds::IpFamily::IPv6)
            .then(|| self.ipv4_egress.unwrap_or(crate::hostnet::IPV4_EGRESS_DEFAULT))
    }
}

/// What has been programmed so far (kept across pool updates so unchanged ENIs are not redone).
#[derive(Debug, Default)]
pub struct Programmer {
    settings: HostSettings,
    node: Option<NodeConfig>,
    ready: BTreeSet<String>,
    /// The secondary ENIs programmed, as programmed: what to remove when one leaves the pool.
    programmed: BTreeMap<String, EniConfig>,
    /// The nftables table as listed right after it was applied: a repair compares with it.
    nft_applied: Option<String>,
}

/// What one repair put back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    /// Node-wide state (fwmark rule, nftables table) re-applied: 0 or 1.
    pub node: usize,
    pub enis: usize,
    /// Pods whose host side was re-programmed.
    pub pods: usize,
}

impl Programmer {
    /// A programmer that has done nothing yet (a fresh start re-programs everything).
    pub fn new(settings: HostSettings) -> Programmer {
        Programmer {
            settings,
            node: None,
            ready: BTreeSet::new(),
            programmed: BTreeMap::new(),
            nft_applied: None,
        }
    }

    /// ENIs programmed on this host.
    pub fn ready(&self) -> &BTreeSet<String> {
        &self.ready
    }

    /// Program what `view` needs and is not programmed yet; returns the ENIs ready now. Blocking
    /// (netlink, nft): call from a blocking thread. `fallback_primary_ip` (the Node's InternalIP)
    /// is used when the ENIPool does not name the node's primary IP yet.
    pub fn apply(
        &mut self,
        host: &dyn HostNet,
        view: &PoolView,
        fallback_primary_ip: Option<Ipv4Addr>,
    ) -> &BTreeSet<String> {
        if let Some(primary_ip) = view.node_primary_ip.or(fallback_primary_ip) {
            let want = NodeConfig {
                primary_mac: view.enis.iter().find(|e| e.device_index == 0).map(|e| e.mac.clone()),
                primary_ip,
                vpc_cidrs: view.vpc_cidrs.clone(),
                snat_exclude: self.settings.snat_exclude.clone(),
                external_snat: self.settings.external_snat,
                snat_ports: self.settings.snat_ports,
                ipv4_egress: self.settings.egress_for(view),
            };
            if self.node.as_ref() != Some(&want) {
                match host.setup_node(&want) {
                    Ok(()) => {
                        tracing::info!(primary_ip = %want.primary_ip, vpc_cidrs = ?want.vpc_cidrs, external_snat = want.external_snat, "node networking programmed");
                        self.node = Some(want);
                        self.nft_applied = host.nft_table().ok().flatten();
                    }
                    Err(e) => tracing::error!(
                        error = &e as &dyn std::error::Error,
                        "programming node networking"
                    ),
                }
            }
        } else {
            tracing::warn!("the ENIPool does not name the node's primary IP yet: node networking (SNAT) not programmed");
        }
        // The primary ENI is the node's own link (never reconfigured); secondaries get a table.
        self.ready.retain(|id| view.enis.iter().any(|e| e.id == *id && e.attached));
        // An ENI that left the pool (detached) leaves its `from <its primary IP> lookup <table>`
        // rule and table behind; once EC2 hands that address to a pod, the pod's traffic would
        // take the stale table. Remove them with the ENI.
        let gone: Vec<String> =
            self.programmed.keys().filter(|id| !self.ready.contains(*id)).cloned().collect();
        for id in gone {
            let Some(ec) = self.programmed.remove(&id) else { continue };
            let errs = host.teardown_eni(&ec);
            if errs.is_empty() {
                tracing::info!(eni = %id, table = ec.table, "ENI left the pool: its host state removed");
            } else {
                tracing::warn!(eni = %id, errors = ?errs, "removing host state of an ENI that left the pool");
            }
        }
        let todo: Vec<_> = view
            .enis
            .iter()
            .filter(|e| e.attached && !self.ready.contains(&e.id))
            .cloned()
            .collect();
        for e in &todo {
            if e.device_index == 0 {
                if self.node.is_some() {
                    self.ready.insert(e.id.clone());
                }
                continue;
            }
            let (Some(subnet), Some(gateway)) = (e.subnet, e.gateway()) else {
                tracing::warn!(eni = %e.id, "ENI without subnet CIDR: not programmed");
                continue;
            };
            let ec = EniConfig {
                id: e.id.clone(),
                mac: e.mac.clone(),
                table: e.table(),
                subnet,
                gateway,
                primary_ip: e.primary_ip,
                mtu: self.settings.mtu,
            };
            match host.setup_eni(&ec) {
                Ok(()) => {
                    tracing::info!(eni = %e.id, mac = %e.mac, table = e.table(), "ENI programmed");
                    self.ready.insert(e.id.clone());
                    self.programmed.insert(e.id.clone(), ec);
                }
                Err(err) => {
                    tracing::warn!(eni = %e.id, mac = %e.mac, error = &err as &dyn std::error::Error, "ENI not programmed yet")
                }
            }
        }
        &self.ready
    }

    /// Compare the host with what has been programmed and put back what something else removed:
    /// the node-wide state, each programmed secondary ENI, and the host side of every pod the
    /// agent holds ([`Agent::repair_pods`]). Blocking. Every repair is logged with what was
    /// missing and counted.
    pub fn repair(&mut self, agent: &Agent) -> Result<Repaired> {
        let host = agent.host().clone();
        let taken = now_secs();
        let snap = host.snapshot().map_err(Error::HostNet)?;
        let mut done = Repaired::default();
        let names = |m: Vec<Missing>| m.iter().map(ToString::to_string).collect::<Vec<_>>();
        if let Some(node) = self.node.clone() {
            let missing = drift::node_missing(&node, self.nft_applied.as_deref(), &snap);
            if !missing.is_empty() {
                let missing = names(missing);
                match host.setup_node(&node) {
                    Ok(()) => {
                        done.node = 1;
                        agent.metrics().host_repaired("node");
                        self.nft_applied = host.nft_table().ok().flatten();
                        tracing::warn!(?missing, "node host state was missing; put back");
                    }
                    Err(e) => tracing::error!(
                        ?missing,
                        error = &e as &dyn std::error::Error,
                        "putting back missing node host state"
                    ),
                }
            }
        }
        for ec in self.programmed.values() {
            let missing = drift::eni_missing(ec, &snap);
            if missing.is_empty() {
                continue;
            }
            let missing = names(missing);
            match host.setup_eni(ec) {
                Ok(()) => {
                    done.enis += 1;
                    agent.metrics().host_repaired("eni");
                    tracing::warn!(eni = %ec.id, ?missing, "ENI host state was missing; put back");
                }
                Err(e) => {
                    tracing::error!(eni = %ec.id, ?missing, error = &e as &dyn std::error::Error, "putting back missing ENI host state")
                }
            }
        }
        done.pods = agent.repair_pods(&snap, taken);
        Ok(done)
    }

    /// Program the host for `view` and hand the agent the view with ENI readiness filled in.
    pub fn apply_to(&mut self, agent: &Agent, view: &PoolView, fallback: Option<Ipv4Addr>) {
        let v = self.programmed(agent, view, fallback);
        agent.set_view(v);
    }

    /// Program the host for `view`; the view with ENI readiness filled in.
    fn programmed(
        &mut self,
        agent: &Agent,
        view: &PoolView,
        fallback: Option<Ipv4Addr>,
    ) -> PoolView {
        let ready = self.apply(agent.host().as_ref(), view, fallback).clone();
        let mut v = view.clone();
        for e in &mut v.enis {
            e.ready = ready.contains(&e.id);
        }
        v.ipv4_egress = self.settings.egress_for(view);
        v
    }

    /// Check pool `pool`'s status (`pool_uid` tells a pool created again under the same name from
    /// the one before), then program the host for it and hand the agent the view. A status that
    /// fails the check changes nothing, on the host or in the agent (it keeps the view it had);
    /// the refusal is logged with the offending value and counted.
    pub fn apply_status(
        &mut self,
        agent: &Agent,
        pool: &str,
        pool_uid: &str,
        status: &ENIPoolStatus,
        fallback: Option<Ipv4Addr>,
    ) -> Result<()> {
        let view = match PoolView::from_status(status, &BTreeSet::new()) {
            Ok(v) => v,
            Err(bad) => {
                agent.metrics().pool_status_refused();
                tracing::error!(
                    pool,
                    revision = status.revision,
                    eni = bad.eni.as_deref().unwrap_or(""),
                    field = bad.field,
                    value = %bad.value,
                    problem = %bad.problem,
                    "ENIPool status refused: {bad}; keeping the pool view the agent had"
                );
                return Err(Error::InvalidPool(bad));
            }
        };
        let v = self.programmed(agent, &view, fallback);
        agent.set_pool_view(pool_uid, v);
        Ok(())
    }
}
