//! Checking OCSP responses ([`verify_ocsp_response`]) and the revocation
//! policy of [`PeerVerifier`] ([`RevocationPolicy`]).
//!
//! A response is accepted only if, in this order:
//!
//! 1. it parses, its status is `successful` and it is a BasicOCSPResponse;
//! 2. its signer is the certificate's issuer itself, or a certificate the
//!    response carries that the issuer signed, valid now, with the
//!    `id-kp-OCSPSigning` EKU and `id-pkix-ocsp-nocheck` (a delegated signer
//!    whose own status would need checking is refused) — matched by the
//!    ResponderID (name or SHA-1 key hash);
//! 3. the signature over `tbsResponseData` verifies under that signer's key
//!    (rustls-webpki, the algorithms of certificate paths);
//! 4. one SingleResponse's CertID names the certificate (issuer name and key
//!    hash by the CertID's hash, serial);
//! 5. its thisUpdate is not more than [`OCSP_CLOCK_SKEW`] ahead of `now`, it has a
//!    nextUpdate and `now` is before it;
//! 6. when a nonce was sent, the response echoes exactly that nonce.
//!
//! Failures map onto [`RejectReason`]: a bad or unauthorised signer is
//! `BadSignature`, a stale response `OcspExpired`, a nonce mismatch
//! `OcspReplay`, no status for the certificate `OcspUnavailable`. A
//! verified answer of `revoked` or `unknown` is returned as such; the peer
//! check rejects both (`Revoked`, `OcspUnknown`).

use crate::ca::OCSP_SIGNING_EKU;
use crate::ocsp::client::fetch_ocsp;
use crate::ocsp::{
    find_nonce, from_generalized, issuer_key_bits, names_issuer, nonce_value, ocsp_request,
    OcspCertStatus,
};
use crate::verify::{reject, CrlUse, PeerInfo, PeerVerifier, RejectReason, Rejection, ALGS};
use const_oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ID_PE_AUTHORITY_INFO_ACCESS,
    SHA_256_WITH_RSA_ENCRYPTION, SHA_384_WITH_RSA_ENCRYPTION, SHA_512_WITH_RSA_ENCRYPTION,
};
use const_oid::db::rfc6960::{ID_PKIX_OCSP_BASIC, ID_PKIX_OCSP_NOCHECK};
use const_oid::db::rfc8410::ID_ED_25519;
use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use sha1::Digest;
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus, ResponderId};

/// How far ahead of the checker's clock a response's thisUpdate may be.
pub const OCSP_CLOCK_SKEW: Duration = Duration::minutes(5);

/// Where a peer's revocation status must come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationPolicy {
    /// CRLs for every certificate on the path (the default, and the
    /// behaviour before OCSP existed); OCSP responses are not consulted.
    #[default]
    RequireCrl,
    /// A good OCSP answer for the end entity (stapled, or fetched from its
    /// AIA URL when fetching is on); the CAs above it are checked against
    /// the CRLs supplied, and a CA without one is not checked.
    RequireOcsp,
    /// A good OCSP answer for the end entity as with
    /// [`RevocationPolicy::RequireOcsp`]; without a usable one (none,
    /// stale, wrongly signed, replayed), the CRL check of
    /// [`RevocationPolicy::RequireCrl`]. A verified `revoked` or `unknown`
    /// answer rejects either way.
    OcspOrCrl,
}

/// A verified OCSP answer about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspAnswer {
    /// The certificate's status.
    pub status: OcspCertStatus,
    /// When the response was signed.
    pub produced_at: OffsetDateTime,
    /// The SingleResponse's thisUpdate.
    pub this_update: OffsetDateTime,
    /// Its nextUpdate.
    pub next_update: OffsetDateTime,
    /// The nonce the response echoed, if any.
    pub nonce: Option<Vec<u8>>,
    /// Whether a delegated signer (not the issuer itself) signed it.
    pub delegated: bool,
}

