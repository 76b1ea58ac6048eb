//! [`Ec2Api`](super::Ec2Api) over aws-sdk-ec2: every call goes through the class limiter and
//! retry loop ([`Ec2Limiter`]), is classified into [`Ec2Error`](super::Ec2Error)
//! ([`classify`](super::classify)) and converted into domain types ([`convert`](super::convert)).
//!
//! This file builds the client and sends one limited request; the Describe pagination and filters
//! are in `describe.rs`, the `Ec2Api` calls themselves in `api.rs`.

use super::classify::from_sdk;
use super::limiter::{ApiClass, Ec2Limiter, Retry};
use super::Ec2Result;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::Client;
use std::future::Future;

mod api;
mod config;
mod describe;
pub use config::{AwsEc2Config, AwsEc2ConfigError, StaticCredentials};

/// Page size for paginated Describe calls (EC2 allows 5..=1000).
const PAGE_SIZE: i32 = 1000;
/// DescribeInstanceTypes accepts at most 100 types per call.
const TYPES_PER_CALL: usize = 100;

/// Installs the process-wide rustls provider (aws-lc-rs) that both kube and the AWS SDK use.
/// Call once at the start of any binary that links both; a second call (or a provider someone
/// else installed) is not an error.
pub fn install_crypto_provider() {
    // Err means a provider is already installed: exactly what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// [`Ec2Api`](super::Ec2Api) over aws-sdk-ec2.
#[derive(Debug)]
pub struct AwsEc2 {
    client: Client,
    limiter: Ec2Limiter,
}

impl AwsEc2 {
    /// Loads the AWS configuration (explicit values first, then the standard chain) and builds
    /// the client with explicit retry and timeout settings.
    pub async fn new(config: AwsEc2Config) -> Result<Self, AwsEc2ConfigError> {
        config.validate()?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(AwsEc2Config::sdk_retry_config())
            .timeout_config(config.sdk_timeout_config());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(c) = &config.static_credentials {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "enipool-static",
            ));
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(AwsEc2ConfigError::NoRegion);
        }
        Ok(Self::with_limiter(Client::new(&sdk), &config))
    }

    /// Wraps an existing client. Its retry and timeout settings are replaced by the ones of
    /// `config` so the limiter stays the only retrier.
    pub fn from_client(client: Client, config: &AwsEc2Config) -> Result<Self, AwsEc2ConfigError> {
        config.validate()?;
        let conf = client
            .config()
            .to_builder()
            .retry_config(AwsEc2Config::sdk_retry_config())
            .timeout_config(config.sdk_timeout_config())
            .build();
        Ok(Self::with_limiter(Client::from_conf(conf), config))
    }

    fn with_limiter(client: Client, config: &AwsEc2Config) -> Self {
        let limiter = Ec2Limiter::new(
            config.describe_rate(),
            config.mutate_rate(),
            config.aimd,
            config.retry_policy(),
            config.metrics.clone(),
        );
        Self { client, limiter }
    }

    /// The SDK client (for seeding tests; production code goes through [`Ec2Api`](super::Ec2Api)).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The limiters (rates, for status and tests).
    pub fn limiter(&self) -> &Ec2Limiter {
        &self.limiter
    }

    /// One EC2 request under the limiter: `send` builds and sends it afresh per attempt.
    async fn send<T, E, F, Fut>(
        &self,
        action: &'static str,
        class: ApiClass,
        retry: Retry,
        send: F,
    ) -> Ec2Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.limiter
            .call(action, class, retry, || {
                let fut = send();
                async move { fut.await.map_err(|e| from_sdk(action, e)) }
            })
            .await
    }
}

#[cfg(test)]
mod tests;
