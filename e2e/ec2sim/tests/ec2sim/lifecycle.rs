//! Time-dependent semantics: detach takes time, termination (DeleteOnTermination), fabric hooks.

use super::harness::*;
use aws_sdk_ec2::types::NetworkInterfaceAttachmentChanges;
use enipool_ec2sim::{FabricHook, HookEvent};
use ipnet::Ipv6Net;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn detach_takes_time_and_blocks_delete() {
    let e = env_with(Timing { detach: Duration::from_millis(400), ..instant() }).await;
    let (inst, _) = e.launch("m5.large", &e.subnet).await;
    let eni = e.create_eni(&e.subnet, 1).await;
    let att = e.attach(&eni, &inst, 1).await;
    let d = e.eni(&eni).await;
    assert_eq!(d.status().unwrap().as_str(), "in-use");
    assert_eq!(d.attachment().unwrap().status().unwrap().as_str(), "attached");
    e.ec2.detach_network_interface().attachment_id(&att).send().await.unwrap();
    let d = e.eni(&eni).await;
    assert_eq!(d.status().unwrap().as_str(), "detaching");
    assert_eq!(d.attachment().unwrap().status().unwrap().as_str(), "detaching");
    let r = e.ec2.delete_network_interface().network_interface_id(&eni).send().await;
    assert_eq!(code(r), ("InvalidNetworkInterface.InUse".into(), 400));
    // Repeating the detach while it is in progress is accepted.
    e.ec2.detach_network_interface().attachment_id(&att).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let d = e.eni(&eni).await;
    assert_eq!(d.status().unwrap().as_str(), "available");
    assert!(d.attachment().is_none());
    e.ec2.delete_network_interface().network_interface_id(&eni).send().await.unwrap();
}

#[tokio::test]
async fn attach_can_take_time() {
    let e = env_with(Timing { attach: Duration::from_millis(300), ..instant() }).await;
    let (inst, _) = e.launch("m5.large", &e.subnet).await;
    let eni = e.create_eni(&e.subnet, 0).await;
    e.attach(&eni, &inst, 1).await;
    assert_eq!(e.eni(&eni).await.status().unwrap().as_str(), "attaching");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(e.eni(&eni).await.status().unwrap().as_str(), "in-use");
}

