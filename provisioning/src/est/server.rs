//! The EST server over HTTPS: hyper 1 on a single-threaded tokio runtime in
//! a thread of its own, TLS by tokio-rustls (rustls 0.23, aws-lc-rs) with
//! the server's identity in the production keystore.
//!
//! - Routes: `GET /.well-known/est/cacerts`, `POST …/simpleenroll`,
//!   `POST …/simplereenroll`; another path is 404, another method 405.
//! - Bounded: a body over [`EstServerConfig::max_body`] is 413; the TLS
//!   handshake, the headers and the body must each arrive within
//!   [`EstServerConfig::request_timeout`] (else the connection is closed,
//!   or 408); at most [`EstServerConfig::max_connections`] connections
//!   (more are closed at accept) and [`EstServerConfig::max_jobs`] requests
//!   being answered at once (more get 503 with `Retry-After`).
//! - The answers run on tokio's blocking threads (the keystore and SQLite
//!   block); a panic there is a 500, never the server's end.
//! - Shutdown: [`EstServer::shutdown`], an [`EstShutdown`] handle, or
//!   SIGINT/SIGTERM when [`EstServerConfig::stop_on_signals`]: accepting
//!   stops, open connections get [`EstServerConfig::shutdown_grace`].

use super::enroll::{EstAnswer, EstHandler, EstRequest, EstService, Operation, Policy, Refusal};
use super::tls::{server_config, server_identity, DEFAULT_EST_SERVER_CERT_VALIDITY};
use super::wire::{to_base64, CERTS_ONLY, PKCS7_MIME};
use crate::ca::Factory;
use crate::ca::{DEFAULT_DEVICE_VALIDITY, MAX_VALIDITY};
use crate::db::PkiDb;
use crate::provision::DEFAULT_RENEWAL_GRACE;
use crate::registry::Registry;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use keystore_api::{
    Actor, Algorithm, Backend, Clock, Component, Error, Keystore, Result, SystemClock,
};
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// The path prefix of every EST operation (RFC 7030 section 3.2.2).
pub const EST_PATH: &str = "/.well-known/est";
/// The request header carrying the new key's version in the device's
/// keystore (recorded in the registry; optional).
pub const KEY_VERSION_HEADER: &str = "keystore-key-version";
/// Default largest request body.
pub const DEFAULT_EST_MAX_BODY: usize = 64 * 1024;

/// How the EST server issues and how it is bounded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EstServerConfig {
    /// Validity of the device certificates it issues.
    pub validity: Duration,
    /// How long a renewed device's previous certificate stays valid.
    pub grace: Duration,
    /// Offer `simpleenroll` (bootstrap with an operator's credential).
    pub enroll: bool,
    /// The operator label re-enrollments are recorded under.
    pub operator: String,
    /// Host names and IP addresses the server's TLS certificate names.
    pub server_names: Vec<String>,
    /// Validity of the server's TLS certificate, issued at start.
    pub server_cert_validity: Duration,
    /// The algorithm of the server's TLS key ([`EST_SERVER_KEY`](crate::EST_SERVER_KEY)) when
    /// the start creates it (one of [`PKI_ALGORITHMS`](crate::PKI_ALGORITHMS);
    /// ECDSA P-256 by default). An existing key keeps its algorithm.
    pub server_key_algorithm: Algorithm,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Time for the TLS handshake, for the headers, and for the body.
    pub request_timeout: StdDuration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Requests answered at once.
    pub max_jobs: usize,
    /// Time open connections get to finish after a shutdown.
    pub shutdown_grace: StdDuration,
    /// Shut down on SIGINT or SIGTERM too.
    pub stop_on_signals: bool,
    /// The registry shared by the factory's stations (PostgreSQL) that the
    /// server issues against and logs to; `None`: the production store's
    /// own `pki.sqlite`.
    pub registry: Option<Arc<dyn Registry>>,
}

