//! Describe* actions: filters (with EC2's `*`/`?` wildcards), explicit ids and pagination.

use super::actions::invalid_action;
use super::limits::{self, INSTANCE_TYPES};
use super::params::{Filter, Params};
use super::render;
use super::state::*;
use super::xml::Xml;
use super::Error;

/// Case-sensitive glob with EC2's `*` and `?` wildcards.
fn glob(pat: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(&pat.chars().collect::<Vec<_>>(), &s.chars().collect::<Vec<_>>())
}

/// Applies filters: `field(name)` gives a resource's values for a filter name, `None` if the
/// resource type has no such filter (EC2 rejects unknown filter names).
fn matches(
    filters: &[Filter],
    tags: &Tags,
    field: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<bool, Error> {
    for f in filters {
        let values: Vec<String> = if let Some(k) = f.name.strip_prefix("tag:") {
            tags.get(k).cloned().into_iter().collect()
        } else if f.name == "tag-key" {
            tags.keys().cloned().collect()
        } else {
            field(&f.name).ok_or_else(|| {
                Error::api("InvalidParameterValue", format!("The filter '{}' is invalid", f.name))
            })?
        };
        if !f.values.iter().any(|p| values.iter().any(|v| glob(p, v))) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `MaxResults`/`NextToken` pagination over an already filtered list.
fn paginate<T>(
    p: &Params,
    items: Vec<T>,
    min: u32,
    max: u32,
    has_ids: bool,
) -> Result<(Vec<T>, Option<String>), Error> {
    let limit: Option<u32> = p.parsed("MaxResults")?;
    if let Some(l) = limit {
        if has_ids {
            return Err(Error::api(
                "InvalidParameterCombination",
                "The parameter MaxResults cannot be used with the parameter Ids",
            ));
        }
        if l < min || l > max {
            return Err(Error::api("InvalidParameterValue", format!("Value ( {l} ) for parameter maxResults is invalid. Expecting a value between {min} and {max}.")));
        }
    }
    let start = match p.get("NextToken") {
        None | Some("") => 0,
        Some(t) => t
            .strip_prefix("page-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| {
                Error::api("InvalidParameterValue", format!("The NextToken '{t}' is invalid"))
            })?,
    };
    let end = limit.map_or(items.len(), |l| (start + l as usize).min(items.len()));
    let next = (end < items.len()).then(|| format!("page-{end}"));
    Ok((items.into_iter().skip(start).take(end - start).collect(), next))
}

/// Ids requested explicitly must all exist (EC2 fails the whole call otherwise).
fn require_ids(
    ids: &[String],
    exists: impl Fn(&str) -> bool,
    code: &str,
    what: &str,
) -> Result<(), Error> {
    match ids.iter().find(|id| !exists(id)) {
        Some(id) => Err(not_found(code, what, id)),
        None => Ok(()),
    }
}

fn opt_s<T: ToString>(v: T) -> Option<Vec<String>> {
    Some(vec![v.to_string()])
}

/// Runs a Describe* action against `st`.
pub fn describe(st: &State, action: &str, p: &Params, rid: &str) -> Result<String, Error> {
    let filters = p.filters();
    let mut x = Xml::response(action, rid);
    match action {
        "DescribeNetworkInterfaces" => {
            let ids = p.list("NetworkInterfaceId");
            require_ids(
                &ids,
                |i| st.enis.contains_key(i),
                "InvalidNetworkInterfaceID.NotFound",
                "network interface",
            )?;
            let mut out = Vec::new();
            for e in st.enis.values().filter(|e| ids.is_empty() || ids.contains(&e.id)) {
                let a = e.attachment.as_ref();
                let ok = matches(&filters, &e.tags, |f| match f {
                    "network-interface-id" => opt_s(&e.id),
                    "attachment.instance-id" => {
                        Some(a.map(|a| a.instance_id.clone()).into_iter().collect())
                    }
                    "attachment.attachment-id" => {
                        Some(a.map(|a| a.id.clone()).into_iter().collect())
                    }
                    "attachment.status" => {
                        Some(a.map(|a| a.state.as_str().to_string()).into_iter().collect())
                    }
                    "attachment.device-index" => {
                        Some(a.map(|a| a.device_index.to_string()).into_iter().collect())
                    }
                    "attachment.delete-on-termination" => {
                        Some(a.map(|a| a.delete_on_termination.to_string()).into_iter().collect())
                    }
                    "status" => opt_s(e.status()),
                    "subnet-id" => opt_s(&e.subnet_id),
                    "vpc-id" => opt_s(&e.vpc_id),
                    "availability-zone" => opt_s(&e.az),
                    "description" => opt_s(&e.description),
                    "mac-address" => opt_s(&e.mac),
                    "private-ip-address" | "addresses.private-ip-address" => Some(
                        std::iter::once(e.primary_ip)
                            .chain(e.secondary.iter().copied())
                            .map(|a| a.to_string())
                            .collect(),
                    ),
                    "ipv4-prefix" | "ipv4-prefixes.ipv4-prefix" => {
                        Some(e.prefixes.iter().map(|p| p.to_string()).collect())
                    }
                    "group-id" => Some(e.groups.clone()),
                    "interface-type" => opt_s("interface"),
                    "owner-id" => opt_s(render::OWNER),
                    _ => None,
                })?;
                if ok {
                    out.push(e);
                }
            }
            let (page, next) = paginate(p, out, 5, 1000, !ids.is_empty())?;
            x.items("networkInterfaceSet", page, |x, e| render::eni(x, st, e));
            x.opt("nextToken", next);
        }
        "DescribeInstances" => {
            let ids = p.list("InstanceId");
            require_ids(
                &ids,
                |i| st.instances.contains_key(i),
                "InvalidInstanceID.NotFound",
                "instance ID",
            )?;
            let mut out = Vec::new();
            for i in st.instances.values().filter(|i| ids.is_empty() || ids.contains(&i.id)) {
                let ok = matches(&filters, &i.tags, |f| match f {
                    "instance-id" => opt_s(&i.id),
                    "instance-state-name" => opt_s(i.state.name()),
                    "instance-state-code" => opt_s(i.state.code()),
                    "instance-type" => opt_s(&i.instance_type),
                    "subnet-id" => opt_s(&i.subnet_id),
                    "vpc-id" => opt_s(&i.vpc_id),
                    "availability-zone" => opt_s(&i.az),
                    "private-ip-address" => opt_s(i.private_ip),
                    "reservation-id" => opt_s(&i.reservation_id),
                    _ => None,
                })?;
                if ok {
                    out.push(i);
                }
            }
            let (page, next) = paginate(p, out, 5, 1000, !ids.is_empty())?;
            // One reservation item per instance keeps pagination simple; the SDK flattens anyway.
            x.items("reservationSet", page, |x, i| {
                x.leaf("reservationId", &i.reservation_id).leaf("ownerId", render::OWNER);
                x.open("groupSet").close("groupSet");
                x.items("instancesSet", [i], |x, i| render::instance(x, st, i));
            });
            x.opt("nextToken", next);
        }
        "DescribeSubnets" => {
            let ids = p.list("SubnetId");
            require_ids(
                &ids,
                |i| st.subnets.contains_key(i),
                "InvalidSubnetID.NotFound",
                "subnet ID",
            )?;
            let mut out = Vec::new();
            for s in st.subnets.values().filter(|s| ids.is_empty() || ids.contains(&s.id)) {
                let ok = matches(&filters, &s.tags, |f| match f {
                    "subnet-id" => opt_s(&s.id),
                    "vpc-id" => opt_s(&s.vpc_id),
                    "availability-zone" => opt_s(&s.az),
                    "cidr-block" | "cidr" => opt_s(s.cidr),
                    "state" => opt_s("available"),
                    _ => None,
                })?;
                if ok {
                    out.push(s);
                }
            }
            let (page, next) = paginate(p, out, 5, 1000, false)?;
            x.items("subnetSet", page, render::subnet);
            x.opt("nextToken", next);
        }
        "DescribeVpcs" => {
            let ids = p.list("VpcId");
            require_ids(&ids, |i| st.vpcs.contains_key(i), "InvalidVpcID.NotFound", "vpc ID")?;
            let mut out = Vec::new();
            for v in st.vpcs.values().filter(|v| ids.is_empty() || ids.contains(&v.id)) {
                let ok = matches(&filters, &v.tags, |f| match f {
                    "vpc-id" => opt_s(&v.id),
                    "cidr" => opt_s(v.cidr),
                    "cidr-block-association.cidr-block" => {
                        Some(v.blocks.iter().map(|b| b.cidr.to_string()).collect())
                    }
                    "cidr-block-association.association-id" => {
                        Some(v.blocks.iter().map(|b| b.association_id.clone()).collect())
                    }
                    "cidr-block-association.state" => {
                        Some(v.blocks.iter().map(|b| b.state.clone()).collect())
                    }
                    "state" => opt_s("available"),
                    "is-default" => opt_s(false),
                    "owner-id" => opt_s(render::OWNER),
                    _ => None,
                })?;
                if ok {
                    out.push(v);
                }
            }
            let (page, next) = paginate(p, out, 5, 1000, false)?;
            x.items("vpcSet", page, render::vpc);
            x.opt("nextToken", next);
        }
        "DescribeSecurityGroups" => {
            let ids = p.list("GroupId");
            require_ids(
                &ids,
                |i| st.groups.contains_key(i),
                "InvalidGroup.NotFound",
                "security group",
            )?;
            let mut out = Vec::new();
            for g in st.groups.values().filter(|g| ids.is_empty() || ids.contains(&g.id)) {
                let ok = matches(&filters, &g.tags, |f| match f {
                    "group-id" => opt_s(&g.id),
                    "group-name" => opt_s(&g.name),
                    "vpc-id" => opt_s(&g.vpc_id),
                    _ => None,
                })?;
                if ok {
                    out.push(g);
                }
            }
            let (page, next) = paginate(p, out, 5, 1000, !ids.is_empty())?;
            x.items("securityGroupInfo", page, render::security_group);
            x.opt("nextToken", next);
        }
        "DescribeInstanceTypes" => {
            let names = p.list("InstanceType");
            if let Some(n) = names.iter().find(|n| limits::lookup(n).is_none()) {
                return Err(Error::api(
                    "InvalidInstanceType",
                    format!("The following supplied instance types do not exist: [{n}]"),
                ));
            }
            let out: Vec<_> = INSTANCE_TYPES
                .iter()
                .filter(|t| names.is_empty() || names.iter().any(|n| n == t.name))
                .collect();
            let (page, next) = paginate(p, out, 5, 100, false)?;
            x.items("instanceTypeSet", page, render::instance_type);
            x.opt("nextToken", next);
        }
        _ => return Err(invalid_action(action)),
    }
    Ok(x.finish())
}
