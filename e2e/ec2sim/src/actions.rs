//! EC2 actions: typed parsing of the query parameters, the call into the model, and the response.
//! Describe* read a (possibly lagged) `&State`; mutations take `&mut State`.

use super::hooks::HookEvent;
use super::ipv6::Ipv6AssignReq;
use super::ops::{CreateEniReq, RunReq};
use super::params::Params;
use super::render;
use super::state::*;
use super::xml::Xml;
use super::Error;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::time::Instant;

/// Actions that only read; everything else the simulator knows mutates.
pub const DESCRIBE_ACTIONS: &[&str] = &[
    "DescribeInstances",
    "DescribeInstanceTypes",
    "DescribeSubnets",
    "DescribeSecurityGroups",
    "DescribeNetworkInterfaces",
    "DescribeVpcs",
];

pub const MUTATE_ACTIONS: &[&str] = &[
    "CreateNetworkInterface",
    "AttachNetworkInterface",
    "DetachNetworkInterface",
    "DeleteNetworkInterface",
    "ModifyNetworkInterfaceAttribute",
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "AssignIpv6Addresses",
    "UnassignIpv6Addresses",
    "CreateTags",
    "DeleteTags",
    "RunInstances",
    "TerminateInstances",
];

/// Whether the simulator implements `action`.
pub fn is_known(action: &str) -> bool {
    DESCRIBE_ACTIONS.contains(&action) || MUTATE_ACTIONS.contains(&action)
}

/// Whether `action` is a read.
pub fn is_describe(action: &str) -> bool {
    DESCRIBE_ACTIONS.contains(&action)
}

/// `InvalidAction`.
pub fn invalid_action(action: &str) -> Error {
    Error::api("InvalidAction", format!("The action {action} is not valid for this web service."))
}

fn ips(p: &Params, key: &str) -> Result<Vec<Ipv4Addr>, Error> {
    p.list_parsed(key)
}

fn prefixes(p: &Params, key: &str) -> Result<Vec<Ipv4Net>, Error> {
    p.list_parsed(key)
}

fn eni_response(
    st: &State,
    action: &str,
    rid: &str,
    eni_id: &str,
    token: Option<&str>,
) -> Result<String, Error> {
    let e = st.enis.get(eni_id).ok_or_else(|| {
        Error::api("InvalidParameterValue", "The client token you have provided is associated with a resource that is already deleted.")
    })?;
    let mut x = Xml::response(action, rid);
    x.open("networkInterface");
    render::eni(&mut x, st, e);
    x.close("networkInterface").opt("clientToken", token);
    Ok(x.finish())
}

fn run_response(st: &State, rid: &str, reservation: &str, ids: &[String]) -> String {
    let mut x = Xml::response("RunInstances", rid);
    x.leaf("reservationId", reservation).leaf("ownerId", render::OWNER);
    x.open("groupSet").close("groupSet");
    x.items("instancesSet", ids.iter().filter_map(|i| st.instances.get(i)), |x, i| {
        render::instance(x, st, i)
    });
    x.finish()
}

fn ok_return(action: &str, rid: &str) -> String {
    let mut x = Xml::response(action, rid);
    x.leaf("return", true);
    x.finish()
}

