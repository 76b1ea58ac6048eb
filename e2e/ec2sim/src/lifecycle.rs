//! Instance lifecycle (RunInstances, TerminateInstances) and the timed transitions (attach,
//! detach, termination finishing), kept apart from the ENI operations in `ops.rs`.

use super::hooks::HookEvent;
use super::ipv6::Ipv6AssignReq;
use super::limits;
use super::ops::{attached_event, finish_detach, RunReq};
use super::state::*;
use super::Error;
use std::time::Instant;

type Events = Vec<HookEvent>;

impl State {
    /// RunInstances: `count` instances, each with a primary ENI attached at index 0; all or nothing.
    pub fn run_instances(
        &mut self,
        req: &RunReq,
        ev: &mut Events,
    ) -> Result<(String, Vec<String>), Error> {
        let lim = limits::lookup(&req.instance_type).ok_or_else(|| {
            Error::api(
                "InvalidParameterValue",
                format!("Invalid value '{}' for InstanceType.", req.instance_type),
            )
        })?;
        if req.subnet_id.is_empty() {
            return Err(Error::api(
                "MissingParameter",
                "The request must contain the parameter SubnetId",
            ));
        }
        if req.count == 0 {
            return Err(Error::api("InvalidParameterValue", "MaxCount must be greater than 0."));
        }
        if req.private_ip.is_some() && req.count > 1 {
            return Err(Error::api(
                "InvalidParameterCombination",
                "PrivateIpAddress requires a count of 1.",
            ));
        }
        if req.secondary_count > 0 && req.prefix_count > 0 {
            return Err(Error::api(
                "InvalidParameterCombination",
                "Ipv4PrefixCount cannot be combined with SecondaryPrivateIpAddressCount.",
            ));
        }
        if 1 + req.secondary_count + req.prefix_count > lim.ipv4_per_eni {
            return Err(Error::api(
                "PrivateIpAddressLimitExceeded",
                "Number of private addresses will exceed limit.",
            ));
        }
        // Trial run on a copy: the launch either places every instance or changes nothing.
        let mut trial = self.clone();
        let mut trial_ev = Vec::new();
        let reservation = trial.new_id("r");
        let mut ids = Vec::new();
        for _ in 0..req.count {
            ids.push(trial.launch_one(req, &reservation, &mut trial_ev)?);
        }
        *self = trial;
        ev.extend(trial_ev);
        Ok((reservation, ids))
    }

    fn launch_one(
        &mut self,
        req: &RunReq,
        reservation: &str,
        ev: &mut Events,
    ) -> Result<String, Error> {
        let eni_req = super::ops::CreateEniReq {
            subnet_id: req.subnet_id.clone(),
            groups: req.groups.clone(),
            description: "Primary network interface".into(),
            primary_ip: req.private_ip,
            secondary_count: (req.secondary_count > 0).then_some(req.secondary_count),
            prefix_count: (req.prefix_count > 0).then_some(req.prefix_count),
            tags: req.eni_tags.clone(),
            ..Default::default()
        };
        let mut eni_ev = Vec::new();
        let eni_id = self.create_eni(&eni_req, &mut eni_ev)?;
        if self.subnets.get(&req.subnet_id).is_some_and(|s| s.ipv6.is_some()) {
            // An IPv6 node (EKS's IPv6 mode) has one address of the subnet on its primary ENI.
            let one = Ipv6AssignReq { addr_count: Some(1), ..Default::default() };
            self.assign_ipv6(&eni_id, &one, &mut eni_ev)?;
        }
        let id = self.new_id("i");
        let att_id = self.new_id("eni-attach");
        let now = now_rfc3339();
        let eni = self.enis.get_mut(&eni_id).expect("just created");
        eni.attachment = Some(Attachment {
            id: att_id,
            instance_id: id.clone(),
            device_index: 0,
            state: AttachState::Attached,
            delete_on_termination: req.delete_on_termination,
            attach_time: now.clone(),
        });
        let inst = Instance {
            id: id.clone(),
            reservation_id: reservation.into(),
            instance_type: req.instance_type.clone(),
            image_id: req.image_id.clone(),
            az: eni.az.clone(),
            subnet_id: eni.subnet_id.clone(),
            vpc_id: eni.vpc_id.clone(),
            state: InstanceState::Running,
            primary_eni: eni_id.clone(),
            private_ip: eni.primary_ip,
            tags: req.tags.clone(),
            launch_time: now,
            client_token: None,
        };
        ev.push(HookEvent::InstanceLaunched {
            instance_id: id.clone(),
            subnet_id: inst.subnet_id.clone(),
        });
        ev.push(attached_event(eni));
        ev.extend(eni_ev);
        self.instances.insert(id.clone(), inst);
        Ok(id)
    }

