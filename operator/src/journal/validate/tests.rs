use super::*;
use crate::ec2::Attachment;
use crate::journal::new_op;
use enipool_crds::{ReleaseRequest, Releasing};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const ME: &str = "i-a";
const OTHER: &str = "i-b";

/// An ENI: `managed` = this cluster's owner tags; `created_for` = its instance tag;
/// `attached` = (instance, device index).
fn eni(id: &str, managed: bool, created_for: &str, attached: Option<(&str, i32)>) -> Eni {
    let mut tags = BTreeMap::new();
    if managed {
        tags.insert(tags::CLUSTER.to_string(), "c".to_string());
        tags.insert(tags::OWNER.to_string(), tags::OWNER_VALUE.to_string());
    }
    if !created_for.is_empty() {
        tags.insert(tags::INSTANCE_ID.to_string(), created_for.to_string());
    }
    Eni {
        id: id.into(),
        status: if attached.is_some() { "in-use" } else { "available" }.into(),
        attachment: attached.map(|(instance, index)| Attachment {
            id: format!("attach-{id}"),
            instance_id: instance.into(),
            device_index: index,
            status: "attached".into(),
            delete_on_termination: true,
        }),
        tags,
        ..Default::default()
    }
}

fn op(kind: OperationKind, eni_id: &str) -> Operation {
    new_op(kind, eni_id, 0, vec![], None, &Time(k8s_openapi::jiff::Timestamp::now()))
}

fn create_op(items: &[&str], count: i32, index: Option<i32>) -> Operation {
    let mut o = op(OperationKind::CreateENI, "");
    o.items = items.iter().map(|s| s.to_string()).collect();
    o.count = count;
    o.device_index = index;
    o
}

struct World {
    attached: Vec<Eni>,
    described: BTreeMap<String, Eni>,
    rules: CreateRules,
}

fn world() -> World {
    let attached = vec![
        eni("eni-primary", false, "", Some((ME, 0))),
        eni("eni-mine", true, ME, Some((ME, 1))),
        eni("eni-unmanaged", false, "", Some((ME, 2))),
    ];
    let mut described: BTreeMap<String, Eni> =
        attached.iter().map(|e| (e.id.clone(), e.clone())).collect();
    for e in [
        eni("eni-theirs", true, OTHER, Some((OTHER, 1))),
        eni("eni-avail-mine", true, ME, None),
        eni("eni-avail-theirs", true, OTHER, None),
        eni("eni-avail-untagged", true, "", None),
        eni("eni-managed-primary", true, ME, Some((ME, 0))),
    ] {
        described.insert(e.id.clone(), e);
    }
    let rules = CreateRules {
        subnets: ["subnet-a".to_string()].into(),
        security_groups: ["sg-1".to_string(), "sg-2".to_string()].into(),
        max_enis: 4,
        slots_per_eni: 9,
    };
    World { attached, described, rules }
}

impl World {
    fn facts(&self) -> Facts<'_> {
        Facts {
            cluster: "c",
            instance_id: ME,
            attached: &self.attached,
            described: Some(&self.described),
            create: Some(&self.rules),
        }
    }

    fn check(&self, o: &Operation) -> Result<(), Reason> {
        match check(o, &self.facts()) {
            Verdict::Act => Ok(()),
            Verdict::Reject(r) => Err(r.reason),
            Verdict::Unverified => panic!("{o:?}: unverified with every fact known"),
        }
    }
}

#[test]
fn ids_are_only_the_operators_own_format() {
    let own = op(OperationKind::DetachENI, "eni-mine").id;
    assert!(is_operator_id(&own), "{own}");
    let v1 = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"; // a time-based UUID
    for bad in [
        "",
        "forged-1",
        own.to_uppercase().as_str(),
        own.replace('-', "").as_str(),
        format!("{{{own}}}").as_str(),
        format!("urn:uuid:{own}").as_str(),
        format!("{own} ").as_str(),
        v1,
    ] {
        assert!(!is_operator_id(bad), "{bad:?} accepted");
    }
}

#[test]
fn release_entries_only_for_this_pools_secondary_enis() {
    let w = world();
    use OperationKind::{DeleteENI, DetachENI};
    use Reason::*;
    let cases = [
        ("eni-mine", Ok(()), "managed, attached to this instance"),
        ("eni-avail-mine", Ok(()), "available, created for this instance"),
        ("eni-theirs", Err(EniNotThisPool), "attached to another instance"),
        ("eni-avail-theirs", Err(EniNotThisPool), "available, created for another instance"),
        ("eni-avail-untagged", Err(EniNotThisPool), "available, no instance tag"),
        ("eni-unmanaged", Err(EniNotManaged), "attached here but not the operator's"),
        ("eni-primary", Err(EniNotManaged), "the primary ENI, untagged"),
        ("eni-managed-primary", Err(PrimaryEni), "tagged, but at device index 0"),
        ("eni-gone", Err(EniNotFound), "EC2 has no such ENI"),
        ("", Err(EniNotFound), "no ENI named"),
    ];
    for kind in [DetachENI, DeleteENI] {
        for (id, want, case) in &cases {
            assert_eq!(w.check(&op(kind, id)), *want, "{kind:?} {id}: {case}");
        }
    }
    let mut forged = op(DetachENI, "eni-mine");
    forged.id = "forged".into();
    assert_eq!(w.check(&forged), Err(BadId), "the id is checked first");
}

