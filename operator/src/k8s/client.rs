//! The operator's Kubernetes client: no call waits forever, and only the leader writes.
//!
//! * Deadlines. The client configuration ([`configure`]) bounds connecting, sending and every
//!   silence on a connection; on top of that each call that is not a watch must bring its whole
//!   answer, body included, within [`CALL_TIMEOUT`]. Watches are long by design (kube-runtime's
//!   watcher ends one that stays silent past its server-side timeout); the Lease calls have their
//!   own, shorter bound (`leader.rs`).
//! * Writes (anything but GET/HEAD) of the controllers' client ([`leader_only`]) are refused
//!   unless this replica leads, and abandoned unanswered when its term ends first: a write stuck
//!   in a silent connection cannot land after a standby has taken over. The Lease itself goes
//!   through a client without this gate.
//!
//! Both failures come back as `kube::Error::Service` carrying [`Cut::NoAnswer`] or
//! [`Cut::NotLeader`].

use crate::error::Cut;
use crate::leader::Leadership;
use futures::future::BoxFuture;
use http::{Method, Request, Response};
use kube::client::Body;
use kube::Client;
use std::task::{Context, Poll};
use std::time::Duration;

/// Bound on opening a connection to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence on a connection: above the 290 s after which the API server ends a watch, the
/// longest a healthy watch may stay silent.
pub const READ_TIMEOUT: Duration = Duration::from_secs(295);
/// Bound on sending a request.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a whole call that is not a watch, answer included (a large list fits easily).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Set the operator's timeouts on a client configuration.
pub fn configure(cfg: &mut kube::Config) {
    cfg.connect_timeout = Some(CONNECT_TIMEOUT);
    cfg.read_timeout = Some(READ_TIMEOUT);
    cfg.write_timeout = Some(WRITE_TIMEOUT);
    // The read timeout counts from the request, not from when a pooled connection went idle.
    cfg.reset_reader_on_write = true;
}

/// A client from the kubeconfig or the in-cluster service account, with [`configure`]'s
/// timeouts. Not reachable is not an error here: the first call finds out.
pub async fn client() -> crate::Result<kube::Client> {
    let mut cfg = kube::Config::infer()
        .await
        .map_err(|e| crate::Error::Config(format!("no Kubernetes API configuration: {e}")))?;
    configure(&mut cfg);
    kube::Client::try_from(cfg).map_err(crate::Error::kube("CreateClient"))
}

/// What a request is, for its deadline and its gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A watch: streams until the server ends it.
    Watch,
    Read,
    Write,
}

impl Kind {
    /// The kind of a request from its method and query string.
    pub fn of(method: &Method, query: Option<&str>) -> Kind {
        if *method != Method::GET && *method != Method::HEAD {
            return Kind::Write;
        }
        let watch = query.into_iter().flat_map(|q| q.split('&')).any(|kv| {
            matches!(
                kv.split_once('='),
                Some(("watch", "true" | "1" | "t" | "T" | "True" | "TRUE"))
            )
        });
        if watch {
            Kind::Watch
        } else {
            Kind::Read
        }
    }
}

/// `client` with a deadline on every call that is not a watch.
pub fn bounded(client: Client) -> Client {
    wrap(client, None)
}

/// `client` with deadlines, writing only while `leadership` says this replica leads.
pub fn leader_only(client: Client, leadership: Leadership) -> Client {
    wrap(client, Some(leadership))
}

fn wrap(client: Client, leadership: Option<Leadership>) -> Client {
    let ns = client.default_namespace().to_string();
    Client::new(Guard { inner: client, leadership, timeout: CALL_TIMEOUT }, ns)
}

#[derive(Clone)]
struct Guard {
    inner: Client,
    leadership: Option<Leadership>,
    timeout: Duration,
}