#[tokio::test]
async fn termination_deletes_dot_enis_and_detaches_the_rest() {
    let e = env_with(Timing { terminate: Duration::from_millis(300), ..instant() }).await;
    let start = e.available_ips(&e.subnet).await;
    let (inst, primary) = e.launch_with("m5.xlarge", &e.subnet, 3, 0, true).await;
    let kept = e.create_eni(&e.subnet, 2).await;
    e.attach(&kept, &inst, 1).await;
    let doomed = e.create_eni(&e.subnet, 2).await;
    let att = e.attach(&doomed, &inst, 2).await;
    e.ec2
        .modify_network_interface_attribute()
        .network_interface_id(&doomed)
        .attachment(
            NetworkInterfaceAttachmentChanges::builder()
                .attachment_id(&att)
                .delete_on_termination(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(e.eni(&doomed).await.attachment().unwrap().delete_on_termination(), Some(true));
    assert_eq!(e.available_ips(&e.subnet).await, start - 4 - 3 - 3);
    let out = e.ec2.terminate_instances().instance_ids(&inst).send().await.unwrap();
    let ch = &out.terminating_instances()[0];
    assert_eq!(ch.previous_state().unwrap().name().unwrap().as_str(), "running");
    assert_eq!(ch.current_state().unwrap().name().unwrap().as_str(), "shutting-down");
    let state = |e: &Env| {
        let ec2 = e.ec2.clone();
        let inst = inst.clone();
        async move {
            let d = ec2.describe_instances().instance_ids(inst).send().await.unwrap();
            d.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str().to_string()
        }
    };
    assert_eq!(state(&e).await, "shutting-down");
    assert_eq!(
        e.eni(&kept).await.status().unwrap().as_str(),
        "in-use",
        "ENIs stay attached while shutting down"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&e).await, "terminated");
    let r = e.ec2.describe_network_interfaces().network_interface_ids(&primary).send().await;
    assert_eq!(code(r).0, "InvalidNetworkInterfaceID.NotFound", "primary ENI (DoT) deleted");
    let r = e.ec2.describe_network_interfaces().network_interface_ids(&doomed).send().await;
    assert_eq!(code(r).0, "InvalidNetworkInterfaceID.NotFound", "DoT set by modify is honoured");
    assert_eq!(e.eni(&kept).await.status().unwrap().as_str(), "available");
    assert_eq!(e.available_ips(&e.subnet).await, start - 3, "deleted ENIs freed their addresses");
    let r = e
        .ec2
        .attach_network_interface()
        .network_interface_id(&kept)
        .instance_id(&inst)
        .device_index(1)
        .send()
        .await;
    assert_eq!(code(r).0, "IncorrectInstanceState");
    // Terminating again reports terminated → terminated.
    let out = e.ec2.terminate_instances().instance_ids(&inst).send().await.unwrap();
    assert_eq!(out.terminating_instances()[0].current_state().unwrap().code(), Some(48));
}

#[derive(Default)]
struct Recorder(Mutex<Vec<HookEvent>>);

impl FabricHook for Recorder {
    fn instance_launched(&self, instance_id: &str, subnet_id: &str) {
        self.0.lock().unwrap().push(HookEvent::InstanceLaunched {
            instance_id: instance_id.into(),
            subnet_id: subnet_id.into(),
        });
    }
    fn instance_terminated(&self, instance_id: &str) {
        self.0
            .lock()
            .unwrap()
            .push(HookEvent::InstanceTerminated { instance_id: instance_id.into() });
    }
    fn eni_attached(
        &self,
        instance_id: &str,
        eni_id: &str,
        mac: &str,
        device_index: u32,
        subnet_id: &str,
    ) {
        let ev = HookEvent::EniAttached {
            instance_id: instance_id.into(),
            eni_id: eni_id.into(),
            mac: mac.into(),
            device_index,
            subnet_id: subnet_id.into(),
        };
        self.0.lock().unwrap().push(ev);
    }
    fn eni_detached(&self, instance_id: &str, eni_id: &str, mac: &str) {
        self.0.lock().unwrap().push(HookEvent::EniDetached {
            instance_id: instance_id.into(),
            eni_id: eni_id.into(),
            mac: mac.into(),
        });
    }
    fn addresses_assigned(&self, eni_id: &str, mac: &str, subnet_id: &str, addrs: &[Ipv4Addr]) {
        let ev = HookEvent::AddressesAssigned {
            eni_id: eni_id.into(),
            mac: mac.into(),
            subnet_id: subnet_id.into(),
            addrs: addrs.to_vec(),
        };
        self.0.lock().unwrap().push(ev);
    }
    fn addresses_unassigned(&self, eni_id: &str, mac: &str, subnet_id: &str, addrs: &[Ipv4Addr]) {
        let ev = HookEvent::AddressesUnassigned {
            eni_id: eni_id.into(),
            mac: mac.into(),
            subnet_id: subnet_id.into(),
            addrs: addrs.to_vec(),
        };
        self.0.lock().unwrap().push(ev);
    }
    fn ipv6_assigned(
        &self,
        eni_id: &str,
        mac: &str,
        subnet_id: &str,
        addrs: &[Ipv6Addr],
        prefixes: &[Ipv6Net],
    ) {
        let ev = HookEvent::Ipv6Assigned {
            eni_id: eni_id.into(),
            mac: mac.into(),
            subnet_id: subnet_id.into(),
            addrs: addrs.to_vec(),
            prefixes: prefixes.to_vec(),
        };
        self.0.lock().unwrap().push(ev);
    }
    fn ipv6_unassigned(
        &self,
        eni_id: &str,
        mac: &str,
        subnet_id: &str,
        addrs: &[Ipv6Addr],
        prefixes: &[Ipv6Net],
    ) {
        let ev = HookEvent::Ipv6Unassigned {
            eni_id: eni_id.into(),
            mac: mac.into(),
            subnet_id: subnet_id.into(),
            addrs: addrs.to_vec(),
            prefixes: prefixes.to_vec(),
        };
        self.0.lock().unwrap().push(ev);
    }
}

#[tokio::test]
async fn fabric_hook_sees_every_data_plane_change() {
    let e = env_with(Timing {
        detach: Duration::from_millis(100),
        terminate: Duration::from_millis(100),
        ..instant()
    })
    .await;
    let rec = Arc::new(Recorder::default());
    e.sim.set_fabric_hook(rec.clone());
    let take = || std::mem::take(&mut *rec.0.lock().unwrap());
    let (inst, primary) = e.launch("m5.large", &e.subnet).await;
    let ev = take();
    assert!(
        matches!(&ev[0], HookEvent::InstanceLaunched { instance_id, .. } if *instance_id == inst)
    );
    assert!(
        matches!(&ev[1], HookEvent::EniAttached { eni_id, device_index: 0, .. } if *eni_id == primary)
    );
    assert!(matches!(&ev[2], HookEvent::AddressesAssigned { addrs, .. } if addrs.len() == 1));
    let eni = e.create_eni(&e.subnet, 0).await;
    let mac = e.eni(&eni).await.mac_address().unwrap().to_string();
    let att = e.attach(&eni, &inst, 1).await;
    e.ec2
        .assign_private_ip_addresses()
        .network_interface_id(&eni)
        .ipv4_prefix_count(1)
        .send()
        .await
        .unwrap();
    let ev = take();
    assert!(matches!(&ev[1], HookEvent::EniAttached { mac: m, device_index: 1, .. } if *m == mac));
    assert!(
        matches!(&ev[2], HookEvent::AddressesAssigned { addrs, .. } if addrs.len() == 16),
        "every address of the /28"
    );
    e.ec2.detach_network_interface().attachment_id(&att).send().await.unwrap();
    assert!(take().is_empty(), "detach is not done yet");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        matches!(&take()[..], [HookEvent::EniDetached { eni_id, .. }] if *eni_id == eni),
        "the ticker completes the detach"
    );
    e.ec2.terminate_instances().instance_ids(&inst).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ev = take();
    assert!(matches!(ev.last(), Some(HookEvent::InstanceTerminated { .. })), "{ev:?}");
    assert!(ev
        .iter()
        .any(|x| matches!(x, HookEvent::AddressesUnassigned { eni_id, .. } if *eni_id == primary)));
}