impl Default for EstServerConfig {
    fn default() -> Self {
        EstServerConfig {
            validity: DEFAULT_DEVICE_VALIDITY,
            grace: DEFAULT_RENEWAL_GRACE,
            enroll: false,
            operator: "est".into(),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            server_cert_validity: DEFAULT_EST_SERVER_CERT_VALIDITY,
            server_key_algorithm: crate::x509::DEFAULT_PKI_ALGORITHM,
            max_body: DEFAULT_EST_MAX_BODY,
            request_timeout: StdDuration::from_secs(10),
            max_connections: 256,
            max_jobs: 32,
            shutdown_grace: StdDuration::from_secs(5),
            stop_on_signals: false,
            registry: None,
        }
    }
}

impl EstServerConfig {
    /// Checks the configuration.
    fn check(&self) -> Result<()> {
        if self.validity <= Duration::ZERO || self.validity > MAX_VALIDITY {
            return Err(Error::invalid_input(
                "a device certificate validity must be positive and at most 20 years",
            ));
        }
        if self.grace < Duration::ZERO {
            return Err(Error::invalid_input("a grace period cannot be negative"));
        }
        crate::util::check_operator(&self.operator)?;
        crate::x509::check_pki_algorithm(self.server_key_algorithm, "EST server")?;
        if self.max_body == 0 || self.max_body > crate::x509::MAX_DER_LEN * 2 {
            return Err(Error::invalid_input("the largest body is 1 byte to 2 MiB"));
        }
        if self.max_connections == 0 || self.max_jobs == 0 {
            return Err(Error::invalid_input(
                "the server needs at least one connection and one job at a time",
            ));
        }
        Ok(())
    }
}

/// Stops a running [`EstServer`] from any thread (or a signal handler's).
#[derive(Debug, Clone)]
pub struct EstShutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl EstShutdown {
    /// Asks the server to stop (idempotent).
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }
}

/// A running EST server; dropping it shuts it down.
#[derive(Debug)]
pub struct EstServer {
    addr: SocketAddr,
    stop: EstShutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What every connection shares.
struct Ctx {
    handler: Arc<dyn EstHandler>,
    acceptor: TlsAcceptor,
    cfg: EstServerConfig,
    jobs: Arc<Semaphore>,
}

fn io_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend(Component::Provisioning, what.to_string(), e)
}

