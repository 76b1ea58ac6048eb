//! Authentication: a bearer token becomes a [`UserInfo`], as the apiserver's token authenticators
//! (static token file, service-account tokens) and its "authenticated group adder" produce it.
//!
//! * A static token ([`KubeApiConfig::tokens`](super::KubeApiConfig::tokens),
//!   [`KubeApi::add_token`](super::KubeApi::add_token)) is its configured user, plus the group
//!   `system:authenticated`.
//! * A token minted by a TokenRequest (`tokenrequest.rs`) is its ServiceAccount's user with the
//!   bound object's extras. Like a real bound token it is checked on every use: once it expired,
//!   or its ServiceAccount or bound object is gone or was recreated (another uid), the request is
//!   refused with 401 Unauthorized.
//! * No token is `system:anonymous` in `system:unauthenticated`.
//!
//! Departure: an unknown token is treated as no token (`system:anonymous`) rather than refused
//! with 401, so clients configured with any token reach the server.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::error::ApiError;
use super::store::{ObjKey, Store};

/// `system:masters`: the group RBAC never restricts.
pub const MASTERS: &str = "system:masters";
/// Every authenticated user's group.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of requests without a (known) token.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user of requests without a (known) token.
pub const ANONYMOUS: &str = "system:anonymous";
/// `userInfo.extra` keys of a pod-bound service-account token (Kubernetes >= 1.30).
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// See [`EXTRA_POD_NAME`].
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// See [`EXTRA_POD_NAME`]; present when the pod is bound to a node.
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// See [`EXTRA_POD_NAME`]; present when the pod's Node object exists.
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
/// `JTI=<token id>` of a service-account token.
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// The authenticated user of a request, as authorizers and admission policies see it
/// (`request.userInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// `system:serviceaccount:<ns>:<name>`, `admin`, `system:anonymous`, ...
    pub username: String,
    /// The user's uid (a ServiceAccount's metadata.uid for its tokens).
    pub uid: String,
    /// Groups; authentication adds `system:authenticated`.
    pub groups: Vec<String>,
    /// Extra attributes (the bound object of a service-account token).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with no groups (authentication adds `system:authenticated`).
    pub fn new(username: impl Into<String>) -> Self {
        UserInfo { username: username.into(), ..Default::default() }
    }

    /// An unrestricted user: member of `system:masters`.
    pub fn admin(username: impl Into<String>) -> Self {
        Self::new(username).with_groups([MASTERS])
    }

    /// ServiceAccount `namespace/name` as its (unbound) tokens authenticate it.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self::new(format!("system:serviceaccount:{namespace}:{name}")).with_groups([
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
        ])
    }

    /// The same user with these groups added.
    pub fn with_groups<S: Into<String>>(mut self, groups: impl IntoIterator<Item = S>) -> Self {
        for g in groups {
            let g = g.into();
            if !self.groups.contains(&g) {
                self.groups.push(g);
            }
        }
        self
    }

    /// The same user with `extra[key] = values`.
    pub fn with_extra<S: Into<String>>(
        mut self,
        key: &str,
        values: impl IntoIterator<Item = S>,
    ) -> Self {
        self.extra.insert(key.to_string(), values.into_iter().map(Into::into).collect());
        self
    }

    /// `system:anonymous`.
    pub fn anonymous() -> Self {
        Self::new(ANONYMOUS).with_groups([UNAUTHENTICATED])
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// `{username, uid, groups, extra}` as in an AdmissionReview or a TokenReview; empty
    /// `uid`, `groups` and `extra` are left out, as the API types' `omitempty` does.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.username});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.groups.is_empty() {
            v["groups"] = json!(self.groups);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

impl From<&str> for UserInfo {
    fn from(username: &str) -> Self {
        UserInfo::new(username)
    }
}

impl From<String> for UserInfo {
    fn from(username: String) -> Self {
        UserInfo::new(username)
    }
}

/// What a minted service-account token is bound to; it is valid while these objects live.
#[derive(Debug, Clone)]
pub(crate) struct Minted {
    /// The user it authenticates as (groups and extras included).
    pub user: UserInfo,
    /// The ServiceAccount and its uid.
    pub service_account: (ObjKey, String),
    /// The bound object (Pod, Secret or Node) and its uid.
    pub bound: Option<(ObjKey, String)>,
    pub expires: jiff::Timestamp,
}

/// Static and minted tokens.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    pub static_tokens: Vec<(String, UserInfo)>,
    pub minted: BTreeMap<String, Minted>,
}

fn uid_of(store: &Store, key: &ObjKey) -> Option<String> {
    store.get(key).and_then(|o| o["metadata"]["uid"].as_str()).map(String::from)
}

fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

impl Tokens {
    /// The user of a request with `Authorization: <header>` (None: no header).
    pub fn authenticate(&self, store: &Store, header: Option<&str>) -> Result<UserInfo, ApiError> {
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else {
            return Ok(UserInfo::anonymous());
        };
        if let Some((_, u)) = self.static_tokens.iter().rev().find(|(t, _)| t == token) {
            return Ok(u.clone().with_groups([AUTHENTICATED]));
        }
        let Some(m) = self.minted.get(token) else {
            return Ok(UserInfo::anonymous());
        };
        if jiff::Timestamp::now() >= m.expires {
            return Err(unauthorized());
        }
        let (sa, sa_uid) = &m.service_account;
        if uid_of(store, sa).as_ref() != Some(sa_uid) {
            return Err(unauthorized());
        }
        if let Some((obj, uid)) = &m.bound {
            if uid_of(store, obj).as_ref() != Some(uid) {
                return Err(unauthorized());
            }
        }
        Ok(m.user.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_tokens_anonymous_and_groups() {
        let store = Store::new(10);
        let tokens = Tokens {
            static_tokens: vec![("a".into(), UserInfo::admin("admin")), ("b".into(), "bob".into())],
            minted: BTreeMap::new(),
        };
        let a = tokens.authenticate(&store, Some("Bearer a")).unwrap();
        assert_eq!(
            (a.username.as_str(), a.groups.clone()),
            ("admin", vec![MASTERS.into(), AUTHENTICATED.into()])
        );
        let b = tokens.authenticate(&store, Some("Bearer b")).unwrap();
        assert_eq!(b.groups, [AUTHENTICATED]);
        for h in [None, Some("Bearer unknown"), Some("Basic xyz")] {
            let u = tokens.authenticate(&store, h).unwrap();
            assert_eq!(
                (u.username.as_str(), u.groups.clone()),
                (ANONYMOUS, vec![UNAUTHENTICATED.into()])
            );
        }
    }

    #[test]
    fn user_json_omits_empty_fields() {
        assert_eq!(UserInfo::new("u").to_json(), json!({"username": "u"}));
        let sa = UserInfo::service_account("ns", "sa").with_extra(EXTRA_NODE_NAME, ["n1"]);
        assert_eq!(
            sa.to_json(),
            json!({"username": "system:serviceaccount:ns:sa",
                   "groups": ["system:serviceaccounts", "system:serviceaccounts:ns"],
                   "extra": {EXTRA_NODE_NAME: ["n1"]}})
        );
    }
}
