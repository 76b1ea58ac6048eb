//! A fault: the server stops answering one user, as a partition between that client and the
//! server, or a connection gone silent, looks to the client. Its connections stay open; a request
//! gets no response at all (no error, no status line), an open watch delivers nothing (no events,
//! no bookmarks, no end), until the user is unfrozen ([`KubeApi::freeze_user`]).
//!
//! The freeze sits right after authentication, before the audit record and any handling: a held
//! request is recorded and applied only once released. A request whose client gives up meanwhile
//! (a timeout closing the connection) is dropped with the connection and never applied, as a
//! request that never reached the server.
//!
//! [`KubeApi::freeze_user`]: super::KubeApi::freeze_user

use std::collections::BTreeSet;

use tokio::sync::watch;

use super::Shared;

/// The users whose requests are held.
pub(crate) type Frozen = watch::Sender<BTreeSet<String>>;

impl Shared {
    /// Waits while `user` is frozen. `false` when the server stops meanwhile (the caller then
    /// ends the request or the watch).
    pub(crate) async fn until_unfrozen(&self, user: &str) -> bool {
        let mut frozen = self.frozen.subscribe();
        let mut stopping = self.stopping.subscribe();
        loop {
            if !frozen.borrow_and_update().contains(user) {
                return true;
            }
            if *stopping.borrow_and_update() {
                return false;
            }
            tokio::select! {
                r = frozen.changed() => if r.is_err() { return false },
                r = stopping.changed() => if r.is_err() { return false },
            }
        }
    }

    pub(crate) fn set_frozen(&self, user: &str, frozen: bool) {
        self.frozen.send_modify(|users| {
            if frozen {
                users.insert(user.to_string());
            } else {
                users.remove(user);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::{KubeApi, KubeApiConfig, UserInfo};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams, WatchEvent, WatchParams};
    use kube::Client;
    use std::time::Duration;

    const SHORT: Duration = Duration::from_millis(500);

    async fn api() -> (KubeApi, Client, Client) {
        let api = KubeApi::start(KubeApiConfig::default()).await.unwrap();
        api.add_token("frozen-token", UserInfo::admin("frozen"));
        let frozen = api.client_with_token("frozen-token").unwrap();
        let admin = api.client().unwrap();
        (api, frozen, admin)
    }

    fn cm(name: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap()
    }

    #[tokio::test]
    async fn a_frozen_user_gets_no_answer_until_unfrozen_and_others_are_served() {
        let (api, frozen, admin) = api().await;
        let mine: Api<ConfigMap> = Api::namespaced(frozen, "default");
        let theirs: Api<ConfigMap> = Api::namespaced(admin, "default");
        api.freeze_user("frozen");
        let held = tokio::spawn({
            let mine = mine.clone();
            async move { mine.create(&PostParams::default(), &cm("held")).await }
        });
        tokio::time::sleep(SHORT).await;
        assert!(!held.is_finished(), "a frozen user's request was answered");
        // Not a server-wide stall: another user is served, and sees nothing of the held request.
        assert!(theirs.get_opt("held").await.unwrap().is_none());
        assert!(!api.audit().iter().any(|r| r.user == "frozen"), "held requests are not audited");
        api.unfreeze_user("frozen");
        let created = tokio::time::timeout(SHORT * 10, held).await.expect("answered").unwrap();
        created.expect("applied once released");
        assert!(theirs.get_opt("held").await.unwrap().is_some());
        api.shutdown().await;
    }

    #[tokio::test]
    async fn a_request_the_client_gave_up_on_while_frozen_is_never_applied() {
        let (api, frozen, admin) = api().await;
        let mine: Api<ConfigMap> = Api::namespaced(frozen, "default");
        api.freeze_user("frozen");
        let gave_up =
            tokio::time::timeout(SHORT, mine.create(&PostParams::default(), &cm("dropped"))).await;
        assert!(gave_up.is_err(), "answered while frozen: {gave_up:?}");
        // The client dropped its connection; the server notices and drops the held request.
        tokio::time::sleep(SHORT).await;
        api.unfreeze_user("frozen");
        tokio::time::sleep(SHORT).await;
        let theirs: Api<ConfigMap> = Api::namespaced(admin, "default");
        assert!(
            theirs.get_opt("dropped").await.unwrap().is_none(),
            "applied after the client left"
        );
        assert!(!api.audit().iter().any(|r| r.user == "frozen" && r.verb == "create"));
        // Unfrozen, the same client is served again.
        mine.create(&PostParams::default(), &cm("later")).await.expect("served after unfreeze");
        api.shutdown().await;
    }

    #[tokio::test]
    async fn an_open_watch_of_a_frozen_user_delivers_nothing_until_unfrozen() {
        use futures::{StreamExt, TryStreamExt};
        let (api, frozen, admin) = api().await;
        let mine: Api<ConfigMap> = Api::namespaced(frozen, "default");
        let theirs: Api<ConfigMap> = Api::namespaced(admin, "default");
        let wp = WatchParams::default().timeout(1);
        let mut events = mine.watch(&wp, "0").await.unwrap().boxed();
        api.freeze_user("frozen");
        theirs.create(&PostParams::default(), &cm("while-frozen")).await.unwrap();
        // Not even the end of the 1 s watch comes through.
        let next = tokio::time::timeout(Duration::from_secs(2), events.try_next()).await;
        assert!(next.is_err(), "a frozen watch delivered {next:?}");
        api.unfreeze_user("frozen");
        let ev = tokio::time::timeout(SHORT * 10, events.try_next()).await.expect("resumed");
        match ev.unwrap() {
            Some(WatchEvent::Added(o)) => {
                assert_eq!(o.metadata.name.as_deref(), Some("while-frozen"))
            }
            other => panic!("expected the held ADDED event, got {other:?}"),
        }
        api.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_is_not_held_by_frozen_requests() {
        let (api, frozen, _) = api().await;
        let mine: Api<ConfigMap> = Api::namespaced(frozen, "default");
        api.freeze_user("frozen");
        let held = tokio::spawn(async move { mine.get_opt("x").await });
        tokio::time::sleep(SHORT).await;
        tokio::time::timeout(Duration::from_secs(5), api.shutdown()).await.expect("shut down");
        let _ = tokio::time::timeout(Duration::from_secs(5), held).await.expect("request ended");
    }
}
