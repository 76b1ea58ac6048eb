//! CustomResourceDefinitions: serving, schema + CEL validation, generation, server-side apply.

use enipool_kubeapi::validate_object;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::common::{code, install_widgets, reason, widget, Env};

#[tokio::test]
async fn crd_serves_validates_and_tracks_generation() {
    let env = Env::start().await;
    let widgets = install_widgets(&env.client).await;
    let pp = PostParams::default();
    let w = widgets.create(&pp, &widget("w1", json!({"size": 3, "zone": "a"}))).await.unwrap();
    // Defaulting and generation.
    assert_eq!(w.data["spec"]["mode"], "A");
    assert_eq!(w.metadata.generation, Some(1));

    // Schema errors: bounds, enum, required, and a CEL rule; each names its field.
    for (spec, field) in [
        (json!({"size": 11}), "spec.size"),
        (json!({"size": 1, "mode": "C"}), "spec.mode"),
        (json!({"mode": "A"}), "spec.size"),
        (json!({"size": 7, "mode": "A"}), "spec"),
    ] {
        let e = widgets.create(&pp, &widget("bad", spec.clone())).await.unwrap_err();
        assert_eq!((code(&e), reason(&e).as_str()), (422, "Invalid"), "{spec}");
        let kube::Error::Api(s) = &e else { unreachable!() };
        assert!(s.message.contains(field), "{spec}: {}", s.message);
    }
    // Unknown fields are pruned (no fieldValidation) ...
    let pruned =
        widgets.create(&pp, &widget("w2", json!({"size": 2, "bogus": true}))).await.unwrap();
    assert!(pruned.data["spec"].get("bogus").is_none());

    // Transition rule: zone is immutable, checked on update only.
    let e = widgets
        .patch("w1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"zone": "b"}})))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 422);
    // A spec change bumps generation; metadata and status changes do not.
    let w = widgets
        .patch("w1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 4}})))
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    let w = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    let w = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ok"}})),
        )
        .await
        .unwrap();
    assert_eq!((w.metadata.generation, w.data["status"]["phase"].clone()), (Some(2), json!("Ok")));
    // Status is not writable through the main endpoint.
    let w = widgets
        .patch("w1", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Nope"}})))
        .await
        .unwrap();
    assert_eq!(w.data["status"]["phase"], "Ok");
    // A custom resource update needs a resourceVersion.
    let mut stale: DynamicObject = w.clone();
    stale.metadata.resource_version = None;
    assert_eq!(code(&widgets.replace("w1", &pp, &stale).await.unwrap_err()), 422);

    // Deleting the CRD stops serving the resource.
    let crds: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        kube::Api::all(env.client.clone());
    crds.delete("widgets.test.enipool.io", &Default::default()).await.unwrap();
    assert_eq!(code(&widgets.get("w1").await.unwrap_err()), 404);
    env.api.shutdown().await;
}

fn status_apply(status: Value) -> Value {
    json!({"apiVersion": "test.enipool.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": status})
}

fn managers(o: &DynamicObject) -> Vec<String> {
    o.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect()
}

#[tokio::test]
async fn server_side_apply_two_managers() {
    let env = Env::start().await;
    let widgets = install_widgets(&env.client).await;
    let op = PatchParams::apply("operator");
    let agent = PatchParams::apply("agent");
    // Apply creates.
    let spec = json!({"apiVersion": "test.enipool.io/v1", "kind": "Widget", "metadata": {"name": "w", "labels": {"l": "1"}}, "spec": {"size": 2, "zone": "a"}});
    let w = widgets.patch("w", &op, &Patch::Apply(&spec)).await.unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    assert!(managers(&w).contains(&"operator".to_string()));

    // Disjoint status owners through /status.
    widgets
        .patch_status(
            "w",
            &op,
            &Patch::Apply(status_apply(
                json!({"phase": "Ok", "conditions": [{"type": "Ready", "status": "True"}]}),
            )),
        )
        .await
        .unwrap();
    let w = widgets
        .patch_status("w", &agent, &Patch::Apply(status_apply(json!({"agent": {"epoch": 1}, "conditions": [{"type": "AgentReady", "status": "True"}]}))))
        .await
        .unwrap();
    assert_eq!(w.data["status"]["phase"], "Ok");
    assert_eq!(w.data["status"]["agent"]["epoch"], 1);
    assert_eq!(w.data["status"]["conditions"].as_array().unwrap().len(), 2);
    assert_eq!(w.metadata.generation, Some(1));

    // The agent changing the operator's field conflicts, naming the field and the owner.
    let e = widgets
        .patch_status(
            "w",
            &agent,
            &Patch::Apply(status_apply(json!({"phase": "Bad", "agent": {"epoch": 1}}))),
        )
        .await
        .unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "Conflict"));
    let kube::Error::Api(s) = &e else { unreachable!() };
    assert!(s.message.contains("operator") && s.message.contains(".status.phase"), "{}", s.message);
    // Setting the same value is shared ownership, not a conflict.
    widgets
        .patch_status(
            "w",
            &agent,
            &Patch::Apply(status_apply(json!({"phase": "Ok", "agent": {"epoch": 1}}))),
        )
        .await
        .unwrap();
    // Force takes ownership.
    let w = widgets
        .patch_status(
            "w",
            &agent.clone().force(),
            &Patch::Apply(status_apply(json!({"phase": "Forced", "agent": {"epoch": 2}}))),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["phase"], "Forced");
    // The agent's AgentReady condition is gone (no longer applied by it), the operator's stays.
    let conds: Vec<String> = w.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(conds, ["Ready"]);
    // Now the operator conflicts on phase.
    let e = widgets
        .patch_status(
            "w",
            &op,
            &Patch::Apply(status_apply(
                json!({"phase": "Ok", "conditions": [{"type": "Ready", "status": "True"}]}),
            )),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), 409);

    // Dropping a field from the spec apply removes it (nobody else owns it).
    let spec2 = json!({"apiVersion": "test.enipool.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2, "zone": "a"}});
    let w = widgets.patch("w", &op, &Patch::Apply(&spec2)).await.unwrap();
    assert!(w.metadata.labels.unwrap_or_default().is_empty());
    // A merge patch by another manager takes ownership without conflict; the applier then conflicts.
    widgets
        .patch(
            "w",
            &PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() },
            &Patch::Merge(json!({"spec": {"size": 3}})),
        )
        .await
        .unwrap();
    let e = widgets.patch("w", &op, &Patch::Apply(&spec2)).await.unwrap_err();
    assert_eq!(code(&e), 409);
    env.api.shutdown().await;
}