#[test]
fn attach_entries_are_always_rejected() {
    let w = world();
    for id in ["eni-avail-mine", "eni-avail-theirs", "eni-mine", ""] {
        assert_eq!(w.check(&op(OperationKind::AttachENI, id)), Err(Reason::AttachNotJournaled));
    }
}

#[test]
fn count_based_entries_need_an_eni_attached_here() {
    let w = world();
    use OperationKind::*;
    for kind in [AssignIPs, AssignPrefixes, UnassignIPs, UnassignPrefixes] {
        assert_eq!(w.check(&op(kind, "eni-mine")), Ok(()), "{kind:?}");
        assert_eq!(w.check(&op(kind, "eni-primary")), Ok(()), "{kind:?}: growth fills it too");
        for other in ["eni-theirs", "eni-avail-mine", "eni-gone"] {
            assert_eq!(w.check(&op(kind, other)), Err(Reason::EniNotThisPool), "{kind:?} {other}");
        }
    }
}

#[test]
fn creates_only_what_growth_would_create() {
    let w = world();
    use Reason::*;
    // (items, count, device index, verdict, case)
    type Case<'a> = (&'a [&'a str], i32, Option<i32>, Result<(), Reason>, &'a str);
    let cases: [Case; 16] = [
        (&["subnet-a", "sg-1", "sg-2"], 9, Some(3), Ok(()), "growth's own request"),
        (&["subnet-a", "sg-2", "prefixes"], 2, Some(3), Ok(()), "prefixes, a subset of groups"),
        (&["subnet-z", "sg-1"], 2, Some(3), Err(SubnetNotAllowed), "subnet not selected"),
        (&[], 2, Some(3), Err(SubnetNotAllowed), "no subnet"),
        (&["subnet-a", "sg-1", "sg-evil"], 2, Some(3), Err(SecurityGroupNotAllowed), "foreign sg"),
        (&["subnet-a"], 2, Some(3), Err(SecurityGroupNotAllowed), "no sg: the VPC default"),
        (&["subnet-a", "prefixes"], 2, Some(3), Err(SecurityGroupNotAllowed), "marker only"),
        (&["subnet-a", "sg-1"], 0, Some(3), Err(BadCount), "no addresses"),
        (&["subnet-a", "sg-1"], -1, Some(3), Err(BadCount), "negative"),
        (&["subnet-a", "sg-1"], 10, Some(3), Err(BadCount), "more than one ENI holds"),
        (&["subnet-a", "sg-1"], 2, None, Err(BadDeviceIndex), "no device index"),
        (&["subnet-a", "sg-1"], 2, Some(0), Err(BadDeviceIndex), "the primary's index"),
        (&["subnet-a", "sg-1"], 2, Some(4), Err(BadDeviceIndex), "beyond the ENI limit"),
        (&["subnet-a", "sg-1"], 2, Some(-1), Err(BadDeviceIndex), "negative index"),
        (&["subnet-a", "sg-1"], 2, Some(1), Err(DeviceIndexInUse), "an operator ENI there"),
        (&["subnet-a", "sg-1"], 2, Some(2), Err(DeviceIndexInUse), "a foreign ENI there"),
    ];
    for (items, count, index, want, case) in cases {
        assert_eq!(w.check(&create_op(items, count, index)), want, "{case}");
    }
}

/// A CreateENI that EC2 already answered names its ENI: only one this very entry created for this
/// instance (its operation and instance tags), attached here or still `available`.
#[test]
fn a_create_names_only_the_eni_it_created() {
    let mut w = world();
    let mut o = create_op(&["subnet-a", "sg-1"], 2, Some(3));
    let mut own = eni("eni-created", true, ME, Some((ME, 3)));
    own.tags.insert(tags::OPERATION.into(), o.id.clone());
    w.attached.push(own.clone());
    w.described.insert(own.id.clone(), own.clone());
    let mut stolen = eni("eni-stolen", true, OTHER, None);
    stolen.tags.insert(tags::OPERATION.into(), o.id.clone());
    w.described.insert(stolen.id.clone(), stolen);
    let mut foreign = own.clone();
    foreign.id = "eni-foreign".into();
    foreign.tags.remove(tags::OWNER);
    w.described.insert(foreign.id.clone(), foreign);

    assert_eq!(w.check(&o), Ok(()), "its own ENI at its device index: being finished");
    o.eni_id = own.id.clone();
    assert_eq!(w.check(&o), Ok(()));
    let mut unattached = own.clone();
    unattached.attachment = None;
    w.described.insert(own.id.clone(), unattached);
    assert_eq!(w.check(&o), Ok(()), "created, not attached yet");
    for (id, want) in [
        ("eni-mine", Reason::EniNotThisPool),
        ("eni-avail-mine", Reason::EniNotThisPool),
        ("eni-theirs", Reason::EniNotThisPool),
        ("eni-stolen", Reason::EniNotThisPool),
        ("eni-foreign", Reason::EniNotManaged),
        ("eni-gone", Reason::EniNotFound),
    ] {
        o.eni_id = id.into();
        assert_eq!(w.check(&o), Err(want), "{id}");
    }
}

