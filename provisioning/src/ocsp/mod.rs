//! OCSP (RFC 6960) for the device PKI (REQ-KEY-REV-03; TEST-KEY-07):
//!
//! - [`responder`]: [`OcspResponder`] answers `OCSPRequest`s from the
//!   registry's revocation state, signed by the delegated OCSP signing key in
//!   the production keystore;
//! - [`http`]: serves it over HTTP (RFC 6960 appendix A: POST and GET) on a
//!   listener the caller binds ([`serve_ocsp`]);
//! - [`client`]: fetches a response from a certificate's AIA OCSP URL
//!   ([`fetch_ocsp`]);
//! - [`checker`]: verifies a response ([`verify_ocsp_response`]) and puts it
//!   under [`PeerVerifier::check_peer`](crate::PeerVerifier::check_peer)
//!   according to a [`RevocationPolicy`].
//!
//! Requests and responses are encoded and decoded by RustCrypto's
//! `x509-ocsp`, `x509-cert` and `der`; nothing here writes ASN.1 by hand.
//! This module holds what both sides share: CertIDs, nonces, times.

mod checker;
mod client;
mod http;
mod responder;

pub(crate) use checker::check;
pub use checker::{verify_ocsp_response, OcspAnswer, RevocationPolicy, OCSP_CLOCK_SKEW};
pub use client::{fetch_ocsp, MAX_OCSP_RESPONSE_LEN};
pub use http::{serve_ocsp, OcspServerConfig, OcspShutdown};
pub use responder::{OcspResponder, DEFAULT_OCSP_RESPONSE_VALIDITY, MAX_OCSP_REQUEST_LEN};

use const_oid::db::rfc5912::{ID_SHA_1, ID_SHA_256, ID_SHA_384, ID_SHA_512};
use const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE;
use der::asn1::{GeneralizedTime, ObjectIdentifier, OctetString};
use der::{Decode, Encode, EncodeValue, Tagged};
use keystore_api::{Error, Result};
use sha2::Digest;
use time::OffsetDateTime;
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;
use x509_cert::Certificate;
use x509_ocsp::{CertId, OcspGeneralizedTime, OcspRequest, OcspResponse, Request, TbsRequest};

/// Longest nonce accepted, in octets (RFC 8954 section 2.1).
pub(crate) const MAX_NONCE_LEN: usize = 32;

/// The status of one certificate in an OCSP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspCertStatus {
    /// Not revoked.
    Good,
    /// Revoked.
    Revoked {
        /// When.
        at: OffsetDateTime,
        /// The RFC 5280 reason code, if the response names one.
        reason: Option<u8>,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// The `OCSPResponseStatus` of a response (RFC 6960 section 4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OcspResponseCode {
    /// A signed response follows.
    Successful,
    /// The request did not parse or broke a rule of the protocol.
    MalformedRequest,
    /// The responder failed.
    InternalError,
    /// The responder cannot answer now.
    TryLater,
    /// The request must be signed.
    SigRequired,
    /// The responder is not authoritative for the certificates asked about.
    Unauthorized,
}

impl OcspResponseCode {
    /// The status of the DER `OCSPResponse` in `response_der`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if it is not an `OCSPResponse`.
    pub fn of(response_der: &[u8]) -> Result<Self> {
        use x509_ocsp::OcspResponseStatus as S;
        let r = OcspResponse::from_der(response_der)
            .map_err(|e| Error::invalid_input(format!("not an OCSP response: {e}")))?;
        Ok(match r.response_status {
            S::Successful => Self::Successful,
            S::MalformedRequest => Self::MalformedRequest,
            S::InternalError => Self::InternalError,
            S::TryLater => Self::TryLater,
            S::SigRequired => Self::SigRequired,
            S::Unauthorized => Self::Unauthorized,
        })
    }

    /// Its name in RFC 6960.
    pub fn id(self) -> &'static str {
        match self {
            Self::Successful => "successful",
            Self::MalformedRequest => "malformedRequest",
            Self::InternalError => "internalError",
            Self::TryLater => "tryLater",
            Self::SigRequired => "sigRequired",
            Self::Unauthorized => "unauthorized",
        }
    }
}

/// An `OCSPRequest` (DER) for `cert_der`, issued by `issuer_der`, with a
/// SHA-1 CertID (RFC 5019 section 2.1.1: what every responder understands;
/// it identifies, it does not protect) and, when given, a nonce extension
/// (1 to 32 octets).
///
/// # Errors
///
/// `InvalidInput` if either certificate does not parse or the nonce is
/// empty or longer than 32 octets.
pub fn ocsp_request(cert_der: &[u8], issuer_der: &[u8], nonce: Option<&[u8]>) -> Result<Vec<u8>> {
    let cert = parse_cert(cert_der, "certificate")?;
    let issuer = parse_cert(issuer_der, "issuer certificate")?;
    let cert_id = cert_id(
        &issuer,
        cert.tbs_certificate.serial_number.clone(),
        ID_SHA_1,
    )?;
    let request_extensions = match nonce {
        None => None,
        Some(n) => Some(vec![nonce_extension(n)?]),
    };
    let req = OcspRequest {
        tbs_request: TbsRequest {
            request_list: vec![Request {
                req_cert: cert_id,
                single_request_extensions: None,
            }],
            request_extensions,
            ..TbsRequest::default()
        },
        optional_signature: None,
    };
    req.to_der().map_err(asn1_error)
}

