//! The fabric's side of [`FabricHook`]: EC2 changes the simulator reports, mirrored into the
//! namespaces (node namespaces, ENI veths, neighbour entries, the source check set and the "IGW").
//! Split from `mod.rs` so the fabric's public API (build, accessors, teardown) reads apart from the
//! per-event plumbing; the registry types stay in `mod.rs`, which child modules can reach.

use super::nft::{pairs, NFT_BRIDGE, NFT_IP};
use super::{ipv6, new_netns, sh, Attachment, Eni, Fabric, Instance, State, PUBLIC_POOL};
use anyhow::{Context, Result};
use ec2sim::hooks::FabricHook;
use ipnet::Ipv6Net;
use std::net::{Ipv4Addr, Ipv6Addr};

impl Fabric {
    /// Runs a hook body, recording (and logging) its error: the simulator cannot receive it.
    pub(super) fn hook(&self, what: &str, f: impl FnOnce(&mut State) -> Result<()>) {
        let mut st = self.lock();
        if st.torn_down {
            return;
        }
        if let Err(e) = f(&mut st) {
            let msg = format!("{what}: {e:#}");
            tracing::error!(error = %msg, "fabric: hook failed");
            self.errors.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
        }
    }

    /// The bridge of a declared subnet.
    pub(super) fn bridge(&self, st: &State, subnet_id: &str) -> Result<String> {
        st.subnets
            .get(subnet_id)
            .map(|s| s.bridge.clone())
            .with_context(|| format!("subnet {subnet_id} was not declared with add_subnet"))
    }

    /// Once a primary ENI is attached and its primary IP is known, configures `eth0` like EC2's
    /// DHCP and publishes the instance to the "IGW" (public IP). Idempotent.
    fn configure_primary(&self, st: &mut State, eni_id: &str) -> Result<()> {
        let Some(eni) = st.enis.get(eni_id) else { return Ok(()) };
        let (Some(att), Some(primary)) = (&eni.attachment, eni.primary_ip) else { return Ok(()) };
        if att.device_index != 0 {
            return Ok(());
        }
        let subnet = st.subnets.get(&eni.subnet_id).context("subnet of the ENI")?;
        let (cidr, gw) = (subnet.cidr, subnet.gateway());
        let public = PUBLIC_POOL
            .hosts()
            .nth(st.next_public as usize - 1)
            .context("public IP pool exhausted")?;
        let inst = st.instances.get_mut(&att.instance_id).context("instance of the ENI")?;
        if inst.primary_ip == Some(primary) {
            return Ok(());
        }
        st.next_public += 1;
        let ns = inst.netns.clone();
        let addr = format!("{primary}/{}", cidr.prefix_len());
        sh::ip(&ns, &["addr", "replace", &addr, "dev", "eth0"])?;
        sh::ip(&ns, &["link", "set", "eth0", "up"])?;
        sh::ip(&ns, &["route", "replace", "default", "via", &gw.to_string(), "dev", "eth0"])?;
        sh::nft(
            &self.vpc_netns(),
            &format!(
                "add element {NFT_IP} primaries {{ {primary} }}\n\
                 add element {NFT_IP} public {{ {primary} : {public} }}\n"
            ),
        )?;
        inst.primary_ip = Some(primary);
        inst.public_ip = Some(public);
        Ok(())
    }

    /// Withdraws an instance's primary IP from the "IGW".
    fn unpublish(&self, inst: &Instance) -> Result<()> {
        let (Some(p), Some(public)) = (inst.primary_ip, inst.public_ip) else { return Ok(()) };
        sh::nft(
            &self.vpc_netns(),
            &format!(
                "delete element {NFT_IP} primaries {{ {p} }}\n\
                 delete element {NFT_IP} public {{ {p} : {public} }}\n"
            ),
        )
        .map(drop)
    }
}

