//! Pool sizing: scale-up beyond one ENI, warm pool under churn, scale-down after the delay, prefix
//! mode, subnet exhaustion.

use crate::runner::Target;
use anyhow::{bail, Result};

pub async fn scale_up(_t: Target) -> Result<()> {
    bail!("not written yet")
}
pub async fn churn(_t: Target) -> Result<()> {
    bail!("not written yet")
}
pub async fn scale_down(_t: Target) -> Result<()> {
    bail!("not written yet")
}
pub async fn prefix_mode(_t: Target) -> Result<()> {
    bail!("not written yet")
}
pub async fn exhaustion(_t: Target) -> Result<()> {
    bail!("not written yet")
}