/// Verifies the DER `OCSPResponse` `response_der` about `cert_der`, issued
/// by `issuer_der`, at `now` (see the module docs for what is checked, in
/// order). With `expected_nonce`, the response must echo it.
///
/// # Errors
///
/// A [`Rejection`]: `Malformed` for what does not parse, `OcspUnavailable`
/// for an unsuccessful response or one without this certificate,
/// `BadSignature` for a bad or unauthorised signer, `OcspExpired` for a
/// stale response and `OcspReplay` for a missing or different nonce.
pub fn verify_ocsp_response(
    response_der: &[u8],
    cert_der: &[u8],
    issuer_der: &[u8],
    now: OffsetDateTime,
    expected_nonce: Option<&[u8]>,
) -> Result<OcspAnswer, Rejection> {
    let cert = decode_cert(cert_der, "certificate")?;
    let issuer = decode_cert(issuer_der, "issuer certificate")?;
    let basic = decode_basic(response_der)?;
    let (signer_der, delegated) = find_signer(&basic, &issuer, issuer_der, now)?;
    verify_signature(&basic, &signer_der)?;
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|s| {
            s.cert_id.serial_number == cert.tbs_certificate.serial_number
                && names_issuer(&s.cert_id, &issuer) == Some(true)
        })
        .ok_or_else(|| {
            reject(
                RejectReason::OcspUnavailable,
                "the OCSP response holds no status for this certificate",
            )
        })?;
    let (this_update, next_update) = check_times(single, now)?;
    let nonce = find_nonce(basic.tbs_response_data.response_extensions.as_ref()).map(nonce_value);
    if let Some(sent) = expected_nonce {
        if nonce.as_deref() != Some(sent) {
            return Err(reject(
                RejectReason::OcspReplay,
                "the OCSP response does not echo the nonce of the request (replayed?)",
            ));
        }
    }
    Ok(OcspAnswer {
        status: status_of(&single.cert_status),
        produced_at: from_generalized(&basic.tbs_response_data.produced_at),
        this_update,
        next_update,
        nonce,
        delegated,
    })
}

/// thisUpdate at most [`OCSP_CLOCK_SKEW`] ahead of `now`, a nextUpdate, and
/// `now` before it; the two times.
fn check_times(
    single: &x509_ocsp::SingleResponse,
    now: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime), Rejection> {
    let this_update = from_generalized(&single.this_update);
    if this_update > now + OCSP_CLOCK_SKEW {
        return Err(reject(
            RejectReason::OcspExpired,
            "the OCSP response's thisUpdate is in the future",
        ));
    }
    let next_update = match &single.next_update {
        Some(t) => from_generalized(t),
        None => {
            return Err(reject(
                RejectReason::OcspExpired,
                "the OCSP response has no nextUpdate",
            ))
        }
    };
    if now >= next_update {
        return Err(reject(
            RejectReason::OcspExpired,
            format!(
                "the OCSP response expired at {}",
                crate::util::rfc3339(next_update)
            ),
        ));
    }
    Ok((this_update, next_update))
}

fn status_of(s: &CertStatus) -> OcspCertStatus {
    match s {
        CertStatus::Good(_) => OcspCertStatus::Good,
        CertStatus::Unknown(_) => OcspCertStatus::Unknown,
        CertStatus::Revoked(info) => OcspCertStatus::Revoked {
            at: from_generalized(&info.revocation_time),
            reason: info.revocation_reason.map(|r| r as u8),
        },
    }
}

fn decode_cert(der: &[u8], what: &str) -> Result<Certificate, Rejection> {
    crate::ocsp::parse_cert(der, what).map_err(|e| reject(RejectReason::Malformed, e.message()))
}

/// The BasicOCSPResponse of a successful response.
fn decode_basic(der: &[u8]) -> Result<BasicOcspResponse, Rejection> {
    let malformed = |what: &str| reject(RejectReason::Malformed, format!("OCSP response: {what}"));
    if der.is_empty() || der.len() > crate::ocsp::MAX_OCSP_RESPONSE_LEN {
        return Err(malformed("bad size"));
    }
    let r = OcspResponse::from_der(der).map_err(|_| malformed("does not parse"))?;
    if r.response_status != OcspResponseStatus::Successful {
        let code = crate::ocsp::OcspResponseCode::of(der)
            .map(|c| c.id())
            .unwrap_or("?");
        return Err(reject(
            RejectReason::OcspUnavailable,
            format!("the OCSP responder answered {code}"),
        ));
    }
    let bytes = r
        .response_bytes
        .ok_or_else(|| malformed("no responseBytes"))?;
    if bytes.response_type != ID_PKIX_OCSP_BASIC {
        return Err(malformed("not a basic response"));
    }
    BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|_| malformed("the basic response does not parse"))
}

