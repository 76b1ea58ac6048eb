//! kubectl: CRDs served, `kubectl get enipools` columns, GitOps `kubectl apply` of a policy.

use crate::runner::Target;
use anyhow::{bail, Result};

pub async fn crds_served(_t: Target) -> Result<()> {
    bail!("not written yet")
}
pub async fn get_enipools(_t: Target) -> Result<()> {
    bail!("not written yet")
}
pub async fn gitops_apply(_t: Target) -> Result<()> {
    bail!("not written yet")
}