/// The hook the EC2 simulator calls: EC2 changes mirrored into the namespaces. Errors cannot
/// reach the simulator; they are logged and kept for [`Fabric::hook_errors`].
impl FabricHook for Fabric {
    /// An instance was launched: its node namespace appears (`lo` up, forwarding on).
    fn instance_launched(&self, instance_id: &str, _subnet_id: &str) {
        self.hook(&format!("instance_launched {instance_id}"), |st| {
            if st.instances.contains_key(instance_id) {
                return Ok(());
            }
            let netns = format!("{}-n-{instance_id}", self.prefix);
            // Registered first, so teardown removes it even if configuring it fails.
            st.instances.insert(instance_id.to_string(), Instance::new(netns.clone()));
            new_netns(&netns)?;
            sh::sysctl(&netns, "ipv4/ip_forward", "1")?;
            ipv6::node_sysctls(&netns)
        });
    }

    /// An instance was terminated: its namespace (and its ENI links) disappear.
    fn instance_terminated(&self, instance_id: &str) {
        self.hook(&format!("instance_terminated {instance_id}"), |st| {
            let Some(inst) = st.instances.remove(instance_id) else { return Ok(()) };
            for eni in st.enis.values_mut() {
                if eni.attachment.as_ref().is_some_and(|a| a.instance_id == instance_id) {
                    eni.attachment = None;
                }
            }
            let res = self.unpublish(&inst);
            sh::delete_netns(&inst.netns).and(res)
        });
    }

