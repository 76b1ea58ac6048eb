use super::*;
use clap::{CommandFactory, Parser};
use serde_json::json;

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn view(name: &str, finalizers: &[&str]) -> PoolView {
    PoolView {
        name: name.into(),
        uid: Some(format!("uid-{name}")),
        resource_version: Some("7".into()),
        finalizers: finalizers.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn without_a_selector_every_pool_is_in_scope() {
    assert!(in_scope(&NodeScope::All, "anything"));
    let pools = [view("b", &[POOL_FINALIZER]), view("a", &[])];
    let (work, skip) = plan(&pools, &NodeScope::All);
    assert_eq!(work.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(skip.is_empty());
}

#[test]
fn with_a_selector_pools_of_selected_or_gone_nodes_only() {
    let scope = NodeScope::Selected { selected: set(&["sel"]), existing: set(&["sel", "other"]) };
    // (node, in scope): the operator's rule for a pool not being deleted.
    for (node, want) in [("sel", true), ("other", false), ("gone", true)] {
        assert_eq!(in_scope(&scope, node), want, "{node}");
    }
    let pools = [view("other", &[POOL_FINALIZER]), view("gone", &[]), view("sel", &[])];
    let (work, skip) = plan(&pools, &scope);
    assert_eq!(work.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["gone", "sel"]);
    assert_eq!(skip, ["other"]);
}

#[test]
fn the_patch_removes_only_our_finalizer_and_is_guarded_by_resource_version() {
    let only = [POOL_FINALIZER.to_string()];
    assert_eq!(
        finalizer_patch(&only, "42"),
        Some(json!({"metadata": {"finalizers": null, "resourceVersion": "42"}}))
    );
    let more = ["a/x".to_string(), POOL_FINALIZER.to_string(), "b/y".to_string()];
    assert_eq!(
        finalizer_patch(&more, "9"),
        Some(json!({"metadata": {"finalizers": ["a/x", "b/y"], "resourceVersion": "9"}}))
    );
    assert_eq!(finalizer_patch(&["a/x".to_string()], "9"), None);
    assert_eq!(finalizer_patch(&[], "9"), None);
}

#[test]
fn flags_defaults_and_env_names() {
    CleanupArgs::command().debug_assert();
    let a = CleanupArgs::try_parse_from(["enipool-operator cleanup"]).unwrap();
    let c = a.config();
    assert_eq!(c.timeout, Duration::from_secs(120));
    assert_eq!(
        (c.lease_namespace.as_str(), c.lease_name.as_str()),
        ("kube-system", "enipool-operator")
    );
    assert_eq!(c.node_selector, None);
    assert!(c.identity.starts_with("enipool-operator-cleanup-"), "{}", c.identity);
    let a = CleanupArgs::try_parse_from([
        "enipool-operator cleanup",
        "--lease-namespace=ns",
        "--lease-name=l",
        "--identity=me",
        "--node-selector= ",
        "--timeout-seconds=5",
        "--log-format=json",
    ])
    .unwrap();
    let c = a.config();
    assert_eq!((c.lease_namespace.as_str(), c.lease_name.as_str()), ("ns", "l"));
    assert_eq!((c.identity.as_str(), c.timeout), ("me", Duration::from_secs(5)));
    assert_eq!(c.node_selector, None, "an empty selector selects every Node");
    // The Lease and selector flags read the operator's environment names.
    let env = |id: &str| {
        CleanupArgs::command()
            .get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
    };
    assert_eq!(env("lease_name").as_deref(), Some("ENIPOOL_OPERATOR_LEASE_NAME"));
    assert_eq!(env("lease_namespace").as_deref(), Some("ENIPOOL_OPERATOR_LEASE_NAMESPACE"));
    assert_eq!(env("node_selector").as_deref(), Some("ENIPOOL_OPERATOR_NODE_SELECTOR"));
}
