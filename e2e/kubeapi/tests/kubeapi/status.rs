//! The status subresource of a custom resource, as the apiextensions server implements it: a
//! write to `/status` changes only `.status` (and managedFields), whatever else the body
//! carries, on every write path; a write to the main resource leaves `.status` as stored, and an
//! apply through either never takes ownership of the other's fields.

use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use crate::common::{install_widgets, Env};

fn labels(o: &DynamicObject) -> Value {
    json!(o.metadata.labels)
}

/// The fields a manager owns (`fieldsV1`) and through which subresource.
fn owned(o: &DynamicObject, manager: &str) -> Vec<(String, Value)> {
    o.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(manager))
        .map(|m| {
            (m.subresource.clone().unwrap_or_default(), json!(m.fields_v1.as_ref().map(|f| &f.0)))
        })
        .collect()
}

async fn fresh(widgets: &Api<DynamicObject>, name: &str) -> DynamicObject {
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.enipool.io/v1", "kind": "Widget",
        "metadata": {"name": name, "labels": {"l": "1"}},
        "spec": {"size": 1}, "status": {"phase": "ignored on create"}
    }))
    .unwrap();
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create: {:?}",
        created.data
    );
    widgets
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ok"}})),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn writes_to_status_change_only_status() {
    let env = Env::start().await;
    let widgets = install_widgets(&env.client).await;
    let base = fresh(&widgets, "w").await;
    let generation = base.metadata.generation;
    let check = |w: &DynamicObject, phase: &str, what: &str| {
        assert_eq!(w.data["status"]["phase"], phase, "{what}: status");
        assert_eq!(w.data["spec"], json!({"size": 1, "mode": "A"}), "{what}: spec");
        assert_eq!(labels(w), json!({"l": "1"}), "{what}: labels");
        assert!(w.metadata.annotations.is_none(), "{what}: annotations");
        assert_eq!(w.metadata.generation, generation, "{what}: generation");
    };
    // PUT /status with everything changed.
    let mut body = widgets.get("w").await.unwrap();
    body.data["spec"]["size"] = json!(9);
    body.data["status"]["phase"] = json!("put");
    body.metadata.labels = Some([("l".to_string(), "2".to_string())].into());
    body.metadata.annotations = Some([("a".to_string(), "1".to_string())].into());
    let w = widgets.replace_status("w", &PostParams::default(), &body).await.unwrap();
    check(&w, "put", "PUT /status");
    // Merge patch.
    let merge = json!({"spec": {"size": 8}, "metadata": {"labels": {"l": "3"}, "annotations": {"a": "2"}}, "status": {"phase": "merge"}});
    let pp = PatchParams { field_manager: Some("m".into()), ..Default::default() };
    let w = widgets.patch_status("w", &pp, &Patch::Merge(merge)).await.unwrap();
    check(&w, "merge", "merge patch /status");
    assert_eq!(owned(&w, "m"), [("status".to_string(), json!({"f:status": {"f:phase": {}}}))]);
    // JSON patch.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/size", "value": 7},
        {"op": "add", "path": "/metadata/annotations", "value": {"a": "3"}},
        {"op": "replace", "path": "/status/phase", "value": "json"}]))
    .unwrap();
    let w =
        widgets.patch_status("w", &PatchParams::default(), &Patch::<()>::Json(ops)).await.unwrap();
    check(&w, "json", "JSON patch /status");
    // Server-side apply: only status is applied and owned, through the status subresource.
    let applied = json!({"apiVersion": "test.enipool.io/v1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"mine": "x"}}, "spec": {"size": 6}, "status": {"phase": "apply"}});
    let w = widgets
        .patch_status("w", &PatchParams::apply("st").force(), &Patch::Apply(applied))
        .await
        .unwrap();
    check(&w, "apply", "apply /status");
    assert_eq!(owned(&w, "st"), [("status".to_string(), json!({"f:status": {"f:phase": {}}}))]);
    env.api.shutdown().await;
}

#[tokio::test]
async fn writes_to_the_main_resource_keep_the_stored_status() {
    let env = Env::start().await;
    let widgets = install_widgets(&env.client).await;
    fresh(&widgets, "w").await;
    // PUT with a changed spec and status: the spec changes, the status stays.
    let mut body = widgets.get("w").await.unwrap();
    body.data["spec"]["size"] = json!(2);
    body.data["status"] = json!({"phase": "put"});
    let w = widgets.replace("w", &PostParams::default(), &body).await.unwrap();
    assert_eq!(
        (w.data["spec"]["size"].clone(), w.data["status"]["phase"].clone()),
        (json!(2), json!("Ok"))
    );
    // PUT without status keeps it too.
    let mut body = w.clone();
    body.data.as_object_mut().unwrap().remove("status");
    let w = widgets.replace("w", &PostParams::default(), &body).await.unwrap();
    assert_eq!(w.data["status"]["phase"], "Ok");
    // A main write that changes only status is a no-op: nothing stored, no new resourceVersion.
    let rv = w.metadata.resource_version.clone();
    let w = widgets
        .patch("w", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "no"}})))
        .await
        .unwrap();
    assert_eq!((w.metadata.resource_version, w.data["status"]["phase"].clone()), (rv, json!("Ok")));
    // JSON patch removing status through the main resource: status stays.
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/status"}])).unwrap();
    let w = widgets.patch("w", &PatchParams::default(), &Patch::<()>::Json(ops)).await.unwrap();
    assert_eq!(w.data["status"]["phase"], "Ok");
    // Apply with a status: spec applied, status neither changed nor owned.
    let applied = json!({"apiVersion": "test.enipool.io/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 3}, "status": {"phase": "apply"}});
    let w = widgets
        .patch("w", &PatchParams::apply("main").force(), &Patch::Apply(applied))
        .await
        .unwrap();
    assert_eq!(
        (w.data["spec"]["size"].clone(), w.data["status"]["phase"].clone()),
        (json!(3), json!("Ok"))
    );
    assert_eq!(owned(&w, "main"), [(String::new(), json!({"f:spec": {"f:size": {}}}))]);
    // A status write that leaves status out removes it (the body's status replaces the stored).
    let mut body = widgets.get("w").await.unwrap();
    body.data.as_object_mut().unwrap().remove("status");
    let w = widgets.replace_status("w", &PostParams::default(), &body).await.unwrap();
    assert!(w.data.get("status").is_none(), "{:?}", w.data);
    env.api.shutdown().await;
}
