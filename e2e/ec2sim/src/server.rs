//! The HTTP server (EC2 on `POST /`, JSON admin under `/admin`) and the [`Ec2Sim`] handle.

use super::actions;
use super::authz::Iam;
use super::describe;
use super::faults::{ActionCounters, FaultConfig, Faults, Verdict};
use super::hooks::{FabricHook, HookEvent};
use super::iam::Policy;
use super::ops::RunReq;
use super::params::Params;
use super::state::{State, Tags, Timing};
use super::xml;
use super::{Error, Result};
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Config {
    /// How long attach/detach/termination take.
    pub timing: Timing,
    pub faults: FaultConfig,
    pub account: crate::Account,
    /// Observer for the VPC fabric.
    pub fabric_hook: Option<Arc<dyn FabricHook>>,
    /// How often timed transitions are applied in the background.
    pub tick: Duration,
    /// Port on 127.0.0.1 (0 = any free port).
    pub port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timing: Timing::default(),
            faults: FaultConfig::default(),
            account: crate::Account::default(),
            fabric_hook: None,
            tick: Duration::from_millis(50),
            port: 0,
        }
    }
}

/// A subnet as the fabric needs it (gateway = first host of the CIDR).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubnetInfo {
    /// `subnet-…`.
    pub id: String,
    /// IPv4 CIDR.
    pub cidr: Ipv4Net,
    pub az: String,
    pub vpc_id: String,
    pub tags: Tags,
}

struct Inner {
    state: State,
    /// Snapshots for Describe lag: (taken at, state), oldest first.
    history: VecDeque<(Instant, Arc<State>)>,
}

impl Inner {
    /// Snapshots the state for Describe lag, keeping the newest snapshot older than the lag
    /// window and dropping anything before it.
    fn record(&mut self, now: Instant, lag: Duration) {
        self.history.push_back((now, Arc::new(self.state.clone())));
        while self.history.len() > 1 && self.history[1].0 + lag <= now {
            self.history.pop_front();
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    faults: Mutex<Faults>,
    hook: RwLock<Option<Arc<dyn FabricHook>>>,
    timing: Mutex<Timing>,
    iam: RwLock<Option<Arc<Iam>>>,
    /// Every call the policy denied (the error message), in order.
    denied: Mutex<Vec<String>>,
}

impl Shared {
    fn deliver(&self, events: Vec<HookEvent>) {
        if events.is_empty() {
            return;
        }
        let hook = self.hook.read().expect("hook lock").clone();
        if let Some(h) = hook {
            for e in &events {
                e.deliver(h.as_ref());
            }
        }
    }

    fn lag(&self) -> Duration {
        Duration::from_millis(self.faults.lock().expect("faults lock").config.describe_lag_ms)
    }

    /// Runs `f` on the state after applying due transitions; records a snapshot when lagging.
    fn with_state<T>(&self, f: impl FnOnce(&mut State, Instant, &mut Vec<HookEvent>) -> T) -> T {
        let lag = self.lag();
        let now = Instant::now();
        let mut ev = Vec::new();
        let out = {
            let mut inner = self.inner.lock().expect("state lock");
            if !lag.is_zero() && inner.history.is_empty() {
                // Lag just switched on: the state so far counts as old enough to be served.
                let snap = Arc::new(inner.state.clone());
                inner.history.push_back((now.checked_sub(lag).unwrap_or(now), snap));
            }
            inner.state.advance(now, &mut ev);
            let out = f(&mut inner.state, now, &mut ev);
            if lag.is_zero() {
                inner.history.clear();
            } else {
                inner.record(now, lag);
            }
            out
        };
        self.deliver(ev);
        out
    }

    /// Applies due transitions; snapshots only when something changed, so an idle simulator with
    /// lag on does not copy its state every tick.
    fn tick(&self) {
        let lag = self.lag();
        let now = Instant::now();
        let mut ev = Vec::new();
        {
            let mut inner = self.inner.lock().expect("state lock");
            if inner.state.advance(now, &mut ev) && !lag.is_zero() {
                inner.record(now, lag);
            }
        }
        self.deliver(ev);
    }

    /// Runs `f` on the state a Describe sees: as of `lag` ago when lag is on. Without lag `f`
    /// reads the live state under the lock instead of a copy: copying the whole state for each
    /// Describe made the simulator, not the operator, the bottleneck of the 5,000-pool benchmark
    /// (a Describe only renders XML; mutations wait for it as they would for each other).
    fn with_describe_view<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let lag = self.lag();
        let now = Instant::now();
        let mut ev = Vec::new();
        let out = {
            let mut inner = self.inner.lock().expect("state lock");
            if inner.state.advance(now, &mut ev) && !lag.is_zero() {
                inner.record(now, lag);
            }
            if lag.is_zero() || inner.history.is_empty() {
                f(&inner.state)
            } else {
                let cutoff = now.checked_sub(lag).unwrap_or(now);
                let past = inner
                    .history
                    .iter()
                    .rev()
                    .find(|(t, _)| *t <= cutoff)
                    .or(inner.history.front())
                    .map(|(_, s)| s.clone())
                    .expect("non-empty");
                drop(inner);
                f(&past)
            }
        };
        self.deliver(ev);
        out
    }
}

fn xml_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "text/xml;charset=UTF-8")], body).into_response()
}

