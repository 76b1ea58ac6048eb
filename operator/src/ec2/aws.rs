//! [`Ec2Api`] over aws-sdk-ec2: every call goes through the class limiter and retry loop
//! ([`Ec2Limiter`]), is classified into [`Ec2Error`] ([`classify`]) and converted into domain
//! types ([`convert`]).

use super::classify::{self, from_sdk};
use super::convert;
use super::limiter::{AimdConfig, ApiClass, Backoff, Ec2Limiter, RateConfig, Retry, RetryPolicy};
use super::metrics::Ec2Metrics;
use super::{
    CreateEni, Ec2Api, Ec2ErrorKind, Ec2Result, Eni, Instance, InstanceTypeInfo, Query,
    SecurityGroup, Subnet,
};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, InstanceType, NetworkInterfaceAttachmentChanges, ResourceType, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use enipool_crds::tags;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

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

/// Fixed credentials (the EC2 simulator / moto, or an explicit key pair). Production uses the
/// standard chain (env, web identity / IRSA, pod identity, IMDS).
#[derive(Clone)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
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

/// Configuration of [`AwsEc2`].
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

    fn validate(&self) -> Result<(), AwsEc2ConfigError> {
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

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            transient: self.transient_backoff,
            throttled: self.throttled_backoff,
        }
    }

    /// SDK retries are set explicitly to ONE attempt: [`Ec2Limiter::call`] is the only retrier.
    /// With the SDK's default (standard mode, 3 attempts, retrying 500/503) a throttled request
    /// would be re-sent by the SDK behind our limiter's back — two limiters stacked, up to 3 × our
    /// attempts per call, and AIMD never seeing the throttles it must react to.
    fn sdk_retry_config() -> RetryConfig {
        RetryConfig::standard().with_max_attempts(1)
    }

    fn sdk_timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            // One attempt, so the operation timeout equals the attempt timeout.
            .operation_timeout(self.attempt_timeout)
            .build()
    }
}

/// Why [`AwsEc2::new`] refused a configuration.
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
        /// API class.
        class: &'static str,
        /// Effective requests per second.
        qps: f64,
        /// Effective burst.
        burst: u32,
    },
    /// `max_attempts` of 0.
    #[error("EC2 max_attempts must be at least 1")]
    MaxAttempts,
}

/// [`Ec2Api`] over aws-sdk-ec2.
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

    /// The SDK client (for seeding tests; production code goes through [`Ec2Api`]).
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

    /// Every page of one Describe call, collected. `page(token)` sends the request for one page
    /// (`None` for the first, then the previous answer's NextToken); `items` and `next_token`
    /// read an answer. Each page goes through [`Self::send`] on its own: a limiter token, a
    /// metered attempt and the retry of a retryable failure per page, so a throttle on page 7
    /// re-sends page 7, not the whole listing. The SDK's `into_paginator()` cannot do this: it
    /// sends the requests itself (the next one before it is asked for) and ends at the first
    /// error.
    async fn describe_pages<O, E, T, C, F, Fut>(
        &self,
        action: &'static str,
        page: F,
        items: impl Fn(&O) -> Vec<T>,
        next_token: impl Fn(&O) -> Option<&str>,
    ) -> Ec2Result<C>
    where
        C: Default + Extend<T>,
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<O, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut out = C::default();
        let mut token: Option<String> = None;
        loop {
            let answer = self
                .send(action, ApiClass::Describe, Retry::Idempotent, || page(token.clone()))
                .await?;
            out.extend(items(&answer));
            // EC2 ends a listing with no token or an empty one.
            token = next_token(&answer).filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn describe_enis_where(&self, filters: Vec<Filter>) -> Ec2Result<Vec<Eni>> {
        self.describe_pages(
            "DescribeNetworkInterfaces",
            |token| {
                self.client
                    .describe_network_interfaces()
                    .set_filters(Some(filters.clone()))
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
            },
            |page| page.network_interfaces().iter().map(convert::eni).collect(),
            |page| page.next_token(),
        )
        .await
    }

    async fn describe_types_once(
        &self,
        types: &[String],
    ) -> Ec2Result<BTreeMap<String, InstanceTypeInfo>> {
        let types: Vec<InstanceType> =
            types.iter().map(|t| InstanceType::from(t.as_str())).collect();
        self.describe_pages(
            "DescribeInstanceTypes",
            |token| {
                self.client
                    .describe_instance_types()
                    .set_instance_types(Some(types.clone()))
                    .set_next_token(token)
                    .send()
            },
            |page| page.instance_types().iter().filter_map(convert::instance_type).collect(),
            |page| page.next_token(),
        )
        .await
    }
}

