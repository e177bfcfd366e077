//! The EST service: what each operation checks and does, apart from HTTP.
//!
//! - `cacerts`: the intermediate and the root, certs-only.
//! - `simpleenroll` (bootstrap, off unless configured): HTTP Basic
//!   authentication with an operator's credential of the production
//!   keystore ([`Keystore::authenticate`]); the CSR's CN names the device;
//!   [`Factory::provision`] registers it and issues its first certificate.
//! - `simplereenroll`: the TLS client certificate must be one this CA issued
//!   (the registry holds exactly that DER), unrevoked, valid now on a path
//!   to the root (webpki, clientAuth), and not superseded past its grace;
//!   the CSR must name the same subject and carry a key never issued
//!   before; then [`Factory::renew`] issues, the one issuance path.
//!
//! Every refusal is answered with its HTTP status and recorded as an
//! `est-refused` event in the PKI event log; every issuance is recorded by
//! the factory (`provision` or `renew`).

use super::wire::{certs_only, content_type_is, from_base64, PKCS10};
use crate::ca::{DeviceRequest, Factory};
use crate::db::{opt, PkiDb};
use crate::eventlog::EventFields;
use crate::registry::{IssuedRow, Registry};
use crate::util::shorten;
use crate::x509::{verify_csr, CertInfo, VerifiedCsr};
use base64::Engine;
use keystore_api::{Actor, Backend, Clock, Error, ErrorKind, Keystore, Role, SecretBytes};
use rusqlite::params;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate, X509CertificationRequest, X509Name};

/// An EST operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// `GET /.well-known/est/cacerts`.
    CaCerts,
    /// `POST /.well-known/est/simpleenroll`.
    SimpleEnroll,
    /// `POST /.well-known/est/simplereenroll`.
    SimpleReenroll,
}

impl Operation {
    /// The path segment after `/.well-known/est/`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Operation::CaCerts => "cacerts",
            Operation::SimpleEnroll => "simpleenroll",
            Operation::SimpleReenroll => "simplereenroll",
        }
    }
}

/// A request as the HTTP layer received it.
#[derive(Debug, Clone)]
pub(crate) struct EstRequest {
    pub(crate) op: Operation,
    pub(crate) content_type: Option<String>,
    pub(crate) authorization: Option<String>,
    /// The `Keystore-Key-Version` header: the new key's version in the
    /// device's keystore, recorded in the registry (0 when absent).
    pub(crate) key_version: Option<u32>,
    pub(crate) body: Vec<u8>,
    /// The TLS client certificates, leaf first (empty without one).
    pub(crate) client_chain: Vec<Vec<u8>>,
}

/// An answer: a status, and a certs-only message (DER) or a text reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EstAnswer {
    pub(crate) status: u16,
    pub(crate) certs_only: Option<Vec<u8>>,
    /// The certs-only message answers `cacerts` (its media type has no
    /// `smime-type` parameter).
    pub(crate) cacerts: bool,
    pub(crate) text: String,
    /// Ask for HTTP Basic credentials (`WWW-Authenticate`).
    pub(crate) challenge: bool,
    /// Seconds for `Retry-After`.
    pub(crate) retry_after: Option<u32>,
}

/// A refusal: its status, a reason for the client and the log, and what it
/// concerns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) reason: String,
    pub(crate) device_id: Option<String>,
    pub(crate) serial: Option<String>,
    pub(crate) fingerprint: Option<String>,
}

impl Refusal {
    pub(crate) fn new(status: u16, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
            ..Refusal::default()
        }
    }

    fn about(mut self, device_id: &str, serial: &str) -> Self {
        self.device_id = Some(device_id.to_string());
        self.serial = Some(serial.to_string());
        self
    }
}

/// What the HTTP layer calls; object-safe so that it is not generic.
pub(crate) trait EstHandler: Send + Sync {
    /// Answers one request (blocking: the keystore and the database).
    fn handle(&self, req: &EstRequest) -> EstAnswer;
    /// Records a refusal the HTTP layer made itself (body too large, wrong
    /// content type, timeout) and answers it.
    fn refuse(&self, op: Operation, refusal: Refusal) -> EstAnswer;
}

/// How the service issues.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) validity: Duration,
    pub(crate) grace: Duration,
    pub(crate) enroll: bool,
    pub(crate) operator: String,
}

