//! The OCSP responder ([`OcspResponder`]): an `OCSPRequest` in, a DER
//! `OCSPResponse` out, from the registry's revocation state, signed by the
//! delegated OCSP signing key ([`OCSP_SIGNER_KEY`](crate::OCSP_SIGNER_KEY))
//! through [`KeystoreSigner`](crate::KeystoreSigner).
//!
//! What it answers (RFC 6960 sections 2.2, 2.3 and 4.2):
//!
//! - a request that does not parse, lists no certificate or more than
//!   [`MAX_REQUESTS`], or carries a nonce of 0 or more than 32 octets:
//!   `malformedRequest` (unsigned);
//! - a request none of whose CertIDs names the current intermediate (by
//!   issuer name and key hash): `unauthorized` (unsigned; RFC 5019 section
//!   2.2.3);
//! - no usable delegated certificate (none issued, expired, or its key
//!   rotated since): `tryLater`; any other failure: `internalError`;
//! - otherwise a signed BasicOCSPResponse with one SingleResponse per
//!   CertID: `good` for a serial the intermediate issued and nobody revoked,
//!   `revoked` with its time and reason code, `unknown` for a serial it never
//!   issued or a CertID naming another issuer; `thisUpdate` now,
//!   `nextUpdate` now + the response validity; the request's nonce echoed;
//!   the responder named by key hash, its certificate and the intermediate
//!   included.

use crate::ca::{Factory, RegistryStatus};
use crate::ocsp::{
    find_nonce, issuer_key_bits, names_issuer, nonce_value, parse_cert, serial_hex, to_generalized,
    MAX_NONCE_LEN,
};
use const_oid::db::rfc5912::{ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, SHA_256_WITH_RSA_ENCRYPTION};
use const_oid::db::rfc8410::ID_ED_25519;
use der::asn1::{BitString, OctetString};
use der::{Decode, Encode};
use keystore_api::{Algorithm, Backend, ErrorKind};
use sha1::Digest;
use time::{Duration, OffsetDateTime};
use x509_cert::ext::pkix::CrlReason;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, ResponderId,
    ResponseData, RevokedInfo, SingleResponse, Version,
};

/// Default time from a response's thisUpdate to its nextUpdate.
pub const DEFAULT_OCSP_RESPONSE_VALIDITY: Duration = Duration::hours(1);
/// Longest time from a response's thisUpdate to its nextUpdate.
const MAX_RESPONSE_VALIDITY: Duration = Duration::days(7);
/// Largest `OCSPRequest` accepted, in bytes.
pub const MAX_OCSP_REQUEST_LEN: usize = 16 * 1024;
/// Most certificates one request may ask about.
pub(crate) const MAX_REQUESTS: usize = 16;

/// Answers OCSP requests for the factory's current intermediate.
pub struct OcspResponder<'a, B: Backend> {
    factory: Factory<'a, B>,
    validity: Duration,
}

