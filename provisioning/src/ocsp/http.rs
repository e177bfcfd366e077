//! The OCSP responder over HTTP (RFC 6960 appendix A): [`serve_ocsp`].
//!
//! - `POST /…` with an `application/ocsp-request` body (or no content type)
//!   and `GET /…/{base64 of the DER request, URL-encoded}`; anything else is
//!   405, another content type 415. Every OCSP answer, `malformedRequest`
//!   included, is `200 application/ocsp-response`.
//! - Bounded: a body or GET request over [`OcspServerConfig::max_request_len`]
//!   is 413 (414 for a URI), headers and body must arrive within
//!   [`OcspServerConfig::request_timeout`] (else 408 or the connection is
//!   closed), at most [`OcspServerConfig::max_connections`] connections at
//!   once (more are closed at accept), and at most 64 requests queued for
//!   signing (more get `tryLater`).
//! - Threads: hyper runs on a single-threaded tokio runtime in a thread of
//!   its own; requests reach the responder through a bounded queue, and the
//!   responder runs on the caller's thread, so neither the keystore nor the
//!   PKI database has to be shared across threads.
//! - Shutdown: [`OcspShutdown::shutdown`] (or SIGINT/SIGTERM when
//!   [`OcspServerConfig::stop_on_signals`]) stops accepting, lets open
//!   connections finish within [`OcspServerConfig::shutdown_grace`], then
//!   [`serve_ocsp`] returns.

use crate::ocsp::responder::{status_response, OcspResponder, MAX_OCSP_REQUEST_LEN};
use base64::Engine;
use bytes::Bytes;
use der::Decode;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use keystore_api::{Backend, Component, Error, Result};
use std::convert::Infallible;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{oneshot, watch, Semaphore};
use x509_ocsp::OcspResponseStatus;

/// Requests queued for the responder at most.
const QUEUE_LEN: usize = 64;

/// How the server is bounded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OcspServerConfig {
    /// Largest request (POST body, or DER behind a GET), in bytes.
    pub max_request_len: usize,
    /// Time for a request's headers and body to arrive, and for its answer.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time open connections get to finish after a shutdown.
    pub shutdown_grace: Duration,
    /// Shut down on SIGINT or SIGTERM too.
    pub stop_on_signals: bool,
}

impl Default for OcspServerConfig {
    fn default() -> Self {
        OcspServerConfig {
            max_request_len: MAX_OCSP_REQUEST_LEN,
            request_timeout: Duration::from_secs(10),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(5),
            stop_on_signals: false,
        }
    }
}

/// Stops a running [`serve_ocsp`] from any thread.
#[derive(Debug, Clone)]
pub struct OcspShutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for OcspShutdown {
    fn default() -> Self {
        OcspShutdown {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl OcspShutdown {
    /// A handle not yet triggered.
    pub fn new() -> Self {
        OcspShutdown::default()
    }

    /// Asks the server to stop (idempotent).
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }

    /// Whether [`OcspShutdown::shutdown`] was called.
    pub fn is_shutdown(&self) -> bool {
        *self.tx.borrow()
    }
}

/// A request for the responder and where its answer goes.
struct Job {
    request: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
}

/// What every connection task shares.
struct Ctx {
    jobs: SyncSender<Job>,
    cfg: OcspServerConfig,
}

/// Serves `responder` on `listener` (bound by the caller; any address)
/// until `shutdown` is triggered (or a signal, if configured), answering
/// each request on the calling thread at the time it is answered.
///
/// # Errors
///
/// `Backend` (component `Provisioning`) if the listener cannot be used or
/// the HTTP runtime cannot start; `Integrity` if the server thread panicked.
/// Bad requests are answered, never returned.
pub fn serve_ocsp<B: Backend>(
    responder: &OcspResponder<'_, B>,
    listener: std::net::TcpListener,
    config: &OcspServerConfig,
    shutdown: &OcspShutdown,
) -> Result<()> {
    listener
        .set_nonblocking(true)
        .map_err(|e| io_error("cannot configure the OCSP listener", e))?;
    let (jobs, queue) = sync_channel::<Job>(QUEUE_LEN);
    let stop = shutdown.tx.subscribe();
    let cfg = config.clone();
    let server = std::thread::Builder::new()
        .name("ocsp-http".into())
        .spawn(move || run(listener, cfg, jobs, stop))
        .map_err(|e| io_error("cannot start the OCSP HTTP thread", e))?;
    // Ends when the server thread has stopped and dropped every sender.
    for job in queue.iter() {
        let answer = responder.respond(&job.request, OffsetDateTime::now_utc());
        let _ = job.reply.send(answer);
    }
    server
        .join()
        .unwrap_or_else(|_| Err(Error::integrity("the OCSP HTTP thread panicked")))
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::backend(Component::Provisioning, what.to_string(), e)
}

/// The server thread: a single-threaded runtime around [`accept_loop`].
fn run(
    listener: std::net::TcpListener,
    cfg: OcspServerConfig,
    jobs: SyncSender<Job>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("cannot start the OCSP HTTP runtime", e))?;
    rt.block_on(accept_loop(listener, cfg, jobs, stop))
}

/// Accepts connections until a shutdown, then drains them gracefully.
async fn accept_loop(
    listener: std::net::TcpListener,
    cfg: OcspServerConfig,
    jobs: SyncSender<Job>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| io_error("cannot use the OCSP listener", e))?;
    let grace = cfg.shutdown_grace;
    let signals = stop_signal(cfg.stop_on_signals);
    tokio::pin!(signals);
    let limit = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.request_timeout)
        .max_buf_size(cfg.max_request_len.saturating_mul(2).max(16 * 1024));
    let ctx = Arc::new(Ctx { jobs, cfg });
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = &mut signals => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors and the like: back off, keep serving.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    continue; // over the limit: the stream is dropped (closed)
                };
                let ctx = ctx.clone();
                let service = hyper::service::service_fn(move |req| handle(req, ctx.clone()));
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
    Ok(())
}