fn filter(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().map(Into::into).collect()))
        .build()
}

/// The filter name that matches a tag's value.
fn tag_filter(key: &str) -> String {
    format!("tag:{key}")
}

/// Filters of a subnet / security-group [`Query`]. Ids go through a filter (not `SubnetIds` /
/// `GroupIds`) so a missing id is absent from the answer instead of failing the whole call.
fn query_filters(q: &Query, id_filter: &str, with_zone: bool) -> Vec<Filter> {
    let mut f = Vec::new();
    if !q.ids.is_empty() {
        f.push(filter(id_filter, q.ids.iter().cloned()));
    }
    if let Some(vpc) = &q.vpc_id {
        f.push(filter("vpc-id", [vpc.clone()]));
    }
    if with_zone {
        if let Some(zone) = &q.zone {
            f.push(filter("availability-zone", [zone.clone()]));
        }
    }
    for (k, v) in &q.tags {
        if v.is_empty() {
            f.push(filter("tag-key", [k.clone()]));
        } else {
            f.push(filter(&tag_filter(k), [v.clone()]));
        }
    }
    f
}

fn sdk_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

#[async_trait::async_trait]
impl Ec2Api for AwsEc2 {
    async fn describe_instances(&self, ids: &[String]) -> Ec2Result<Vec<Instance>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A filter, not InstanceIds: one unknown id must not fail the batch.
        let filters = vec![filter("instance-id", ids.iter().cloned())];
        self.describe_pages(
            "DescribeInstances",
            |token| {
                self.client
                    .describe_instances()
                    .set_filters(Some(filters.clone()))
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
            },
            |page| {
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .map(convert::instance)
                    .collect()
            },
            |page| page.next_token(),
        )
        .await
    }

    async fn describe_instance_types(
        &self,
        types: &[String],
    ) -> Ec2Result<BTreeMap<String, InstanceTypeInfo>> {
        let mut wanted: Vec<String> = types.to_vec();
        wanted.sort();
        wanted.dedup();
        let mut out = BTreeMap::new();
        for chunk in wanted.chunks(TYPES_PER_CALL) {
            match self.describe_types_once(chunk).await {
                Ok(found) => out.extend(found),
                // One unknown type (InvalidInstanceType) fails the whole call: ask one by one so
                // the known types still get answers and unknown ones are simply absent.
                Err(e) if e.kind == Ec2ErrorKind::InvalidRequest && chunk.len() > 1 => {
                    for t in chunk {
                        match self.describe_types_once(std::slice::from_ref(t)).await {
                            Ok(found) => out.extend(found),
                            Err(e) if e.kind == Ec2ErrorKind::InvalidRequest => {
                                tracing::warn!(instance_type = %t, error = &e as &dyn std::error::Error, "EC2 does not know this instance type");
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) if e.kind == Ec2ErrorKind::InvalidRequest => {
                    tracing::warn!(instance_type = %chunk[0], error = &e as &dyn std::error::Error, "EC2 does not know this instance type");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn describe_subnets(&self, query: &Query) -> Ec2Result<Vec<Subnet>> {
        let filters = Some(query_filters(query, "subnet-id", true)).filter(|f| !f.is_empty());
        self.describe_pages(
            "DescribeSubnets",
            |token| {
                self.client
                    .describe_subnets()
                    .set_filters(filters.clone())
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
            },
            |page| page.subnets().iter().filter_map(convert::subnet).collect(),
            |page| page.next_token(),
        )
        .await
    }

    async fn describe_security_groups(&self, query: &Query) -> Ec2Result<Vec<SecurityGroup>> {
        let filters = Some(query_filters(query, "group-id", false)).filter(|f| !f.is_empty());
        self.describe_pages(
            "DescribeSecurityGroups",
            |token| {
                self.client
                    .describe_security_groups()
                    .set_filters(filters.clone())
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
            },
            |page| page.security_groups().iter().map(convert::security_group).collect(),
            |page| page.next_token(),
        )
        .await
    }

    async fn describe_instance_enis(&self, instance_id: &str) -> Ec2Result<Vec<Eni>> {
        self.describe_enis_where(vec![filter("attachment.instance-id", [instance_id])]).await
    }

    async fn describe_enis(&self, ids: &[String]) -> Ec2Result<Vec<Eni>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A filter, not NetworkInterfaceIds: a deleted ENI must not fail the batch.
        self.describe_enis_where(vec![filter("network-interface-id", ids.iter().cloned())]).await
    }

    async fn list_cluster_enis(&self, cluster: &str) -> Ec2Result<Vec<Eni>> {
        self.describe_enis_where(vec![filter(&tag_filter(tags::CLUSTER), [cluster])]).await
    }

    async fn create_eni(&self, r: &CreateEni) -> Ec2Result<Eni> {
        const ACTION: &str = "CreateNetworkInterface";
        let mut req = self
            .client
            .create_network_interface()
            .subnet_id(&r.subnet_id)
            .set_groups(Some(r.security_groups.clone()).filter(|g| !g.is_empty()));
        if !r.description.is_empty() {
            req = req.description(&r.description);
        }
        if !r.client_token.is_empty() {
            req = req.client_token(&r.client_token);
        }
        if r.secondary_ips > 0 {
            req = req.secondary_private_ip_address_count(r.secondary_ips);
        }
        if r.prefixes > 0 {
            req = req.ipv4_prefix_count(r.prefixes);
        }
        if !r.tags.is_empty() {
            req = req.tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::NetworkInterface)
                    .set_tags(Some(sdk_tags(&r.tags)))
                    .build(),
            );
        }
        // With a ClientToken a repeat returns the same ENI; without one, a repeat after an
        // ambiguous failure could create a second ENI.
        let retry = if r.client_token.is_empty() { Retry::ThrottleOnly } else { Retry::Idempotent };
        let out = self.send(ACTION, ApiClass::Mutate, retry, || req.clone().send()).await?;
        out.network_interface()
            .map(convert::eni)
            .ok_or_else(|| classify::malformed(ACTION, "no NetworkInterface in the answer"))
    }

    async fn attach_eni(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: i32,
    ) -> Ec2Result<String> {
        const ACTION: &str = "AttachNetworkInterface";
        let req = self
            .client
            .attach_network_interface()
            .network_interface_id(eni_id)
            .instance_id(instance_id)
            .device_index(device_index);
        let out =
            self.send(ACTION, ApiClass::Mutate, Retry::ThrottleOnly, || req.clone().send()).await?;
        out.attachment_id()
            .map(str::to_owned)
            .ok_or_else(|| classify::malformed(ACTION, "no AttachmentId in the answer"))
    }

    async fn set_delete_on_termination(
        &self,
        eni_id: &str,
        attachment_id: &str,
        delete: bool,
    ) -> Ec2Result<()> {
        const ACTION: &str = "ModifyNetworkInterfaceAttribute";
        let req = self
            .client
            .modify_network_interface_attribute()
            .network_interface_id(eni_id)
            .attachment(
                NetworkInterfaceAttachmentChanges::builder()
                    .attachment_id(attachment_id)
                    .delete_on_termination(delete)
                    .build(),
            );
        self.send(ACTION, ApiClass::Mutate, Retry::Idempotent, || req.clone().send())
            .await
            .map(drop)
    }

    async fn detach_eni(&self, attachment_id: &str, force: bool) -> Ec2Result<()> {
        const ACTION: &str = "DetachNetworkInterface";
        let req = self.client.detach_network_interface().attachment_id(attachment_id).force(force);
        self.send(ACTION, ApiClass::Mutate, Retry::Idempotent, || req.clone().send())
            .await
            .map(drop)
    }

    async fn delete_eni(&self, eni_id: &str) -> Ec2Result<()> {
        const ACTION: &str = "DeleteNetworkInterface";
        let req = self.client.delete_network_interface().network_interface_id(eni_id);
        self.send(ACTION, ApiClass::Mutate, Retry::Idempotent, || req.clone().send())
            .await
            .map(drop)
    }

    async fn assign_ips(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Addr>> {
        const ACTION: &str = "AssignPrivateIpAddresses";
        if count <= 0 {
            return Ok(Vec::new());
        }
        let req = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(eni_id)
            .secondary_private_ip_address_count(count);
        let out =
            self.send(ACTION, ApiClass::Mutate, Retry::ThrottleOnly, || req.clone().send()).await?;
        Ok(out
            .assigned_private_ip_addresses()
            .iter()
            .filter_map(|a| a.private_ip_address()?.parse().ok())
            .collect())
    }

    async fn assign_prefixes(&self, eni_id: &str, count: i32) -> Ec2Result<Vec<Ipv4Net>> {
        const ACTION: &str = "AssignPrivateIpAddresses";
        if count <= 0 {
            return Ok(Vec::new());
        }
        let req = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(eni_id)
            .ipv4_prefix_count(count);
        let out =
            self.send(ACTION, ApiClass::Mutate, Retry::ThrottleOnly, || req.clone().send()).await?;
        Ok(out
            .assigned_ipv4_prefixes()
            .iter()
            .filter_map(|p| p.ipv4_prefix()?.parse().ok())
            .collect())
    }

    async fn unassign_ips(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Ec2Result<()> {
        const ACTION: &str = "UnassignPrivateIpAddresses";
        if ips.is_empty() {
            return Ok(());
        }
        let req = self
            .client
            .unassign_private_ip_addresses()
            .network_interface_id(eni_id)
            .set_private_ip_addresses(Some(ips.iter().map(ToString::to_string).collect()));
        self.send(ACTION, ApiClass::Mutate, Retry::Idempotent, || req.clone().send())
            .await
            .map(drop)
    }

    async fn unassign_prefixes(&self, eni_id: &str, prefixes: &[Ipv4Net]) -> Ec2Result<()> {
        const ACTION: &str = "UnassignPrivateIpAddresses";
        if prefixes.is_empty() {
            return Ok(());
        }
        let req = self
            .client
            .unassign_private_ip_addresses()
            .network_interface_id(eni_id)
            .set_ipv4_prefixes(Some(prefixes.iter().map(ToString::to_string).collect()));
        self.send(ACTION, ApiClass::Mutate, Retry::Idempotent, || req.clone().send())
            .await
            .map(drop)
    }

    async fn create_tags(
        &self,
        resource_ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Ec2Result<()> {
        const ACTION: &str = "CreateTags";
        if resource_ids.is_empty() || tags.is_empty() {
            return Ok(());
        }
        let req = self
            .client
            .create_tags()
            .set_resources(Some(resource_ids.to_vec()))
            .set_tags(Some(sdk_tags(tags)));
        self.send(ACTION, ApiClass::Mutate, Retry::Idempotent, || req.clone().send())
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budget_is_half_the_account_buckets() {
        let c = AwsEc2Config::default();
        assert_eq!(c.describe_rate(), RateConfig { qps: 10.0, burst: 50 });
        assert_eq!(c.mutate_rate(), RateConfig { qps: 2.5, burst: 25 });
        assert_eq!(c.validate(), Ok(()));
        let bad = AwsEc2Config { budget_share: 0.0, ..AwsEc2Config::default() };
        assert_eq!(bad.validate(), Err(AwsEc2ConfigError::BudgetShare(0.0)));
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
        use aws_sdk_ec2::operation::describe_subnets::{
            DescribeSubnetsError, DescribeSubnetsOutput,
        };
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
                |page| {
                    page.subnets().iter().filter_map(|s| s.subnet_id().map(str::to_owned)).collect()
                },
                |page| page.next_token(),
            )
            .await
            .unwrap();
        assert_eq!(got, ["s0", "s1", "s2"]);
        let sent = sent.into_inner().unwrap();
        let want = [None, Some("p1"), Some("p1"), Some("p2")].map(|t| t.map(str::to_owned));
        assert_eq!(sent, want, "page 2 re-sent alone after its timeout");
        let calls = |result| {
            config
                .metrics
                .calls
                .get_or_create(&super::super::metrics::CallLabels {
                    action: "DescribeSubnets",
                    result,
                })
                .get()
        };
        assert_eq!((calls("ok"), calls("Transient")), (3, 1), "one metered attempt per request");
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
}