/// The service over the production keystore and its PKI database.
pub(crate) struct EstService<B: Backend> {
    pub(crate) ks: Arc<Keystore<B>>,
    pub(crate) db: Arc<PkiDb>,
    /// The shared registry, if the factory has one.
    pub(crate) registry: Option<Arc<dyn Registry>>,
    /// Who issues re-enrollments (an operator or security officer).
    pub(crate) actor: Actor,
    pub(crate) policy: Policy,
    pub(crate) clock: Arc<dyn Clock>,
}

impl<B: Backend> EstHandler for EstService<B> {
    fn handle(&self, req: &EstRequest) -> EstAnswer {
        let now = self.clock.now();
        let done = match req.op {
            Operation::CaCerts => self.cacerts(),
            Operation::SimpleEnroll => self.enroll(req, now),
            Operation::SimpleReenroll => self.reenroll(req, now),
        };
        match done {
            Ok(der) => EstAnswer {
                status: 200,
                certs_only: Some(der),
                cacerts: req.op == Operation::CaCerts,
                text: String::new(),
                challenge: false,
                retry_after: None,
            },
            Err(refusal) => self.refuse(req.op, refusal),
        }
    }

    fn refuse(&self, op: Operation, refusal: Refusal) -> EstAnswer {
        let now = self.clock.now();
        let logged = self.log_refusal(op, &refusal, now);
        let internal = refusal.status >= 500 && refusal.status != 503;
        let text = match (&logged, internal) {
            (Err(_), _) => "the EST server cannot record the request; nothing was issued".into(),
            (Ok(()), true) => "internal error of the EST server; nothing was issued".into(),
            (Ok(()), false) => refusal.reason.clone(),
        };
        EstAnswer {
            status: if logged.is_ok() { refusal.status } else { 500 },
            certs_only: None,
            cacerts: false,
            text,
            challenge: refusal.status == 401,
            retry_after: (refusal.status == 503).then_some(5),
        }
    }
}

