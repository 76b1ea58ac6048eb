//! Fault injection (throttling, 5xx, HTML errors, latency, Describe lag), counters and the admin
//! endpoints.

use super::harness::*;
use aws_sdk_ec2::types::{Filter, Tag};
use enipool_ec2sim::{ErrorRule, FaultConfig, TokenBucketSpec};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rule(action: &str, code: &str, count: u32, html: bool) -> ErrorRule {
    ErrorRule {
        action: Some(action.into()),
        code: code.into(),
        status: 0,
        probability: 1.0,
        count: Some(count),
        html,
    }
}

#[tokio::test]
async fn per_action_token_buckets_throttle_with_503() {
    let e = env().await;
    let eni = e.create_eni(&e.subnet, 0).await;
    let mut cfg = FaultConfig::default();
    cfg.throttle.insert("Mutate*".into(), TokenBucketSpec { capacity: 3.0, refill_per_sec: 10.0 });
    e.sim.set_faults(cfg);
    let tag = || {
        e.ec2.create_tags().resources(&eni).tags(Tag::builder().key("k").value("v").build()).send()
    };
    for _ in 0..3 {
        tag().await.unwrap();
    }
    assert_eq!(code(tag().await), ("RequestLimitExceeded".into(), 503));
    // Another action has its own bucket; reads are not throttled by Mutate*.
    e.ec2.delete_tags().resources(&eni).tags(Tag::builder().key("x").build()).send().await.unwrap();
    e.eni(&eni).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    tag().await.unwrap();
    let c = e.sim.counters();
    assert_eq!((c["CreateTags"].calls, c["CreateTags"].ok, c["CreateTags"].throttled), (5, 4, 1));
    assert_eq!(c["CreateNetworkInterface"].calls, 1);
}

#[tokio::test]
async fn injected_server_errors() {
    let e = env().await;
    e.sim.set_faults(FaultConfig {
        errors: vec![rule("DescribeSubnets", "InternalError", 1, false)],
        ..Default::default()
    });
    assert_eq!(code(e.ec2.describe_subnets().send().await), ("InternalError".into(), 500));
    e.ec2.describe_subnets().send().await.unwrap();
    e.sim.set_faults(FaultConfig {
        errors: vec![rule("DescribeSubnets", "ServiceUnavailable", 1, true)],
        ..Default::default()
    });
    assert_eq!(
        code(e.ec2.describe_subnets().send().await),
        (String::new(), 503),
        "an HTML 5xx has no code"
    );
    // The SDK's standard retry rides over two injected 503s.
    let retrying = client(&e.sim.endpoint_url(), 3).await;
    e.sim.reset_counters();
    e.sim.set_faults(FaultConfig {
        errors: vec![rule("DescribeSubnets", "ServiceUnavailable", 2, false)],
        ..Default::default()
    });
    retrying.describe_subnets().send().await.unwrap();
    let c = e.sim.counters()["DescribeSubnets"];
    assert_eq!((c.calls, c.injected, c.ok), (3, 2, 1));
}

#[tokio::test]
async fn latency_is_added() {
    let e = env().await;
    let mut cfg = FaultConfig::default();
    cfg.latency_ms.insert("DescribeSubnets".into(), 200);
    e.sim.set_faults(cfg);
    let t = Instant::now();
    e.ec2.describe_subnets().send().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn describe_lags_writes() {
    let e = env().await;
    e.sim.set_faults(FaultConfig { describe_lag_ms: 400, ..Default::default() });
    let eni = e.create_eni(&e.subnet, 0).await;
    let by_id = || {
        e.ec2
            .describe_network_interfaces()
            .filters(Filter::builder().name("network-interface-id").values(&eni).build())
            .send()
    };
    assert!(
        by_id().await.unwrap().network_interfaces().is_empty(),
        "a fresh ENI is not visible yet"
    );
    let r = e.ec2.describe_network_interfaces().network_interface_ids(&eni).send().await;
    assert_eq!(code(r).0, "InvalidNetworkInterfaceID.NotFound");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(by_id().await.unwrap().network_interfaces().len(), 1);
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[tokio::test]
async fn admin_endpoints() {
    let e = env().await;
    e.create_eni(&e.subnet, 0).await;
    let addr = e.sim.addr();
    let (s, body) = http(addr, "GET", "/admin/counters", "").await;
    assert_eq!(s, 200);
    assert!(body.contains("CreateNetworkInterface"), "{body}");
    let (s, body) = http(addr, "GET", "/admin/state", "").await;
    assert_eq!(s, 200);
    assert!(body.contains("\"enis\"") && body.contains(&e.subnet), "{body}");
    let cfg = r#"{"throttle":{"DescribeSubnets":{"capacity":0.0,"refill_per_sec":0.0}}}"#;
    assert_eq!(http(addr, "POST", "/admin/faults", cfg).await.0, 204);
    assert_eq!(code(e.ec2.describe_subnets().send().await), ("RequestLimitExceeded".into(), 503));
    assert_eq!(http(addr, "POST", "/admin/reset", "").await.0, 204);
    let out = e.ec2.describe_subnets().send().await.unwrap();
    assert!(out.subnets().is_empty(), "reset clears resources and faults");
    e.sim.shutdown().await;
}