fn load_crd(file: &str) -> Value {
    let path = format!("{}/../../crds/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("generated CRD");
    serde_saphyr::from_str(&text).expect("yaml")
}

#[test]
fn validate_object_on_generated_enipool_crd() {
    let crd = load_crd("enipool.io_enipools.yaml");
    let obj = json!({
        "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool", "metadata": {"name": "node-a"},
        "spec": {"nodeName": "node-a", "instanceID": "i-0123456789abcdef0"}
    });
    validate_object(&crd, "v1alpha1", &obj, None).expect("valid ENIPool");
    let mut moved = obj.clone();
    moved["spec"]["instanceID"] = json!("i-0fedcba9876543210");
    let errs = validate_object(&crd, "v1alpha1", &moved, Some(&obj)).unwrap_err();
    assert!(
        errs.iter().any(|e| e.contains("spec.instanceID") && e.contains("immutable")),
        "{errs:?}"
    );
    let mut typo = obj.clone();
    typo["spec"]["nodeNmae"] = json!("x");
    let errs = validate_object(&crd, "v1alpha1", &typo, None).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("spec.nodeNmae")), "{errs:?}");
}

/// The committed ENIPool CRD served by the test API refuses a status write with a malformed
/// address (422, naming the field) and leaves the stored status as it was; a valid one is taken.
#[tokio::test]
async fn enipool_status_addresses_are_validated_by_the_served_crd() {
    use enipool_crds::ENIPool;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let env = Env::start().await;
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(env.client.clone());
    let crd = serde_json::from_value(load_crd("enipool.io_enipools.yaml")).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let pools: kube::Api<ENIPool> = kube::Api::all(env.client.clone());
    pools
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "enipool.io/v1alpha1", "kind": "ENIPool", "metadata": {"name": "node-a"},
                "spec": {"nodeName": "node-a", "instanceID": "i-0123456789abcdef0"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let eni = |ips: Value, prefixes: Value, subnet: &str| {
        json!({"status": {"revision": 1, "enis": [{
            "id": "eni-1", "deviceIndex": 1, "mac": "02:00:00:00:00:0b", "subnetID": "subnet-1",
            "subnetCIDR": subnet, "primaryIP": "10.0.16.5", "ips": ips, "prefixes": prefixes,
            "state": "Attached"}]}})
    };
    let good = eni(json!(["10.0.16.6"]), json!(["10.0.17.0/28"]), "10.0.16.0/20");
    let pp = PatchParams::default();
    let p = pools.patch_status("node-a", &pp, &Patch::Merge(&good)).await.expect("valid status");
    assert_eq!(p.status.unwrap().enis[0].prefixes, ["10.0.17.0/28"]);
    for (status, field) in [
        (eni(json!([]), json!(["0.0.0.0/1"]), "10.0.16.0/20"), "status.enis[0].prefixes[0]"),
        (eni(json!(["not-an-ip"]), json!([]), "10.0.16.0/20"), "status.enis[0].ips[0]"),
        (eni(json!([]), json!([]), "10.0.16.0/33"), "status.enis[0].subnetCIDR"),
    ] {
        let e = pools.patch_status("node-a", &pp, &Patch::Merge(&status)).await.unwrap_err();
        assert_eq!((code(&e), reason(&e).as_str()), (422, "Invalid"), "{status}");
        let kube::Error::Api(s) = &e else { unreachable!() };
        assert!(s.message.contains(field), "{field} not named: {}", s.message);
    }
    let kept = pools.get("node-a").await.unwrap().status.unwrap();
    assert_eq!(
        (kept.enis[0].ips.as_slice(), kept.enis[0].subnet_cidr.as_str()),
        (&["10.0.16.6".to_string()][..], "10.0.16.0/20")
    );
    env.api.shutdown().await;
}