impl<B: Backend> EstService<B> {
    fn factory(&self) -> Factory<'_, B> {
        let f = Factory::new(&self.ks, &self.db);
        match &self.registry {
            Some(r) => f.with_registry(r.as_ref()),
            None => f,
        }
    }

    /// Appends an `est-refused` event.
    fn log_refusal(
        &self,
        op: Operation,
        r: &Refusal,
        now: OffsetDateTime,
    ) -> keystore_api::Result<()> {
        self.factory().log_event(
            None,
            &self.actor,
            now,
            EventFields {
                event: "est-refused",
                device_id: r.device_id.as_deref(),
                serial: r.serial.as_deref(),
                fingerprint: r.fingerprint.as_deref(),
                detail: format!("{} refused ({}): {}", op.name(), r.status, r.reason),
            },
        )?;
        Ok(())
    }

    /// The CA certificates, certs-only.
    fn cacerts(&self) -> Result<Vec<u8>, Refusal> {
        let f = self.factory();
        let (inter, root) = match (f.intermediate(), f.root()) {
            (Ok(i), Ok(r)) => (i, r),
            (Err(e), _) | (_, Err(e)) => return Err(internal(&e)),
        };
        certs_only(&[&inter.der, &root.der]).map_err(|e| internal(&e))
    }

    /// `simpleenroll`: bootstrap with an operator's credential.
    fn enroll(&self, req: &EstRequest, now: OffsetDateTime) -> Result<Vec<u8>, Refusal> {
        if !self.policy.enroll {
            return Err(Refusal::new(
                404,
                "simpleenroll (bootstrap enrollment) is not enabled on this server",
            ));
        }
        let actor = self.basic_auth(req.authorization.as_deref())?;
        let csr = read_csr(req)?;
        let device_id = csr
            .common_name
            .clone()
            .ok_or_else(|| Refusal::new(400, "the CSR's subject names no device (no CN)"))?;
        let request = DeviceRequest {
            device_id: &device_id,
            operator: actor.id(),
            csr_der: &csr.der,
            key_version: req.key_version.unwrap_or(0),
            validity: self.policy.validity,
            device_backend: None,
        };
        let issued = self
            .factory()
            .provision(&actor, &request, now)
            .map_err(|e| {
                let mut r = from_issuance(&e, false);
                r.device_id = Some(device_id.clone());
                r.fingerprint = Some(csr.fingerprint());
                r
            })?;
        certs_only(&[&issued.certificate.der]).map_err(|e| internal(&e))
    }

    /// The operator named by an HTTP Basic `Authorization` header, checked
    /// against the production keystore's operator credential.
    fn basic_auth(&self, header: Option<&str>) -> Result<Actor, Refusal> {
        let unauthorized = || {
            Refusal::new(
                401,
                "simpleenroll needs an operator's credential (HTTP Basic)",
            )
        };
        let encoded = header
            .and_then(|h| {
                h.strip_prefix("Basic ")
                    .or_else(|| h.strip_prefix("basic "))
            })
            .ok_or_else(unauthorized)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| unauthorized())?;
        let split = decoded
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(unauthorized)?;
        let id = std::str::from_utf8(&decoded[..split]).map_err(|_| unauthorized())?;
        let secret = SecretBytes::from_slice(&decoded[split + 1..]);
        self.ks
            .authenticate(id, Role::Operator, &secret)
            .map_err(|e| match e.kind() {
                ErrorKind::Auth | ErrorKind::InvalidInput => {
                    Refusal::new(401, format!("operator {:?}: wrong credential", shorten(id)))
                }
                _ => internal(&e),
            })
    }

    /// `simplereenroll`: the current certificate over mTLS, then a renewal.
    fn reenroll(&self, req: &EstRequest, now: OffsetDateTime) -> Result<Vec<u8>, Refusal> {
        let current = self.authenticate_device(&req.client_chain, now)?;
        let about = |r: Refusal| r.about(&current.device_id, &current.cert.serial);
        let csr = read_csr(req).map_err(about)?;
        same_subject(&current.cert.der, &csr.der).map_err(about)?;
        if csr.fingerprint() == current.cert.spki_fingerprint {
            return Err(about(Refusal::new(
                409,
                "the CSR carries the current certificate's key; re-enrollment needs a new key",
            )));
        }
        let request = DeviceRequest {
            device_id: &current.device_id,
            operator: &self.policy.operator,
            csr_der: &csr.der,
            key_version: req.key_version.unwrap_or(0),
            validity: self.policy.validity,
            device_backend: None,
        };
        let issued = self
            .factory()
            .renew(&self.actor, &request, self.policy.grace, now)
            .map_err(|e| {
                let mut r = about(from_issuance(&e, true));
                r.fingerprint = Some(csr.fingerprint());
                r
            })?;
        certs_only(&[&issued.certificate.der]).map_err(|e| internal(&e))
    }

    /// The device behind a TLS client certificate, if the certificate may
    /// re-enroll (see the module docs).
    fn authenticate_device(
        &self,
        chain: &[Vec<u8>],
        now: OffsetDateTime,
    ) -> Result<Current, Refusal> {
        let leaf = chain.first().ok_or_else(|| {
            Refusal::new(
                401,
                "simplereenroll needs the device's current certificate (TLS client authentication)",
            )
        })?;
        let cert = CertInfo::parse(leaf)
            .map_err(|_| Refusal::new(403, "the client certificate does not parse"))?;
        let row = self.issued(&cert.serial).map_err(|e| internal(&e))?;
        let row = match row {
            Some(row) if row.der == cert.der => row,
            _ => {
                let mut r = Refusal::new(403, "the client certificate was not issued by this CA");
                r.serial = Some(cert.serial.clone());
                r.fingerprint = Some(cert.spki_fingerprint.clone());
                return Err(r);
            }
        };
        let about = |r: Refusal| r.about(&row.device_id, &cert.serial);
        if let Some(at) = &row.revoked_at {
            let why = row.reason.as_deref().unwrap_or("no reason recorded");
            return Err(about(Refusal::new(
                403,
                format!(
                    "the client certificate was revoked at {at} ({})",
                    shorten(why)
                ),
            )));
        }
        self.validate_path(&cert, &row.issuer_serial, now)
            .map_err(about)?;
        if let Some(end) = &row.grace_end {
            let ended = crate::util::parse_time(end).map_err(|e| internal(&e))?;
            if ended <= now {
                return Err(about(Refusal::new(
                    403,
                    format!("the client certificate was superseded by a renewal; its grace ended at {end}"),
                )));
            }
        }
        Ok(Current {
            device_id: row.device_id,
            cert,
        })
    }

    /// The registry's row for `serial`.
    fn issued(&self, serial: &str) -> keystore_api::Result<Option<IssuedRow>> {
        self.factory().registry.issued(serial)
    }

    /// Path validation with webpki: the certificate, its issuing
    /// intermediate from the registry, the root; clientAuth; at `now`.
    fn validate_path(
        &self,
        cert: &CertInfo,
        issuer_serial: &str,
        now: OffsetDateTime,
    ) -> Result<(), Refusal> {
        let inter: Option<Vec<u8>> = opt(self.db.lock().query_row(
            "SELECT der FROM ca_certs WHERE serial = ?1",
            params![issuer_serial],
            |r| r.get(0),
        ))
        .map_err(|e| internal(&e))?;
        let inter = inter.ok_or_else(|| {
            Refusal::new(403, "the client certificate's issuer is not installed here")
        })?;
        let root = self.factory().root().map_err(|e| internal(&e))?;
        let root_der = CertificateDer::from(root.der.as_slice());
        let anchor = webpki::anchor_from_trusted_cert(&root_der)
            .map_err(|e| internal(&Error::integrity(format!("the root is unusable: {e}"))))?;
        let ee_der = CertificateDer::from(cert.der.as_slice());
        let ee = webpki::EndEntityCert::try_from(&ee_der)
            .map_err(|e| Refusal::new(403, format!("the client certificate is unusable: {e}")))?;
        let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let inters = [CertificateDer::from(inter)];
        ee.verify_for_usage(
            crate::verify::ALGS,
            &[anchor],
            &inters,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| {
            let why = match e {
                webpki::Error::CertExpired { .. } => "the client certificate has expired".into(),
                webpki::Error::CertNotValidYet { .. } => {
                    "the client certificate is not valid yet".into()
                }
                other => format!("the client certificate does not validate: {other}"),
            };
            Refusal::new(403, why)
        })
    }
}

