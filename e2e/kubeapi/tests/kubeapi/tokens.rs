//! TokenRequest through kube-rs (`Api::<ServiceAccount>::create_token_request`) and kubectl
//! (`kubectl create token --bound-object-kind Pod`, a protobuf body): the minted token's user, as
//! the server reports it back (SelfSubjectReview), and the errors of a real server.

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::common::{code, kubectl, obj, reason, whoami, Env};

const NS: &str = "kube-system";
const SA: &str = "agent";

/// A ServiceAccount, a Node and a pod of that ServiceAccount on it.
async fn fixtures(env: &Env, node_exists: bool) -> (Pod, Option<Node>) {
    let pp = PostParams::default();
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), NS);
    if sas.get_opt(SA).await.unwrap().is_none() {
        sas.create(&pp, &obj(json!({"metadata": {"name": SA}}))).await.unwrap();
    }
    let node = if node_exists {
        let nodes: Api<Node> = Api::all(env.client.clone());
        Some(nodes.create(&pp, &obj(json!({"metadata": {"name": "n1"}}))).await.unwrap())
    } else {
        None
    };
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    let name = if node_exists { "agent-1" } else { "agent-2" };
    let pod = pods
        .create(
            &pp,
            &obj(json!({"metadata": {"name": name}, "spec": {"nodeName": "n1",
                "serviceAccountName": SA, "containers": [{"name": "c", "image": "agent"}]}})),
        )
        .await
        .unwrap();
    (pod, node)
}

fn bound_to(kind: &str, name: &str, uid: Option<&str>) -> TokenRequest {
    let mut r = json!({"apiVersion": "v1", "kind": kind, "name": name});
    if let Some(u) = uid {
        r["uid"] = json!(u);
    }
    obj(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"audiences": [], "boundObjectRef": r}}))
}

fn uid<K: kube::Resource>(o: &K) -> String {
    o.meta().uid.clone().unwrap()
}

#[tokio::test]
async fn token_request_binds_the_pod_and_its_node() {
    let env = Env::start().await;
    let (pod, node) = fixtures(&env, true).await;
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), NS);
    let sa = sas.get(SA).await.unwrap();
    let tr = sas
        .create_token_request(
            SA,
            &PostParams::default(),
            &bound_to("Pod", "agent-1", Some(&uid(&pod))),
        )
        .await
        .unwrap();
    let status = tr.status.expect("status");
    let left = status.expiration_timestamp.0.as_second() - jiff::Timestamp::now().as_second();
    assert!((3590..=3600).contains(&left), "default expiry is an hour, got {left} s");

    let agent = env.api.client_with_token(&status.token).unwrap();
    let user = whoami(&agent).await;
    let credential = user["extra"]["authentication.kubernetes.io/credential-id"][0].clone();
    assert!(credential.as_str().is_some_and(|c| c.starts_with("JTI=")), "{user}");
    assert_eq!(
        user,
        json!({
            "username": format!("system:serviceaccount:{NS}:{SA}"),
            "uid": uid(&sa),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{NS}"), "system:authenticated"],
            "extra": {
                "authentication.kubernetes.io/credential-id": [credential],
                "authentication.kubernetes.io/node-name": ["n1"],
                "authentication.kubernetes.io/node-uid": [uid(&node.unwrap())],
                "authentication.kubernetes.io/pod-name": ["agent-1"],
                "authentication.kubernetes.io/pod-uid": [uid(&pod)],
            },
        })
    );
    assert!(env.api.users().contains(&format!("system:serviceaccount:{NS}:{SA}")));

    // A pod whose Node object does not exist: the node's name, no uid.
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    let (_, _) = fixtures(&env, false).await;
    let tr = sas
        .create_token_request(SA, &PostParams::default(), &bound_to("Pod", "agent-2", None))
        .await
        .unwrap();
    let user = whoami(&env.api.client_with_token(&tr.status.unwrap().token).unwrap()).await;
    assert_eq!(user["extra"]["authentication.kubernetes.io/node-name"], json!(["n1"]));
    assert!(user["extra"].get("authentication.kubernetes.io/node-uid").is_none(), "{user}");

    // The bound pod is gone: its token is refused (401), as a real server refuses it.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    pods.delete("agent-1", &DeleteParams::default()).await.unwrap();
    let e = Api::<Pod>::namespaced(agent, NS).list(&Default::default()).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (401, "Unauthorized"));
    env.api.shutdown().await;
}

#[tokio::test]
async fn token_request_errors_are_the_apiservers() {
    let env = Env::start().await;
    let (pod, _) = fixtures(&env, true).await;
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), NS);
    let pp = PostParams::default();
    let fail = |r: Result<TokenRequest, kube::Error>| match r.unwrap_err() {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("{other:?}"),
    };
    let missing_sa =
        sas.create_token_request("nobody", &pp, &bound_to("Pod", "agent-1", None)).await;
    assert_eq!(
        fail(missing_sa),
        (404, "NotFound".into(), "serviceaccounts \"nobody\" not found".into())
    );
    let missing_pod = sas.create_token_request(SA, &pp, &bound_to("Pod", "gone", None)).await;
    assert_eq!(fail(missing_pod), (404, "NotFound".into(), "pods \"gone\" not found".into()));
    let wrong_uid =
        sas.create_token_request(SA, &pp, &bound_to("Pod", "agent-1", Some("0000"))).await;
    assert_eq!(
        fail(wrong_uid),
        (409, "Conflict".into(), "Operation cannot be fulfilled on Pod \"agent-1\": the UID in the bound object reference (0000) does not match the UID in record. The object might have been deleted and then recreated".into())
    );
    // The pod runs as the `agent` ServiceAccount, not as `default`.
    sas.create(&pp, &obj(json!({"metadata": {"name": "default"}}))).await.unwrap();
    let other_sa = sas
        .create_token_request("default", &pp, &bound_to("Pod", "agent-1", Some(&uid(&pod))))
        .await;
    let (c, r, m) = fail(other_sa);
    assert_eq!((c, r.as_str()), (400, "BadRequest"));
    assert!(m.contains("different serviceaccount"), "{m}");
    let short: TokenRequest = obj(json!({"spec": {"audiences": [], "expirationSeconds": 60}}));
    let (c, _, m) = fail(sas.create_token_request(SA, &pp, &short).await);
    assert_eq!(c, 422);
    assert!(m.contains("may not specify a duration less than 10 minutes"), "{m}");
    env.api.shutdown().await;
}

#[tokio::test]
async fn kubectl_create_token_for_a_pod() {
    let env = Env::start().await;
    let (pod, _) = fixtures(&env, true).await;
    let args = [
        "create",
        "token",
        SA,
        "-n",
        NS,
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "agent-1",
    ];
    let token = kubectl(&env, &args).await.trim().to_string();
    let user = whoami(&env.api.client_with_token(&token).unwrap()).await;
    assert_eq!(user["extra"]["authentication.kubernetes.io/pod-uid"], json!([uid(&pod)]));
    // A kubeconfig with that token, as a node agent would load it (kube-rs; kubectl sends no
    // credentials to a plain-HTTP server, so it would be anonymous).
    let kc = env.dir.path().join("agent-kubeconfig");
    env.api.write_kubeconfig_with_token(&kc, &token).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&kc).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let user = whoami(&kube::Client::try_from(cfg).unwrap()).await;
    assert_eq!(user["extra"]["authentication.kubernetes.io/node-name"], json!(["n1"]));
    env.api.shutdown().await;
}