    /// TerminateInstances: returns (id, previous state, current state) per instance.
    pub fn terminate(
        &mut self,
        ids: &[String],
        now: Instant,
        ev: &mut Events,
    ) -> Result<Vec<(String, InstanceState, InstanceState)>, Error> {
        if ids.is_empty() {
            return Err(Error::api(
                "MissingParameter",
                "The request must contain the parameter InstanceId",
            ));
        }
        for id in ids {
            self.instance(id)?;
        }
        let mut out = Vec::new();
        for id in ids {
            let prev = self.instances[id].state;
            if prev == InstanceState::Running {
                self.instances.get_mut(id).expect("checked").state = InstanceState::ShuttingDown;
                if self.timing.terminate.is_zero() {
                    self.finish_terminate(id, ev);
                } else {
                    self.timers.push((
                        now + self.timing.terminate,
                        Timer::TerminateDone { instance: id.clone() },
                    ));
                }
            }
            out.push((id.clone(), prev, self.instances[id].state));
        }
        Ok(out)
    }

    /// Termination done: ENIs with DeleteOnTermination are deleted, the others detached.
    fn finish_terminate(&mut self, instance_id: &str, ev: &mut Events) {
        let enis: Vec<(String, bool)> = self
            .instance_enis(instance_id)
            .map(|e| (e.id.clone(), e.attachment.as_ref().is_some_and(|a| a.delete_on_termination)))
            .collect();
        for (eni_id, dot) in enis {
            let eni = self.enis.get_mut(&eni_id).expect("listed");
            finish_detach(eni, ev);
            if dot {
                self.remove_eni(&eni_id, ev);
            }
        }
        if let Some(i) = self.instances.get_mut(instance_id) {
            i.state = InstanceState::Terminated;
        }
        ev.push(HookEvent::InstanceTerminated { instance_id: instance_id.into() });
    }

    /// Applies every transition due at `now`. Returns whether anything changed.
    pub fn advance(&mut self, now: Instant, ev: &mut Events) -> bool {
        let (due, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.timers).into_iter().partition(|(t, _)| *t <= now);
        self.timers = rest;
        let changed = !due.is_empty();
        let mut due = due;
        due.sort_by_key(|(t, _)| *t);
        for (_, timer) in due {
            match timer {
                Timer::AttachDone { eni, attachment } => {
                    if let Some(e) = self.enis.get_mut(&eni) {
                        if let Some(a) = e
                            .attachment
                            .as_mut()
                            .filter(|a| a.id == attachment && a.state == AttachState::Attaching)
                        {
                            a.state = AttachState::Attached;
                            ev.push(attached_event(e));
                        }
                    }
                }
                Timer::DetachDone { eni, attachment } => {
                    if let Some(e) = self.enis.get_mut(&eni) {
                        if e.attachment.as_ref().is_some_and(|a| a.id == attachment) {
                            finish_detach(e, ev);
                        }
                    }
                }
                Timer::TerminateDone { instance } => {
                    if self
                        .instances
                        .get(&instance)
                        .is_some_and(|i| i.state == InstanceState::ShuttingDown)
                    {
                        self.finish_terminate(&instance, ev);
                    }
                }
            }
        }
        changed
    }
}
