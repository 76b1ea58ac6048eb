//! Shared setup: a simulator seeded with one VPC, subnets and a security group, and an SDK client.

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{InstanceNetworkInterfaceSpecification, InstanceType};
use aws_sdk_ec2::Client;
pub use enipool_ec2sim::Timing;
use enipool_ec2sim::{Config, Ec2Sim};
use std::time::Duration;

/// A seeded simulator and a client for it.
pub struct Env {
    pub sim: Ec2Sim,
    pub ec2: Client,
    pub vpc: String,
    /// 10.0.0.0/20 in us-west-2a.
    pub subnet: String,
    /// 10.0.16.0/28 in us-west-2a: 11 usable addresses.
    pub tiny: String,
    /// 10.0.32.0/26 in us-west-2a: room for exactly two aligned /28 prefixes.
    pub small: String,
    /// 10.0.64.0/24 in us-west-2b.
    pub other_az: String,
    pub sg: String,
}

/// Timing with every transition instant.
pub fn instant() -> Timing {
    Timing { attach: Duration::ZERO, detach: Duration::ZERO, terminate: Duration::ZERO }
}

pub async fn client(endpoint: &str, retries: u32) -> Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let retry = if retries <= 1 {
        aws_sdk_ec2::config::retry::RetryConfig::disabled()
    } else {
        aws_sdk_ec2::config::retry::RetryConfig::standard()
            .with_max_attempts(retries)
            .with_initial_backoff(Duration::from_millis(1))
    };
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-west-2"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "static"))
        .retry_config(retry)
        .load()
        .await;
    Client::new(&conf)
}

pub async fn env_with(timing: Timing) -> Env {
    let sim = Ec2Sim::start(Config { timing, ..Default::default() }).await.expect("start sim");
    let vpc = sim.create_vpc("10.0.0.0/16", &[("Name", "test")]).unwrap();
    let subnet = sim.create_subnet(&vpc, "10.0.0.0/20", "us-west-2a", &[("kind", "pods")]).unwrap();
    let tiny = sim.create_subnet(&vpc, "10.0.16.0/28", "us-west-2a", &[("kind", "tiny")]).unwrap();
    let small =
        sim.create_subnet(&vpc, "10.0.32.0/26", "us-west-2a", &[("kind", "small")]).unwrap();
    let other_az = sim.create_subnet(&vpc, "10.0.64.0/24", "us-west-2b", &[]).unwrap();
    let sg = sim.create_security_group(&vpc, "default", &[("role", "node")]).unwrap();
    let ec2 = client(&sim.endpoint_url(), 1).await;
    Env { sim, ec2, vpc, subnet, tiny, small, other_az, sg }
}

pub async fn env() -> Env {
    env_with(instant()).await
}

impl Env {
    /// Launches one instance; returns (instance id, primary ENI id).
    pub async fn launch(&self, itype: &str, subnet: &str) -> (String, String) {
        self.launch_with(itype, subnet, 0, 0, true).await
    }

    pub async fn launch_with(
        &self,
        itype: &str,
        subnet: &str,
        secondary: i32,
        prefixes: i32,
        dot: bool,
    ) -> (String, String) {
        let mut ni = InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .subnet_id(subnet)
            .groups(&self.sg)
            .delete_on_termination(dot);
        if secondary > 0 {
            ni = ni.secondary_private_ip_address_count(secondary);
        }
        if prefixes > 0 {
            ni = ni.ipv4_prefix_count(prefixes);
        }
        let out = self
            .ec2
            .run_instances()
            .image_id("ami-12345678")
            .instance_type(InstanceType::from(itype))
            .min_count(1)
            .max_count(1)
            .network_interfaces(ni.build())
            .send()
            .await
            .expect("RunInstances");
        let i = &out.instances()[0];
        let eni = i.network_interfaces()[0].network_interface_id().unwrap().to_string();
        (i.instance_id().unwrap().to_string(), eni)
    }

    /// Creates an ENI in `subnet` with `secondary` extra addresses.
    pub async fn create_eni(&self, subnet: &str, secondary: i32) -> String {
        let mut b = self.ec2.create_network_interface().subnet_id(subnet).groups(&self.sg);
        if secondary > 0 {
            b = b.secondary_private_ip_address_count(secondary);
        }
        let out = b.send().await.expect("CreateNetworkInterface");
        out.network_interface().unwrap().network_interface_id().unwrap().to_string()
    }

    pub async fn attach(&self, eni: &str, instance: &str, index: i32) -> String {
        let out = self
            .ec2
            .attach_network_interface()
            .network_interface_id(eni)
            .instance_id(instance)
            .device_index(index)
            .send()
            .await
            .expect("AttachNetworkInterface");
        out.attachment_id().unwrap().to_string()
    }

    pub async fn eni(&self, id: &str) -> aws_sdk_ec2::types::NetworkInterface {
        let out = self
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(id)
            .send()
            .await
            .expect("describe");
        out.network_interfaces()[0].clone()
    }

    pub async fn available_ips(&self, subnet: &str) -> i32 {
        let out =
            self.ec2.describe_subnets().subnet_ids(subnet).send().await.expect("DescribeSubnets");
        out.subnets()[0].available_ip_address_count().unwrap()
    }
}

/// EC2 error code and HTTP status of a failed call (panics on success, printing it).
pub fn code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    r: Result<T, aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>>,
) -> (String, u16) {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            (e.code().unwrap_or("").to_string(), status)
        }
    }
}
