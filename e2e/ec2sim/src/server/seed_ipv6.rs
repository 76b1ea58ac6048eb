//! Seeding the IPv6 side of a VPC, as a cluster's installer would with AssociateVpcCidrBlock and
//! AssociateSubnetCidrBlock.

use super::Ec2Sim;
use crate::Result;
use ipnet::Ipv6Net;

impl Ec2Sim {
    /// Gives a VPC its Amazon-provided IPv6 /56; returns it.
    pub fn associate_vpc_ipv6(&self, vpc_id: &str) -> Result<Ipv6Net> {
        self.shared.with_state(|st, _, _| st.associate_vpc_ipv6(vpc_id))
    }

    /// Gives a subnet the `index`-th /64 of its VPC's IPv6 block; returns it.
    pub fn associate_subnet_ipv6(&self, subnet_id: &str, index: u8) -> Result<Ipv6Net> {
        self.shared.with_state(|st, _, _| st.associate_subnet_ipv6(subnet_id, index))
    }
}
