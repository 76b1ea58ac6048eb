//! The pool's instance between rounds. DescribeInstances answers with what EC2 fixed at launch —
//! type, zone, VPC, subnet, primary ENI and address, none of which ever changes for an instance —
//! and with the instance's state, which does. A round reuses the last answer while it is younger
//! than [`STATE_MAX_AGE`]: the rounds one change sets off (a join, the agent's first reports, a
//! burst of pods) describe the instance once, while a resync, further apart, reads the state again.
//!
//! The answer is dropped, and the instance described again in the same round, when that round's
//! ENI describe does not show the primary ENI attached to the instance ([`shows_primary`]): the
//! instance terminated (its ENIs are deleted or detached then) or the answer does not fit it. A
//! deleted pool forgets its answer.

use crate::ec2::{Eni, Instance};
use std::time::{Duration, Instant};

/// How long an instance's state as read is believed. Shorter than the default resync period
/// (60 s), so every resync reads it again; longer than the rounds one change sets off, which then
/// share one DescribeInstances. A call made on a state this old for an instance just stopping or
/// shutting down succeeds with the instance's own ENIs or fails like any other, and a terminated
/// instance shows no primary ENI, which drops the answer at once.
pub const STATE_MAX_AGE: Duration = Duration::from_secs(30);

/// One DescribeInstances answer and when it came.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub instance: Instance,
    pub at: Instant,
}

/// The instance `reading` stands for at `now` without a describe: the pool's own instance, read
/// less than [`STATE_MAX_AGE`] ago. Pure.
pub fn reuse<'a>(reading: &'a Reading, instance_id: &str, now: Instant) -> Option<&'a Instance> {
    let fresh = now.saturating_duration_since(reading.at) < STATE_MAX_AGE;
    (fresh && reading.instance.id == instance_id).then_some(&reading.instance)
}

/// Whether the ENIs described for the instance show its primary ENI attached to it. An instance
/// keeps its primary ENI from launch to termination, so an answer without it means the instance
/// was not what the reused reading said. Pure.
pub fn shows_primary(inst: &Instance, enis: &[Eni]) -> bool {
    enis.iter().any(|e| {
        e.id == inst.primary_eni && e.attachment.as_ref().is_some_and(|a| a.instance_id == inst.id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec2::Attachment;

    fn inst(id: &str) -> Instance {
        Instance { id: id.into(), primary_eni: "eni-p".into(), ..Default::default() }
    }

    #[test]
    fn a_reading_stands_for_its_own_instance_until_it_is_too_old() {
        let t0 = Instant::now();
        let r = Reading { instance: inst("i-1"), at: t0 };
        assert_eq!(reuse(&r, "i-1", t0), Some(&r.instance));
        assert_eq!(
            reuse(&r, "i-1", t0 + STATE_MAX_AGE - Duration::from_millis(1)),
            Some(&r.instance)
        );
        assert_eq!(reuse(&r, "i-1", t0 + STATE_MAX_AGE), None, "the state is read again");
        assert_eq!(reuse(&r, "i-2", t0), None, "another instance");
    }

    #[test]
    fn the_primary_eni_must_be_attached_to_the_instance() {
        let eni = |id: &str, on: Option<&str>| Eni {
            id: id.into(),
            attachment: on.map(|i| Attachment { instance_id: i.into(), ..Default::default() }),
            ..Default::default()
        };
        let i = inst("i-1");
        assert!(shows_primary(&i, &[eni("eni-2", Some("i-1")), eni("eni-p", Some("i-1"))]));
        assert!(!shows_primary(&i, &[]), "terminated: its ENIs are gone");
        assert!(!shows_primary(&i, &[eni("eni-2", Some("i-1"))]));
        assert!(!shows_primary(&i, &[eni("eni-p", None)]), "detached");
        assert!(!shows_primary(&i, &[eni("eni-p", Some("i-9"))]));
    }
}
