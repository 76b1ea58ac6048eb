//! A Kubernetes API server for tests, in process, on `127.0.0.1` over plain HTTP.
//!
//! It serves what enipool, kube-rs (client, watcher, controller, leases, event recorder) and
//! `kubectl` use: discovery, core Namespaces/Nodes/Pods/Events/Services/ConfigMaps/Secrets/
//! ServiceAccounts (with TokenRequest), coordination Leases, events.k8s.io Events, RBAC roles and
//! bindings, ValidatingAdmissionPolicies and their bindings, and CustomResourceDefinitions
//! (creating one serves its resource with schema + CEL validation and printer columns);
//! get/list/watch with resourceVersion semantics (bookmarks, 410 Gone after compaction,
//! `sendInitialEvents`), label and field selectors, create/update/merge, JSON and
//! server-side-apply patches with field managers, the status subresource, `metadata.generation`,
//! finalizers, and garbage collection through ownerReferences.
//!
//! Each request goes through the stages of a real apiserver, in its order: authentication
//! (`authn.rs`: static tokens, and service-account tokens minted by TokenRequest with the bound
//! pod's and node's extras), authorization (`rbac.rs`: RBAC from the stored roles and bindings,
//! when [`KubeApiConfig::rbac`] is on; `system:masters` is never restricted), decoding and
//! patching, schema validation (custom resources), ValidatingAdmissionPolicies (`admission.rs`,
//! always enforced), then storage. Every request is also recorded as the authorizer sees it
//! ([`KubeApi::audit`]). A test can make the server stop answering one user (`freeze.rs`).
//!
//! Departures from the real apiserver are documented next to the code that makes them
//! (`authn.rs`, `rbac.rs`, `admission.rs`, `admission_match.rs`, `tokenrequest.rs`, `gc.rs`,
//! `patch.rs`, `apply.rs`, `fields.rs`, `schema.rs`, `resources.rs`, `handlers.rs`). The main
//! ones: plain HTTP, so kubectl (client-go sends credentials only over HTTPS) is always
//! `system:anonymous` (with RBAC on, grant it what it needs through a binding to
//! `system:unauthenticated`; kube-rs clients do send their tokens); RBAC is off unless asked
//! for; an unknown bearer token is anonymous rather than refused; service-account tokens are
//! opaque strings, not JWTs; no admission webhooks or mutating policies, and the server's own
//! writes (garbage collection) skip admission; no graceful pod deletion (pods go at once); no
//! protobuf but a TokenRequest body; no aggregated discovery; built-in kinds are not
//! schema-validated.

pub mod admission;
mod admission_match;
mod admission_request;
mod apply;
pub mod audit;
pub mod authn;
mod celenv;
mod discovery;
pub mod error;
pub mod fields;
mod freeze;
mod gc;
mod handlers;
mod ops;
mod patch;
mod protobuf;
pub mod rbac;
mod req;
mod request;
pub mod resources;
pub mod schema;
mod selectors;
pub mod store;
pub mod table;
mod target;
mod tokenrequest;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch as tokio_watch;

pub use admission::{AdmissionRequest, Verdict};
pub use audit::AuditRecord;
pub use authn::UserInfo;
pub use error::ApiError;
pub use schema::validate_object;

#[derive(Debug, Clone)]
pub struct KubeApiConfig {
    /// Events kept for watches; a watch from an older resourceVersion gets 410 Gone.
    pub event_log_capacity: usize,
    /// How often an idle watch that allows bookmarks receives one.
    pub bookmark_interval: Duration,
    /// Static bearer tokens and their users (`"name".into()` is a user without groups; every
    /// authenticated user is also in `system:authenticated`). The first one is written into
    /// kubeconfigs and used by [`KubeApi::client`]; by default it is `admin` in `system:masters`.
    pub tokens: Vec<(String, UserInfo)>,
    /// Authorize every request of a user outside `system:masters` with the stored RBAC objects
    /// (403 Forbidden when no rule allows it). Off: everything is allowed (and still audited).
    /// [`KubeApi::set_rbac`] changes it at run time.
    pub rbac: bool,
    /// Namespaces created at start.
    pub namespaces: Vec<String>,
}

