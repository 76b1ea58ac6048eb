use super::describe::query_filters;
use super::*;
use crate::ec2::limiter::RateConfig;
use crate::ec2::metrics::CallLabels;
use crate::ec2::{Ec2Api, Query};

#[test]
fn default_budget_is_half_the_account_buckets() {
    let c = AwsEc2Config::default();
    assert_eq!(c.describe_rate(), RateConfig { qps: 10.0, burst: 50 });
    assert_eq!(c.mutate_rate(), RateConfig { qps: 2.5, burst: 25 });
    assert_eq!(c.validate(), Ok(()));
    let bad = AwsEc2Config { budget_share: 0.0, ..AwsEc2Config::default() };
    assert_eq!(bad.validate(), Err(AwsEc2ConfigError::BudgetShare(0.0)));
}

/// The resync period is sized against what the client allows itself: the account's describe
/// bucket times the budget share (flags included), not the account bucket.
#[tokio::test]
async fn describe_qps_is_the_shared_describe_rate() {
    let sdk = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .build();
    let client = Client::from_conf(sdk);
    let ec2 = AwsEc2::from_client(client.clone(), &AwsEc2Config::default()).unwrap();
    assert_eq!(ec2.describe_qps(), Some(10.0));
    let config = AwsEc2Config {
        describe: RateConfig { qps: 40.0, burst: 100 },
        budget_share: 0.75,
        ..AwsEc2Config::default()
    };
    assert_eq!(AwsEc2::from_client(client, &config).unwrap().describe_qps(), Some(30.0));
}

#[test]
fn sdk_retries_are_a_single_attempt() {
    assert_eq!(AwsEc2Config::sdk_retry_config().max_attempts(), 1);
}

/// The pagination every Describe call uses: all pages in order, each page its own limited,
/// metered and retried call (a failed page is re-sent with its own token, the listing is
/// not restarted), and an empty NextToken ends the listing as a missing one does.
#[tokio::test(start_paused = true)]
async fn pages_are_followed_and_a_failed_page_is_retried_alone() {
    use aws_sdk_ec2::operation::describe_subnets::{DescribeSubnetsError, DescribeSubnetsOutput};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    let config = AwsEc2Config::default();
    let sdk = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .build();
    let ec2 = AwsEc2::from_client(Client::from_conf(sdk), &config).unwrap();
    // Page i answers item i and the token of page i + 1; the last token is "".
    let tokens = [None, Some("p1"), Some("p2")];
    let next = ["p1", "p2", ""];
    let sent = Mutex::new(Vec::new());
    let failed_once = AtomicBool::new(false);
    let got: Vec<String> = ec2
        .describe_pages(
            "DescribeSubnets",
            |token: Option<String>| {
                sent.lock().unwrap().push(token.clone());
                let i = tokens.iter().position(|t| t.map(str::to_owned) == token).unwrap();
                let answer = if i == 1 && !failed_once.swap(true, Ordering::SeqCst) {
                    Err(SdkError::<DescribeSubnetsError, HttpResponse>::timeout_error("slow"))
                } else {
                    Ok(DescribeSubnetsOutput::builder()
                        .subnets(
                            aws_sdk_ec2::types::Subnet::builder()
                                .subnet_id(format!("s{i}"))
                                .build(),
                        )
                        .next_token(next[i])
                        .build())
                };
                std::future::ready(answer)
            },
            |page| page.subnets().iter().filter_map(|s| s.subnet_id().map(str::to_owned)).collect(),
            |page| page.next_token(),
        )
        .await
        .unwrap();
    assert_eq!(got, ["s0", "s1", "s2"]);
    let sent = sent.into_inner().unwrap();
    let want = [None, Some("p1"), Some("p1"), Some("p2")].map(|t| t.map(str::to_owned));
    assert_eq!(sent, want, "page 2 re-sent alone after its timeout");
    let calls = |result| {
        config.metrics.calls.get_or_create(&CallLabels { action: "DescribeSubnets", result }).get()
    };
    assert_eq!((calls("ok"), calls("transient")), (3, 1), "one metered attempt per request");
}

#[test]
fn query_filters_cover_ids_vpc_zone_and_tags() {
    let q = Query {
        ids: vec!["subnet-1".into()],
        vpc_id: Some("vpc-1".into()),
        zone: Some("us-east-1a".into()),
        tags: [("role".to_owned(), "pods".to_owned()), ("any".to_owned(), String::new())]
            .into_iter()
            .collect(),
    };
    let got: Vec<(String, Vec<String>)> = query_filters(&q, "subnet-id", true)
        .iter()
        .map(|f| (f.name().unwrap().to_owned(), f.values().to_vec()))
        .collect();
    let want: Vec<(String, Vec<String>)> = vec![
        ("subnet-id".into(), vec!["subnet-1".into()]),
        ("vpc-id".into(), vec!["vpc-1".into()]),
        ("availability-zone".into(), vec!["us-east-1a".into()]),
        ("tag-key".into(), vec!["any".into()]),
        ("tag:role".into(), vec!["pods".into()]),
    ];
    assert_eq!(got, want);
    assert_eq!(query_filters(&q, "group-id", false).len(), 4, "no zone for groups");
}