/// A certificate decoded by `x509-cert`; `InvalidInput` naming `what`.
pub(crate) fn parse_cert(der: &[u8], what: &str) -> Result<Certificate> {
    if der.is_empty() || der.len() > crate::x509::MAX_DER_LEN {
        return Err(Error::invalid_input(format!("the {what} has a bad size")));
    }
    Certificate::from_der(der)
        .map_err(|e| Error::invalid_input(format!("the {what} does not parse: {e}")))
}

fn asn1_error(e: der::Error) -> Error {
    Error::invalid_input(format!("cannot encode the OCSP structure: {e}"))
}

/// The nonce extension (non-critical; the value an OCTET STRING inside
/// `extnValue`, as RFC 8954 and OpenSSL write it).
fn nonce_extension(nonce: &[u8]) -> Result<Extension> {
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
        return Err(Error::invalid_input(format!(
            "an OCSP nonce is 1 to {MAX_NONCE_LEN} octets"
        )));
    }
    let inner = OctetString::new(nonce).map_err(asn1_error)?;
    Ok(Extension {
        extn_id: ID_PKIX_OCSP_NONCE,
        critical: false,
        extn_value: OctetString::new(inner.to_der().map_err(asn1_error)?).map_err(asn1_error)?,
    })
}

/// The nonce extension among `exts`, if any.
pub(crate) fn find_nonce(exts: Option<&Vec<Extension>>) -> Option<&Extension> {
    exts?.iter().find(|e| e.extn_id == ID_PKIX_OCSP_NONCE)
}

/// The nonce octets of a nonce extension: the OCTET STRING inside
/// `extnValue`, or `extnValue` itself from a client that left it bare.
pub(crate) fn nonce_value(ext: &Extension) -> Vec<u8> {
    let raw = ext.extn_value.as_bytes();
    match OctetString::from_der(raw) {
        Ok(inner) => inner.as_bytes().to_vec(),
        Err(_) => raw.to_vec(),
    }
}

/// `data` hashed by the algorithm `oid` names, if it is one CertIDs use.
pub(crate) fn digest(oid: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    Some(match *oid {
        ID_SHA_1 => sha1::Sha1::digest(data).to_vec(),
        ID_SHA_256 => sha2::Sha256::digest(data).to_vec(),
        ID_SHA_384 => sha2::Sha384::digest(data).to_vec(),
        ID_SHA_512 => sha2::Sha512::digest(data).to_vec(),
        _ => return None,
    })
}

/// The CertID of `serial` under `issuer`, hashed with `hash`.
pub(crate) fn cert_id(
    issuer: &Certificate,
    serial: SerialNumber,
    hash: ObjectIdentifier,
) -> Result<CertId> {
    let name = issuer
        .tbs_certificate
        .subject
        .to_der()
        .map_err(asn1_error)?;
    let key = issuer_key_bits(issuer);
    let h = |data: &[u8]| {
        digest(&hash, data)
            .ok_or_else(|| Error::unsupported("unsupported CertID hash"))
            .and_then(|d| OctetString::new(d).map_err(asn1_error))
    };
    Ok(CertId {
        hash_algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
            oid: hash,
            parameters: Some(der::asn1::Null.into()),
        },
        issuer_name_hash: h(&name)?,
        issuer_key_hash: h(key)?,
        serial_number: serial,
    })
}

/// The issuer's public key as CertIDs and ResponderIDs hash it: the
/// subjectPublicKey BIT STRING's value.
pub(crate) fn issuer_key_bits(cert: &Certificate) -> &[u8] {
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
}

/// Whether `id` names `issuer` (name and key hash, by the algorithm `id`
/// names); `None` if that algorithm is not one this crate computes or its
/// parameters are neither absent nor NULL.
pub(crate) fn names_issuer(id: &CertId, issuer: &Certificate) -> Option<bool> {
    let params_ok = match &id.hash_algorithm.parameters {
        None => true,
        Some(p) => p.tag() == der::Tag::Null && p.value().is_empty(),
    };
    if !params_ok {
        return None;
    }
    let oid = &id.hash_algorithm.oid;
    let name = issuer.tbs_certificate.subject.to_der().ok()?;
    let name_ok = digest(oid, &name)? == id.issuer_name_hash.as_bytes();
    let key_ok = digest(oid, issuer_key_bits(issuer))? == id.issuer_key_hash.as_bytes();
    Some(name_ok && key_ok)
}

/// The serial's INTEGER contents octets in lowercase hex: the form the
/// registry stores (x509-parser's `raw_serial`).
pub(crate) fn serial_hex(serial: &SerialNumber) -> Option<String> {
    let mut v = Vec::new();
    serial.encode_value(&mut v).ok()?;
    Some(hex::encode(v))
}

/// An RFC 3339 instant as an OCSP GeneralizedTime (whole seconds).
pub(crate) fn to_generalized(t: OffsetDateTime) -> Result<OcspGeneralizedTime> {
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| Error::invalid_input("a time before 1970 cannot be encoded"))?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map(OcspGeneralizedTime)
        .map_err(asn1_error)
}

/// An OCSP GeneralizedTime as an instant.
pub(crate) fn from_generalized(t: &OcspGeneralizedTime) -> OffsetDateTime {
    let secs = t.0.to_unix_duration().as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