    /// An ENI was attached: `eth<device_index>` with the ENI's MAC appears in the node, its peer on
    /// the subnet bridge. The primary ENI (index 0) is also configured as EC2's DHCP would.
    fn eni_attached(
        &self,
        instance_id: &str,
        eni_id: &str,
        mac: &str,
        device_index: u32,
        subnet_id: &str,
    ) {
        self.hook(&format!("eni_attached {eni_id} to {instance_id}"), |st| {
            let netns = st
                .instances
                .get(instance_id)
                .with_context(|| format!("unknown instance {instance_id}"))?
                .netns
                .clone();
            let bridge = self.bridge(st, subnet_id)?;
            let eni = st.enis.entry(eni_id.to_string()).or_insert_with(|| Eni::new(subnet_id));
            if eni.attachment.as_ref().is_some_and(|a| a.instance_id == instance_id) {
                return Ok(());
            }
            if let Some(old) = eni.attachment.take() {
                // Attached elsewhere without a detach: follow EC2, drop the old link.
                let _ = sh::ip(&self.vpc_netns(), &["link", "del", &old.port]);
            }
            let port = format!("eni{}", st.next_port);
            st.next_port += 1;
            let vpc = self.vpc_netns();
            let ifname = format!("eth{device_index}");
            // A leftover with the same name (re-attach at the same index) would make `add` fail.
            let _ = sh::ip(&netns, &["link", "del", &ifname]);
            sh::ip(
                &vpc,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", &ifname, "address", mac,
                    "netns", &netns,
                ],
            )?;
            ipv6::eni_link_sysctls(&netns, &ifname)?;
            // Registered before configuring, so a failure below still gets cleaned up on detach.
            let eni = st.enis.get_mut(eni_id).expect("inserted above");
            eni.attachment = Some(Attachment {
                instance_id: instance_id.to_string(),
                device_index,
                port: port.clone(),
            });
            sh::ip(&vpc, &["link", "set", &port, "alias", eni_id])?;
            sh::ip(&vpc, &["link", "set", &port, "master", &bridge])?;
            sh::run(&["bridge", "-n", &vpc, "link", "set", "dev", &port, "isolated", "on"])?;
            sh::ip(&vpc, &["link", "set", &port, "up"])?;
            self.configure_primary(st, eni_id)?;
            self.configure_primary6(st, eni_id)
        });
    }

    /// An ENI was detached: its link disappears from the node. Its addresses stay assigned (an
    /// available ENI keeps them) but reach nothing until it is attached again.
    fn eni_detached(&self, instance_id: &str, eni_id: &str, _mac: &str) {
        self.hook(&format!("eni_detached {eni_id} from {instance_id}"), |st| {
            let Some(eni) = st.enis.get_mut(eni_id) else { return Ok(()) };
            let Some(att) = eni.attachment.take() else { return Ok(()) };
            let mut res = sh::ip(&self.vpc_netns(), &["link", "del", &att.port]).map(drop);
            if att.device_index == 0 {
                if let Some(inst) = st.instances.get_mut(&att.instance_id) {
                    res = res.and(self.unpublish(inst));
                    inst.primary_ip = None;
                    inst.public_ip = None;
                    inst.primary_ip6 = None;
                    inst.ipv6_route = false;
                }
            }
            res
        });
    }

    /// Addresses now route to the ENI: permanent neighbour entries on the subnet bridge and
    /// (IP, MAC) pairs in the source check set.
    fn addresses_assigned(&self, eni_id: &str, mac: &str, subnet_id: &str, addrs: &[Ipv4Addr]) {
        self.hook(&format!("addresses_assigned {eni_id} {addrs:?}"), |st| {
            let bridge = self.bridge(st, subnet_id)?;
            let eni = st.enis.entry(eni_id.to_string()).or_insert_with(|| Eni::new(subnet_id));
            if eni.primary_ip.is_none() {
                eni.primary_ip = addrs.first().copied();
            }
            let vpc = self.vpc_netns();
            for a in addrs {
                sh::permanent_neighbour(&vpc, &a.to_string(), mac, &bridge)?;
                eni.addrs.insert(*a);
            }
            if !addrs.is_empty() {
                sh::nft(
                    &vpc,
                    &format!("add element {NFT_BRIDGE} owned {{ {} }}\n", pairs(mac, addrs)),
                )?;
            }
            self.configure_primary(st, eni_id)
        });
    }

    /// Addresses no longer route to the ENI: their neighbour entries and source pairs go.
    fn addresses_unassigned(&self, eni_id: &str, mac: &str, subnet_id: &str, addrs: &[Ipv4Addr]) {
        self.hook(&format!("addresses_unassigned {eni_id} {addrs:?}"), |st| {
            let bridge = self.bridge(st, subnet_id)?;
            let vpc = self.vpc_netns();
            let Some(eni) = st.enis.get_mut(eni_id) else { return Ok(()) };
            // Only what this fabric programmed (so a repeated call is a no-op).
            let gone: Vec<Ipv4Addr> =
                addrs.iter().copied().filter(|a| eni.addrs.remove(a)).collect();
            for a in &gone {
                sh::ip(&vpc, &["neigh", "del", &a.to_string(), "dev", &bridge])?;
            }
            if !gone.is_empty() {
                sh::nft(
                    &vpc,
                    &format!("delete element {NFT_BRIDGE} owned {{ {} }}\n", pairs(mac, &gone)),
                )?;
            }
            Ok(())
        });
    }

    /// IPv6 now routes to the ENI: see the `ipv6` module.
    fn ipv6_assigned(
        &self,
        eni_id: &str,
        mac: &str,
        subnet_id: &str,
        addrs: &[Ipv6Addr],
        prefixes: &[Ipv6Net],
    ) {
        self.hook(&format!("ipv6_assigned {eni_id} {addrs:?} {prefixes:?}"), |st| {
            self.assign6(st, eni_id, mac, subnet_id, addrs, prefixes)
        });
    }

    /// IPv6 no longer routes to the ENI: what `ipv6_assigned` added goes.
    fn ipv6_unassigned(
        &self,
        eni_id: &str,
        mac: &str,
        subnet_id: &str,
        addrs: &[Ipv6Addr],
        prefixes: &[Ipv6Net],
    ) {
        self.hook(&format!("ipv6_unassigned {eni_id} {addrs:?} {prefixes:?}"), |st| {
            self.unassign6(st, eni_id, mac, subnet_id, addrs, prefixes)
        });
    }
}
