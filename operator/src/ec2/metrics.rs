//! Metrics of the EC2 client: one place records every attempt, every throttle and the limiter's
//! current rate. Labels are the EC2 action, the result category and the API class — never a node,
//! an instance or an ENI id (unbounded cardinality).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// `{action, result}`: result is `ok` or an [`super::Ec2ErrorKind::as_str`] category.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// EC2 action, e.g. `AssignPrivateIpAddresses`.
    pub action: &'static str,
    /// `ok` or the error category.
    pub result: &'static str,
}

/// `{action}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// EC2 action.
    pub action: &'static str,
}

/// `{class}`: `describe` or `mutate`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

type HistogramFamily = Family<ActionLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 10 ms .. ~41 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

/// Metrics of [`super::aws::AwsEc2`]. Cheap to clone (handles share the same series); create one,
/// [`register`](Self::register) it, and pass it in [`super::aws::AwsEc2Config::metrics`].
#[derive(Debug, Clone)]
pub struct Ec2Metrics {
    /// `ec2_api_calls_total{action,result}`: every HTTP attempt, retries included.
    pub calls: Family<CallLabels, Counter>,
    /// `ec2_api_duration_seconds{action}`: latency of each attempt (limiter wait excluded).
    pub duration: HistogramFamily,
    /// `ec2_api_retries_total{action,result}`: retries made, by the error that caused them.
    pub retries: Family<CallLabels, Counter>,
    /// `ec2_throttled_total{class}`: `RequestLimitExceeded` answers.
    pub throttled: Family<ClassLabels, Counter>,
    /// `ec2_limiter_rate{class}`: the rate (requests/s) the AIMD limiter currently allows.
    pub limiter_rate: Family<ClassLabels, Gauge<f64, AtomicU64>>,
    /// `ec2_limiter_wait_seconds{class}`: time spent waiting for a limiter token.
    pub limiter_wait: Family<ClassLabels, Counter<f64, AtomicU64>>,
}

impl Default for Ec2Metrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            retries: Family::default(),
            throttled: Family::default(),
            limiter_rate: Family::default(),
            limiter_wait: Family::default(),
        }
    }
}

impl Ec2Metrics {
    /// Registers the series in `registry` (typically the operator's sub-registry, so the exposed
    /// names become `enipool_ec2_…`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ec2_api_calls",
            "EC2 API attempts by action and result category",
            self.calls.clone(),
        );
        registry.register(
            "ec2_api_duration_seconds",
            "Latency of one EC2 API attempt",
            self.duration.clone(),
        );
        registry.register(
            "ec2_api_retries",
            "EC2 API retries by action and the error category that caused them",
            self.retries.clone(),
        );
        registry.register(
            "ec2_throttled",
            "RequestLimitExceeded answers by API class",
            self.throttled.clone(),
        );
        registry.register(
            "ec2_limiter_rate",
            "Requests per second the AIMD limiter currently allows, by API class",
            self.limiter_rate.clone(),
        );
        registry.register(
            "ec2_limiter_wait_seconds",
            "Time spent waiting for an EC2 rate-limiter token, by API class",
            self.limiter_wait.clone(),
        );
    }
}
