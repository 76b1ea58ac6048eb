//! The EC2 work of a node in an IPv6 cluster: one /80 prefix on its primary ENI, assigned once
//! and kept for the node's life. A /80 holds far more addresses than a node may run pods, so
//! there is no warm pool, no second prefix while one is held, no secondary ENI and no release.

use super::unconfirmed::Change;
use super::{note, PoolRound, StatusSink};
use crate::ec2::Ec2ErrorKind;
use crate::error::Result;
use crate::journal::{self, MAX_OPERATIONS};
use crate::plan::Sized;
use enipool_crds::settings::EffectiveSettings;
use enipool_crds::OperationKind;

/// What an IPv6 node should hold: its pod limit's worth, which one /80 always covers.
pub fn target(eff: &EffectiveSettings) -> Sized {
    Sized { ips: eff.max_allocate.max(0), reason: "ipv6Prefix" }
}

impl PoolRound<'_> {
    /// Assigns the primary ENI a /80 when neither a describe nor an assign this operator made
    /// since shows one there. Returns the addresses still missing (the target while no prefix is
    /// held), for the conditions.
    pub(super) async fn ensure_ipv6_prefix(
        &mut self,
        sink: &dyn StatusSink,
        target: i32,
    ) -> Result<i32> {
        let Some(primary) = self.views.iter().find(|v| v.device_index == 0 && v.attached) else {
            return Ok(target);
        };
        if primary.ipv6_prefixes > 0 {
            return Ok(0);
        }
        let eni_id = primary.id.clone();
        // An assign a leader journaled and did not finish was settled by this round's replay
        // (a describe shows what EC2 did); the journal only has to have room for this one.
        if self.st.operations.len() >= MAX_OPERATIONS {
            return Ok(target);
        }
        let op =
            journal::new_op(OperationKind::AssignIPv6Prefixes, &eni_id, 1, vec![], None, &self.now);
        self.st.operations.push(op.clone());
        self.write(sink).await?; // the journal, before the call
        let result = self.ec2().assign_ipv6_prefixes(&eni_id, 1).await;
        self.st.operations.retain(|o| o.id != op.id);
        match result {
            Ok(prefixes) if !prefixes.is_empty() => {
                let shown: Vec<String> = prefixes.iter().map(ToString::to_string).collect();
                self.notes.push(note(
                    false,
                    "Allocated",
                    format!("assigned IPv6 prefix {} to {eni_id}", shown.join(", ")),
                ));
                let change = Change::AssignedIpv6Prefixes { eni_id, prefixes };
                self.shared.memory.made(&self.input.name, change);
                self.show();
                Ok(0)
            }
            Ok(_) => {
                // EC2 answered without a prefix: what it did is read back, not guessed.
                self.sync().await?;
                Ok(if self.has_ipv6_prefix() { 0 } else { target })
            }
            Err(e) => {
                self.round.note_error(&e);
                match e.kind {
                    Ec2ErrorKind::SubnetFull | Ec2ErrorKind::NoCidrBlocks => {
                        self.round.subnet_exhausted = true
                    }
                    Ec2ErrorKind::AddressLimit => self.round.capacity_exhausted = true,
                    _ => {}
                }
                // A call that failed may still have been done.
                if e.kind == Ec2ErrorKind::Transient {
                    self.sync().await?;
                }
                Ok(if self.has_ipv6_prefix() { 0 } else { target })
            }
        }
    }

    fn has_ipv6_prefix(&self) -> bool {
        self.views.iter().any(|v| v.device_index == 0 && v.ipv6_prefixes > 0)
    }
}