#[test]
fn without_ec2_answers_entries_are_kept_unverified() {
    let w = world();
    let mut facts = w.facts();
    facts.described = None;
    facts.create = None;
    let unverified = [
        op(OperationKind::DetachENI, "eni-theirs"),
        op(OperationKind::DeleteENI, "eni-mine"),
        create_op(&["subnet-z"], 2, Some(3)),
    ];
    for o in &unverified {
        assert_eq!(check(o, &facts), Verdict::Unverified, "{o:?}");
    }
    // What needs no describe is still judged.
    assert!(matches!(check(&op(OperationKind::AttachENI, "x"), &facts), Verdict::Reject(_)));
    assert_eq!(check(&op(OperationKind::AssignIPs, "eni-mine"), &facts), Verdict::Act);
    let mut bad = op(OperationKind::DetachENI, "eni-theirs");
    bad.id = "forged".into();
    assert!(matches!(check(&bad, &facts), Verdict::Reject(r) if r.reason == Reason::BadId));
}

#[test]
fn describes_are_asked_only_for_well_formed_entries_naming_an_eni() {
    assert!(needs_describe(&op(OperationKind::DetachENI, "eni-1")));
    assert!(needs_describe(&op(OperationKind::DeleteENI, "eni-1")));
    assert!(needs_describe(&op(OperationKind::CreateENI, "eni-1")));
    assert!(!needs_describe(&op(OperationKind::CreateENI, "")));
    assert!(!needs_describe(&op(OperationKind::AttachENI, "eni-1")));
    assert!(!needs_describe(&op(OperationKind::AssignIPs, "eni-1")));
    let mut bad = op(OperationKind::DetachENI, "eni-1");
    bad.id = "forged".into();
    assert!(!needs_describe(&bad));
}

#[test]
fn releasing_must_answer_the_outstanding_request() {
    let rel = |revision: i64| Releasing {
        revision,
        epoch: 1,
        ips: vec!["10.0.0.9".into()],
        prefixes: vec![],
    };
    let request = |revision: i64| ReleaseRequest { revision, count: 1, prefer_enis: vec![] };
    let st = |req: Option<i64>, rel_rev: Option<i64>, released: i64| ENIPoolStatus {
        release_request: req.map(request),
        releasing: rel_rev.map(rel),
        released_revision: released,
        ..Default::default()
    };
    let cases = [
        (st(None, None, 0), true, "nothing releasing"),
        (st(Some(3), None, 2), true, "a request, no releasing yet"),
        (st(Some(3), Some(3), 2), true, "the operator's own commit"),
        (st(None, Some(3), 0), false, "no request at all"),
        (st(Some(4), Some(3), 2), false, "another revision than the request"),
        (st(Some(3), Some(3), 3), false, "already released"),
    ];
    for (status, ok, case) in cases {
        let r = releasing(&status);
        assert_eq!(r.is_none(), ok, "{case}: {r:?}");
        if let Some(r) = r {
            assert_eq!(r.reason, Reason::ReleasingWithoutRequest);
            assert!(r.detail.contains("10.0.0.9"), "names its items: {}", r.detail);
        }
    }
}

#[test]
fn messages_name_the_entry_and_quote_odd_values() {
    let mut o = op(OperationKind::DetachENI, "eni-theirs");
    let r = Rejection { reason: Reason::EniNotThisPool, detail: "why".into() };
    let m = message(&o, &r);
    assert!(m.contains(&o.id) && m.contains("DetachENI") && m.contains("eni-theirs"), "{m}");
    assert!(m.contains("eni_not_this_pool") && m.ends_with("why"), "{m}");
    o.id = format!("x\n{}", "y".repeat(100));
    o.eni_id = String::new();
    let m = message(&o, &r);
    assert!(!m.contains('\n') && m.contains("ENI none") && m.contains('…'), "{m}");
    assert_eq!(shown("eni-0123"), "eni-0123");
    assert_eq!(shown(""), "\"\"");
}
