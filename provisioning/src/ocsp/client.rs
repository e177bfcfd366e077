//! Fetching an OCSP response over HTTP ([`fetch_ocsp`]): one POST of
//! `application/ocsp-request` (RFC 6960 appendix A.1) with hyper's HTTP/1.1
//! client on a tokio runtime of its own, in a thread of its own (so it may
//! be called from inside another runtime), within one overall timeout.

use crate::ca::check_ocsp_url;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use keystore_api::{Component, Error, Result};
use std::time::Duration;

/// Largest OCSP response accepted, in bytes.
pub const MAX_OCSP_RESPONSE_LEN: usize = 64 * 1024;

/// POSTs the DER `OCSPRequest` `request_der` to the responder at `url`
/// (`http://HOST[:PORT][/PATH]`) and returns the DER body of its answer.
/// The whole exchange (connect, send, receive) is bounded by `timeout`.
///
/// # Errors
///
/// `InvalidInput` for a bad URL; `Unsupported` for a scheme other than
/// `http`; `Backend` (component `Provisioning`) for a connection failure,
/// a timeout, an HTTP status other than 200 or a body over
/// [`MAX_OCSP_RESPONSE_LEN`]. The body is not checked to be an OCSP
/// response: [`verify_ocsp_response`](crate::verify_ocsp_response) does that.
pub fn fetch_ocsp(url: &str, request_der: &[u8], timeout: Duration) -> Result<Vec<u8>> {
    if url.starts_with("https://") {
        return Err(Error::unsupported(
            "OCSP over HTTPS is not supported (RFC 6960 appendix A is plain HTTP)",
        ));
    }
    check_ocsp_url(url)?;
    let uri: Uri = url
        .parse()
        .map_err(|_| Error::invalid_input("the OCSP URL does not parse"))?;
    let body = request_der.to_vec();
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| failed("cannot start the HTTP client runtime", e))?;
            rt.block_on(async move {
                match tokio::time::timeout(timeout, post(uri, body)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::backend(
                        Component::Provisioning,
                        format!("no OCSP response within {} ms", timeout.as_millis()),
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    )),
                }
            })
        })
        .join()
        .unwrap_or_else(|_| Err(Error::integrity("the OCSP client thread panicked")))
    })
}

fn failed(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend(Component::Provisioning, what.to_string(), e)
}

/// One POST on a fresh connection; the body of a 200 answer.
async fn post(uri: Uri, body: Vec<u8>) -> Result<Vec<u8>> {
    let host = uri
        .host()
        .ok_or_else(|| Error::invalid_input("the OCSP URL has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| failed("cannot connect to the OCSP responder", e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed("HTTP handshake with the OCSP responder failed", e))?;
    tokio::spawn(async move {
        // The connection ends with the exchange; its error, if any, is the
        // request's too.
        let _ = conn.await;
    });
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let len = body.len();
    let req = Request::post(path)
        .header(HOST, authority)
        .header(CONTENT_TYPE, "application/ocsp-request")
        .header(CONTENT_LENGTH, len)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed("cannot build the OCSP HTTP request", e))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| failed("the OCSP HTTP request failed", e))?;
    if resp.status() != StatusCode::OK {
        return Err(Error::backend(
            Component::Provisioning,
            format!("the OCSP responder answered HTTP {}", resp.status()),
            std::io::Error::other("HTTP status"),
        ));
    }
    let body = Limited::new(resp.into_body(), MAX_OCSP_RESPONSE_LEN)
        .collect()
        .await
        .map_err(|e| {
            Error::backend(
                Component::Provisioning,
                format!("cannot read the OCSP response (at most {MAX_OCSP_RESPONSE_LEN} bytes)"),
                std::io::Error::other(e.to_string()),
            )
        })?;
    Ok(body.to_bytes().to_vec())
}
