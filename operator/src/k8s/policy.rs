//! ENIPoolPolicy status (leader only, server-side apply under the operator's field manager): how
//! many nodes resolved to the policy, whether its spec is usable (`Valid`), whether another policy
//! of the same priority selects some of the same nodes (`Overlapping`), whether the subnets it
//! names exist (`SubnetsFound`), and the free space of its subnets. A broken or overlapping policy
//! is reported here, never a reason to fail or crash.

use super::context::{valid, Context};
use crate::ec2::Query;
use crate::error::{Error, Result};
use enipool_crds::conditions::{OVERLAPPING, READY, STALLED, SUBNETS_FOUND, VALID};
use enipool_crds::select::select_policy;
use enipool_crds::summary::set_condition;
use enipool_crds::{
    ENIPool, ENIPoolPolicy, ENIPoolPolicySpec, ENIPoolPolicyStatus, IpFamily, IpMode, SubnetState,
    OPERATOR_FIELD_MANAGER, POLICY_LABEL,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Problems with a policy spec that the CRD schema cannot catch (or that older CRDs let through).
/// `family` is the cluster's, which the policy cannot change.
pub fn validate(spec: &ENIPoolPolicySpec, family: IpFamily) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(f) = spec.ip_family.filter(|f| *f != family) {
        out.push(format!(
            "ipFamily {} is not the cluster's {}: the family is chosen at install (the chart's \
             ipFamily) and nodes keep it; this policy's other settings still apply",
            f.as_str(),
            family.as_str()
        ));
    }
    if let Some(sel) = &spec.node_selector {
        out.extend(selector_problems(sel));
    }
    let s = &spec.sizing;
    if let (Some(min), Some(max)) = (s.min_allocate, s.max_allocate) {
        if max > 0 && min > max {
            out.push(format!("sizing.minAllocate {min} exceeds sizing.maxAllocate {max}"));
        }
    }
    if let Some(b) = s.batch {
        if b < 1 {
            out.push(format!("sizing.batch {b} must be at least 1"));
        } else if spec.mode != IpMode::SecondaryIP && b % 16 != 0 {
            out.push(format!(
                "sizing.batch {b} must be a multiple of 16 in {}",
                spec.mode.as_str()
            ));
        }
    }
    if spec.mode == IpMode::SecondaryIP && s.warm_prefixes.is_some() {
        out.push("sizing.warmPrefixes applies only to prefix modes".into());
    }
    out
}