impl EstServer {
    /// Starts the EST server on `listener` (bound by the caller) over the
    /// production keystore `ks` and its PKI database, issuing as `actor`
    /// (the operator or security officer the server runs as), with the
    /// system clock. Issues the server's TLS certificate first (see
    /// [`EST_SERVER_KEY`](super::EST_SERVER_KEY)).
    ///
    /// # Errors
    /// `InvalidInput` for a bad configuration; `Policy` when `actor` may not
    /// issue certificates; `NotFound` before the ceremony; `Backend` when
    /// the listener or the runtime cannot be used; the keystore's errors.
    pub fn start<B: Backend + 'static>(
        ks: Arc<Keystore<B>>,
        db: Arc<PkiDb>,
        actor: Actor,
        listener: TcpListener,
        config: EstServerConfig,
    ) -> Result<EstServer> {
        Self::start_with_clock(ks, db, actor, listener, config, Arc::new(SystemClock))
    }

    /// As [`EstServer::start`], with the time of every check and issuance
    /// taken from `clock`.
    ///
    /// # Errors
    /// As [`EstServer::start`].
    pub fn start_with_clock<B: Backend + 'static>(
        ks: Arc<Keystore<B>>,
        db: Arc<PkiDb>,
        actor: Actor,
        listener: TcpListener,
        config: EstServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<EstServer> {
        config.check()?;
        let factory = match config.registry.as_deref() {
            Some(r) => Factory::new(&ks, &db).with_registry(r),
            None => Factory::new(&ks, &db),
        };
        let identity = server_identity(
            &ks,
            &factory,
            &actor,
            &config.server_names,
            config.server_cert_validity,
            config.server_key_algorithm,
            clock.now(),
        )?;
        let acceptor = TlsAcceptor::from(server_config(identity)?);
        let handler: Arc<dyn EstHandler> = Arc::new(EstService {
            ks,
            db,
            registry: config.registry.clone(),
            actor,
            policy: Policy {
                validity: config.validity,
                grace: config.grace,
                enroll: config.enroll,
                operator: config.operator.clone(),
            },
            clock,
        });
        let addr = listener
            .local_addr()
            .map_err(|e| io_error("cannot read the EST listener's address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io_error("cannot configure the EST listener", e))?;
        let ctx = Arc::new(Ctx {
            handler,
            acceptor,
            jobs: Arc::new(Semaphore::new(config.max_jobs)),
            cfg: config,
        });
        Self::spawn(listener, addr, ctx)
    }

    /// Starts the server thread and waits until it serves.
    fn spawn(listener: TcpListener, addr: SocketAddr, ctx: Arc<Ctx>) -> Result<EstServer> {
        let stop = EstShutdown {
            tx: Arc::new(watch::channel(false).0),
        };
        let (ready_tx, ready) = std::sync::mpsc::sync_channel(1);
        let rx = stop.tx.subscribe();
        let thread = std::thread::Builder::new()
            .name("est-https".into())
            .spawn(move || run(listener, ctx, rx, ready_tx))
            .map_err(|e| io_error("cannot start the EST server thread", e))?;
        match ready.recv() {
            Ok(Ok(())) => Ok(EstServer {
                addr,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::integrity("the EST server thread ended at start")),
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops the server from elsewhere.
    pub fn shutdown_handle(&self) -> EstShutdown {
        self.stop.clone()
    }

    /// Stops the server and waits for it (open connections get the grace).
    ///
    /// # Errors
    /// `Integrity` if the server thread panicked.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop.shutdown();
        self.join()
    }

    /// Waits until the server stops (a handle, or a signal when configured).
    ///
    /// # Errors
    /// `Integrity` if the server thread panicked.
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Err(_)) => Err(Error::integrity("the EST server thread panicked")),
            _ => Ok(()),
        }
    }
}

impl Drop for EstServer {
    fn drop(&mut self) {
        self.stop.shutdown();
        let _ = self.join();
    }
}

/// The server thread: a runtime, the accept loop, then the graceful end.
fn run(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    ready: std::sync::mpsc::SyncSender<Result<()>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(io_error("cannot start the EST runtime", e)));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(io_error("cannot use the EST listener", e)));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let graceful = GracefulShutdown::new();
        let conns = Arc::new(Semaphore::new(ctx.cfg.max_connections));
        let signals = ctx.cfg.stop_on_signals;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = stop_signal(signals) => break,
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else {
                        // Out of descriptors or the like: breathe, go on.
                        tokio::time::sleep(StdDuration::from_millis(50)).await;
                        continue;
                    };
                    let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
                        continue; // over the limit: the connection is closed
                    };
                    let (ctx, watcher) = (Arc::clone(&ctx), graceful.watcher());
                    tokio::spawn(async move {
                        serve_connection(tcp, ctx, watcher).await;
                        drop(permit);
                    });
                }
            }
        }
        drop(listener);
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(ctx.cfg.shutdown_grace) => {}
        }
    });
}

