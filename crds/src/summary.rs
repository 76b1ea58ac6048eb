//! The counts shown by `kubectl get enipools`, and the condition helper both writers use.

use crate::pool::{ENIPoolStatus, EniState, Summary};
use crate::settings::PREFIX_SIZE;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Compute the summary of a pool status.
///
/// Only ENIs at or above `first_interface_index` count, because only they hand out pod addresses.
/// `available` never goes negative: when the agent reports more in use than the operator sees, the
/// difference is an InconsistentState alarm, not a negative count.
pub fn summarize(status: &ENIPoolStatus) -> Summary {
    let first = status.effective.as_ref().map(|e| e.first_interface_index).unwrap_or(0);
    let max_enis = status.effective.as_ref().map(|e| e.capacity.max_enis).unwrap_or(0);
    let attached = status.enis.iter().filter(|e| e.state == EniState::Attached).count() as i32;
    let pod_enis = status.enis.iter().filter(|e| e.device_index >= first);
    let (ips, prefixes, ipv6) = pod_enis.fold((0i32, 0i32, 0i32), |(i, p, v), e| {
        (i + e.ips.len() as i32, p + e.prefixes.len() as i32, v + e.ipv6_prefixes.len() as i32)
    });
    // An IPv6 node holds more addresses in its /80 than it may run pods: what it can give pods is
    // its pod limit, once it has a prefix.
    let (allocated, prefixes) = match ipv6 {
        0 => (ips + prefixes * PREFIX_SIZE, prefixes),
        n => (status.effective.as_ref().map_or(0, |e| e.capacity.max_pod_ips), n),
    };
    let releasing = status
        .releasing
        .as_ref()
        .map(|r| r.ips.len() as i32 + r.prefixes.len() as i32 * PREFIX_SIZE)
        .unwrap_or(0);
    let agent = status.agent.as_ref();
    let in_use = agent.map(|a| a.in_use).unwrap_or(0);
    let cooling = agent.map(|a| a.cooling).unwrap_or(0);
    let offered_total = agent
        .and_then(|a| a.releasable.as_ref())
        .map(|r| r.ips.len() as i32 + r.prefixes.len() as i32 * PREFIX_SIZE)
        .unwrap_or(0);
    // Items being released were offered first; count each item once.
    let offered = (offered_total - releasing).max(0);
    let available = (allocated - in_use - cooling - releasing - offered).max(0);
    Summary {
        enis: format!("{attached}/{max_enis}"),
        allocated,
        in_use,
        available,
        releasing,
        offered,
        cooling,
        prefixes,
    }
}

/// Insert or update a condition, keeping `lastTransitionTime` when the status did not change (the
/// Kubernetes convention, so alerts on transitions do not fire on every write).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) {
    let status = if ok { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation,
            last_transition_time: now,
        }),
    }
}

