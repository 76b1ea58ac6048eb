//! Failures: agent kill -9 under load, operator leader kill, node termination, EC2 throttling.

use crate::runner::Target;
use anyhow::{bail, Result};

pub async fn agent_kill9(_t: Target) -> Result<()> {
    bail!("not written yet")
}
pub async fn leader_kill(_t: Target) -> Result<()> {
    bail!("not written yet")
}
pub async fn node_terminated(_t: Target) -> Result<()> {
    bail!("not written yet")
}
pub async fn throttling_storm(_t: Target) -> Result<()> {
    bail!("not written yet")
}