impl tower_service::Service<Request<Body>> for Guard {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let kind = Kind::of(req.method(), req.uri().query());
        let (inner, timeout) = (self.inner.clone(), self.timeout);
        let gate = self.leadership.clone().filter(|_| kind == Kind::Write);
        Box::pin(async move {
            if kind == Kind::Watch {
                return inner.send(req).await;
            }
            let call = async {
                match tokio::time::timeout(timeout, whole(&inner, req)).await {
                    Ok(r) => r,
                    Err(_) => Err(cut(Cut::NoAnswer(timeout))),
                }
            };
            let Some(leadership) = gate else { return call.await };
            if !leadership.is_leader() {
                return Err(cut(Cut::NotLeader));
            }
            tokio::select! {
                r = call => r,
                _ = leadership.lost() => Err(cut(Cut::NotLeader)),
            }
        })
    }
}

fn cut(e: Cut) -> kube::Error {
    kube::Error::Service(Box::new(e))
}

/// The answer with its whole body, so that the deadline covers reading it.
async fn whole(client: &Client, req: Request<Body>) -> Result<Response<Body>, kube::Error> {
    let (parts, body) = client.send(req).await?.into_parts();
    Ok(Response::from_parts(parts, Body::from(body.collect_bytes().await?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::time::Instant;

    /// An API server that never answers (a silent connection); counts the requests it got.
    #[derive(Clone, Default)]
    struct Silent(Arc<AtomicUsize>);

    impl tower_service::Service<Request<Body>> for Silent {
        type Response = Response<Body>;
        type Error = kube::Error;
        type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(futures::future::pending())
        }
    }

    fn req(method: Method, uri: &str) -> Request<Body> {
        Request::builder().method(method).uri(uri).body(Body::empty()).unwrap()
    }

    fn cut_by(err: &kube::Error) -> Option<&Cut> {
        match err {
            kube::Error::Service(e) => e.downcast_ref::<Cut>(),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_call_waits_forever_and_only_the_leader_writes() {
        let silent = Silent::default();
        let sent = || silent.0.load(Ordering::SeqCst);
        let leadership = Leadership::new();
        let client = leader_only(Client::new(silent.clone(), "default"), leadership.clone());
        let pools = "/apis/enipool.io/v1alpha1/enipools/n1/status";

        // A standby's write is not even sent.
        let err = client.send(req(Method::PATCH, pools)).await.unwrap_err();
        assert!(matches!(cut_by(&err), Some(Cut::NotLeader)), "{err:?}");
        assert_eq!(sent(), 0);
        // A read gives up after CALL_TIMEOUT.
        let start = Instant::now();
        let err = client.send(req(Method::GET, pools)).await.unwrap_err();
        assert!(matches!(cut_by(&err), Some(Cut::NoAnswer(_))), "{err:?}");
        assert_eq!((start.elapsed(), sent()), (CALL_TIMEOUT, 1));
        // The leader's write goes out; unanswered, it is abandoned when the term ends.
        let start = Instant::now();
        leadership.set(Some(start + Duration::from_secs(10)));
        let err = client.send(req(Method::PATCH, pools)).await.unwrap_err();
        assert!(matches!(cut_by(&err), Some(Cut::NotLeader)), "{err:?}");
        assert_eq!((start.elapsed(), sent()), (Duration::from_secs(10), 2));
        // A watch is left to the watcher's own idle timeout.
        let watch = client.send(req(Method::GET, "/api/v1/nodes?watch=true&timeoutSeconds=290"));
        assert!(tokio::time::timeout(CALL_TIMEOUT * 2, watch).await.is_err());
    }

    #[test]
    fn watches_reads_and_writes() {
        let table = [
            (Method::GET, Some("watch=true&timeoutSeconds=290"), Kind::Watch),
            (Method::GET, Some("labelSelector=a&watch=1"), Kind::Watch),
            (Method::GET, Some("watch=false"), Kind::Read),
            (Method::GET, Some("fieldSelector=watch%3Dtrue"), Kind::Read),
            (Method::GET, None, Kind::Read),
            (Method::HEAD, None, Kind::Read),
            (Method::POST, None, Kind::Write),
            (Method::PUT, None, Kind::Write),
            (Method::PATCH, Some("fieldManager=enipool-operator&force=true"), Kind::Write),
            (Method::DELETE, None, Kind::Write),
            // A POST is a write whatever its query says.
            (Method::POST, Some("watch=true"), Kind::Write),
        ];
        for (method, query, want) in table {
            assert_eq!(Kind::of(&method, query), want, "{method} {query:?}");
        }
    }
}