/// Whether `rid` names `cert` (by subject, or by the SHA-1 of its key).
fn responder_is(rid: &ResponderId, cert: &Certificate) -> bool {
    match rid {
        ResponderId::ByName(name) => *name == cert.tbs_certificate.subject,
        ResponderId::ByKey(hash) => {
            hash.as_bytes() == &sha1::Sha1::digest(issuer_key_bits(cert))[..]
        }
    }
}

/// The signer's certificate (DER) and whether it is a delegate.
fn find_signer(
    basic: &BasicOcspResponse,
    issuer: &Certificate,
    issuer_der: &[u8],
    now: OffsetDateTime,
) -> Result<(Vec<u8>, bool), Rejection> {
    let rid = &basic.tbs_response_data.responder_id;
    if responder_is(rid, issuer) {
        return Ok((issuer_der.to_vec(), false));
    }
    let certs = basic.certs.as_deref().unwrap_or_default();
    let Some(delegate) = certs.iter().find(|c| responder_is(rid, c)) else {
        return Err(reject(
            RejectReason::BadSignature,
            "the OCSP response's signer is neither the issuer nor a certificate the response carries",
        ));
    };
    let der = delegate
        .to_der()
        .map_err(|_| reject(RejectReason::Malformed, "OCSP signer certificate"))?;
    authorize_delegate(delegate, &der, issuer_der, now)?;
    Ok((der, true))
}

/// A delegated signer: issued by the issuer, valid at `now`, OCSPSigning
/// EKU, and `id-pkix-ocsp-nocheck`.
fn authorize_delegate(
    delegate: &Certificate,
    der: &[u8],
    issuer_der: &[u8],
    now: OffsetDateTime,
) -> Result<(), Rejection> {
    let unauthorised = |why: String| {
        reject(
            RejectReason::BadSignature,
            format!("the OCSP signer is not authorised by the certificate's issuer: {why}"),
        )
    };
    let nocheck = delegate
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|e| e.extn_id == ID_PKIX_OCSP_NOCHECK);
    if !nocheck {
        return Err(unauthorised("no id-pkix-ocsp-nocheck".into()));
    }
    let ee_der = CertificateDer::from(der);
    let ee = webpki::EndEntityCert::try_from(&ee_der).map_err(|e| unauthorised(e.to_string()))?;
    let issuer_der = CertificateDer::from(issuer_der);
    let anchor =
        webpki::anchor_from_trusted_cert(&issuer_der).map_err(|e| unauthorised(e.to_string()))?;
    let secs = u64::try_from(now.unix_timestamp())
        .map_err(|_| unauthorised("the check time is before 1970".into()))?;
    ee.verify_for_usage(
        ALGS,
        &[anchor],
        &[],
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        webpki::KeyUsage::required(OCSP_SIGNING_EKU),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| unauthorised(e.to_string()))
}

