//! The EST client, for devices: HTTPS (hyper 1, tokio-rustls) to an EST
//! server that it authenticates against one trust anchor, the root the
//! device was provisioned with (never a certificate the server sends).
//! Each call runs on a small tokio runtime of its own and is bounded by
//! [`EstClient::with_timeout`].

use super::server::{EST_PATH, KEY_VERSION_HEADER};
use super::tls::provider;
use super::wire::{content_type_is, from_base64, parse_certs_only, to_base64, PKCS10, PKCS7_MIME};
use crate::util::shorten;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use keystore_api::{Component, Error, ErrorKind, Result, SecretBytes};
use keystore_signer::rustls;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsConnector;

/// Default bound of one EST call (connect, handshake, request, answer).
pub const DEFAULT_EST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read.
const MAX_RESPONSE: usize = 256 * 1024;

/// A client of one EST server.
#[derive(Clone)]
pub struct EstClient {
    host: String,
    port: u16,
    authority: String,
    server_name: ServerName<'static>,
    roots: Arc<RootCertStore>,
    anchor: Vec<u8>,
    timeout: Duration,
}

impl std::fmt::Debug for EstClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EstClient")
            .field("authority", &self.authority)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One request.
struct Call {
    method: Method,
    op: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    identity: Option<Arc<CertifiedKey>>,
}

fn net_error(what: String) -> Error {
    Error::backend_msg(Component::Provisioning, what)
}

impl EstClient {
    /// A client of the EST server at `url` (`https://HOST[:PORT]`, optionally
    /// followed by `/.well-known/est`), trusting only `trust_anchor_der` (a
    /// DER certificate, the device's root) for the server's certificate.
    ///
    /// # Errors
    /// `InvalidInput` for a URL that is not `https://HOST[:PORT]` or a trust
    /// anchor that is not a usable certificate.
    pub fn new(url: &str, trust_anchor_der: &[u8]) -> Result<EstClient> {
        let bad = || {
            Error::invalid_input(format!(
                "an EST server is https://HOST[:PORT][{EST_PATH}]; got {:?}",
                shorten(url)
            ))
        };
        let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
        let path = uri.path().trim_end_matches('/');
        if uri.scheme_str() != Some("https") || !(path.is_empty() || path == EST_PATH) {
            return Err(bad());
        }
        if uri.query().is_some() {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() || authority.as_str().contains('@') {
            return Err(bad());
        }
        let server_name = ServerName::try_from(host.to_string()).map_err(|_| bad())?;
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(trust_anchor_der.to_vec()))
            .map_err(|e| Error::invalid_input(format!("the trust anchor is unusable: {e}")))?;
        Ok(EstClient {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(443),
            authority: authority.to_string(),
            server_name,
            roots: Arc::new(roots),
            anchor: trust_anchor_der.to_vec(),
            timeout: DEFAULT_EST_TIMEOUT,
        })
    }

