//! The Describe side of [`AwsEc2`]: pagination one limited request per page, and the filters
//! the Describe calls select with.

use super::{AwsEc2, PAGE_SIZE};
use crate::ec2::convert;
use crate::ec2::limiter::{ApiClass, Retry};
use crate::ec2::{Ec2Result, Eni, InstanceTypeInfo, Query};
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, InstanceType};
use std::collections::BTreeMap;
use std::future::Future;

impl AwsEc2 {
    /// Every page of one Describe call, collected. `page(token)` sends the request for one page
    /// (`None` for the first, then the previous answer's NextToken); `items` and `next_token`
    /// read an answer. Each page goes through [`Self::send`] on its own: a limiter token, a
    /// metered attempt and the retry of a retryable failure per page, so a throttle on page 7
    /// re-sends page 7, not the whole listing. The SDK's `into_paginator()` cannot do this: it
    /// sends the requests itself (the next one before it is asked for) and ends at the first
    /// error.
    pub(super) async fn describe_pages<O, E, T, C, F, Fut>(
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

    pub(super) async fn describe_enis_where(&self, filters: Vec<Filter>) -> Ec2Result<Vec<Eni>> {
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

    pub(super) async fn describe_types_once(
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

pub(super) fn filter(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().map(Into::into).collect()))
        .build()
}

/// The filter name that matches a tag's value.
pub(super) fn tag_filter(key: &str) -> String {
    format!("tag:{key}")
}

/// Filters of a subnet / security-group [`Query`]. Ids go through a filter (not `SubnetIds` /
/// `GroupIds`) so a missing id is absent from the answer instead of failing the whole call.
pub(super) fn query_filters(q: &Query, id_filter: &str, with_zone: bool) -> Vec<Filter> {
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