fn error_response(e: &Error, rid: &str) -> Response {
    match e {
        Error::Api { code, message, status } => {
            xml_response(*status, xml::error_document(code, message, rid))
        }
        Error::Io(m) => xml_response(500, xml::error_document("InternalError", m, rid)),
    }
}

async fn ec2(AxState(sh): AxState<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let rid = uuid::Uuid::new_v4().to_string();
    let p = Params::parse(&body);
    let Some(action) = p.get("Action").map(str::to_string) else {
        return error_response(
            &Error::api("MissingAction", "The request must contain the parameter Action"),
            &rid,
        );
    };
    let describe = actions::is_describe(&action);
    let (latency, verdict) = {
        let mut f = sh.faults.lock().expect("faults lock");
        (f.latency(&action, describe), f.admit(&action, describe, Instant::now()))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match verdict {
        Verdict::Pass => {}
        Verdict::Fail(e) => return error_response(&e, &rid),
        Verdict::Html(s) => {
            let body = format!("<html><body><h1>{s} Service Error</h1></body></html>");
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, [(header::CONTENT_TYPE, "text/html")], body).into_response();
        }
    }
    let iam = Iam::for_call(sh.iam.read().expect("iam lock").clone(), &headers);
    let result = if !actions::is_known(&action) {
        Err(actions::invalid_action(&action))
    } else if p.get("DryRun") == Some("true") {
        sh.with_state(|st, _, _| Iam::authorize(&iam, st, &action, &p)).and_then(|()| {
            Err(Error::Api {
                code: "DryRunOperation".into(),
                message: "Request would have succeeded, but DryRun flag is set.".into(),
                status: 412,
            })
        })
    } else if describe {
        sh.with_describe_view(|view| {
            Iam::authorize(&iam, view, &action, &p)?;
            describe::describe(view, &action, &p, &rid)
        })
    } else {
        sh.with_state(|st, now, ev| {
            Iam::authorize(&iam, st, &action, &p)?;
            actions::mutate(st, &action, &p, &rid, now, ev)
        })
    };
    let mut f = sh.faults.lock().expect("faults lock");
    match result {
        Ok(body) => {
            f.counter(&action).ok += 1;
            xml_response(200, body)
        }
        Err(e) => {
            f.counter(&action).errors += 1;
            if e.code() == "UnauthorizedOperation" {
                sh.denied.lock().expect("denied lock").push(e.to_string());
            }
            tracing::debug!(%action, error = %e, "ec2sim: EC2 error");
            error_response(&e, &rid)
        }
    }
}

