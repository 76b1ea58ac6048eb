//! Mapping rtnetlink errors to [`HostError`], and the errnos that make an add or delete
//! idempotent.

use crate::hostnet::HostError;
use nix::errno::Errno;

pub(in crate::hostnet) fn nl(op: &'static str) -> impl FnOnce(rtnetlink::Error) -> HostError {
    move |e| HostError::Netlink { op, msg: e.to_string() }
}

/// The errno of a kernel error answer; `None` for errors of the library itself.
pub(super) fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(Errno::from_raw(-m.raw_code())),
        _ => None,
    }
}

/// Treat EEXIST as success (idempotent add).
pub(in crate::hostnet) fn exist_ok(
    r: Result<(), rtnetlink::Error>,
    op: &'static str,
) -> Result<(), HostError> {
    match r {
        Err(e) if errno(&e) == Some(Errno::EEXIST) => Ok(()),
        r => r.map_err(nl(op)),
    }
}

/// Treat ENOENT/ESRCH/ENODEV as success (idempotent delete).
pub(in crate::hostnet) fn gone_ok(
    r: Result<(), rtnetlink::Error>,
    op: &'static str,
) -> Result<(), HostError> {
    match r {
        Err(e) if matches!(errno(&e), Some(Errno::ENOENT | Errno::ESRCH | Errno::ENODEV)) => Ok(()),
        r => r.map_err(nl(op)),
    }
}