/// Whether the condition of that type is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::IpFamily;
    use crate::pool::{AgentStatus, EniStatus, Releasable, Releasing};
    use crate::settings::{resolve, CapacitySource, InstanceLimits};

    fn eni(index: i32, ips: usize, prefixes: usize) -> EniStatus {
        EniStatus {
            id: format!("eni-{index}"),
            device_index: index,
            ips: (0..ips).map(|i| format!("10.0.{index}.{}", i + 10)).collect(),
            prefixes: (0..prefixes).map(|i| format!("10.1.{index}.{}/28", i * 16)).collect(),
            ..Default::default()
        }
    }

    fn status(enis: Vec<EniStatus>, agent: Option<AgentStatus>) -> ENIPoolStatus {
        let limits = InstanceLimits { max_enis: 3, ips_per_eni: 10 };
        ENIPoolStatus {
            effective: Some(resolve(IpFamily::IPv4, None, None, limits, CapacitySource::Static)),
            enis,
            agent,
            ..Default::default()
        }
    }

    /// (enis, agent report, releasing ips) -> (enis, allocated, inUse, available, releasing, offered)
    type Case =
        (Vec<EniStatus>, Option<AgentStatus>, usize, (&'static str, i32, i32, i32, i32, i32));

    #[test]
    fn counts_table() {
        let agent = |in_use, cooling, offered: usize| AgentStatus {
            epoch: 1,
            in_use,
            cooling,
            releasable: Some(Releasable {
                revision: 1,
                ips: (0..offered).map(|i| format!("10.0.0.{}", 100 + i)).collect(),
                prefixes: vec![],
            }),
            ..Default::default()
        };
        let cases: Vec<Case> = vec![
            (vec![], None, 0, ("0/3", 0, 0, 0, 0, 0)),
            (vec![eni(0, 5, 0)], None, 0, ("1/3", 5, 0, 5, 0, 0)),
            (vec![eni(0, 5, 0), eni(1, 9, 0)], Some(agent(3, 1, 0)), 0, ("2/3", 14, 3, 10, 0, 0)),
            (vec![eni(0, 0, 2)], Some(agent(4, 0, 0)), 0, ("1/3", 32, 4, 28, 0, 0)),
            (vec![eni(0, 9, 0)], Some(agent(2, 0, 3)), 0, ("1/3", 9, 2, 4, 0, 3)),
            (vec![eni(0, 9, 0)], Some(agent(2, 0, 3)), 2, ("1/3", 9, 2, 4, 2, 1)),
            // The agent reports more in use than EC2 holds: clamp, never negative.
            (vec![eni(0, 2, 0)], Some(agent(5, 0, 0)), 0, ("1/3", 2, 5, 0, 0, 0)),
        ];
        for (enis, agent, releasing, want) in cases {
            let mut s = status(enis, agent);
            if releasing > 0 {
                s.releasing = Some(Releasing {
                    revision: 1,
                    epoch: 1,
                    ips: (0..releasing).map(|i| format!("10.0.0.{}", 100 + i)).collect(),
                    prefixes: vec![],
                });
            }
            let got = summarize(&s);
            assert_eq!(
                (
                    got.enis.as_str(),
                    got.allocated,
                    got.in_use,
                    got.available,
                    got.releasing,
                    got.offered
                ),
                want
            );
        }
    }

    #[test]
    fn an_ipv6_node_shows_its_prefix_and_its_pod_limit() {
        let limits = InstanceLimits { max_enis: 3, ips_per_eni: 10 };
        let mut s = ENIPoolStatus {
            effective: Some(resolve(IpFamily::IPv6, None, None, limits, CapacitySource::Static)),
            enis: vec![eni(0, 0, 0)],
            agent: Some(AgentStatus { epoch: 1, in_use: 7, cooling: 1, ..Default::default() }),
            ..Default::default()
        };
        // No /80 yet: nothing a pod could get.
        let got = summarize(&s);
        assert_eq!((got.prefixes, got.allocated, got.available), (0, 0, 0));
        s.enis[0].ipv6_prefixes = vec!["2600:1f14:1:100:1::/80".into()];
        let got = summarize(&s);
        assert_eq!((got.prefixes, got.allocated, got.in_use, got.available), (1, 248, 7, 240));
    }

    #[test]
    fn primary_eni_excluded_when_first_interface_index_is_one() {
        let mut s = status(vec![eni(0, 5, 0), eni(1, 3, 0)], None);
        s.effective.as_mut().unwrap().first_interface_index = 1;
        assert_eq!(summarize(&s).allocated, 3);
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        use k8s_openapi::jiff::Timestamp;
        let t0 = Time(Timestamp::from_second(1_000).unwrap());
        let t1 = Time(Timestamp::from_second(2_000).unwrap());
        let mut cs = vec![];
        set_condition(&mut cs, "Ready", true, "Ok", "fine", Some(1), t0.clone());
        set_condition(&mut cs, "Ready", true, "Ok", "still fine", Some(2), t1.clone());
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, t0);
        assert_eq!(cs[0].message, "still fine");
        set_condition(&mut cs, "Ready", false, "SubnetExhausted", "no room", Some(2), t1.clone());
        assert_eq!(cs[0].last_transition_time, t1);
        assert!(!is_true(&cs, "Ready"));
    }
}