/// Runs a mutating action.
pub fn mutate(
    st: &mut State,
    action: &str,
    p: &Params,
    rid: &str,
    now: Instant,
    ev: &mut Vec<HookEvent>,
) -> Result<String, Error> {
    match action {
        "CreateNetworkInterface" => {
            let token = p.get("ClientToken").filter(|t| !t.is_empty());
            let fp = p.fingerprint();
            if let Some(t) = token {
                if let Some(ids) = st.check_token(t, action, &fp, now)? {
                    return eni_response(st, action, rid, &ids[0], token);
                }
            }
            // Explicit addresses: the one marked Primary (or `PrivateIpAddress`) is the primary.
            let mut primary: Option<Ipv4Addr> = p.parsed("PrivateIpAddress")?;
            let mut secondary = Vec::new();
            for s in p.structs("PrivateIpAddresses") {
                let ip: Ipv4Addr = s.parsed("PrivateIpAddress")?.ok_or_else(|| {
                    Error::api("MissingParameter", "PrivateIpAddresses.N.PrivateIpAddress")
                })?;
                if s.bool("Primary")? == Some(true) && primary.is_none() {
                    primary = Some(ip);
                } else if Some(ip) != primary {
                    secondary.push(ip);
                }
            }
            let mut pfx = Vec::new();
            for s in p.structs("Ipv4Prefix") {
                pfx.push(
                    s.parsed("Ipv4Prefix")?
                        .ok_or_else(|| Error::api("MissingParameter", "Ipv4Prefix.N.Ipv4Prefix"))?,
                );
            }
            let req = CreateEniReq {
                subnet_id: p.req("SubnetId")?.to_string(),
                groups: p.list("SecurityGroupId"),
                description: p.get("Description").unwrap_or_default().to_string(),
                primary_ip: primary,
                secondary_ips: secondary,
                secondary_count: p.parsed("SecondaryPrivateIpAddressCount")?,
                prefix_count: p.parsed("Ipv4PrefixCount")?,
                prefixes: pfx,
                tags: p.tag_specs("network-interface"),
            };
            let id = st.create_eni(&req, ev)?;
            if let Some(t) = token {
                st.remember_token(t, action, &fp, vec![id.clone()], now);
            }
            eni_response(st, action, rid, &id, token)
        }
        "AttachNetworkInterface" => {
            let idx: u32 = p.parsed("DeviceIndex")?.ok_or_else(|| {
                Error::api("MissingParameter", "The request must contain the parameter DeviceIndex")
            })?;
            let att =
                st.attach(p.req("NetworkInterfaceId")?, p.req("InstanceId")?, idx, now, ev)?;
            let mut x = Xml::response(action, rid);
            x.leaf("attachmentId", att).leaf("networkCardIndex", 0);
            Ok(x.finish())
        }
        "DetachNetworkInterface" => {
            st.detach(p.req("AttachmentId")?, now, ev)?;
            Ok(ok_return(action, rid))
        }
        "DeleteNetworkInterface" => {
            st.delete_eni(p.req("NetworkInterfaceId")?, ev)?;
            Ok(ok_return(action, rid))
        }
        "ModifyNetworkInterfaceAttribute" => {
            let a = p.nested("Attachment");
            let attachment = match (a.get("AttachmentId"), a.bool("DeleteOnTermination")?) {
                (None, None) => None,
                (Some(id), Some(dot)) => Some((id.to_string(), dot)),
                _ => {
                    return Err(Error::api(
                        "MissingParameter",
                        "Attachment requires AttachmentId and DeleteOnTermination",
                    ))
                }
            };
            let groups = Some(p.list("SecurityGroupId")).filter(|g| !g.is_empty());
            let description = p.get("Description.Value").map(str::to_string);
            let sdc = p.bool("SourceDestCheck.Value")?;
            st.modify_eni(p.req("NetworkInterfaceId")?, attachment, description, groups, sdc)?;
            Ok(ok_return(action, rid))
        }
        "AssignPrivateIpAddresses" => {
            let eni = p.req("NetworkInterfaceId")?;
            let (new_ips, new_pfx) = st.assign(
                eni,
                p.parsed("SecondaryPrivateIpAddressCount")?,
                &ips(p, "PrivateIpAddress")?,
                p.parsed("Ipv4PrefixCount")?,
                &prefixes(p, "Ipv4Prefix")?,
                ev,
            )?;
            let mut x = Xml::response(action, rid);
            x.leaf("networkInterfaceId", eni);
            x.items("assignedPrivateIpAddressesSet", new_ips, |x, a| {
                x.leaf("privateIpAddress", a);
            });
            x.items("assignedIpv4PrefixSet", new_pfx, |x, p| {
                x.leaf("ipv4Prefix", p);
            });
            Ok(x.finish())
        }
        "UnassignPrivateIpAddresses" => {
            st.unassign(
                p.req("NetworkInterfaceId")?,
                &ips(p, "PrivateIpAddress")?,
                &prefixes(p, "Ipv4Prefix")?,
                ev,
            )?;
            Ok(ok_return(action, rid))
        }
        "AssignIpv6Addresses" => {
            let eni = p.req("NetworkInterfaceId")?;
            let req = Ipv6AssignReq {
                addr_count: p.parsed("Ipv6AddressCount")?,
                addrs: p.list_parsed("Ipv6Addresses")?,
                prefix_count: p.parsed("Ipv6PrefixCount")?,
                prefixes: p.list_parsed("Ipv6Prefix")?,
            };
            let (addrs, prefixes) = st.assign_ipv6(eni, &req, ev)?;
            let mut x = Xml::response(action, rid);
            x.leaf("networkInterfaceId", eni);
            x.items("assignedIpv6Addresses", addrs, |x, a| {
                x.text(a);
            });
            x.items("assignedIpv6PrefixSet", prefixes, |x, p| {
                x.text(p);
            });
            Ok(x.finish())
        }
        "UnassignIpv6Addresses" => {
            let eni = p.req("NetworkInterfaceId")?;
            let addrs: Vec<std::net::Ipv6Addr> = p.list_parsed("Ipv6Addresses")?;
            let prefixes: Vec<ipnet::Ipv6Net> = p.list_parsed("Ipv6Prefix")?;
            st.unassign_ipv6(eni, &addrs, &prefixes, ev)?;
            let mut x = Xml::response(action, rid);
            x.leaf("networkInterfaceId", eni);
            x.items("unassignedIpv6Addresses", addrs, |x, a| {
                x.text(a);
            });
            x.items("unassignedIpv6PrefixSet", prefixes, |x, p| {
                x.text(p);
            });
            Ok(x.finish())
        }
        "CreateTags" | "DeleteTags" => {
            let ids = p.list("ResourceId");
            if ids.is_empty() {
                return Err(Error::api(
                    "MissingParameter",
                    "The request must contain the parameter ResourceId",
                ));
            }
            if action == "CreateTags" {
                st.create_tags(&ids, &Params::tags_of(p, "Tag"))?;
            } else {
                let tags: Vec<(String, Option<String>)> = p
                    .structs("Tag")
                    .into_iter()
                    .filter_map(|t| {
                        Some((t.get("Key")?.to_string(), t.get("Value").map(str::to_string)))
                    })
                    .collect();
                st.delete_tags(&ids, &tags)?;
            }
            Ok(ok_return(action, rid))
        }
        "RunInstances" => {
            let token = p.get("ClientToken").filter(|t| !t.is_empty());
            let fp = p.fingerprint();
            if let Some(t) = token {
                if let Some(ids) = st.check_token(t, action, &fp, now)? {
                    let res = st
                        .instances
                        .get(&ids[0])
                        .map(|i| i.reservation_id.clone())
                        .unwrap_or_default();
                    return Ok(run_response(st, rid, &res, &ids));
                }
            }
            let ni = p.structs("NetworkInterface").into_iter().next().unwrap_or_default();
            let max: u32 = p.parsed("MaxCount")?.unwrap_or(1);
            let min: u32 = p.parsed("MinCount")?.unwrap_or(1);
            if min > max {
                return Err(Error::api(
                    "InvalidParameterValue",
                    "MinCount must be less than or equal to MaxCount",
                ));
            }
            let mut groups = p.list("SecurityGroupId");
            groups.extend(ni.list("SecurityGroupId"));
            let req = RunReq {
                image_id: p.get("ImageId").unwrap_or("ami-00000000000000000").to_string(),
                instance_type: p.get("InstanceType").unwrap_or("m1.small").to_string(),
                count: max,
                subnet_id: ni.get("SubnetId").or(p.get("SubnetId")).unwrap_or_default().to_string(),
                groups,
                private_ip: match ni.parsed("PrivateIpAddress")? {
                    Some(ip) => Some(ip),
                    None => p.parsed("PrivateIpAddress")?,
                },
                secondary_count: ni.parsed("SecondaryPrivateIpAddressCount")?.unwrap_or(0),
                prefix_count: ni.parsed("Ipv4PrefixCount")?.unwrap_or(0),
                delete_on_termination: ni.bool("DeleteOnTermination")?.unwrap_or(true),
                tags: p.tag_specs("instance"),
                eni_tags: p.tag_specs("network-interface"),
            };
            let (res, ids) = st.run_instances(&req, ev)?;
            if let Some(t) = token {
                st.remember_token(t, action, &fp, ids.clone(), now);
                for i in &ids {
                    st.instances.get_mut(i).expect("launched").client_token = Some(t.to_string());
                }
            }
            Ok(run_response(st, rid, &res, &ids))
        }
        "TerminateInstances" => {
            let out = st.terminate(&p.list("InstanceId"), now, ev)?;
            let mut x = Xml::response(action, rid);
            x.items("instancesSet", out, |x, (id, prev, cur)| {
                x.leaf("instanceId", id)
                    .open("currentState")
                    .leaf("code", cur.code())
                    .leaf("name", cur.name())
                    .close("currentState")
                    .open("previousState")
                    .leaf("code", prev.code())
                    .leaf("name", prev.name())
                    .close("previousState");
            });
            Ok(x.finish())
        }
        _ => Err(invalid_action(action)),
    }
}
