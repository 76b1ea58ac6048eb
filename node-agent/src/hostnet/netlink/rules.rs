//! The ip rules of the VPC CNI layout over rtnetlink: idempotent adds, and a pod's rules deleted
//! by their specification (no dump of the node's rules per DEL).

use super::{exist_ok, gone_ok, nl};
use crate::hostnet::HostError;
use crate::hostnet::{MAIN_TABLE, PRIO_FROM_ENI, PRIO_FROM_POD, PRIO_TO_POD};
use futures::TryStreamExt;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion};
use std::net::{IpAddr, Ipv4Addr};

/// Every IPv4 rule (CHECK, uninstall).
pub(super) async fn rules(h: &Handle) -> Result<Vec<RuleMessage>, HostError> {
    h.rule().get(IpVersion::V4).execute().try_collect().await.map_err(nl("list rules"))
}

/// Whether the rule carries the attribute.
pub(super) fn rule_has(r: &RuleMessage, a: &RuleAttribute) -> bool {
    r.attributes.contains(a)
}

/// Add a rule unless an identical one exists.
pub(super) async fn ensure_rule(
    h: &Handle,
    prio: u32,
    table: u32,
    src: Option<(Ipv4Addr, u8)>,
    dst: Option<(Ipv4Addr, u8)>,
    mark: Option<u32>,
) -> Result<(), HostError> {
    // The builder leaves the action FR_ACT_UNSPEC ("lookup main none" in `ip rule`), which the
    // kernel's fib4_rule_action answers with EINVAL: every lookup matching the rule fails (a pod
    // could not even get a reply from its own node). Always say "to table".
    let mut req = h.rule().add().v4().priority(prio).table_id(table).action(RuleAction::ToTable);
    if let Some((a, l)) = src {
        req = req.source_prefix(a, l);
    }
    if let Some((a, l)) = dst {
        req = req.destination_prefix(a, l);
    }
    if let Some(m) = mark {
        req = req.fw_mark(m);
        req.message_mut().attributes.push(RuleAttribute::FwMask(m));
    }
    exist_ok(req.execute().await, "add rule")
}

/// How many rules of one kind one DEL deletes at most (one per VPC CIDR in practice): a bound on the
/// delete-until-gone loop, never reached unless something else keeps adding rules for the pod.
const MAX_POD_RULES: usize = 256;

/// A rule selector for `RTM_DELRULE`. The kernel deletes the first rule that matches every field
/// given and ignores the rest (`rule_find`: no table, action or destination = any), so no dump is
/// needed to find the pod's rules.
fn rule_selector(
    prio: u32,
    table: Option<u32>,
    src: Option<Ipv4Addr>,
    dst: Option<Ipv4Addr>,
) -> RuleMessage {
    let mut r = RuleMessage::default();
    r.header.family = AddressFamily::Inet;
    r.attributes.push(RuleAttribute::Priority(prio));
    if let Some(t) = table {
        r.attributes.push(RuleAttribute::Table(t));
    }
    if let Some(a) = src {
        r.header.src_len = 32;
        r.attributes.push(RuleAttribute::Source(IpAddr::V4(a)));
    }
    if let Some(a) = dst {
        r.header.dst_len = 32;
        r.attributes.push(RuleAttribute::Destination(IpAddr::V4(a)));
    }
    r
}

/// Delete the pod's rules by their specification, without listing the node's rules (a dump of
/// every rule per DEL grows with the pod count): the to-pod rule (512, to ip/32, main) and every
/// from-pod rule (1536, from ip/32, any destination and table: still found when the VPC CIDRs
/// changed since the ADD, or the ADD stopped half-way). "No such rule" (ENOENT) ends the loop and
/// is success, so a repeated DEL, a DEL after a restart or of a half-done ADD all clean up.
pub(super) async fn delete_pod_rules(h: &Handle, ip: Ipv4Addr) -> Vec<HostError> {
    let mut errs = Vec::new();
    let to = rule_selector(PRIO_TO_POD, Some(MAIN_TABLE), None, Some(ip));
    let from = rule_selector(PRIO_FROM_POD, None, Some(ip), None);
    for (sel, op) in [(to, "delete to-pod rule"), (from, "delete from-pod rule")] {
        if let Err(e) = delete_all(h, &sel, op).await {
            errs.push(e);
        }
    }
    errs
}

/// Delete an ENI's `from <its primary IP> lookup <its table>` rule(s).
pub(super) async fn delete_eni_rule(h: &Handle, ip: Ipv4Addr, table: u32) -> Result<(), HostError> {
    delete_all(h, &rule_selector(PRIO_FROM_ENI, Some(table), Some(ip), None), "delete ENI rule")
        .await
}

/// Delete every rule `sel` matches, one request each, until the kernel has none left (ENOENT).
async fn delete_all(h: &Handle, sel: &RuleMessage, op: &'static str) -> Result<(), HostError> {
    for _ in 0..MAX_POD_RULES {
        match h.rule().del(sel.clone()).execute().await {
            Ok(()) => continue,
            r => return gone_ok(r, op),
        }
    }
    Err(HostError::Netlink { op, msg: format!("rules still matching after {MAX_POD_RULES}") })
}