fn selector_problems(sel: &LabelSelector) -> Vec<String> {
    let mut out = Vec::new();
    for r in sel.match_expressions.iter().flatten() {
        let n = r.values.as_ref().map(Vec::len).unwrap_or(0);
        match r.operator.as_str() {
            "In" | "NotIn" if n == 0 => {
                out.push(format!("nodeSelector: {} on {:?} needs values", r.operator, r.key))
            }
            "Exists" | "DoesNotExist" if n > 0 => {
                out.push(format!("nodeSelector: {} on {:?} takes no values", r.operator, r.key))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => out.push(format!("nodeSelector: unknown operator {other:?} on {:?}", r.key)),
        }
    }
    out
}

/// Policy controller: recompute and write one policy's status; look again every resync.
pub async fn reconcile_policy(
    guard: Arc<DeserializeGuard<ENIPoolPolicy>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let resync = ctx.shared.resync;
    if !ctx.is_leader() {
        return Ok(Action::requeue(resync));
    }
    let name = guard.name_any();
    let now = Time(Timestamp::now());
    let status = match valid(&guard) {
        Some(policy) => compute(&ctx, policy, &now).await,
        None => {
            let error = guard.0.as_ref().err().map(|e| e.error.to_string()).unwrap_or_default();
            let mut st = ENIPoolPolicyStatus::default();
            set_condition(
                &mut st.conditions,
                VALID,
                false,
                "Malformed",
                format!("the object does not match the API: {error}"),
                guard.meta().generation,
                now.clone(),
            );
            st
        }
    };
    let mut status = status;
    set_health(&mut status, guard.meta().generation, &now);
    let old = valid(&guard).and_then(|p| p.status.clone());
    if old.as_ref().map(comparable) != Some(comparable(&status)) {
        let patch = json!({"apiVersion": "enipool.io/v1alpha1", "kind": "ENIPoolPolicy", "metadata": {"name": name}, "status": status});
        Api::<ENIPoolPolicy>::all(ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(OPERATOR_FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Error::kube("PatchPolicyStatus"))?;
    }
    Ok(Action::requeue(resync))
}

/// `Ready` and `Stalled`, from the other conditions, the way kstatus reads them (Flux's health
/// checks, `kubectl wait --for=condition=Ready`; Argo CD through the check in docs/gitops.md):
/// a policy whose spec is invalid or whose subnets are not in EC2 is stalled (nothing changes
/// until someone edits it or creates the subnets) and not ready; one whose subnets were not looked
/// up yet is neither; otherwise it is ready. `Overlapping` is a warning, not a failure: the first
/// policy by name still applies.
pub fn health(st: &ENIPoolPolicyStatus) -> [(&'static str, bool, String, String); 2] {
    let find = |t: &str| st.conditions.iter().find(|c| c.type_ == t);
    let failed =
        [find(VALID), find(SUBNETS_FOUND)].into_iter().flatten().find(|c| c.status == "False");
    match (failed, find(SUBNETS_FOUND)) {
        (Some(c), _) => [
            (READY, false, c.reason.clone(), c.message.clone()),
            (STALLED, true, c.reason.clone(), c.message.clone()),
        ],
        (None, None) => [
            (
                READY,
                false,
                "SubnetsUnknown".into(),
                "the policy's subnets were not looked up in EC2 yet".into(),
            ),
            (STALLED, false, "Progressing".into(), String::new()),
        ],
        (None, Some(s)) => [
            (READY, true, "Ready".into(), format!("valid; {}", s.message)),
            (STALLED, false, "Ready".into(), String::new()),
        ],
    }
}

fn set_health(st: &mut ENIPoolPolicyStatus, generation: Option<i64>, now: &Time) {
    for (t, ok, reason, msg) in health(st) {
        set_condition(&mut st.conditions, t, ok, &reason, msg, generation, now.clone());
    }
}

/// A status without its timestamps, to write only on a real change.
fn comparable(s: &ENIPoolPolicyStatus) -> ENIPoolPolicyStatus {
    let mut s = s.clone();
    s.subnets.iter_mut().for_each(|x| x.last_checked = None);
    s.conditions.iter_mut().for_each(|c| c.last_transition_time = Time(Timestamp::UNIX_EPOCH));
    s
}

async fn compute(ctx: &Context, policy: &ENIPoolPolicy, now: &Time) -> ENIPoolPolicyStatus {
    let name = policy.name_any();
    let generation = policy.meta().generation;
    let mut st = policy.status.clone().unwrap_or_default();
    st.observed_generation = generation;

    // Valid.
    let problems = validate(&policy.spec, ctx.shared.family);
    let (ok, reason, msg) = if problems.is_empty() {
        (true, "Valid", "the policy can be applied".to_string())
    } else {
        (false, "InvalidSpec", problems.join("; "))
    };
    set_condition(&mut st.conditions, VALID, ok, reason, msg, generation, now.clone());

    // Matched nodes (pools labelled with this policy) and overlaps (same priority, same nodes).
    // The cache's own objects, borrowed: copying every pool per policy per resync is what GC did
    // before it too read the cache in place. Malformed pools are skipped.
    let cached = ctx.pools.state();
    let mine: Vec<&ENIPool> = cached
        .iter()
        .filter_map(|g| valid(g))
        .filter(|p| p.meta().deletion_timestamp.is_none())
        .filter(|p| p.labels().get(POLICY_LABEL) == Some(&name))
        .collect();
    st.matched_nodes = mine.len() as i32;
    let policies = ctx.valid_policies();
    let mut tied: BTreeSet<String> = BTreeSet::new();
    for g in ctx.nodes.state().iter() {
        let Some(node) = valid(g) else { continue };
        let sel = select_policy(&policies, node.labels(), None);
        if sel.chosen.as_deref() == Some(name.as_str()) {
            tied.extend(sel.tied_with);
        } else if sel.tied_with.contains(&name) {
            tied.extend(sel.chosen);
        }
    }
    let (overlap, reason, msg) = if tied.is_empty() {
        (false, "NoOverlap", "no other policy of the same priority selects these nodes".into())
    } else {
        let list: Vec<String> = tied.into_iter().collect();
        (
            true,
            "SamePriority",
            format!(
                "policies {} have priority {} and select some of the same nodes; the first by name wins",
                list.join(", "),
                policy.spec.priority
            ),
        )
    };
    set_condition(&mut st.conditions, OVERLAPPING, overlap, reason, msg, generation, now.clone());

    // Subnets: those the policy names, else the ones its nodes use.
    let placement = policy.spec.eni.subnets.clone().unwrap_or_default();
    let explicit = !placement.is_unset();
    let query = if !placement.ids.is_empty() {
        Query { ids: placement.ids.clone(), ..Default::default() }
    } else if !placement.tags.is_empty() {
        Query { tags: placement.tags.clone(), ..Default::default() }
    } else {
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for p in &mine {
            let Some(s) = p.status.as_ref() else { continue };
            ids.extend(s.instance.as_ref().map(|i| i.subnet_id.clone()));
            ids.extend(s.enis.iter().map(|e| e.subnet_id.clone()));
        }
        ids.retain(|s| !s.is_empty());
        Query { ids: ids.into_iter().collect(), ..Default::default() }
    };
    let found = if query.ids.is_empty() && query.tags.is_empty() {
        Ok(vec![])
    } else {
        ctx.shared.ec2.describe_subnets(&query).await
    };
    match found {
        Ok(found) => {
            let remembered = ctx.shared.memory.subnet_states();
            let no_cidr = ctx.shared.memory.no_cidr_subnets(now.0);
            let mut subnets: BTreeMap<String, SubnetState> = BTreeMap::new();
            for s in &found {
                let failed = remembered.get(&s.id).is_some_and(|r| r.exhausted);
                subnets.insert(
                    s.id.clone(),
                    SubnetState {
                        id: s.id.clone(),
                        zone: s.zone.clone(),
                        available_ips: s.available_ips,
                        exhausted: failed || s.available_ips < 2 || no_cidr.contains(&s.id),
                        last_checked: Some(now.clone()),
                    },
                );
            }
            let missing: Vec<&String> =
                placement.ids.iter().filter(|id| !subnets.contains_key(*id)).collect();
            let (ok, reason, msg) = if !explicit {
                (true, "NodeSubnets", "ENIs go to each node's own subnet".to_string())
            } else if !missing.is_empty() {
                let m: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                (false, "SubnetsNotFound", format!("subnets not found in EC2: {}", m.join(", ")))
            } else if subnets.is_empty() {
                (false, "SubnetsNotFound", "no subnet carries the policy's tags".to_string())
            } else {
                (true, "SubnetsFound", format!("{} subnets found", subnets.len()))
            };
            set_condition(
                &mut st.conditions,
                SUBNETS_FOUND,
                ok,
                reason,
                msg,
                generation,
                now.clone(),
            );
            st.subnets = subnets.into_values().collect();
        }
        Err(error) => {
            // Keep the last known subnets; say why they are not fresh.
            tracing::warn!(policy = %name, %error, "describing the policy's subnets failed");
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn with(conds: &[(&str, bool, &str)]) -> ENIPoolPolicyStatus {
        let mut st = ENIPoolPolicyStatus::default();
        for (t, ok, reason) in conds {
            set_condition(&mut st.conditions, t, *ok, reason, "why", None, Time(Timestamp::now()));
        }
        st
    }

    fn ready_and_stalled(st: &ENIPoolPolicyStatus) -> (bool, bool, String) {
        let [r, s] = health(st);
        assert_eq!((r.0, s.0), (READY, STALLED));
        (r.1, s.1, r.2)
    }

    #[test]
    fn health_follows_kstatus() {
        let ok = with(&[(VALID, true, "Valid"), (SUBNETS_FOUND, true, "NodeSubnets")]);
        assert_eq!(ready_and_stalled(&ok), (true, false, "Ready".into()));
        let overlap = with(&[
            (VALID, true, "Valid"),
            (OVERLAPPING, true, "SamePriority"),
            (SUBNETS_FOUND, true, "SubnetsFound"),
        ]);
        assert!(ready_and_stalled(&overlap).0, "an overlap is a warning");
        let invalid = with(&[(VALID, false, "InvalidSpec"), (SUBNETS_FOUND, true, "NodeSubnets")]);
        assert_eq!(ready_and_stalled(&invalid), (false, true, "InvalidSpec".into()));
        let missing = with(&[(VALID, true, "Valid"), (SUBNETS_FOUND, false, "SubnetsNotFound")]);
        assert_eq!(ready_and_stalled(&missing), (false, true, "SubnetsNotFound".into()));
        let malformed = with(&[(VALID, false, "Malformed")]);
        assert_eq!(ready_and_stalled(&malformed), (false, true, "Malformed".into()));
        let unknown = with(&[(VALID, true, "Valid")]);
        assert_eq!(ready_and_stalled(&unknown), (false, false, "SubnetsUnknown".into()));
    }

    #[test]
    fn validation_table() {
        let req = |op: &str, vals: Option<Vec<&str>>| ENIPoolPolicySpec {
            node_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "k".into(),
                    operator: op.into(),
                    values: vals.map(|v| v.into_iter().map(String::from).collect()),
                }]),
                match_labels: None,
            }),
            ..Default::default()
        };
        assert!(validate(&ENIPoolPolicySpec::default(), IpFamily::IPv4).is_empty());
        assert!(validate(&req("In", Some(vec!["a"])), IpFamily::IPv4).is_empty());
        assert_eq!(validate(&req("In", None), IpFamily::IPv4).len(), 1);
        assert_eq!(validate(&req("Exists", Some(vec!["a"])), IpFamily::IPv4).len(), 1);
        assert_eq!(validate(&req("Gt", Some(vec!["1"])), IpFamily::IPv4).len(), 1);
        let mut s = ENIPoolPolicySpec::default();
        s.sizing.min_allocate = Some(10);
        s.sizing.max_allocate = Some(5);
        assert_eq!(validate(&s, IpFamily::IPv4).len(), 1);
        s.sizing.max_allocate = Some(0);
        assert!(validate(&s, IpFamily::IPv4).is_empty());
        s.mode = IpMode::Prefix;
        s.sizing.batch = Some(10);
        assert_eq!(validate(&s, IpFamily::IPv4).len(), 1);
        // The family is the cluster's: a policy may name it, not change it.
        let v6 = ENIPoolPolicySpec { ip_family: Some(IpFamily::IPv6), ..Default::default() };
        assert!(validate(&v6, IpFamily::IPv6).is_empty());
        let problems = validate(&v6, IpFamily::IPv4);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("ipFamily IPv6 is not the cluster's IPv4"), "{problems:?}");
    }

    #[test]
    fn comparable_ignores_timestamps() {
        let mut a = ENIPoolPolicyStatus::default();
        set_condition(&mut a.conditions, VALID, true, "Valid", "", None, Time(Timestamp::now()));
        a.subnets.push(SubnetState {
            id: "s".into(),
            last_checked: Some(Time(Timestamp::now())),
            ..Default::default()
        });
        let mut b = a.clone();
        b.conditions[0].last_transition_time = Time(Timestamp::UNIX_EPOCH);
        b.subnets[0].last_checked = None;
        assert_eq!(comparable(&a), comparable(&b));
        b.subnets[0].available_ips = 3;
        assert_ne!(comparable(&a), comparable(&b));
    }
}
