//! enipool-operator: the only component that changes EC2. It turns Nodes and ENIPoolPolicies into
//! ENIs and addresses, and keeps each node's ENIPool a true record of them.
#![forbid(unsafe_code)]

pub mod ec2;
pub mod plan;