impl Default for KubeApiConfig {
    fn default() -> Self {
        KubeApiConfig {
            event_log_capacity: store::DEFAULT_LOG_CAPACITY,
            bookmark_interval: Duration::from_secs(5),
            tokens: vec![(DEFAULT_TOKEN.into(), UserInfo::admin("admin"))],
            rbac: false,
            namespaces: ["default", "kube-system", "kube-public", "kube-node-lease"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// The token written into kubeconfigs.
pub const DEFAULT_TOKEN: &str = "enipool-e2e-admin-token";

/// Everything behind the server's single lock.
pub(crate) struct State {
    pub(crate) store: store::Store,
    pub(crate) registry: resources::Registry,
    pub(crate) tokens: authn::Tokens,
}

/// Shared between the HTTP handlers.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Latest resourceVersion, so watches wake up on every change.
    changed: tokio_watch::Sender<u64>,
    /// Flips to true on shutdown; open watches end.
    stopping: tokio_watch::Sender<bool>,
    config: KubeApiConfig,
    addr: SocketAddr,
    /// User names of requests seen, in order of first appearance.
    users: Mutex<Vec<String>>,
    /// Whether RBAC authorizes requests ([`KubeApiConfig::rbac`]).
    rbac: AtomicBool,
    /// Every request as the authorizer sees it.
    audit: audit::AuditLog,
    /// LIST requests of these resources (plural) are answered after the delay: a slow initial
    /// list, as of a large cluster's Nodes ([`KubeApi::delay_lists`]).
    list_delays: Mutex<BTreeMap<String, Duration>>,
    /// Users whose requests get no answer ([`KubeApi::freeze_user`]).
    frozen: freeze::Frozen,
}

impl Shared {
    /// Remember a user name seen on a request ([`KubeApi::users`]).
    pub(crate) fn note_user(&self, user: &str) {
        if let Ok(mut users) = self.users.lock() {
            if !users.iter().any(|u| u == user) {
                users.push(user.to_string());
            }
        }
    }

    /// The delay a test asked for before answering `req` ([`KubeApi::delay_lists`]).
    pub(crate) fn list_delay(&self, req: &AuditRecord) -> Option<Duration> {
        let d = self.list_delays.lock().unwrap_or_else(|e| e.into_inner());
        (req.verb == "list").then(|| d.get(&req.resource).copied()).flatten()
    }

    /// Lock the state; after the closure, watches are told about the new resourceVersion.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = self.lock();
        let r = f(&mut st);
        let rv = st.store.rv();
        drop(st);
        self.changed.send_if_modified(|cur| {
            let changed = *cur != rv;
            *cur = rv;
            changed
        });
        r
    }
    fn lock(&self) -> MutexGuard<'_, State> {
        // A handler that panicked leaves consistent data (every mutation is one `put`), so keep
        // serving rather than poisoning every later request.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The current time as the apiserver writes timestamps (RFC 3339, seconds).
pub(crate) fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Errors starting the server or talking to it.
#[derive(Debug, thiserror::Error)]
pub enum KubeApiError {
    /// Binding or serving failed.
    #[error("kubeapi i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Building a kube client failed.
    #[error("kube client: {0}")]
    Kube(String),
}

/// A running test API server. Dropping it does not stop it; call [`KubeApi::shutdown`].
pub struct KubeApi {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl KubeApi {
    /// Start serving on `127.0.0.1:<random port>`.
    pub async fn start(config: KubeApiConfig) -> Result<KubeApi, KubeApiError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut state = State {
            store: store::Store::new(config.event_log_capacity),
            registry: resources::Registry::new(),
            tokens: authn::Tokens { static_tokens: config.tokens.clone(), minted: BTreeMap::new() },
        };
        let ns_def = state.registry.find("", "v1", "namespaces").cloned().expect("namespaces");
        let t = target::Target {
            def: ns_def,
            version: "v1".into(),
            namespace: None,
            name: None,
            sub: None,
        };
        for ns in &config.namespaces {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            ops::create(&mut state, &t, obj, ops::Own::Update("kube-apiserver"), false, None)
                .map_err(|e| KubeApiError::Kube(e.message))?;
        }
        let (changed, _) = tokio_watch::channel(state.store.rv());
        let (stopping, _) = tokio_watch::channel(false);
        let rbac = AtomicBool::new(config.rbac);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed,
            stopping,
            config,
            addr,
            users: Mutex::new(Vec::new()),
            rbac,
            audit: audit::AuditLog::default(),
            list_delays: Mutex::new(BTreeMap::new()),
            frozen: tokio_watch::channel(Default::default()).0,
        });
        let router = request::router(shared.clone());
        let mut stop = shared.stopping.subscribe();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "kubeapi server stopped");
            }
        });
        Ok(KubeApi { shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    fn first_token(&self) -> String {
        self.shared.config.tokens.first().map(|t| t.0.clone()).unwrap_or_default()
    }

    /// Write a kubeconfig (cluster, a token user, current context) pointing at this server, with
    /// the first configured token.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        self.write_kubeconfig_with_token(path, &self.first_token())
    }

    /// [`KubeApi::write_kubeconfig`] with another bearer token.
    pub fn write_kubeconfig_with_token(&self, path: &Path, token: &str) -> std::io::Result<()> {
        let cfg = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: enipool-e2e\n  cluster:\n    server: {}\n\
             users:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: enipool-e2e\n  context:\n    \
             cluster: enipool-e2e\n    user: admin\n    namespace: default\ncurrent-context: enipool-e2e\n",
            self.url()
        );
        std::fs::write(path, cfg)
    }

    /// A kube client for this server (default namespace `default`) with the first configured
    /// token.
    pub fn client(&self) -> Result<kube::Client, KubeApiError> {
        self.client_with_token(&self.first_token())
    }

    /// A kube client that authenticates with `token` (a static one, or one a TokenRequest
    /// returned).
    pub fn client_with_token(&self, token: &str) -> Result<kube::Client, KubeApiError> {
        let url = self
            .url()
            .parse()
            .map_err(|e: http::uri::InvalidUri| KubeApiError::Kube(e.to_string()))?;
        let mut cfg = kube::Config::new(url);
        cfg.auth_info.token = Some(token.to_string().into());
        kube::Client::try_from(cfg).map_err(|e| KubeApiError::Kube(e.to_string()))
    }

    /// Accept `token` as `user` from now on (a later token with the same text replaces it).
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.shared.with_state(|st| st.tokens.static_tokens.push((token.to_string(), user)));
    }

    /// Turn RBAC authorization on or off ([`KubeApiConfig::rbac`]); requests already being
    /// served keep the decision they got.
    pub fn set_rbac(&self, enabled: bool) {
        self.shared.rbac.store(enabled, Ordering::SeqCst);
    }

    /// Whether RBAC authorization is on.
    pub fn rbac_enabled(&self) -> bool {
        self.shared.rbac.load(Ordering::SeqCst)
    }

    /// Drop the whole watch event log, as an etcd compaction does: watches resuming from any
    /// earlier resourceVersion get 410 Gone and must relist.
    pub fn compact(&self) {
        self.shared.with_state(|st| st.store.compact());
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.with_state(|st| st.store.rv())
    }

    /// User names of the requests served so far (from bearer tokens; `system:anonymous` without).
    pub fn users(&self) -> Vec<String> {
        self.shared.users.lock().map(|u| u.clone()).unwrap_or_default()
    }

    /// Every request served so far as (user, verb, apiGroup, resource, subresource, namespace,
    /// name), in arrival order; see [`audit`] for how verbs are derived.
    pub fn audit(&self) -> Vec<AuditRecord> {
        self.shared.audit.snapshot()
    }

    /// Answer every later LIST of `resource` (plural, any group) `delay` late (zero: no delay).
    /// Watches are not delayed. Tests use it to hold one cache's initial list back while others
    /// complete, as a large cluster's Node list does.
    pub fn delay_lists(&self, resource: &str, delay: Duration) {
        let mut d = self.shared.list_delays.lock().unwrap_or_else(|e| e.into_inner());
        if delay.is_zero() {
            d.remove(resource);
        } else {
            d.insert(resource.to_string(), delay);
        }
    }

    /// [`KubeApi::audit`] with the time each request was recorded (after authentication, before
    /// it is handled; a request held by [`KubeApi::freeze_user`] when it is released).
    pub fn audit_timed(&self) -> Vec<(std::time::Instant, AuditRecord)> {
        self.shared.audit.snapshot_timed()
    }

    /// Stop answering `user` (the user name its token authenticates as), as a partition between
    /// that client and the server: its connections stay open, but every request, new or already
    /// waiting, gets no response at all and its open watches deliver nothing, until
    /// [`KubeApi::unfreeze_user`]. Other users are served as usual. See `freeze.rs`.
    pub fn freeze_user(&self, user: &str) {
        self.shared.set_frozen(user, true);
    }

    /// Answer `user` again: held requests are handled (those whose client is still waiting) and
    /// held watch events are delivered.
    pub fn unfreeze_user(&self, user: &str) {
        self.shared.set_frozen(user, false);
    }

    /// Forget the audit records so far.
    pub fn clear_audit(&self) {
        self.shared.audit.clear();
    }

    /// Stop serving; open watches end.
    pub async fn shutdown(self) {
        let _ = self.shared.stopping.send(true);
        let _ = self.task.await;
    }
}
