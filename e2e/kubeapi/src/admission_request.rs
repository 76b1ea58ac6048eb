//! One admission request as policies see it (attributes and objects), below both the policy
//! evaluation (`admission.rs`) and the matcher (`admission_match.rs`), which read it.

use serde_json::{json, Value};

use super::authn::UserInfo;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Operation {
    #[default]
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
    fn options_kind(self) -> &'static str {
        match self {
            Operation::Create => "CreateOptions",
            Operation::Update => "UpdateOptions",
            Operation::Delete => "DeleteOptions",
            Operation::Connect => "",
        }
    }
}

/// Group, version, kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gvk {
    /// API group ("" for core).
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// Group, version, resource (plural).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gvr {
    /// API group ("" for core).
    pub group: String,
    pub version: String,
    /// Resource (plural).
    pub resource: String,
}

impl Gvk {
    /// `group/version, Kind=kind`.
    pub fn new(group: &str, version: &str, kind: &str) -> Gvk {
        Gvk { group: group.into(), version: version.into(), kind: kind.into() }
    }
}

impl Gvr {
    /// `group/version, Resource=resource`.
    pub fn new(group: &str, version: &str, resource: &str) -> Gvr {
        Gvr { group: group.into(), version: version.into(), resource: resource.into() }
    }
}

/// One admission request: its attributes and objects, as policies see them.
#[derive(Debug, Clone, Default)]
pub struct AdmissionRequest {
    /// CREATE, UPDATE, DELETE.
    pub operation: Operation,
    /// The object's kind (of the main resource for a subresource write).
    pub kind: Gvk,
    pub resource: Gvr,
    /// `status`, `token`, ... or "".
    pub sub_resource: String,
    /// The object's name.
    pub name: String,
    /// The object's namespace ("" when cluster-scoped).
    pub namespace: String,
    pub user: UserInfo,
    /// The object as it would be stored (None on DELETE).
    pub object: Option<Value>,
    /// The stored object (None on CREATE).
    pub old_object: Option<Value>,
    /// The Namespace object of a namespaced request, when it exists.
    pub namespace_object: Option<Value>,
}

impl AdmissionRequest {
    /// The CEL `request` variable.
    pub fn request_json(&self) -> Value {
        let kind =
            json!({"group": self.kind.group, "version": self.kind.version, "kind": self.kind.kind});
        let resource = json!({"group": self.resource.group, "version": self.resource.version,
                              "resource": self.resource.resource});
        json!({
            "uid": uuid::Uuid::new_v4().to_string(),
            "kind": kind, "resource": resource, "subResource": self.sub_resource,
            "requestKind": kind, "requestResource": resource,
            "requestSubResource": self.sub_resource,
            "name": self.name, "namespace": self.namespace,
            "operation": self.operation.as_str(),
            "userInfo": self.user.to_json(),
            "dryRun": false,
            "options": {"kind": self.operation.options_kind(), "apiVersion": "meta.k8s.io/v1"},
        })
    }

    /// `resource.group` (or `resource`), as error messages name it.
    pub(crate) fn group_resource(&self) -> String {
        if self.resource.group.is_empty() {
            self.resource.resource.clone()
        } else {
            format!("{}.{}", self.resource.resource, self.resource.group)
        }
    }
}
