//! The request's view of one resource (which resource, version, namespace, name and
//! subresource), shared by the handlers, the write pipeline, garbage collection and watches.

use serde_json::{json, Value};

use super::fields::Schema;
use super::resources::ResourceDef;
use super::store::ObjKey;
use super::State;

/// The request's view of one resource: which resource and version, and the object's key.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: ResourceDef,
    /// Version of the URL.
    pub version: String,
    /// Namespace from the URL (None for cluster-scoped or all-namespaces lists).
    pub namespace: Option<String>,
    /// Object name from the URL.
    pub name: Option<String>,
    /// Subresource (`status`).
    pub sub: Option<String>,
}

impl Target {
    /// The store key of the named object.
    pub fn key(&self, name: &str) -> ObjKey {
        ObjKey {
            group: self.def.group.clone(),
            resource: self.def.plural.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: name.to_string(),
        }
    }
    /// Whether `/status` is a subresource of this version.
    pub fn has_status(&self) -> bool {
        self.def.version(&self.version).is_some_and(|v| v.status_subresource)
    }
    /// The CRD schema of this version, if any.
    pub fn schema(&self) -> Option<&Value> {
        self.def.version(&self.version).and_then(|v| v.schema.as_ref())
    }
    pub fn fields_schema(&self) -> Schema<'_> {
        match self.schema() {
            Some(s) => Schema::Crd(s),
            None => Schema::Builtin,
        }
    }
    /// `apiVersion` for this version.
    pub fn api_version(&self) -> String {
        self.def.api_version(&self.version)
    }
    /// Rewrite the stored object's apiVersion to the requested version (conversion `None`).
    pub fn present(&self, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(self.api_version());
        obj
    }
    /// The view of a stored object for the server's own writes (garbage collection): its
    /// resource, at the version it was written in when that is still served.
    pub(crate) fn for_object(st: &State, key: &ObjKey, obj: &Value) -> Option<Target> {
        let def = st
            .registry
            .all()
            .iter()
            .find(|d| d.group == key.group && d.plural == key.resource)?
            .clone();
        let version = obj["apiVersion"]
            .as_str()
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            .filter(|v| def.version(v).is_some())
            .unwrap_or_else(|| def.versions[0].name.clone());
        Some(Target {
            namespace: def.namespaced.then(|| key.namespace.clone()),
            def,
            version,
            name: Some(key.name.clone()),
            sub: None,
        })
    }
}
