//! `AwsEc2` against a real `moto_server`: wire compatibility of every call on the happy path.
//!
//! moto (5.2) is not EC2: no ENI/IP limits, random and duplicated addresses, prefixes ignored, no
//! ClientToken idempotency, DeleteOnTermination ignored, AssignPrivateIpAddresses answers with all
//! the ENI's addresses, some filters answer 500. This test therefore asserts only what moto does
//! faithfully; EC2 semantics are tested against the EC2 simulator.
//!
//! `moto_server` must be installed (`pip install 'moto[server]'`). Without it this test FAILS —
//! it never passes silently. `MOTO_SERVER` overrides the executable path.

use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
use enipool_crds::tags;
use enipool_operator::ec2::aws::{
    install_crypto_provider, AwsEc2, AwsEc2Config, StaticCredentials,
};
use enipool_operator::ec2::metrics::Ec2Metrics;
use enipool_operator::ec2::types_table::STATIC_LIMITS;
use enipool_operator::ec2::{CreateEni, Ec2Api, Ec2ErrorKind, InstanceTypeInfo, Query};
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `moto_server` child process, killed on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    fn start() -> Moto {
        let exe = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free local port")
            .port();
        let mut child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{exe}` ({e}). This test needs moto's EC2 server: \
                     install it with `pip install 'moto[server]'` (or set MOTO_SERVER)."
                )
            });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("moto_server status") {
                panic!("`{exe}` exited before listening on port {port}: {status}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "`{exe}` did not listen on port {port} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Moto {
    /// Seeds moto's random generator so ids, MACs and addresses are the same on every run
    /// (moto draws addresses at random and may repeat one on the same ENI).
    fn seed(&self, seed: u32) {
        use std::io::{Read, Write};
        let addr = self.url.trim_start_matches("http://");
        let mut conn = TcpStream::connect(addr).expect("connect to moto");
        write!(
            conn,
            "POST /moto-api/seed?a={seed} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("seed request");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).expect("seed answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "moto seed: {answer}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

async fn client(moto: &Moto, metrics: Ec2Metrics) -> AwsEc2 {
    install_crypto_provider();
    AwsEc2::new(AwsEc2Config {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.url.clone()),
        static_credentials: Some(StaticCredentials::test()),
        metrics,
        ..AwsEc2Config::default()
    })
    .await
    .expect("AwsEc2 for moto")
}

struct Seed {
    vpc: String,
    subnet: String,
    sg: String,
    instance: String,
}

/// VPC, tagged subnet, security group and one m5.large, made with the SDK directly.
async fn seed(moto: &Moto, ec2: &AwsEc2) -> Seed {
    let c = ec2.client();
    // moto wants one EC2 call before the seed takes effect.
    c.describe_vpcs().send().await.expect("DescribeVpcs");
    moto.seed(42);
    let vpc = c
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .expect("CreateVpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_owned();
    let subnet = c
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.1.0/24")
        .availability_zone("us-east-1a")
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Subnet)
                .tags(tag("enipool.io/pods", "true"))
                .tags(tag("tier", "private"))
                .build(),
        )
        .send()
        .await
        .expect("CreateSubnet")
        .subnet()
        .and_then(|s| s.subnet_id())
        .expect("subnet id")
        .to_owned();
    // A second subnet in another zone, untagged: the queries must leave it out.
    c.create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.2.0/24")
        .availability_zone("us-east-1b")
        .send()
        .await
        .expect("CreateSubnet 2");
    let sg = c
        .create_security_group()
        .group_name("enipool-pods")
        .description("pods")
        .vpc_id(&vpc)
        .send()
        .await
        .expect("CreateSecurityGroup")
        .group_id()
        .expect("group id")
        .to_owned();
    let instance = c
        .run_instances()
        .image_id("ami-12345678")
        .min_count(1)
        .max_count(1)
        .instance_type(InstanceType::M5Large)
        .subnet_id(&subnet)
        .security_group_ids(&sg)
        .send()
        .await
        .expect("RunInstances")
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .expect("instance id")
        .to_owned();
    Seed { vpc, subnet, sg, instance }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_ec2_happy_path_against_moto() {
    let moto = Moto::start();
    let metrics = Ec2Metrics::default();
    let ec2 = client(&moto, metrics.clone()).await;
    let s = seed(&moto, &ec2).await;

    // DescribeInstances: unknown ids are absent, not an error.
    let instances = ec2
        .describe_instances(&[s.instance.clone(), "i-0123456789abcdef0".into()])
        .await
        .expect("describe_instances");
    assert_eq!(instances.len(), 1);
    let inst = &instances[0];
    assert_eq!(inst.id, s.instance);
    assert_eq!(inst.instance_type, "m5.large");
    assert_eq!(inst.vpc_id, s.vpc);
    assert_eq!(inst.subnet_id, s.subnet);
    assert_eq!(inst.zone, "us-east-1a");
    assert!(inst.primary_eni.starts_with("eni-"), "{inst:?}");
    assert!(inst.primary_ip.is_some());
    assert!(inst.security_groups.contains(&s.sg), "{inst:?}");
    assert!(ec2.describe_instances(&[]).await.unwrap().is_empty());

    // DescribeInstanceTypes: real data; an unknown type is absent, the known one still answered.
    let types = ec2
        .describe_instance_types(&["m5.large".into(), "x9.nothing".into()])
        .await
        .expect("describe_instance_types");
    assert_eq!(types.get("m5.large"), Some(&InstanceTypeInfo { max_enis: 3, ipv4_per_eni: 10 }));
    assert_eq!(types.len(), 1);

    // Subnets by tag value, by tag key, by zone, by id.
    let by_tag = ec2
        .describe_subnets(&Query {
            vpc_id: Some(s.vpc.clone()),
            tags: map(&[("tier", "private")]),
            ..Query::default()
        })
        .await
        .expect("describe_subnets by tag");
    assert_eq!(by_tag.len(), 1);
    assert_eq!(by_tag[0].id, s.subnet);
    assert_eq!(by_tag[0].cidr, "10.0.1.0/24".parse().unwrap());
    assert_eq!(by_tag[0].zone, "us-east-1a");
    assert_eq!(by_tag[0].vpc_id, s.vpc);
    assert_eq!(by_tag[0].tags.get("tier").map(String::as_str), Some("private"));
    let by_key = ec2
        .describe_subnets(&Query {
            vpc_id: Some(s.vpc.clone()),
            tags: map(&[("enipool.io/pods", "")]),
            ..Query::default()
        })
        .await
        .expect("describe_subnets by tag key");
    assert_eq!(by_key.iter().map(|x| &x.id).collect::<Vec<_>>(), vec![&s.subnet]);
    let by_zone = ec2
        .describe_subnets(&Query {
            vpc_id: Some(s.vpc.clone()),
            zone: Some("us-east-1b".into()),
            ..Query::default()
        })
        .await
        .expect("describe_subnets by zone");
    assert_eq!(by_zone.len(), 1);
    assert_ne!(by_zone[0].id, s.subnet);
    let by_id = ec2
        .describe_subnets(&Query {
            ids: vec![s.subnet.clone(), "subnet-0123456789abcdef0".into()],
            ..Query::default()
        })
        .await
        .expect("describe_subnets by id");
    assert_eq!(by_id.len(), 1, "a missing id is absent, not an error");

    let groups = ec2
        .describe_security_groups(&Query { vpc_id: Some(s.vpc.clone()), ..Query::default() })
        .await
        .expect("describe_security_groups");
    assert!(groups.iter().any(|g| g.id == s.sg && g.vpc_id == s.vpc));

    // CreateNetworkInterface with addresses, tags, description and a ClientToken.
    let eni_tags = map(&[
        (tags::CLUSTER, "moto-cluster"),
        (tags::NODE, "node-1"),
        (tags::OWNER, tags::OWNER_VALUE),
    ]);
    let eni = ec2
        .create_eni(&CreateEni {
            subnet_id: s.subnet.clone(),
            security_groups: vec![s.sg.clone()],
            secondary_ips: 3,
            prefixes: 0,
            tags: eni_tags.clone(),
            description: "enipool node-1".into(),
            client_token: "op-0001".into(),
        })
        .await
        .expect("create_eni");
    assert!(eni.id.starts_with("eni-"));
    assert_eq!(eni.mac, eni.mac.to_ascii_lowercase());
    assert_eq!(eni.mac.len(), 17);
    assert_eq!(eni.subnet_id, s.subnet);
    assert_eq!(eni.status, "available");
    assert!(eni.attachment.is_none());
    assert!(eni.primary_ip.is_some());
    assert_eq!(eni.secondary_ips.len(), 3);
    assert_eq!(eni.security_groups, vec![s.sg.clone()]);
    assert_eq!(eni.description, "enipool node-1");
    for (k, v) in &eni_tags {
        assert_eq!(eni.tags.get(k), Some(v), "tag {k}");
    }

    // Attach, DeleteOnTermination (moto ignores the value: only the call is checked).
    let attachment = ec2.attach_eni(&eni.id, &s.instance, 1).await.expect("attach_eni");
    assert!(attachment.starts_with("eni-attach-"), "{attachment}");
    ec2.set_delete_on_termination(&eni.id, &attachment, true)
        .await
        .expect("set_delete_on_termination");

    // Assign / unassign addresses. moto answers AssignPrivateIpAddresses with every address of
    // the ENI (EC2 lists only the new ones), so the new ones are found by describing.
    let before = eni.secondary_ips.clone();
    let assigned = ec2.assign_ips(&eni.id, 2).await.expect("assign_ips");
    assert!(assigned.len() >= 2, "{assigned:?}");
    let now = ec2.describe_enis(std::slice::from_ref(&eni.id)).await.expect("describe_enis");
    assert_eq!(now.len(), 1);
    let added: Vec<_> =
        now[0].secondary_ips.iter().filter(|ip| !before.contains(ip)).copied().collect();
    assert_eq!(added.len(), 2, "{:?}", now[0]);
    for ip in &added {
        assert!(assigned.contains(ip), "{ip} not in the answer {assigned:?}");
    }
    ec2.unassign_ips(&eni.id, &added).await.expect("unassign_ips");
    let now = ec2.describe_enis(std::slice::from_ref(&eni.id)).await.unwrap();
    for ip in &added {
        assert!(!now[0].secondary_ips.contains(ip), "{ip} still on {:?}", now[0]);
    }
    assert_eq!(now[0].secondary_ips, before);

    // The per-node sync: both ENIs of the instance, ours at device index 1.
    let on_instance =
        ec2.describe_instance_enis(&s.instance).await.expect("describe_instance_enis");
    assert!(on_instance.iter().any(|e| e.id == inst.primary_eni));
    let ours = on_instance.iter().find(|e| e.id == eni.id).expect("attached ENI listed");
    let a = ours.attachment.as_ref().expect("attachment");
    assert_eq!((a.id.as_str(), a.instance_id.as_str()), (attachment.as_str(), s.instance.as_str()));
    assert_eq!(a.device_index, 1);
    assert_eq!(ours.status, "in-use");

    // GC listing by cluster tag.
    let cluster = ec2.list_cluster_enis("moto-cluster").await.expect("list_cluster_enis");
    assert_eq!(cluster.iter().map(|e| &e.id).collect::<Vec<_>>(), vec![&eni.id]);
    assert!(ec2.list_cluster_enis("another-cluster").await.unwrap().is_empty());

    // Detach (instant in moto) and delete.
    ec2.detach_eni(&attachment, false).await.expect("detach_eni");
    let now = ec2.describe_enis(std::slice::from_ref(&eni.id)).await.unwrap();
    assert_eq!(now[0].status, "available");
    assert!(now[0].attachment.is_none(), "{:?}", now[0]);
    ec2.delete_eni(&eni.id).await.expect("delete_eni");
    assert!(ec2.describe_enis(std::slice::from_ref(&eni.id)).await.unwrap().is_empty());
    assert!(ec2.list_cluster_enis("moto-cluster").await.unwrap().is_empty());

    // A real EC2 error code travels through classification.
    let gone = ec2.delete_eni(&eni.id).await.expect_err("second delete");
    assert_eq!(gone.kind, Ec2ErrorKind::NotFound, "{gone}");
    assert_eq!(gone.action, "DeleteNetworkInterface");
    assert!(gone.code.ends_with(".NotFound"), "{gone:?}");

    // Every attempt is in the metrics.
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"ec2_api_calls_total{action="CreateNetworkInterface",result="ok"} 1"#,
        r#"ec2_api_calls_total{action="DeleteNetworkInterface",result="not_found"} 1"#,
        r#"ec2_limiter_rate{class="mutate"} 2.5"#,
        r#"ec2_limiter_rate{class="describe"} 10.0"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("ec2_api_duration_seconds_count{action=\"AttachNetworkInterface\"} 1"));
}

/// The static fallback table must agree with DescribeInstanceTypes (moto serves AWS's own data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_table_matches_describe_instance_types() {
    let moto = Moto::start();
    let ec2 = client(&moto, Ec2Metrics::default()).await;
    let names: Vec<String> = STATIC_LIMITS.iter().map(|r| r.0.to_owned()).collect();
    let answer = ec2.describe_instance_types(&names).await.expect("describe_instance_types");
    let mut wrong = Vec::new();
    for &(t, max_enis, ips) in STATIC_LIMITS {
        let want = InstanceTypeInfo { max_enis, ipv4_per_eni: ips };
        if answer.get(t) != Some(&want) {
            wrong.push(format!("{t}: table {want:?}, EC2 {:?}", answer.get(t)));
        }
    }
    assert!(wrong.is_empty(), "static table drifted:\n{}", wrong.join("\n"));
}
