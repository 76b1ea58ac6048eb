//! SDK errors → [`Ec2Error`]: decisions key on the category, never on message text.
//!
//! Every EC2 API error reaches us as `SdkError::ServiceError` whose operation error is `Unhandled`
//! (EC2 models almost no error shapes), so the code comes from
//! [`ProvideErrorMetadata::code`] and the HTTP status from the raw response. Transport failures
//! (timeouts, connection errors, unparseable responses) carry no code and are transient.

use super::{Ec2Error, Ec2ErrorKind};
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;

/// The category of an EC2 error `code` (if any) answered with HTTP `status` (if any).
pub fn classify_code(code: Option<&str>, status: Option<u16>) -> Ec2ErrorKind {
    use Ec2ErrorKind::*;
    let code = code.unwrap_or("").trim();
    match code {
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => return Throttled,
        "InsufficientFreeAddressesInSubnet" => return SubnetFull,
        "InsufficientCidrBlocks" => return NoCidrBlocks,
        "AttachmentLimitExceeded" => return AttachmentLimit,
        "PrivateIpAddressLimitExceeded" => return AddressLimit,
        "NetworkInterfaceLimitExceeded" => return EniQuota,
        "IdempotentParameterMismatch" => return IdempotencyMismatch,
        "UnauthorizedOperation"
        | "AuthFailure"
        | "Blocked"
        | "OptInRequired"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "RequestExpired" => return Unauthorized,
        "IncorrectState" | "IncorrectInstanceState" | "InvalidNetworkInterface.InUse" => {
            return InUse
        }
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable"
        | "RequestTimeout" => return Transient,
        _ => {}
    }
    if code.ends_with(".NotFound") {
        return NotFound;
    }
    if code.ends_with(".InUse") {
        return InUse;
    }
    match status {
        // 5xx, with or without a code (EC2's load balancers answer with an HTML body): retry.
        Some(s) if s >= 500 => Transient,
        Some(s) if (400..500).contains(&s) => InvalidRequest,
        // A code we do not know, without a status: the caller sent something EC2 refused.
        _ if !code.is_empty() => InvalidRequest,
        // No code, no status: never reached EC2.
        _ => Transient,
    }
}

/// Classifies one failed SDK call of EC2 `action`.
pub fn from_sdk<E>(action: &'static str, err: SdkError<E, HttpResponse>) -> Ec2Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, code, message) = match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = err.code().map(str::to_owned);
            let kind = classify_code(code.as_deref(), Some(status));
            let message = match err.message() {
                Some(m) => m.to_owned(),
                None => format!("HTTP {status}: {}", DisplayErrorContext(&err)),
            };
            (kind, code.unwrap_or_default(), message)
        }
        SdkError::ResponseError(re) => {
            let status = re.raw().status().as_u16();
            let kind = if (400..500).contains(&status) {
                Ec2ErrorKind::InvalidRequest
            } else {
                Ec2ErrorKind::Transient
            };
            (
                kind,
                String::new(),
                format!("HTTP {status}: unparseable response: {}", DisplayErrorContext(&err)),
            )
        }
        // Timeouts and dispatch failures (connect errors, resets): the request may or may not
        // have been applied; retried only where the call is safe to repeat.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            (Ec2ErrorKind::Transient, String::new(), DisplayErrorContext(&err).to_string())
        }
        // Request could not be built (a bug or bad input), never sent.
        SdkError::ConstructionFailure(_) => {
            (Ec2ErrorKind::InvalidRequest, String::new(), DisplayErrorContext(&err).to_string())
        }
        _ => (Ec2ErrorKind::Transient, String::new(), DisplayErrorContext(&err).to_string()),
    };
    Ec2Error { kind, action, code, message }
}

/// An answer EC2 should never give (e.g. CreateNetworkInterface without the interface).
pub fn malformed(action: &'static str, what: &str) -> Ec2Error {
    Ec2Error {
        kind: Ec2ErrorKind::Transient,
        action,
        code: "MalformedResponse".into(),
        message: what.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ec2ErrorKind::*;

    #[test]
    fn codes_and_statuses_map_to_categories() {
        let table: &[(Option<&str>, Option<u16>, Ec2ErrorKind)] = &[
            (Some("RequestLimitExceeded"), Some(503), Throttled),
            (Some("RequestLimitExceeded"), None, Throttled),
            (Some("InsufficientFreeAddressesInSubnet"), Some(400), SubnetFull),
            (Some("InsufficientCidrBlocks"), Some(400), NoCidrBlocks),
            (Some("AttachmentLimitExceeded"), Some(400), AttachmentLimit),
            (Some("PrivateIpAddressLimitExceeded"), Some(400), AddressLimit),
            (Some("InvalidNetworkInterfaceID.NotFound"), Some(400), NotFound),
            (Some("InvalidAttachmentID.NotFound"), Some(400), NotFound),
            (Some("InvalidInstanceID.NotFound"), Some(400), NotFound),
            (Some("InvalidSubnetID.NotFound"), Some(400), NotFound),
            (Some("InvalidGroup.NotFound"), Some(400), NotFound),
            (Some("InvalidNetworkInterface.InUse"), Some(400), InUse),
            (Some("InvalidIPAddress.InUse"), Some(400), InUse),
            (Some("IncorrectState"), Some(400), InUse),
            (Some("IdempotentParameterMismatch"), Some(400), IdempotencyMismatch),
            (Some("UnauthorizedOperation"), Some(403), Unauthorized),
            (Some("AuthFailure"), Some(401), Unauthorized),
            (Some("InvalidParameterValue"), Some(400), InvalidRequest),
            (Some("InvalidNetworkInterfaceId.Malformed"), Some(400), InvalidRequest),
            (Some("MissingParameter"), Some(400), InvalidRequest),
            (Some("InvalidInstanceType"), Some(400), InvalidRequest),
            (Some("InternalError"), Some(500), Transient),
            (Some("Unavailable"), Some(503), Transient),
            (Some("SomethingNew"), Some(500), Transient),
            (Some("SomethingNew"), Some(400), InvalidRequest),
            (None, Some(500), Transient),
            (None, Some(502), Transient),
            (None, Some(503), Transient),
            (Some(""), Some(504), Transient),
            (None, Some(400), InvalidRequest),
            (None, Some(404), InvalidRequest),
            (None, None, Transient),
        ];
        for (code, status, want) in table {
            assert_eq!(classify_code(*code, *status), *want, "code {code:?} status {status:?}");
        }
    }

    #[test]
    fn only_throttles_and_transients_are_retryable() {
        assert!(classify_code(Some("RequestLimitExceeded"), Some(503)).is_retryable());
        assert!(classify_code(None, Some(500)).is_retryable());
        assert!(!classify_code(Some("InsufficientFreeAddressesInSubnet"), Some(400)).is_retryable());
        assert!(!classify_code(Some("InvalidNetworkInterface.InUse"), Some(400)).is_retryable());
    }
}