/// Resolves on SIGINT or SIGTERM when `enabled`; never otherwise.
async fn stop_signal(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// One connection: the TLS handshake (bounded), then HTTP/1.1 with the
/// client's certificates (if any) passed to every request.
async fn serve_connection(tcp: tokio::net::TcpStream, ctx: Arc<Ctx>, watcher: Watcher) {
    let timeout = ctx.cfg.request_timeout;
    let Ok(Ok(tls)) = tokio::time::timeout(timeout, ctx.acceptor.accept(tcp)).await else {
        return;
    };
    let chain: Arc<Vec<Vec<u8>>> = Arc::new(
        tls.get_ref()
            .1
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.to_vec()).collect())
            .unwrap_or_default(),
    );
    let service = hyper::service::service_fn(move |req| {
        let (ctx, chain) = (Arc::clone(&ctx), Arc::clone(&chain));
        async move { Ok::<_, Infallible>(answer(req, ctx, chain).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(tls), service);
    let _ = watcher.watch(conn).await;
}

/// The operation at `path` for `method`, or the 404/405 answer.
fn route(
    method: &Method,
    path: &str,
) -> std::result::Result<Operation, Box<Response<Full<Bytes>>>> {
    let op = match path
        .strip_prefix(EST_PATH)
        .and_then(|p| p.strip_prefix('/'))
    {
        Some("cacerts") => Operation::CaCerts,
        Some("simpleenroll") => Operation::SimpleEnroll,
        Some("simplereenroll") => Operation::SimpleReenroll,
        _ => {
            return Err(Box::new(plain(
                StatusCode::NOT_FOUND,
                "no such EST operation",
            )))
        }
    };
    let (allowed, name) = match op {
        Operation::CaCerts => (Method::GET, "GET"),
        _ => (Method::POST, "POST"),
    };
    if *method != allowed {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(name));
        return Err(Box::new(resp));
    }
    Ok(op)
}

/// Answers one request.
async fn answer(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
    chain: Arc<Vec<Vec<u8>>>,
) -> Response<Full<Bytes>> {
    let op = match route(req.method(), req.uri().path()) {
        Ok(op) => op,
        Err(resp) => return *resp,
    };
    let headers = req.headers().clone();
    let body = if op == Operation::CaCerts {
        Vec::new()
    } else {
        match read_body(req.into_body(), &headers, &ctx.cfg).await {
            Ok(body) => body,
            Err(refusal) => {
                let handler = Arc::clone(&ctx.handler);
                return blocking(&ctx, move || handler.refuse(op, refusal)).await;
            }
        }
    };
    let request = EstRequest {
        op,
        content_type: header(&headers, CONTENT_TYPE.as_str()),
        authorization: header(&headers, "authorization"),
        key_version: header(&headers, KEY_VERSION_HEADER).and_then(|v| v.trim().parse().ok()),
        body,
        client_chain: chain.to_vec(),
    };
    let handler = Arc::clone(&ctx.handler);
    blocking(&ctx, move || handler.handle(&request)).await
}

/// Reads a request body within the size and time bounds: 413 or 408.
async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    cfg: &EstServerConfig,
) -> std::result::Result<Vec<u8>, Refusal> {
    let too_large = || Refusal::new(413, format!("the body exceeds {} bytes", cfg.max_body));
    let declared = header(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.max_body as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(body, cfg.max_body);
    match tokio::time::timeout(cfg.request_timeout, limited.collect()).await {
        Err(_) => Err(Refusal::new(408, "the body did not arrive in time")),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(Refusal::new(400, "the body could not be read")),
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
    }
}

/// Runs `f` on a blocking thread when a job slot is free (503 otherwise),
/// and turns its answer into a response (a panic is a 500).
async fn blocking(
    ctx: &Ctx,
    f: impl FnOnce() -> EstAnswer + Send + 'static,
) -> Response<Full<Bytes>> {
    let Ok(permit) = Arc::clone(&ctx.jobs).try_acquire_owned() else {
        let mut resp = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the EST server is busy; retry later",
        );
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("5"));
        return resp;
    };
    match tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    {
        Ok(answer) => to_response(answer),
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error of the EST server",
        ),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// An [`EstAnswer`] as HTTP: a base64 certs-only body, or the reason.
fn to_response(a: EstAnswer) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let Some(der) = a.certs_only else {
        let mut resp = plain(status, &a.text);
        if a.challenge {
            resp.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Basic realm=\"est\""),
            );
        }
        if let Some(secs) = a.retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        return resp;
    };
    let mut resp = Response::new(Full::new(Bytes::from(to_base64(&der))));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    let media = if a.cacerts { PKCS7_MIME } else { CERTS_ONLY };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(media));
    headers.insert(
        "content-transfer-encoding",
        HeaderValue::from_static("base64"),
    );
    resp
}