impl<B: Backend> std::fmt::Debug for OcspResponder<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspResponder")
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl<'a, B: Backend> OcspResponder<'a, B> {
    /// A responder over `factory`'s registry and its delegated OCSP signer
    /// ([`Factory::issue_ocsp_signer`]), with responses valid for
    /// [`DEFAULT_OCSP_RESPONSE_VALIDITY`].
    pub fn new(factory: Factory<'a, B>) -> Self {
        OcspResponder {
            factory,
            validity: DEFAULT_OCSP_RESPONSE_VALIDITY,
        }
    }

    /// Sets the time from thisUpdate to nextUpdate.
    ///
    /// # Errors
    ///
    /// `InvalidInput` unless it is more than 0 and at most 7 days.
    pub fn with_response_validity(mut self, validity: Duration) -> keystore_api::Result<Self> {
        if validity <= Duration::ZERO || validity > MAX_RESPONSE_VALIDITY {
            return Err(keystore_api::Error::invalid_input(
                "an OCSP response validity is more than 0 and at most 7 days",
            ));
        }
        self.validity = validity;
        Ok(self)
    }

    /// The time from thisUpdate to nextUpdate.
    pub fn response_validity(&self) -> Duration {
        self.validity
    }

    /// The DER `OCSPResponse` to the DER `OCSPRequest` in `request_der` at
    /// `now` (see the module docs for each status). Never fails and never
    /// panics on any input: a failure is itself an `OCSPResponse`.
    pub fn respond(&self, request_der: &[u8], now: OffsetDateTime) -> Vec<u8> {
        match self.try_respond(request_der, now) {
            Ok(der) => der,
            Err(status) => status_response(status),
        }
    }

    fn try_respond(
        &self,
        request_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, OcspResponseStatus> {
        let request = parse_request(request_der)?;
        let signing = self.factory.ocsp_signing().map_err(|e| {
            if e.is(ErrorKind::NotFound) || e.is(ErrorKind::KeyState) {
                OcspResponseStatus::TryLater
            } else {
                OcspResponseStatus::InternalError
            }
        })?;
        if now < signing.cert.not_before || now >= signing.cert.not_after {
            return Err(OcspResponseStatus::TryLater);
        }
        let issuer = Certificate::from_der(&signing.issuer.der).map_err(internal)?;
        let signer_cert = parse_cert(&signing.cert.der, "OCSP signer").map_err(internal)?;
        let responses = self.single_responses(&request, &issuer, &signing.issuer.serial, now)?;
        let tbs = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(
                OctetString::new(sha1::Sha1::digest(issuer_key_bits(&signer_cert)).to_vec())
                    .map_err(internal)?,
            ),
            produced_at: to_generalized(now).map_err(internal)?,
            responses,
            response_extensions: find_nonce(request.tbs_request.request_extensions.as_ref())
                .map(|n| vec![n.clone()]),
        };
        let tbs_der = tbs.to_der().map_err(internal)?;
        let signature = rcgen::SigningKey::sign(&signing.signer, &tbs_der).map_err(internal)?;
        let basic = BasicOcspResponse {
            tbs_response_data: tbs,
            signature_algorithm: signature_algorithm(signing.signer.algorithm())?,
            signature: BitString::from_bytes(&signature).map_err(internal)?,
            // The intermediate too, so that a client trusting only the root
            // (`openssl ocsp -CAfile root.pem`) can build the signer's path.
            certs: Some(vec![signer_cert, issuer]),
        };
        OcspResponse::successful(basic)
            .and_then(|r| r.to_der())
            .map_err(internal)
    }

    /// One SingleResponse per CertID of `request`; `unauthorized` when none
    /// names `issuer`.
    fn single_responses(
        &self,
        request: &OcspRequest,
        issuer: &Certificate,
        issuer_serial: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<SingleResponse>, OcspResponseStatus> {
        let this_update = to_generalized(now).map_err(internal)?;
        let next_update = to_generalized(now + self.validity).map_err(internal)?;
        let mut ours = 0usize;
        let mut out = Vec::with_capacity(request.tbs_request.request_list.len());
        for r in &request.tbs_request.request_list {
            let id = &r.req_cert;
            let status = if names_issuer(id, issuer) == Some(true) {
                ours += 1;
                let serial =
                    serial_hex(&id.serial_number).ok_or(OcspResponseStatus::InternalError)?;
                let status = self
                    .factory
                    .registry_status(issuer_serial, &serial)
                    .map_err(internal)?;
                cert_status(status)?
            } else {
                CertStatus::unknown()
            };
            out.push(SingleResponse {
                cert_id: id.clone(),
                cert_status: status,
                this_update,
                next_update: Some(next_update),
                single_extensions: None,
            });
        }
        if ours == 0 {
            return Err(OcspResponseStatus::Unauthorized);
        }
        Ok(out)
    }
}

/// Any failure of the responder itself: `internalError`.
fn internal<E>(_: E) -> OcspResponseStatus {
    OcspResponseStatus::InternalError
}

/// Parses and checks a request: size, at least one and at most
/// [`MAX_REQUESTS`] CertIDs, a nonce of 1 to 32 octets if any.
fn parse_request(der: &[u8]) -> Result<OcspRequest, OcspResponseStatus> {
    let malformed = OcspResponseStatus::MalformedRequest;
    if der.is_empty() || der.len() > MAX_OCSP_REQUEST_LEN {
        return Err(malformed);
    }
    let request = OcspRequest::from_der(der).map_err(|_| malformed)?;
    let n = request.tbs_request.request_list.len();
    if n == 0 || n > MAX_REQUESTS {
        return Err(malformed);
    }
    if let Some(nonce) = find_nonce(request.tbs_request.request_extensions.as_ref()) {
        let len = nonce_value(nonce).len();
        if len == 0 || len > MAX_NONCE_LEN {
            return Err(malformed);
        }
    }
    Ok(request)
}

/// The registry's status as a CertStatus.
fn cert_status(status: RegistryStatus) -> Result<CertStatus, OcspResponseStatus> {
    Ok(match status {
        RegistryStatus::Good => CertStatus::good(),
        RegistryStatus::Unknown => CertStatus::unknown(),
        RegistryStatus::Revoked { at, reason } => CertStatus::revoked(RevokedInfo {
            revocation_time: to_generalized(at).map_err(|_| OcspResponseStatus::InternalError)?,
            revocation_reason: reason.and_then(crl_reason),
        }),
    })
}

/// An RFC 5280 reason code as `x509-cert`'s `CrlReason`.
pub(crate) fn crl_reason(code: u8) -> Option<CrlReason> {
    use CrlReason as R;
    Some(match code {
        0 => R::Unspecified,
        1 => R::KeyCompromise,
        2 => R::CaCompromise,
        3 => R::AffiliationChanged,
        4 => R::Superseded,
        5 => R::CessationOfOperation,
        6 => R::CertificateHold,
        8 => R::RemoveFromCRL,
        9 => R::PrivilegeWithdrawn,
        10 => R::AaCompromise,
        _ => return None,
    })
}

/// The signature algorithm of a keystore key, as an AlgorithmIdentifier:
/// `ecdsa-with-SHA256` (1.2.840.10045.4.3.2) and `ecdsa-with-SHA384`
/// (1.2.840.10045.4.3.3) without parameters (RFC 5758), `id-Ed25519`
/// (1.3.101.112) without parameters (RFC 8410), `sha256WithRSAEncryption`
/// with NULL parameters; `internalError` for any other key.
fn signature_algorithm(alg: Algorithm) -> Result<AlgorithmIdentifierOwned, OcspResponseStatus> {
    let no_params = |oid| {
        Ok(AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        })
    };
    match alg {
        Algorithm::EcdsaP256Sha256 => no_params(ECDSA_WITH_SHA_256),
        Algorithm::EcdsaP384Sha384 => no_params(ECDSA_WITH_SHA_384),
        Algorithm::Ed25519 => no_params(ID_ED_25519),
        Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa3072Pkcs1Sha256 => {
            Ok(AlgorithmIdentifierOwned {
                oid: SHA_256_WITH_RSA_ENCRYPTION,
                parameters: Some(der::asn1::Null.into()),
            })
        }
        _ => Err(OcspResponseStatus::InternalError),
    }
}

/// An unsigned response with only a status (never `successful`).
pub(crate) fn status_response(status: OcspResponseStatus) -> Vec<u8> {
    let r = OcspResponse {
        response_status: status,
        response_bytes: None,
    };
    // Encoding an ENUMERATED in a SEQUENCE cannot fail; the fixed bytes
    // are the fallback all the same.
    r.to_der()
        .unwrap_or_else(|_| vec![0x30, 0x03, 0x0a, 0x01, status as u8])
}