/// The webpki algorithms a response's signature algorithm may be.
fn algorithms_for(
    oid: &der::asn1::ObjectIdentifier,
) -> &'static [&'static dyn SignatureVerificationAlgorithm] {
    use webpki::aws_lc_rs as a;
    type Algs = [&'static dyn SignatureVerificationAlgorithm];
    static ECDSA_SHA256: &Algs = &[a::ECDSA_P256_SHA256, a::ECDSA_P384_SHA256];
    static ECDSA_SHA384: &Algs = &[a::ECDSA_P384_SHA384, a::ECDSA_P256_SHA384];
    static ED25519: &Algs = &[a::ED25519];
    static RSA_SHA256: &Algs = &[a::RSA_PKCS1_2048_8192_SHA256];
    static RSA_SHA384: &Algs = &[a::RSA_PKCS1_2048_8192_SHA384];
    static RSA_SHA512: &Algs = &[a::RSA_PKCS1_2048_8192_SHA512];
    match *oid {
        ECDSA_WITH_SHA_256 => ECDSA_SHA256,
        ECDSA_WITH_SHA_384 => ECDSA_SHA384,
        ID_ED_25519 => ED25519,
        SHA_256_WITH_RSA_ENCRYPTION => RSA_SHA256,
        SHA_384_WITH_RSA_ENCRYPTION => RSA_SHA384,
        SHA_512_WITH_RSA_ENCRYPTION => RSA_SHA512,
        _ => &[],
    }
}

/// The signature over tbsResponseData verifies under `signer_der`'s key.
fn verify_signature(basic: &BasicOcspResponse, signer_der: &[u8]) -> Result<(), Rejection> {
    let bad = |why: &str| reject(RejectReason::BadSignature, format!("OCSP response: {why}"));
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|_| reject(RejectReason::Malformed, "OCSP response data"))?;
    let sig = basic
        .signature
        .as_bytes()
        .ok_or_else(|| bad("the signature is not whole octets"))?;
    let der = CertificateDer::from(signer_der);
    let signer = webpki::EndEntityCert::try_from(&der).map_err(|_| bad("unusable signer"))?;
    let algs = algorithms_for(&basic.signature_algorithm.oid);
    if algs.is_empty() {
        return Err(bad("unsupported signature algorithm"));
    }
    if algs
        .iter()
        .any(|a| signer.verify_signature(*a, &tbs, sig).is_ok())
    {
        Ok(())
    } else {
        Err(bad("the signature does not verify under the signer's key"))
    }
}

/// The certificate's OCSP URL from its authorityInfoAccess, if any.
pub(crate) fn aia_ocsp_url(cert: &Certificate) -> Option<String> {
    use x509_cert::ext::pkix::{name::GeneralName, AuthorityInfoAccessSyntax};
    let ext = cert
        .tbs_certificate
        .extensions
        .as_deref()?
        .iter()
        .find(|e| e.extn_id == ID_PE_AUTHORITY_INFO_ACCESS)?;
    let aia = AuthorityInfoAccessSyntax::from_der(ext.extn_value.as_bytes()).ok()?;
    aia.0.iter().find_map(|d| match &d.access_location {
        GeneralName::UniformResourceIdentifier(u)
            if d.access_method == const_oid::db::rfc5912::ID_AD_OCSP =>
        {
            Some(u.to_string())
        }
        _ => None,
    })
}

/// The leaf's OCSP answer: the stapled response, else one fetched (with a
/// fresh nonce) from its AIA URL when fetching is on.
fn leaf_answer(
    v: &PeerVerifier,
    leaf_der: &[u8],
    issuer_der: &[u8],
    stapled: Option<&[u8]>,
    now: OffsetDateTime,
) -> Result<OcspAnswer, Rejection> {
    if let Some(resp) = stapled {
        return verify_ocsp_response(resp, leaf_der, issuer_der, now, None);
    }
    let unavailable = |why: String| reject(RejectReason::OcspUnavailable, why);
    let Some(timeout) = v.ocsp_fetch else {
        return Err(unavailable(
            "no OCSP response was stapled and fetching is off".into(),
        ));
    };
    let leaf = decode_cert(leaf_der, "certificate")?;
    let url = aia_ocsp_url(&leaf)
        .ok_or_else(|| unavailable("the certificate names no OCSP responder (AIA)".into()))?;
    let nonce = crate::util::random_bytes::<16>().map_err(|e| unavailable(e.message()))?;
    let request = ocsp_request(leaf_der, issuer_der, Some(&nonce))
        .map_err(|e| reject(RejectReason::Malformed, e.message()))?;
    let response = fetch_ocsp(&url, &request, timeout)
        .map_err(|e| unavailable(format!("fetching from {url}: {}", e.message())))?;
    verify_ocsp_response(&response, leaf_der, issuer_der, now, Some(&nonce))
}

