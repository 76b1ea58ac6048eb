//! Configuration of [`AwsEc2`](super::AwsEc2): region, endpoint and credentials, the share of
//! the account's EC2 budget, and the retry and timeout settings that keep the limiter the only
//! retrier.

use crate::ec2::limiter::{AimdConfig, Backoff, RateConfig, RetryPolicy};
use crate::ec2::metrics::Ec2Metrics;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use std::time::Duration;

/// Fixed credentials (the EC2 simulator / moto, or an explicit key pair). Production uses the
/// standard chain (env, web identity / IRSA, pod identity, IMDS).
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Session token, if any.
    pub session_token: Option<String>,
}

impl StaticCredentials {
    /// The dummy pair simulators accept.
    pub fn test() -> Self {
        Self { access_key_id: "test".into(), secret_access_key: "test".into(), session_token: None }
    }
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Configuration of [`AwsEc2`](super::AwsEc2).
#[derive(Debug, Clone)]
pub struct AwsEc2Config {
    /// Region; `None` = the standard chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Endpoint override (the EC2 simulator, moto); `None` = the real regional endpoint.
    pub endpoint_url: Option<String>,
    /// Fixed credentials; `None` = the standard credential chain.
    pub static_credentials: Option<StaticCredentials>,
    /// The account's describe bucket (before [`budget_share`](Self::budget_share)).
    pub describe: RateConfig,
    /// The account's mutate bucket (before [`budget_share`](Self::budget_share)).
    pub mutate: RateConfig,
    /// Fraction of the account budget enipool may use (`0 < share <= 1`): other tools (the VPC
    /// resource controller, Karpenter, Terraform, ...) spend from the same buckets.
    pub budget_share: f64,
    /// AIMD parameters of both limiters.
    pub aimd: AimdConfig,
    /// Attempts per call (first included) for retryable errors.
    pub max_attempts: u32,
    /// Backoff after transient errors.
    pub transient_backoff: Backoff,
    /// Backoff after `RequestLimitExceeded`.
    pub throttled_backoff: Backoff,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one attempt (request sent → response read).
    pub attempt_timeout: Duration,
    /// Where calls, latencies, throttles and the limiter rate are recorded.
    pub metrics: Ec2Metrics,
}

impl Default for AwsEc2Config {
    fn default() -> Self {
        let retry = RetryPolicy::default();
        Self {
            region: None,
            endpoint_url: None,
            static_credentials: None,
            describe: RateConfig::EC2_DESCRIBE,
            mutate: RateConfig::EC2_MUTATE,
            budget_share: 0.5,
            aimd: AimdConfig::default(),
            max_attempts: retry.max_attempts,
            transient_backoff: retry.transient,
            throttled_backoff: retry.throttled,
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
            metrics: Ec2Metrics::default(),
        }
    }
}

impl AwsEc2Config {
    /// The describe bucket enipool uses (account bucket × share).
    pub fn describe_rate(&self) -> RateConfig {
        self.describe.share(self.budget_share)
    }

    /// The mutate bucket enipool uses (account bucket × share).
    pub fn mutate_rate(&self) -> RateConfig {
        self.mutate.share(self.budget_share)
    }

    pub(super) fn validate(&self) -> Result<(), AwsEc2ConfigError> {
        if !(self.budget_share > 0.0 && self.budget_share <= 1.0) {
            return Err(AwsEc2ConfigError::BudgetShare(self.budget_share));
        }
        for (class, r) in [("describe", self.describe_rate()), ("mutate", self.mutate_rate())] {
            if !r.is_valid() {
                return Err(AwsEc2ConfigError::Rate { class, qps: r.qps, burst: r.burst });
            }
        }
        if self.max_attempts == 0 {
            return Err(AwsEc2ConfigError::MaxAttempts);
        }
        Ok(())
    }

    pub(super) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            transient: self.transient_backoff,
            throttled: self.throttled_backoff,
        }
    }

    /// SDK retries are set explicitly to ONE attempt: [`Ec2Limiter::call`](crate::ec2::limiter::Ec2Limiter::call) is the only retrier.
    /// With the SDK's default (standard mode, 3 attempts, retrying 500/503) a throttled request
    /// would be re-sent by the SDK behind our limiter's back — two limiters stacked, up to 3 × our
    /// attempts per call, and AIMD never seeing the throttles it must react to.
    pub(super) fn sdk_retry_config() -> RetryConfig {
        RetryConfig::standard().with_max_attempts(1)
    }

    pub(super) fn sdk_timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            // One attempt, so the operation timeout equals the attempt timeout.
            .operation_timeout(self.attempt_timeout)
            .build()
    }
}

/// Why [`AwsEc2::new`](super::AwsEc2::new) refused a configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AwsEc2ConfigError {
    /// No region configured or discoverable.
    #[error("no AWS region: configure one or set AWS_REGION (IMDS supplies it on EC2)")]
    NoRegion,
    /// `budget_share` outside (0, 1].
    #[error("EC2 budget share must be in (0, 1], got {0}")]
    BudgetShare(f64),
    /// A rate that allows nothing.
    #[error("invalid EC2 {class} rate: {qps}/s, burst {burst}")]
    Rate {
        class: &'static str,
        /// Effective requests per second.
        qps: f64,
        burst: u32,
    },
    /// `max_attempts` of 0.
    #[error("EC2 max_attempts must be at least 1")]
    MaxAttempts,
}
