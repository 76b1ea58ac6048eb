//! The EC2 simulator driven through the real `aws-sdk-ec2` client: every response must parse, and
//! every limit and error enipool relies on is enforced with EC2's code and HTTP status.

mod ec2sim {
    mod faults;
    pub mod harness;
    mod ipv6;
    mod lifecycle;
    mod limits;
    mod listing;
    mod rules;
}
