//! The registry of served kinds: the built-in ones enipool and kubectl need, and the ones that
//! CustomResourceDefinitions add while the server runs.

use serde_json::Value;

use super::admission::GROUP as ADMISSION;
use super::rbac::GROUP as RBAC;

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `number`, `boolean`, `date`).
    pub type_: String,
    pub format: String,
    /// Description (served in the Table column definition).
    pub description: String,
    /// 0 = always shown; >0 only with `-o wide` (kubectl filters, the server returns all).
    pub priority: i64,
    /// JSONPath (subset, see `table.rs`).
    pub json_path: String,
}

/// One served version of a resource.
#[derive(Debug, Clone)]
pub struct VersionDef {
    /// Version name, e.g. `v1alpha1`.
    pub name: String,
    /// Whether `/status` is a subresource (status changes only through it).
    pub status_subresource: bool,
    /// Printer columns (CRDs only; built-ins use fixed tables).
    pub columns: Vec<PrinterColumn>,
    /// The openAPIV3Schema (CRDs only; built-ins are not schema-validated).
    pub schema: Option<Value>,
}

/// A served resource (all its versions share one storage, see `store.rs`).
#[derive(Debug, Clone)]
pub struct ResourceDef {
    /// API group, "" for core.
    pub group: String,
    /// Served versions; the first is the preferred one.
    pub versions: Vec<VersionDef>,
    /// Plural name (the URL segment).
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// kubectl categories (`kubectl get all`, `kubectl get enipool`).
    pub categories: Vec<String>,
    /// Name of the CRD that defines it, None for built-ins.
    pub crd: Option<String>,
}

impl ResourceDef {
    /// `plural` or `plural.group` as used in error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// `group/version` or `version` for core.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }
    /// The served version named `v`.
    pub fn version(&self, v: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|x| x.name == v)
    }
}

fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    status: bool,
    short: &[&str],
) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        versions: vec![VersionDef {
            name: version.into(),
            status_subresource: status,
            columns: Vec::new(),
            schema: None,
        }],
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        crd: None,
    }
}

#[derive(Debug, Clone)]
pub struct Registry {
    defs: Vec<ResourceDef>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The built-ins: core Namespaces, Nodes, Pods, Events, Services, ConfigMaps, Secrets,
    /// ServiceAccounts (and their `token` subresource, `tokenrequest.rs`); coordination.k8s.io
    /// Leases; events.k8s.io Events; apiextensions CRDs; RBAC ClusterRoles, ClusterRoleBindings,
    /// Roles and RoleBindings (`rbac.rs`); ValidatingAdmissionPolicies and their bindings
    /// (`admission.rs`).
    ///
    /// Departure: core/v1 Events and events.k8s.io/v1 Events are separate storages here (the real
    /// server serves one storage under both schemas), so `kubectl get events` does not show events
    /// written by kube-rs's Recorder; use `kubectl get events.events.k8s.io`.
    pub fn new() -> Self {
        let mut defs = vec![
            builtin("", "v1", "namespaces", "Namespace", false, true, &["ns"]),
            builtin("", "v1", "nodes", "Node", false, true, &["no"]),
            builtin("", "v1", "pods", "Pod", true, true, &["po"]),
            builtin("", "v1", "events", "Event", true, false, &["ev"]),
            builtin("", "v1", "services", "Service", true, true, &["svc"]),
            builtin("", "v1", "configmaps", "ConfigMap", true, false, &["cm"]),
            builtin("", "v1", "secrets", "Secret", true, false, &[]),
            builtin("", "v1", "serviceaccounts", "ServiceAccount", true, false, &["sa"]),
            builtin("coordination.k8s.io", "v1", "leases", "Lease", true, false, &[]),
            builtin("events.k8s.io", "v1", "events", "Event", true, false, &["ev"]),
            builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                true,
                &["crd", "crds"],
            ),
            builtin(RBAC, "v1", "clusterroles", "ClusterRole", false, false, &[]),
            builtin(RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", false, false, &[]),
            builtin(RBAC, "v1", "roles", "Role", true, false, &[]),
            builtin(RBAC, "v1", "rolebindings", "RoleBinding", true, false, &[]),
            builtin(
                ADMISSION,
                "v1",
                "validatingadmissionpolicies",
                "ValidatingAdmissionPolicy",
                false,
                true,
                &[],
            ),
            builtin(
                ADMISSION,
                "v1",
                "validatingadmissionpolicybindings",
                "ValidatingAdmissionPolicyBinding",
                false,
                false,
                &[],
            ),
        ];
        for d in &mut defs {
            if d.plural == "pods" || d.plural == "nodes" || d.plural == "services" {
                d.categories = vec!["all".into()];
            }
        }
        Registry { defs }
    }

