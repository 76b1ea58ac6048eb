//! Watches through kube-runtime's watcher and the raw API: events, bookmarks, 410 Gone.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, Event};
use kube::Api;
use serde_json::json;

use crate::common::Env;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

async fn next<S: futures::Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin>(
    s: &mut S,
) -> Event<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("watch event in time")
        .expect("stream open")
        .expect("no error")
}

fn name(o: &ConfigMap) -> &str {
    o.metadata.name.as_deref().unwrap()
}

async fn run_watcher(streaming: bool) {
    let env = Env::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let cfg = if streaming {
        watcher::Config::default().streaming_lists()
    } else {
        watcher::Config::default()
    };
    let mut s = watcher::watcher(cms.clone(), cfg).boxed();
    assert!(matches!(next(&mut s).await, Event::Init));
    assert!(matches!(next(&mut s).await, Event::InitApply(o) if name(&o) == "a"));
    assert!(matches!(next(&mut s).await, Event::InitDone));
    cms.create(&PostParams::default(), &cm("b")).await.unwrap();
    assert!(matches!(next(&mut s).await, Event::Apply(o) if name(&o) == "b"));
    cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "w"}})))
        .await
        .unwrap();
    assert!(matches!(next(&mut s).await, Event::Apply(o) if o.data.as_ref().unwrap()["k"] == "w"));
    cms.delete("b", &DeleteParams::default()).await.unwrap();
    assert!(matches!(next(&mut s).await, Event::Delete(o) if name(&o) == "b"));
    env.api.shutdown().await;
}

#[tokio::test]
async fn watcher_list_then_watch() {
    run_watcher(false).await;
}

#[tokio::test]
async fn watcher_streaming_list() {
    run_watcher(true).await;
}

#[tokio::test]
async fn watch_from_compacted_version_is_gone_and_watcher_relists() {
    let env = Env::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let a = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let old_rv = a.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &cm("b")).await.unwrap();
    // Resuming from a retained version replays what happened since.
    let mut w = cms.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();
    let ev =
        tokio::time::timeout(Duration::from_secs(5), w.try_next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(ev, WatchEvent::Added(o) if name(&o) == "b"));
    // After compaction the same version is gone: an ERROR event with 410.
    env.api.compact();
    let mut w = cms.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();
    let ev =
        tokio::time::timeout(Duration::from_secs(5), w.try_next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(ev, WatchEvent::Error(e) if e.code == 410), "expected 410");

    // kube-runtime's watcher recovers: its watch is cut (410) and it relists.
    let mut s = watcher::watcher(cms.clone(), watcher::Config::default()).boxed();
    for _ in 0..4 {
        next(&mut s).await; // Init, InitApply a, InitApply b, InitDone
    }
    env.api.compact();
    cms.create(&PostParams::default(), &cm("c")).await.unwrap();
    // Either the event arrives directly (the watch was already past the compaction point) or
    // after a relist; both end with c visible.
    let mut seen_c = false;
    for _ in 0..8 {
        match next(&mut s).await {
            Event::Apply(o) | Event::InitApply(o) if name(&o) == "c" => {
                seen_c = true;
                break;
            }
            _ => {}
        }
    }
    assert!(seen_c);
    env.api.shutdown().await;
}

#[tokio::test]
async fn bookmarks_and_selectors_on_watch() {
    let env = Env::with_config(enipool_kubeapi::KubeApiConfig {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let rv = cms
        .create(&PostParams::default(), &cm("x"))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default().labels("sel=yes");
    let mut w = cms.watch(&wp, &rv).await.unwrap().boxed();
    let ev =
        tokio::time::timeout(Duration::from_secs(5), w.try_next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(ev, WatchEvent::Bookmark(_)));
    // Entering the selection is ADDED, leaving it is DELETED.
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "yes"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "no"}}})),
    )
    .await
    .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), w.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(_) => kinds.push("ADDED"),
            WatchEvent::Deleted(_) => kinds.push("DELETED"),
            WatchEvent::Modified(_) => kinds.push("MODIFIED"),
            _ => {}
        }
    }
    assert_eq!(kinds, ["ADDED", "DELETED"]);
    env.api.shutdown().await;
}
