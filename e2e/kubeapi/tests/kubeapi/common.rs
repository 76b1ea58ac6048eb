//! Shared fixtures: a running server, its kubeconfig, and a small test CRD.

use std::path::PathBuf;

use enipool_kubeapi::{KubeApi, KubeApiConfig};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Api;
use serde_json::{json, Value};

/// A server plus a kubeconfig file for it (kept alive by the temp dir).
pub struct Env {
    pub api: KubeApi,
    pub client: kube::Client,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn start() -> Env {
        Self::with_config(KubeApiConfig::default()).await
    }
    pub async fn with_config(cfg: KubeApiConfig) -> Env {
        let api = KubeApi::start(cfg).await.expect("start kubeapi");
        let client = api.client().expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        api.write_kubeconfig(&dir.path().join("kubeconfig")).expect("kubeconfig");
        Env { api, client, dir }
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }
}

/// A namespaced `Widget` CRD: status subresource, printer columns (one wide), an enum, bounds,
/// a CEL rule across fields and an immutable field (transition rule).
pub fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.enipool.io"},
        "spec": {
            "group": "test.enipool.io",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wg"], "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Zone", "type": "string", "jsonPath": ".spec.zone", "priority": 1},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "x-kubernetes-validations": [
                                {"rule": "self.size <= 5 || self.mode == 'B'", "message": "size above 5 needs mode B"}
                            ],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                                "zone": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "zone is immutable"}]},
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": {"type": "string"},
                                "agent": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                "conditions": {
                                    "type": "array",
                                    "x-kubernetes-list-type": "map",
                                    "x-kubernetes-list-map-keys": ["type"],
                                    "items": {"type": "object", "required": ["type", "status"], "properties": {
                                        "type": {"type": "string"}, "status": {"type": "string"}, "reason": {"type": "string"}
                                    }}
                                }
                            }
                        }
                    }
                }}
            }]
        }
    })
}

/// The Widget API resource.
pub fn widget_ar() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.enipool.io", "v1", "Widget"),
        "widgets",
    )
}

/// Create the Widget CRD and return a namespaced Api for widgets in `default`.
pub async fn install_widgets(client: &kube::Client) -> Api<DynamicObject> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(widget_crd()).expect("crd");
    crds.create(&PostParams::default(), &crd).await.expect("create crd");
    Api::namespaced_with(client.clone(), "default", &widget_ar())
}

pub fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "test.enipool.io/v1", "kind": "Widget",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("widget")
}

/// `/usr/bin/kubectl`.
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// Run kubectl with the environment's kubeconfig (later `--kubeconfig` arguments override it);
/// its stdout. Panics when it fails.
pub async fn kubectl(env: &Env, args: &[&str]) -> String {
    assert!(std::path::Path::new(KUBECTL).exists(), "{KUBECTL} is required for these tests");
    let out = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(args)
        .output()
        .await
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A typed object from JSON.
pub fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("object")
}

/// The user the server authenticates `client` as (a SelfSubjectReview's `status.userInfo`).
pub async fn whoami(client: &kube::Client) -> Value {
    let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json")
        .body(br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#.to_vec())
        .unwrap();
    let review: Value = client.request(req).await.expect("SelfSubjectReview");
    review["status"]["userInfo"].clone()
}

/// The HTTP status code of a kube API error.
pub fn code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other:?}"),
    }
}

/// The Status reason of a kube API error.
pub fn reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.reason.clone(),
        other => panic!("not an API error: {other:?}"),
    }
}