/// Resolves once the shutdown handle is triggered.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        // The handle is gone without a shutdown: only a signal stops us.
        std::future::pending::<()>().await;
    }
}

/// Resolves on SIGINT or SIGTERM when `enabled`; never otherwise.
async fn stop_signal(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => ctrl_c.await,
    }
}

/// One HTTP request: its OCSP request out of the method's encoding, the
/// responder's answer back.
async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let der = match *req.method() {
        Method::POST => read_post(req, &ctx.cfg).await,
        Method::GET => decode_get(req.uri().path(), ctx.cfg.max_request_len),
        _ => Err(Refusal(StatusCode::METHOD_NOT_ALLOWED, "use POST or GET\n")),
    };
    Ok(match der {
        Ok(der) => answer(&ctx, der).await,
        Err(Refusal(status, text)) => {
            let mut r = reply_with(
                status,
                "text/plain; charset=utf-8",
                text.as_bytes().to_vec(),
            );
            if status == StatusCode::METHOD_NOT_ALLOWED {
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, POST"));
            }
            r
        }
    })
}

/// An HTTP-level refusal: its status and a line of text.
#[derive(Debug)]
struct Refusal(StatusCode, &'static str);

/// The body of a POST, bounded in size and time.
async fn read_post(
    req: Request<Incoming>,
    cfg: &OcspServerConfig,
) -> std::result::Result<Vec<u8>, Refusal> {
    let headers = req.headers();
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").split(';').next().unwrap_or("");
        if !ct.trim().eq_ignore_ascii_case("application/ocsp-request") {
            return Err(Refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be application/ocsp-request\n",
            ));
        }
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || Refusal(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large\n");
    if declared.is_some_and(|n| n > cfg.max_request_len as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), cfg.max_request_len).collect();
    match tokio::time::timeout(cfg.request_timeout, body).await {
        Err(_) => Err(Refusal(
            StatusCode::REQUEST_TIMEOUT,
            "the body was too slow\n",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            "the body could not be read\n",
        )),
        Ok(Ok(b)) => Ok(b.to_bytes().to_vec()),
    }
}

/// The DER behind a GET path: the URL-decoded base64 after the first path
/// prefix that leaves an `OCSPRequest` (the responder's URL may have a path
/// of its own, and base64 itself may hold `/`), else the first that decodes
/// at all. What does not decode is answered as an empty request:
/// `malformedRequest`.
fn decode_get(path: &str, max: usize) -> std::result::Result<Vec<u8>, Refusal> {
    let too_long = || Refusal(StatusCode::URI_TOO_LONG, "the request is too large\n");
    if path.len() > max.saturating_mul(3) {
        return Err(too_long());
    }
    let Some(decoded) = percent_decode(path.trim_start_matches('/')) else {
        return Ok(Vec::new());
    };
    let b64 = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let starts = std::iter::once(0).chain(decoded.match_indices('/').map(|(i, _)| i + 1));
    let mut first = None;
    for start in starts {
        let Ok(der) = b64.decode(&decoded[start..]) else {
            continue;
        };
        if der.len() > max {
            return Err(too_long());
        }
        if x509_ocsp::OcspRequest::from_der(&der).is_ok() {
            return Ok(der);
        }
        first.get_or_insert(der);
    }
    Ok(first.unwrap_or_default())
}

/// `%XX` escapes decoded; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The responder's answer to `der`, through the queue; `tryLater` when the
/// queue is full, `internalError` when the answer does not come in time.
async fn answer(ctx: &Ctx, der: Vec<u8>) -> Response<Full<Bytes>> {
    let (reply, rx) = oneshot::channel();
    let job = Job {
        request: der,
        reply,
    };
    let der = match ctx.jobs.try_send(job) {
        Err(TrySendError::Full(_)) => status_response(OcspResponseStatus::TryLater),
        Err(TrySendError::Disconnected(_)) => status_response(OcspResponseStatus::InternalError),
        Ok(()) => match tokio::time::timeout(ctx.cfg.request_timeout, rx).await {
            Ok(Ok(der)) => der,
            _ => status_response(OcspResponseStatus::InternalError),
        },
    };
    reply_with(StatusCode::OK, "application/ocsp-response", der)
}

fn reply_with(status: StatusCode, ctype: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_paths() {
        use der::Encode;
        assert_eq!(
            decode_get("/MAMCAQA=", 100).unwrap(),
            vec![0x30, 3, 2, 1, 0]
        );
        assert_eq!(
            decode_get("/MAMCAQA%3D", 100).unwrap(),
            vec![0x30, 3, 2, 1, 0]
        );
        let req = x509_ocsp::OcspRequest {
            tbs_request: x509_ocsp::TbsRequest::default(),
            optional_signature: None,
        }
        .to_der()
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&req);
        assert_eq!(decode_get(&format!("/ocsp/{b64}"), 100).unwrap(), req);
        assert_eq!(decode_get(&format!("/{b64}"), 100).unwrap(), req);
        assert!(decode_get("/%zz", 100).unwrap().is_empty());
        assert!(decode_get("/!!!", 100).unwrap().is_empty());
        assert!(decode_get(&"/A".repeat(400), 100).is_err());
        assert_eq!(percent_decode("a%2Fb%2b"), Some("a/b+".into()));
        assert_eq!(percent_decode("%"), None);
    }
}
