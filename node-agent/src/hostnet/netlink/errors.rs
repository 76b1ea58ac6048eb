//! Mapping rtnetlink errors to [`HostError`], and the errnos that make an add or delete
//! idempotent.

use crate::hostnet::HostError;

pub(in crate::hostnet) fn nl(op: &'static str) -> impl FnOnce(rtnetlink::Error) -> HostError {
    move |e| HostError::Netlink { op, msg: e.to_string() }
}

pub(super) fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

/// Treat EEXIST as success (idempotent add).
pub(in crate::hostnet) fn exist_ok(
    r: Result<(), rtnetlink::Error>,
    op: &'static str,
) -> Result<(), HostError> {
    match r {
        Err(e) if errno(&e) == libc_eexist() => Ok(()),
        r => r.map_err(nl(op)),
    }
}

/// Treat ENOENT/ESRCH/ENODEV as success (idempotent delete).
pub(in crate::hostnet) fn gone_ok(
    r: Result<(), rtnetlink::Error>,
    op: &'static str,
) -> Result<(), HostError> {
    match r {
        Err(e) if [2, 3, 19].contains(&errno(&e)) => Ok(()),
        r => r.map_err(nl(op)),
    }
}

pub(super) const fn libc_eexist() -> i32 {
    17
}