#[tokio::test]
async fn fabric_hook_sees_ipv6_come_and_go() {
    let e = env_with(Timing { terminate: Duration::from_millis(100), ..instant() }).await;
    e.sim.associate_vpc_ipv6(&e.vpc).unwrap();
    e.sim.associate_subnet_ipv6(&e.subnet, 1).unwrap();
    let rec = Arc::new(Recorder::default());
    e.sim.set_fabric_hook(rec.clone());
    let take = || std::mem::take(&mut *rec.0.lock().unwrap());
    let (inst, primary) = e.launch("m5.large", &e.subnet).await;
    let d = e.eni(&primary).await;
    let node6: Ipv6Addr = d.ipv6_addresses()[0].ipv6_address().unwrap().parse().unwrap();
    let ev = take();
    assert!(matches!(&ev[2], HookEvent::AddressesAssigned { .. }), "{ev:?}");
    assert_eq!(
        ev[3..],
        [HookEvent::Ipv6Assigned {
            eni_id: primary.clone(),
            mac: d.mac_address().unwrap().into(),
            subnet_id: e.subnet.clone(),
            addrs: vec![node6],
            prefixes: vec![],
        }],
        "the node's address, after its IPv4"
    );
    let out = e
        .ec2
        .assign_ipv6_addresses()
        .network_interface_id(&primary)
        .ipv6_prefix_count(1)
        .send()
        .await
        .unwrap();
    let pfx: Ipv6Net = out.assigned_ipv6_prefixes()[0].parse().unwrap();
    assert!(matches!(&take()[..], [HookEvent::Ipv6Assigned { addrs, prefixes, .. }]
        if addrs.is_empty() && *prefixes == [pfx]));
    e.ec2
        .unassign_ipv6_addresses()
        .network_interface_id(&primary)
        .ipv6_prefixes(pfx.to_string())
        .send()
        .await
        .unwrap();
    assert!(matches!(&take()[..], [HookEvent::Ipv6Unassigned { addrs, prefixes, .. }]
        if addrs.is_empty() && *prefixes == [pfx]));
    e.ec2.terminate_instances().instance_ids(&inst).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ev = take();
    let v6 = ev.iter().position(|x| {
        matches!(x, HookEvent::Ipv6Unassigned { eni_id, addrs, .. }
            if *eni_id == primary && *addrs == [node6])
    });
    let done = ev.iter().position(|x| matches!(x, HookEvent::InstanceTerminated { .. }));
    assert!(v6.is_some() && v6 < done, "{ev:?}");
}