/// A verified answer as the peer check takes it: good passes, revoked and
/// unknown reject.
fn judge(answer: OcspAnswer, info: &PeerInfo) -> Result<(), Rejection> {
    let named = |mut r: Rejection| {
        r.subject = info.common_name.clone();
        r.serial = Some(info.serial.clone());
        r
    };
    match answer.status {
        OcspCertStatus::Good => Ok(()),
        OcspCertStatus::Revoked { at, reason } => Err(named(reject(
            RejectReason::Revoked,
            format!(
                "the OCSP responder says the end-entity certificate (serial {}) was revoked at {}{}",
                info.serial,
                crate::util::rfc3339(at),
                reason.map(|r| format!(" (reason {r})")).unwrap_or_default()
            ),
        ))),
        OcspCertStatus::Unknown => Err(named(reject(
            RejectReason::OcspUnknown,
            format!(
                "the OCSP responder does not know the end-entity certificate (serial {})",
                info.serial
            ),
        ))),
    }
}

/// The peer check under the verifier's [`RevocationPolicy`];
/// [`PeerVerifier::check_peer`] and [`PeerVerifier::check_peer_with_ocsp`].
pub(crate) fn check(
    v: &PeerVerifier,
    chain: &[Vec<u8>],
    stapled: Option<&[u8]>,
    now: OffsetDateTime,
) -> Result<PeerInfo, Rejection> {
    if v.revocation == RevocationPolicy::RequireCrl {
        return v
            .check_path(chain, now, CrlUse::Required)
            .map(|(info, _)| info);
    }
    let (info, issuer) = v.check_path(chain, now, CrlUse::IfPresent)?;
    let answer = leaf_answer(v, &chain[0], &issuer, stapled, now);
    match (v.revocation, answer) {
        (_, Ok(answer)) => judge(answer, &info).map(|()| info),
        (RevocationPolicy::OcspOrCrl, Err(ocsp)) => v
            .check_path(chain, now, CrlUse::Required)
            .map(|(info, _)| info)
            .map_err(|mut crl| {
                crl.detail = format!(
                    "{} (and no usable OCSP answer: {})",
                    crl.detail, ocsp.detail
                );
                crl
            }),
        (_, Err(e)) => Err(e),
    }
}

impl PeerVerifier {
    /// Sets where revocation status must come from (default
    /// [`RevocationPolicy::RequireCrl`]).
    pub fn with_revocation_policy(mut self, policy: RevocationPolicy) -> Self {
        self.revocation = policy;
        self
    }

    /// Lets the OCSP policies fetch a response from the end entity's AIA
    /// OCSP URL (with a fresh nonce, over HTTP, within `timeout`) when none
    /// is stapled. Off by default.
    pub fn with_ocsp_fetch(mut self, timeout: std::time::Duration) -> Self {
        self.ocsp_fetch = Some(timeout);
        self
    }

    /// [`PeerVerifier::check_peer`] with a stapled OCSP response (DER) for
    /// the end entity, used by the OCSP policies (a stapled response is
    /// taken as it is: no nonce). TEST-KEY-07.
    ///
    /// # Errors
    ///
    /// Those of [`PeerVerifier::check_peer`], and under an OCSP policy
    /// those of [`verify_ocsp_response`], `Revoked` for a revoked answer and
    /// `OcspUnknown` for an unknown one.
    pub fn check_peer_with_ocsp(
        &self,
        chain: &[Vec<u8>],
        stapled_ocsp: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<PeerInfo, Rejection> {
        check(self, chain, stapled_ocsp, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x03, 0x0a, 0x01, 0x00],
            &[0xff; 64],
        ] {
            let r = decode_basic(bad).unwrap_err();
            assert!(
                matches!(
                    r.reason,
                    RejectReason::Malformed | RejectReason::OcspUnavailable
                ),
                "{r}"
            );
        }
        // malformedRequest, as a responder answers garbage.
        let r = decode_basic(&[0x30, 0x03, 0x0a, 0x01, 0x01]).unwrap_err();
        assert_eq!(r.reason, RejectReason::OcspUnavailable);
        assert!(r.detail.contains("malformedRequest"), "{r}");
    }
}