    /// Bounds every call by `timeout` (at least 1 ms).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The trust anchor (DER).
    pub(crate) fn anchor(&self) -> &[u8] {
        &self.anchor
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `GET /cacerts`: the CA certificates the server publishes (DER; the
    /// intermediate and the root), in no particular order.
    ///
    /// # Errors
    /// See [`EstClient::simplereenroll`].
    pub fn cacerts(&self) -> Result<Vec<Vec<u8>>> {
        self.call(Call {
            method: Method::GET,
            op: "cacerts",
            headers: Vec::new(),
            body: Vec::new(),
            identity: None,
        })
    }

    /// `POST /simpleenroll` (bootstrap): enrolls `csr_der` with an
    /// operator's credential (HTTP Basic). Returns the issued certificate.
    ///
    /// # Errors
    /// See [`EstClient::simplereenroll`]; `Auth` (401) for a wrong credential.
    pub fn simpleenroll(
        &self,
        operator: &str,
        secret: &SecretBytes,
        csr_der: &[u8],
        key_version: Option<u32>,
    ) -> Result<Vec<u8>> {
        let mut token = operator.as_bytes().to_vec();
        token.push(b':');
        token.extend_from_slice(secret.expose());
        let basic = base64::engine::general_purpose::STANDARD.encode(&token);
        token.iter_mut().for_each(|b| *b = 0);
        let mut headers = vec![("authorization", format!("Basic {basic}"))];
        headers.extend(key_version.map(|v| (KEY_VERSION_HEADER, v.to_string())));
        let certs = self.call(Call {
            method: Method::POST,
            op: "simpleenroll",
            headers,
            body: to_base64(csr_der).into_bytes(),
            identity: None,
        })?;
        one_cert(certs, "simpleenroll")
    }

    /// `POST /simplereenroll`: re-enrolls `csr_der` (signed by the new key),
    /// authenticated by `identity` (the device's current certificate and
    /// key) in the TLS handshake. Returns the issued certificate (DER).
    ///
    /// # Errors
    /// By the server's status: `InvalidInput` (400, 413, 415), `Auth` (401),
    /// `Policy` (403: an expired, revoked or unknown certificate, another
    /// subject), `NotFound` (404), `AlreadyExists` (409: the key was issued
    /// before), `Busy` (408, 429, 503, 202); `Backend` (component
    /// `Provisioning`) when the server cannot be reached, the TLS handshake
    /// fails (an untrusted server), the call times out or the server errs;
    /// `InvalidInput` for an answer that is not a certs-only message.
    pub fn simplereenroll(
        &self,
        identity: Arc<CertifiedKey>,
        csr_der: &[u8],
        key_version: Option<u32>,
    ) -> Result<Vec<u8>> {
        let headers = key_version
            .map(|v| vec![(KEY_VERSION_HEADER, v.to_string())])
            .unwrap_or_default();
        let certs = self.call(Call {
            method: Method::POST,
            op: "simplereenroll",
            headers,
            body: to_base64(csr_der).into_bytes(),
            identity: Some(identity),
        })?;
        one_cert(certs, "simplereenroll")
    }

    /// Runs one call on a runtime of its own, within the timeout.
    fn call(&self, call: Call) -> Result<Vec<Vec<u8>>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| net_error(format!("cannot start the EST client runtime: {e}")))?;
        let op = call.op;
        let (status, media, body) = rt
            .block_on(async { tokio::time::timeout(self.timeout, self.exchange(call)).await })
            .map_err(|_| {
                net_error(format!(
                    "EST {op} at {} timed out after {:?}",
                    self.authority, self.timeout
                ))
            })??;
        interpret(op, status, media.as_deref(), &body)
    }

    /// Connects, shakes hands, sends the request and reads the answer.
    async fn exchange(&self, call: Call) -> Result<(StatusCode, Option<String>, Bytes)> {
        let at = &self.authority;
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| net_error(format!("cannot connect to the EST server {at}: {e}")))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::integrity(format!("the TLS provider is unusable: {e}")))?
            .with_root_certificates(Arc::clone(&self.roots));
        let mut config = match call.identity {
            Some(id) => builder
                .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(id))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = TlsConnector::from(Arc::new(config))
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| net_error(format!("TLS with the EST server {at} failed: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| net_error(format!("HTTP with the EST server {at} failed: {e}")))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(call.method)
            .uri(format!("{EST_PATH}/{}", call.op))
            .header(HOST, at.as_str());
        if !call.body.is_empty() {
            req = req.header(CONTENT_TYPE, PKCS10);
            req = req.header("content-transfer-encoding", "base64");
        }
        for (name, value) in &call.headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| Error::invalid_input("a header value is not valid"))?;
            req = req.header(*name, value);
        }
        let req = req
            .body(Full::new(Bytes::from(call.body)))
            .map_err(|e| Error::invalid_input(format!("cannot build the EST request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| net_error(format!("the EST server {at} did not answer: {e}")))?;
        let status = resp.status();
        let media = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| net_error(format!("cannot read the EST server's answer: {e}")))?
            .to_bytes();
        Ok((status, media, body))
    }
}

/// The certificates of a 200 answer, or the error its status means.
fn interpret(
    op: &str,
    status: StatusCode,
    media: Option<&str>,
    body: &[u8],
) -> Result<Vec<Vec<u8>>> {
    if status == StatusCode::OK {
        if !content_type_is(media, PKCS7_MIME) {
            return Err(Error::invalid_input(format!(
                "EST {op}: the answer is {:?}, not application/pkcs7-mime",
                media.map(shorten)
            )));
        }
        return parse_certs_only(&from_base64(body, "certs-only")?);
    }
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let message = format!("EST {op} refused: {status}: {}", shorten(text.trim()));
    let kind = match status.as_u16() {
        400 | 413 | 415 => ErrorKind::InvalidInput,
        401 => ErrorKind::Auth,
        403 => ErrorKind::Policy,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::AlreadyExists,
        202 | 408 | 429 | 503 => ErrorKind::Busy,
        _ => return Err(net_error(message)),
    };
    Err(Error::new(kind, message))
}

/// The one certificate an enrollment answer carries.
fn one_cert(mut certs: Vec<Vec<u8>>, op: &str) -> Result<Vec<u8>> {
    if certs.len() != 1 {
        return Err(Error::invalid_input(format!(
            "EST {op}: the answer carries {} certificates, not the one issued",
            certs.len()
        )));
    }
    Ok(certs.remove(0))
}