    pub fn all(&self) -> &[ResourceDef] {
        &self.defs
    }

    /// The resource served at `/{group}/{version}/{plural}`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.plural == plural && d.version(version).is_some())
    }

    /// The resource of `apiVersion` + `kind` (for objects named in a body).
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceDef> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.defs
            .iter()
            .find(|d| d.group == group && d.kind == kind && d.version(version).is_some())
    }

    /// Serve (or re-serve, after an update) the resource a CRD defines. Returns an error message
    /// when the CRD is unusable.
    pub fn register_crd(&mut self, crd: &Value) -> Result<(), String> {
        let def = def_from_crd(crd)?;
        self.defs.retain(|d| d.crd.as_deref() != def.crd.as_deref());
        if self.defs.iter().any(|d| d.group == def.group && d.plural == def.plural) {
            return Err(format!("{} is already served", def.group_resource()));
        }
        self.defs.push(def);
        Ok(())
    }

    /// Stop serving a CRD's resource; returns its definition.
    pub fn unregister_crd(&mut self, crd_name: &str) -> Option<ResourceDef> {
        let pos = self.defs.iter().position(|d| d.crd.as_deref() == Some(crd_name))?;
        Some(self.defs.remove(pos))
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Build the served resource from a CRD object (validated loosely: the fields the server needs).
pub fn def_from_crd(crd: &Value) -> Result<ResourceDef, String> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().ok_or("spec.group: Required value")?;
    let names = &spec["names"];
    let plural = names["plural"].as_str().ok_or("spec.names.plural: Required value")?;
    let kind = names["kind"].as_str().ok_or("spec.names.kind: Required value")?;
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => return Err(format!("spec.scope: Unsupported value: {other:?}")),
    };
    let mut versions = Vec::new();
    let mut storage = None;
    for v in spec["versions"].as_array().ok_or("spec.versions: Required value")? {
        let vname = v["name"].as_str().ok_or("spec.versions[].name: Required value")?;
        if v["storage"].as_bool() == Some(true) {
            storage = Some(vname.to_string());
        }
        if v["served"].as_bool() != Some(true) {
            continue;
        }
        let columns = v["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c["name"].as_str().unwrap_or_default().to_string(),
                        type_: c["type"].as_str().unwrap_or("string").to_string(),
                        format: c["format"].as_str().unwrap_or_default().to_string(),
                        description: c["description"].as_str().unwrap_or_default().to_string(),
                        priority: c["priority"].as_i64().unwrap_or(0),
                        json_path: c["jsonPath"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        versions.push(VersionDef {
            name: vname.to_string(),
            status_subresource: v["subresources"].get("status").is_some(),
            columns,
            schema: v["schema"].get("openAPIV3Schema").cloned(),
        });
    }
    if storage.is_none() {
        return Err(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        );
    }
    // Discovery lists versions by kube-aware priority (GA > beta > alpha); the preferred one first.
    versions.sort_by_key(|v| std::cmp::Reverse(version_priority(&v.name)));
    Ok(ResourceDef {
        group: group.to_string(),
        versions,
        plural: plural.to_string(),
        singular: names["singular"].as_str().unwrap_or(&kind.to_lowercase()).to_string(),
        kind: kind.to_string(),
        list_kind: names["listKind"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| format!("{kind}List")),
        namespaced,
        short_names: strs(&names["shortNames"]),
        categories: strs(&names["categories"]),
        crd: Some(name.to_string()),
    })
}

/// Kubernetes version ordering: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else { return (0, 0, 0) };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(major) = digits.parse::<u32>() else { return (0, 0, 0) };
    let tail = &rest[digits.len()..];
    let (level, t) = if tail.is_empty() {
        return (3, major, 0);
    } else if let Some(t) = tail.strip_prefix("beta") {
        (2, t)
    } else if let Some(t) = tail.strip_prefix("alpha") {
        (1, t)
    } else {
        return (0, 0, 0);
    };
    (level, major, t.parse().unwrap_or(0))
}
