//! Seeding (VPCs, subnets, security groups), ClientToken bookkeeping and tags: the resource
//! plumbing around the ENI rules in `ops.rs`.

use super::state::*;
use super::Error;
use ipnet::Ipv4Net;
use std::time::Instant;

fn bad(code: &str, msg: impl Into<String>) -> Error {
    Error::api(code, msg)
}

impl State {
    pub fn create_vpc(&mut self, cidr: Ipv4Net, tags: Tags) -> String {
        let id = self.new_id("vpc");
        let primary = VpcBlock {
            association_id: self.new_id("vpc-cidr-assoc"),
            cidr: cidr.trunc(),
            state: "associated".into(),
        };
        let vpc =
            Vpc { id: id.clone(), cidr: cidr.trunc(), blocks: vec![primary], ipv6: None, tags };
        self.vpcs.insert(id.clone(), vpc);
        id
    }

    /// Associates a secondary IPv4 block with a VPC (AssociateVpcCidrBlock, as seeding); returns
    /// the association id. The block must not overlap one the VPC has.
    pub fn associate_vpc_cidr(&mut self, vpc_id: &str, cidr: Ipv4Net) -> Result<String, Error> {
        let cidr = cidr.trunc();
        let vpc = self
            .vpcs
            .get(vpc_id)
            .ok_or_else(|| not_found("InvalidVpcID.NotFound", "vpc ID", vpc_id))?;
        if !(16..=28).contains(&cidr.prefix_len()) {
            return Err(bad("InvalidVpc.Range", format!("The CIDR '{cidr}' is invalid.")));
        }
        if vpc.associated().any(|b| b.contains(&cidr) || cidr.contains(&b)) {
            return Err(bad(
                "InvalidVpc.Range",
                format!("The CIDR '{cidr}' overlaps a CIDR block of {vpc_id}."),
            ));
        }
        let association_id = self.new_id("vpc-cidr-assoc");
        let block =
            VpcBlock { association_id: association_id.clone(), cidr, state: "associated".into() };
        self.vpcs.get_mut(vpc_id).expect("looked up above").blocks.push(block);
        Ok(association_id)
    }

    /// Disassociates a secondary block (DisassociateVpcCidrBlock, as seeding): it stays listed in
    /// state `disassociated`. Refused for the primary block and for a block with subnets.
    pub fn disassociate_vpc_cidr(&mut self, association_id: &str) -> Result<(), Error> {
        let missing = || {
            not_found("InvalidVpcCidrBlockAssociationID.NotFound", "association ID", association_id)
        };
        let vpc = self
            .vpcs
            .values()
            .find(|v| v.blocks.iter().any(|b| b.association_id == association_id))
            .ok_or_else(missing)?;
        let i = vpc.blocks.iter().position(|b| b.association_id == association_id).unwrap_or(0);
        let cidr = vpc.blocks[i].cidr;
        if i == 0 {
            return Err(bad("OperationNotPermitted", "The primary CIDR block cannot be removed."));
        }
        if self.subnets.values().any(|s| s.vpc_id == vpc.id && cidr.contains(&s.cidr)) {
            return Err(bad("OperationNotPermitted", format!("The CIDR '{cidr}' has subnets.")));
        }
        let id = vpc.id.clone();
        self.vpcs.get_mut(&id).expect("found above").blocks[i].state = "disassociated".into();
        Ok(())
    }

    /// Seeds a subnet; it must lie inside its VPC and overlap no other subnet.
    pub fn create_subnet(
        &mut self,
        vpc_id: &str,
        cidr: Ipv4Net,
        az: &str,
        tags: Tags,
    ) -> Result<String, Error> {
        let cidr = cidr.trunc();
        let vpc = self
            .vpcs
            .get(vpc_id)
            .ok_or_else(|| not_found("InvalidVpcID.NotFound", "vpc ID", vpc_id))?;
        if !vpc.associated().any(|b| b.contains(&cidr)) || cidr.prefix_len() > 28 {
            return Err(bad("InvalidSubnet.Range", format!("The CIDR '{cidr}' is invalid.")));
        }
        if self.subnets.values().any(|s| s.cidr.contains(&cidr) || cidr.contains(&s.cidr)) {
            return Err(bad(
                "InvalidSubnet.Conflict",
                format!("The CIDR '{cidr}' conflicts with another subnet"),
            ));
        }
        let id = self.new_id("subnet");
        let s = Subnet {
            id: id.clone(),
            vpc_id: vpc_id.into(),
            cidr,
            az: az.into(),
            tags,
            used: Default::default(),
            ipv6: None,
        };
        self.subnets.insert(id.clone(), s);
        Ok(id)
    }

    /// Seeds a security group.
    pub fn create_security_group(
        &mut self,
        vpc_id: &str,
        name: &str,
        tags: Tags,
    ) -> Result<String, Error> {
        if !self.vpcs.contains_key(vpc_id) {
            return Err(not_found("InvalidVpcID.NotFound", "vpc ID", vpc_id));
        }
        let id = self.new_id("sg");
        let g = SecurityGroup {
            id: id.clone(),
            vpc_id: vpc_id.into(),
            name: name.into(),
            description: name.into(),
            tags,
        };
        self.groups.insert(id.clone(), g);
        Ok(id)
    }

    /// Looks a ClientToken up: `Some(resources)` for a matching retry, an error for a mismatch;
    /// a token older than the account's token lifetime is forgotten, as EC2 does.
    pub fn check_token(
        &self,
        token: &str,
        action: &str,
        fingerprint: &str,
        now: Instant,
    ) -> Result<Option<Vec<String>>, Error> {
        let alive = |e: &&TokenEntry| e.at.is_none_or(|at| self.account.token_alive(at, now));
        match self.tokens.get(token).filter(alive) {
            None => Ok(None),
            Some(e) if e.action == action && e.fingerprint == fingerprint => {
                Ok(Some(e.resources.clone()))
            }
            Some(_) => Err(bad(
                "IdempotentParameterMismatch",
                format!("The client token '{token}' was already used with different parameters."),
            )),
        }
    }

    /// Records what a call with a ClientToken produced.
    pub fn remember_token(
        &mut self,
        token: &str,
        action: &str,
        fingerprint: &str,
        resources: Vec<String>,
        now: Instant,
    ) {
        let e = TokenEntry {
            action: action.into(),
            fingerprint: fingerprint.into(),
            resources,
            at: Some(now),
        };
        self.tokens.insert(token.into(), e);
    }

    /// CreateTags (all resources must exist; nothing changes otherwise).
    pub fn create_tags(&mut self, ids: &[String], tags: &Tags) -> Result<(), Error> {
        for id in ids {
            self.tags_mut(id)?;
        }
        for id in ids {
            self.tags_mut(id)?.extend(tags.clone());
        }
        Ok(())
    }

    /// DeleteTags: a tag with a value only goes if the value matches; without a value it always goes.
    pub fn delete_tags(
        &mut self,
        ids: &[String],
        tags: &[(String, Option<String>)],
    ) -> Result<(), Error> {
        for id in ids {
            self.tags_mut(id)?;
        }
        for id in ids {
            let t = self.tags_mut(id)?;
            for (k, v) in tags {
                if v.is_none() || t.get(k) == v.as_ref() {
                    t.remove(k);
                }
            }
        }
        Ok(())
    }
}