mod admin;
mod seed_ipv6;

/// A running simulator. Dropping it without [`Ec2Sim::shutdown`] leaves the server running until
/// the runtime ends.
pub struct Ec2Sim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Ec2Sim {
    /// Binds 127.0.0.1 (`config.port`, 0 = any) and serves in the background.
    pub async fn start(config: Config) -> Result<Ec2Sim> {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                state: State {
                    timing: config.timing,
                    account: config.account,
                    ..Default::default()
                },
                history: VecDeque::new(),
            }),
            faults: Mutex::new(Faults::default()),
            hook: RwLock::new(config.fabric_hook.clone()),
            timing: Mutex::new(config.timing),
            iam: RwLock::new(None),
            denied: Mutex::new(Vec::new()),
        });
        shared.faults.lock().expect("faults lock").set(config.faults.clone());
        let app = Router::new()
            .route("/", post(ec2))
            .route("/admin/counters", get(admin::counters))
            .route("/admin/faults", get(admin::get_faults).post(admin::set_faults))
            .route("/admin/state", get(admin::state))
            .route("/admin/reset", post(admin::reset_all))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let mut rx2 = rx.clone();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "ec2sim: server failed");
            }
        });
        // Timed transitions (detach, termination) must complete, and hooks fire, even when
        // nobody calls the API.
        let ticker = shared.clone();
        let tick = config.tick;
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick);
            loop {
                tokio::select! {
                    _ = iv.tick() => ticker.tick(),
                    _ = rx2.wait_for(|s| *s) => break,
                }
            }
        });
        tracing::info!(%addr, "ec2sim: listening");
        Ok(Ec2Sim { shared, addr, stop, server })
    }

    /// `http://127.0.0.1:PORT` for `aws_config`'s `endpoint_url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
    }

    /// Installs (or replaces) the fabric observer.
    pub fn set_fabric_hook(&self, hook: Arc<dyn FabricHook>) {
        *self.shared.hook.write().expect("hook lock") = Some(hook);
    }

    /// Calls per action so far.
    pub fn counters(&self) -> BTreeMap<String, ActionCounters> {
        self.shared.faults.lock().expect("faults lock").counters.clone()
    }

    /// Zeroes the counters (e.g. between benchmark phases).
    pub fn reset_counters(&self) {
        self.shared.faults.lock().expect("faults lock").counters.clear();
    }

    pub fn faults(&self) -> FaultConfig {
        self.shared.faults.lock().expect("faults lock").config.clone()
    }

    /// Counted error rules with failures left fail their next calls, whatever their probability.
    pub fn fire_remaining_faults(&self) {
        self.shared.faults.lock().expect("faults lock").fire_remaining();
    }

    /// Replaces the fault settings (token buckets start full).
    pub fn set_faults(&self, cfg: FaultConfig) {
        self.shared.faults.lock().expect("faults lock").set(cfg);
    }

    /// Changes how long attach/detach/termination take from now on.
    pub fn set_timing(&self, timing: Timing) {
        *self.shared.timing.lock().expect("timing lock") = timing;
        self.shared.with_state(|st, _, _| st.timing = timing);
    }

    /// Changes the account's ENI quota and token lifetime from now on (tokens already given
    /// count from when they were).
    pub fn set_account(&self, account: crate::Account) {
        self.shared.with_state(|st, _, _| st.account = account);
    }

    /// Evaluates every call signed with `access_key` from now on against `policy` (ARNs in
    /// `region`), answering `UnauthorizedOperation` for what it does not allow; `None` allows
    /// everything.
    pub fn enforce_iam(&self, policy: Option<Policy>, region: &str, access_key: &str) {
        let iam = policy.map(|policy| {
            Arc::new(Iam { policy, region: region.to_string(), access_key: access_key.into() })
        });
        *self.shared.iam.write().expect("iam lock") = iam;
    }

    /// The calls the IAM policy denied so far (their error messages).
    pub fn iam_denials(&self) -> Vec<String> {
        self.shared.denied.lock().expect("denied lock").clone()
    }

    /// A copy of the current (not lagged) state.
    pub fn snapshot(&self) -> State {
        self.shared.with_state(|st, _, _| st.clone())
    }

    /// The state as JSON, for test failure output.
    pub fn dump(&self) -> serde_json::Value {
        self.shared.with_state(|st, _, _| serde_json::to_value(&*st).unwrap_or_default())
    }

    /// Clears all resources, faults and counters (timing is kept).
    pub fn reset(&self) {
        admin::reset(&self.shared);
    }

    pub fn create_vpc(&self, cidr: &str, tags: &[(&str, &str)]) -> Result<String> {
        let cidr = parse_cidr(cidr)?;
        Ok(self.shared.with_state(|st, _, _| st.create_vpc(cidr, to_tags(tags))))
    }

    /// Associates a secondary IPv4 block with a VPC; returns the association id.
    pub fn associate_vpc_cidr(&self, vpc_id: &str, cidr: &str) -> Result<String> {
        let cidr = parse_cidr(cidr)?;
        self.shared.with_state(|st, _, _| st.associate_vpc_cidr(vpc_id, cidr))
    }

    /// Disassociates a secondary IPv4 block (it stays listed as `disassociated`).
    pub fn disassociate_vpc_cidr(&self, association_id: &str) -> Result<()> {
        self.shared.with_state(|st, _, _| st.disassociate_vpc_cidr(association_id))
    }

    /// Seeds a subnet of a VPC.
    pub fn create_subnet(
        &self,
        vpc_id: &str,
        cidr: &str,
        az: &str,
        tags: &[(&str, &str)],
    ) -> Result<String> {
        let cidr = parse_cidr(cidr)?;
        self.shared.with_state(|st, _, _| st.create_subnet(vpc_id, cidr, az, to_tags(tags)))
    }

    /// Seeds a security group.
    pub fn create_security_group(
        &self,
        vpc_id: &str,
        name: &str,
        tags: &[(&str, &str)],
    ) -> Result<String> {
        self.shared.with_state(|st, _, _| st.create_security_group(vpc_id, name, to_tags(tags)))
    }

    /// Launches instances without going through HTTP (hooks still fire); returns their ids.
    pub fn run_instances(&self, req: &RunReq) -> Result<Vec<String>> {
        self.shared.with_state(|st, _, ev| st.run_instances(req, ev).map(|(_, ids)| ids))
    }

    /// Terminates instances without going through HTTP.
    pub fn terminate_instances(&self, ids: &[String]) -> Result<()> {
        self.shared.with_state(|st, now, ev| st.terminate(ids, now, ev).map(|_| ()))
    }

    /// All subnets, for the fabric (CIDR, AZ, VPC, tags).
    pub fn subnets(&self) -> Vec<SubnetInfo> {
        self.shared.with_state(|st, _, _| {
            st.subnets
                .values()
                .map(|s| SubnetInfo {
                    id: s.id.clone(),
                    cidr: s.cidr,
                    az: s.az.clone(),
                    vpc_id: s.vpc_id.clone(),
                    tags: s.tags.clone(),
                })
                .collect()
        })
    }
}

fn parse_cidr(s: &str) -> Result<Ipv4Net> {
    s.parse().map_err(|_| {
        Error::api(
            "InvalidParameterValue",
            format!("Value ({s}) for parameter cidrBlock is invalid."),
        )
    })
}

fn to_tags(tags: &[(&str, &str)]) -> Tags {
    tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Runs a simulator until Ctrl-C (a standalone process for manual runs).
pub async fn serve_forever(config: Config) -> Result<()> {
    let sim = Ec2Sim::start(config).await?;
    println!("ec2sim listening on {}", sim.endpoint_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
