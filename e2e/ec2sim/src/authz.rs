//! What IAM sees of each EC2 call: its resources with their ARNs and condition keys, and the
//! keys of the request, as EC2's service authorization reference lists them for the actions the
//! simulator serves, and which calls a policy binds (by the access key they are signed with).
//! Built from the current state (IAM does not lag).
//!
//! A resource the call names that does not exist is left out, so the action itself answers
//! `…NotFound` as EC2 does: the operator's journal replays rely on that answer for ENIs already
//! gone.

use super::iam::{Policy, Request, Resource};
use super::params::Params;
use super::render::OWNER;
use super::state::{State, Tags};
use super::Result;
use axum::http::{header, HeaderMap};
use std::collections::BTreeMap;
use std::sync::Arc;

fn arn(region: &str, kind: &str, id: &str) -> String {
    format!("arn:aws:ec2:{region}:{OWNER}:{kind}/{id}")
}

fn resource(region: &str, kind: &str, id: &str, vpc: &str, tags: &Tags) -> Resource {
    let mut keys: BTreeMap<String, String> =
        tags.iter().map(|(k, v)| (format!("aws:ResourceTag/{k}"), v.clone())).collect();
    if !vpc.is_empty() {
        keys.insert("ec2:Vpc".into(), arn(region, "vpc", vpc));
    }
    Resource { arn: arn(region, kind, id), keys }
}

fn eni(st: &State, region: &str, id: &str) -> Option<Resource> {
    let e = st.enis.get(id)?;
    Some(resource(region, "network-interface", id, &e.vpc_id, &e.tags))
}

fn instance(st: &State, region: &str, id: &str) -> Option<Resource> {
    let i = st.instances.get(id)?;
    Some(resource(region, "instance", id, &i.vpc_id, &i.tags))
}

fn request_tags(tags: &Tags) -> BTreeMap<String, String> {
    tags.iter().map(|(k, v)| (format!("aws:RequestTag/{k}"), v.clone())).collect()
}

/// The IAM requests one call makes: one per action evaluated (a create with tags is also a
/// `CreateTags` on the new resource).
pub fn requests(st: &State, region: &str, action: &str, p: &Params) -> Vec<Request> {
    let ec2 = |a: &str| format!("ec2:{a}");
    let any = || vec![Resource { arn: "*".into(), ..Default::default() }];
    let one = |r: Option<Resource>| r.into_iter().collect::<Vec<_>>();
    match action {
        "CreateNetworkInterface" => {
            let subnet_id = p.get("SubnetId").unwrap_or_default();
            let subnet = st.subnets.get(subnet_id);
            let vpc = subnet.map(|s| s.vpc_id.clone()).unwrap_or_default();
            let tags = p.tag_specs("network-interface");
            let mut new = resource(region, "network-interface", "*", &vpc, &Tags::new());
            new.keys.extend(request_tags(&tags));
            new.keys.insert("ec2:Subnet".into(), arn(region, "subnet", subnet_id));
            let mut resources = vec![new.clone()];
            if let Some(s) = subnet {
                resources.push(resource(region, "subnet", subnet_id, &s.vpc_id, &s.tags));
            }
            for g in p.list("SecurityGroupId") {
                if let Some(sg) = st.groups.get(&g) {
                    resources.push(resource(region, "security-group", &g, &sg.vpc_id, &sg.tags));
                }
            }
            let mut out =
                vec![Request { action: ec2(action), resources, keys: request_tags(&tags) }];
            if !tags.is_empty() {
                let mut keys = request_tags(&tags);
                keys.insert("ec2:CreateAction".into(), action.into());
                out.push(Request { action: ec2("CreateTags"), resources: vec![new], keys });
            }
            out
        }
        "AttachNetworkInterface" => {
            let mut resources = one(eni(st, region, p.get("NetworkInterfaceId").unwrap_or("")));
            resources.extend(instance(st, region, p.get("InstanceId").unwrap_or("")));
            vec![Request { action: ec2(action), resources, keys: BTreeMap::new() }]
        }
        "DetachNetworkInterface" => {
            let id = p.get("AttachmentId").unwrap_or_default();
            let attached =
                st.enis.values().find(|e| e.attachment.as_ref().is_some_and(|a| a.id == id));
            let mut resources = Vec::new();
            if let Some(e) = attached {
                resources.extend(eni(st, region, &e.id));
                let owner = e.attachment.as_ref().map(|a| a.instance_id.as_str()).unwrap_or("");
                resources.extend(instance(st, region, owner));
            }
            vec![Request { action: ec2(action), resources, keys: BTreeMap::new() }]
        }
        "DeleteNetworkInterface"
        | "ModifyNetworkInterfaceAttribute"
        | "AssignPrivateIpAddresses"
        | "UnassignPrivateIpAddresses"
        | "AssignIpv6Addresses"
        | "UnassignIpv6Addresses" => {
            let mut resources = one(eni(st, region, p.get("NetworkInterfaceId").unwrap_or("")));
            if action == "ModifyNetworkInterfaceAttribute" {
                for g in p.list("SecurityGroupId") {
                    if let Some(sg) = st.groups.get(&g) {
                        resources.push(resource(
                            region,
                            "security-group",
                            &g,
                            &sg.vpc_id,
                            &sg.tags,
                        ));
                    }
                }
            }
            vec![Request { action: ec2(action), resources, keys: BTreeMap::new() }]
        }
        "CreateTags" | "DeleteTags" => {
            let tags = Params::tags_of(p, "Tag");
            let resources = p
                .list("ResourceId")
                .iter()
                .filter_map(|id| match id.split('-').next() {
                    Some("eni") => eni(st, region, id),
                    Some("i") => instance(st, region, id),
                    _ => None,
                })
                .collect();
            vec![Request { action: ec2(action), resources, keys: request_tags(&tags) }]
        }
        // Describe* and everything else: no resource-level permissions.
        _ => vec![Request { action: ec2(action), resources: any(), keys: BTreeMap::new() }],
    }
}

/// The identity policy of one principal (the access key its calls are signed with), and the
/// region its ARNs name. Calls signed with other keys (the tests acting as someone else in the
/// account) are not evaluated.
pub(crate) struct Iam {
    pub(crate) policy: Policy,
    pub(crate) region: String,
    pub(crate) access_key: String,
}

impl Iam {
    /// The policy that applies to a call with these headers, if any.
    pub(crate) fn for_call(iam: Option<Arc<Iam>>, headers: &HeaderMap) -> Option<Arc<Iam>> {
        let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let key = auth.split("Credential=").nth(1)?.split('/').next()?;
        iam.filter(|i| i.access_key == key)
    }

    pub(crate) fn authorize(
        iam: &Option<Arc<Iam>>,
        st: &State,
        action: &str,
        p: &Params,
    ) -> Result<()> {
        let Some(iam) = iam else { return Ok(()) };
        for r in requests(st, &iam.region, action, p) {
            iam.policy.authorize(&r)?;
        }
        Ok(())
    }
}