/// A device authenticated by its current certificate.
struct Current {
    device_id: String,
    cert: CertInfo,
}

/// A server-side failure: 500, the detail kept for the event log only.
fn internal(e: &Error) -> Refusal {
    if e.is(ErrorKind::Busy) {
        return Refusal::new(503, "the EST server is busy; retry later");
    }
    Refusal::new(500, format!("internal error: {}", shorten(&e.to_string())))
}

/// The refusal for a failed issuance. `server_actor`: the server issued as
/// itself (a role refusal is then the server's fault, not the client's).
fn from_issuance(e: &Error, server_actor: bool) -> Refusal {
    let status = match e.kind() {
        ErrorKind::AlreadyExists => 409,
        ErrorKind::InvalidInput | ErrorKind::Unsupported => 400,
        ErrorKind::NotFound => 403,
        ErrorKind::Policy if !server_actor => 403,
        _ => return internal(e),
    };
    Refusal::new(status, shorten(&e.message()))
}

/// Reads and verifies the request's PKCS#10 body: 415 for another content
/// type, 400 for bad base64, a malformed or unsupported CSR, or a CSR whose
/// signature (its proof of possession) does not verify.
fn read_csr(req: &EstRequest) -> Result<VerifiedCsr, Refusal> {
    if !content_type_is(req.content_type.as_deref(), PKCS10) {
        return Err(Refusal::new(
            415,
            "the body must be a base64 PKCS#10 request (Content-Type: application/pkcs10)",
        ));
    }
    let der = from_base64(&req.body, "PKCS#10").map_err(|e| Refusal::new(400, e.message()))?;
    verify_csr(&der).map_err(|e| {
        let why = if e.is(ErrorKind::Integrity) {
            "the CSR's signature does not verify (no proof of possession of its key)".into()
        } else {
            e.message()
        };
        Refusal::new(400, why)
    })
}

/// The subject as (attribute type, value) pairs in order.
fn attributes(name: &X509Name<'_>) -> Vec<(String, Option<String>)> {
    name.iter_attributes()
        .map(|a| {
            (
                a.attr_type().to_id_string(),
                a.as_str().ok().map(str::to_string),
            )
        })
        .collect()
}

/// RFC 7030 section 4.2.2: the CSR's subject must be the current
/// certificate's (compared attribute by attribute, whatever the string
/// types); 403 otherwise.
fn same_subject(cert_der: &[u8], csr_der: &[u8]) -> Result<(), Refusal> {
    let cert = X509Certificate::from_der(cert_der)
        .map_err(|_| Refusal::new(403, "the client certificate does not parse"))?
        .1;
    let csr = X509CertificationRequest::from_der(csr_der)
        .map_err(|_| Refusal::new(400, "the CSR does not parse"))?
        .1;
    let (want, got) = (
        attributes(cert.subject()),
        attributes(&csr.certification_request_info.subject),
    );
    if want != got {
        return Err(Refusal::new(
            403,
            format!(
                "the CSR's subject '{}' differs from the current certificate's '{}'",
                shorten(&csr.certification_request_info.subject.to_string()),
                shorten(&cert.subject().to_string())
            ),
        ));
    }
    Ok(())
}
