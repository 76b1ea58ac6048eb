//! The pool status writes: the operator's part by server-side apply on the status subresource,
//! and the guarded JSON patch that removes entries another field manager wrote.

use crate::error::{Error, Result};
use crate::round::{removal_patch, Removal, StatusSink};
use enipool_crds::{ENIPool, ENIPoolStatus, OPERATOR_FIELD_MANAGER};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// Writes the operator part of the status by SSA on the status subresource.
pub(super) struct KubeSink {
    pub(super) api: Api<ENIPool>,
    pub(super) name: String,
}

#[async_trait::async_trait]
impl StatusSink for KubeSink {
    async fn write(&self, status: &ENIPoolStatus) -> Result<()> {
        let patch = json!({
            "apiVersion": "enipool.io/v1alpha1",
            "kind": "ENIPool",
            "metadata": {"name": self.name},
            "status": status,
        });
        let pp = PatchParams::apply(OPERATOR_FIELD_MANAGER).force();
        self.api
            .patch_status(&self.name, &pp, &Patch::Apply(&patch))
            .await
            .map_err(Error::kube("PatchPoolStatus"))?;
        Ok(())
    }

    async fn remove(&self, removals: &[Removal]) -> Result<()> {
        let patch: json_patch::Patch = serde_json::from_value(removal_patch(removals))?;
        let pp = PatchParams {
            field_manager: Some(OPERATOR_FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.api
            .patch_status(&self.name, &pp, &Patch::Json::<()>(patch))
            .await
            .map_err(Error::kube("RemovePoolStatusEntries"))?;
        Ok(())
    }
}
