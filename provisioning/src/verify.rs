//! Peer checks (REQ-KEY-REV-03, REQ-KEY-PIN-01; TEST-KEY-07): path
//! validation and CRL checks with rustls-webpki, CRL expiry (nextUpdate)
//! enforced, then SPKI pins.
//!
//! Revocation covers the whole path: the end entity against its issuer's
//! CRL, and every intermediate against the CRL of the CA above it (the
//! offline root's CRL for the production intermediate). A CA on the path
//! without a CRL from its issuer leaves the status unknown, which rejects.
//! That is the default [`RevocationPolicy::RequireCrl`]; the OCSP policies
//! (`crate::ocsp`) take the end entity's status from an OCSP response.
//!
//! ```text
//! // REQ-KEY-REV-03; TEST-KEY-07
//! if (cert_is_revoked(peer_cert) || expired(peer_cert)) reject_connection();
//! ```

use crate::ocsp::RevocationPolicy;
use crate::util::{sha256_tag, shorten};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::collections::BTreeSet;
use std::fmt;
use time::OffsetDateTime;
use webpki::{BorrowedCertRevocationList, CertRevocationList, EndEntityCert, KeyUsage};

mod crl;
pub(crate) use crl::CrlUse;
use crl::{locate, revocation_options};

/// The signature algorithms accepted on certificates and CRLs: those of the
/// keys of [`PKI_ALGORITHMS`](crate::PKI_ALGORITHMS), and RSA with SHA-384
/// and PSS from other issuers.
pub(crate) static ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ED25519,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
];

/// Why a peer was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// A CRL lists the certificate or a CA on its path (the detail and
    /// [`Rejection::subject`] name which).
    Revoked,
    /// The certificate's notAfter has passed.
    Expired,
    /// The certificate's notBefore is still ahead.
    NotYetValid,
    /// No path to a trusted root (unknown or untrusted issuer).
    UnknownIssuer,
    /// The authoritative CRL is past its nextUpdate: revocation status is stale.
    CrlExpired,
    /// No authoritative CRL was available for a certificate on the path (the
    /// end entity or an intermediate).
    RevocationUnknown,
    /// The path validated but no certificate on it carries a pinned key.
    PinMismatch,
    /// A signature on the certificate or the CRL does not verify.
    BadSignature,
    /// The certificate, chain or CRL cannot be parsed.
    Malformed,
    /// Any other validation failure (wrong key usage, name constraints, ...).
    Invalid,
    /// A verified OCSP response says the responder does not know the
    /// certificate.
    OcspUnknown,
    /// The OCSP response is stale: past its nextUpdate, without one, or
    /// from the future.
    OcspExpired,
    /// The OCSP response does not echo the nonce the request carried.
    OcspReplay,
    /// An OCSP policy is in force and no usable response was had: none
    /// stapled and none fetched, an unsuccessful status, or no status for
    /// the certificate.
    OcspUnavailable,
}

impl RejectReason {
    /// A stable lowercase name.
    pub fn id(self) -> &'static str {
        match self {
            RejectReason::Revoked => "revoked",
            RejectReason::Expired => "expired",
            RejectReason::NotYetValid => "not-yet-valid",
            RejectReason::UnknownIssuer => "unknown-issuer",
            RejectReason::CrlExpired => "crl-expired",
            RejectReason::RevocationUnknown => "revocation-unknown",
            RejectReason::PinMismatch => "pin-mismatch",
            RejectReason::BadSignature => "bad-signature",
            RejectReason::Malformed => "malformed",
            RejectReason::Invalid => "invalid",
            RejectReason::OcspUnknown => "ocsp-unknown",
            RejectReason::OcspExpired => "ocsp-expired",
            RejectReason::OcspReplay => "ocsp-replay",
            RejectReason::OcspUnavailable => "ocsp-unavailable",
        }
    }
}

/// A rejected peer: the reason, and a detail line (never secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// What exactly.
    pub detail: String,
    /// For revocation rejections (revoked, unknown status, stale CRL): the
    /// subject of the certificate on the path that caused it, when known.
    pub subject: Option<String>,
    /// Its serial (lowercase hex), when known.
    pub serial: Option<String>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer rejected ({}): {}", self.reason.id(), self.detail)
    }
}

impl std::error::Error for Rejection {}

impl From<Rejection> for keystore_api::Error {
    /// Revoked, expired, not-yet-valid and stale-revocation rejections are
    /// `KeyState` (the credential's state forbids use); an unknown issuer or
    /// a pin mismatch is `Auth`; a bad signature is `Integrity`; unparsable
    /// input is `InvalidInput`.
    fn from(r: Rejection) -> Self {
        use keystore_api::Error as E;
        let msg = r.to_string();
        match r.reason {
            RejectReason::Revoked
            | RejectReason::Expired
            | RejectReason::NotYetValid
            | RejectReason::CrlExpired
            | RejectReason::RevocationUnknown
            | RejectReason::OcspUnknown
            | RejectReason::OcspExpired
            | RejectReason::OcspUnavailable => E::key_state(msg),
            RejectReason::UnknownIssuer | RejectReason::PinMismatch => E::auth(msg),
            RejectReason::BadSignature | RejectReason::Invalid | RejectReason::OcspReplay => {
                E::integrity(msg)
            }
            RejectReason::Malformed => E::invalid_input(msg),
        }
    }
}

pub(crate) fn reject(reason: RejectReason, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
        subject: None,
        serial: None,
    }
}

/// A set of SPKI pins (`sha256:` of the DER SubjectPublicKeyInfo, the
/// keystore's fingerprint format). During a key transition the set holds the
/// old and the new pin (REQ-KEY-PIN-01); a path passes if any certificate on
/// it (end entity, intermediate or anchor) carries a pinned key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinSet {
    pins: BTreeSet<String>,
}

impl PinSet {
    /// An empty set (which matches nothing).
    pub fn new() -> Self {
        PinSet::default()
    }

    /// Adds a pin; it must be `sha256:` and 64 lowercase hex digits.
    pub fn with(mut self, pin: &str) -> keystore_api::Result<Self> {
        self.insert(pin)?;
        Ok(self)
    }

    /// Adds a pin.
    pub fn insert(&mut self, pin: &str) -> keystore_api::Result<()> {
        let ok = pin
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(keystore_api::Error::invalid_input(format!(
                "a pin is 'sha256:' and 64 hex digits, got {:?}",
                shorten(pin)
            )));
        }
        self.pins.insert(pin.to_ascii_lowercase());
        Ok(())
    }

    /// Removes a pin (the end of a transition).
    pub fn remove(&mut self, pin: &str) -> bool {
        self.pins.remove(&pin.to_ascii_lowercase())
    }

    /// Whether `pin` is in the set.
    pub fn contains(&self, pin: &str) -> bool {
        self.pins.contains(&pin.to_ascii_lowercase())
    }

    /// The pins.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.pins.iter().map(String::as_str)
    }

    /// Number of pins.
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }
}

/// What a successful check learnt about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The end-entity certificate's subject CN (the device id).
    pub common_name: Option<String>,
    /// Its serial number, hex.
    pub serial: String,
    /// Its SPKI fingerprint.
    pub spki_fingerprint: String,
    /// Its expiry.
    pub not_after: OffsetDateTime,
    /// The pin that matched, if pins were checked.
    pub matched_pin: Option<String>,
}

/// Which extended key usage the peer must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// A TLS client (devices): clientAuth, if the certificate has an EKU.
    Client,
    /// A TLS server: serverAuth, if the certificate has an EKU.
    Server,
}

/// A CRL given to the verifier, with what is needed to order and name it.
#[derive(Debug, Clone)]
struct Crl {
    der: Vec<u8>,
    /// thisUpdate (Unix seconds), if x509-parser reads it.
    this_update: Option<i64>,
    /// nextUpdate (Unix seconds), if present and read.
    next_update: Option<i64>,
    /// The CRL number, big-endian without leading zeros, if present.
    number: Option<Vec<u8>>,
    /// The issuer, as text (for messages).
    issuer: Option<String>,
}

/// Checks peer certificate chains against trust anchors, CRLs and pins.
///
/// Revocation is checked for every certificate on the path
/// ([`webpki::RevocationCheckDepth::Chain`]): a device certificate against the
/// intermediate's CRL and the intermediate against the root's CRL, so both
/// CRLs are needed. A missing CRL for any certificate on the path rejects
/// ([`RejectReason::RevocationUnknown`]).
#[derive(Debug, Clone)]
pub struct PeerVerifier {
    anchors: Vec<Vec<u8>>,
    crls: Vec<Crl>,
    pins: Option<PinSet>,
    role: PeerRole,
    /// Where revocation status comes from.
    pub(crate) revocation: RevocationPolicy,
    /// Fetching OCSP responses from AIA URLs, with this timeout, if on.
    pub(crate) ocsp_fetch: Option<std::time::Duration>,
}

impl PeerVerifier {
    /// Trusts the root certificate `root_der` (DER). The peer is a client.
    pub fn new(root_der: &[u8]) -> keystore_api::Result<Self> {
        let v = PeerVerifier {
            anchors: Vec::new(),
            crls: Vec::new(),
            pins: None,
            role: PeerRole::Client,
            revocation: RevocationPolicy::default(),
            ocsp_fetch: None,
        };
        v.with_anchor(root_der)
    }

    /// Trusts another root.
    pub fn with_anchor(mut self, root_der: &[u8]) -> keystore_api::Result<Self> {
        let der = CertificateDer::from(root_der);
        webpki::anchor_from_trusted_cert(&der).map_err(|e| {
            keystore_api::Error::invalid_input(format!("not a usable trust anchor: {e}"))
        })?;
        self.anchors.push(root_der.to_vec());
        Ok(self)
    }

    /// Adds a CRL (DER). Every certificate on the path needs an
    /// authoritative CRL from its issuer (the intermediate's for a device,
    /// the root's for the intermediate); a missing one rejects the peer
    /// (`RevocationUnknown`), a stale one too (`CrlExpired`). Of several
    /// CRLs from one issuer the newest (latest thisUpdate) is the one used,
    /// whatever the order they were added in.
    pub fn with_crl(mut self, crl_der: &[u8]) -> keystore_api::Result<Self> {
        if crl_der.len() > crate::x509::MAX_DER_LEN {
            return Err(keystore_api::Error::invalid_input(format!(
                "a CRL is at most {} bytes",
                crate::x509::MAX_DER_LEN
            )));
        }
        BorrowedCertRevocationList::from_der(crl_der)
            .map_err(|e| keystore_api::Error::invalid_input(format!("not a usable CRL: {e}")))?;
        use x509_parser::prelude::FromDer;
        let parsed = x509_parser::revocation_list::CertificateRevocationList::from_der(crl_der)
            .ok()
            .map(|(_, c)| {
                (
                    c.last_update().timestamp(),
                    c.next_update().map(|t| t.timestamp()),
                    c.issuer().to_string(),
                    c.crl_number().map(|n| n.to_bytes_be()),
                )
            });
        self.crls.push(Crl {
            der: crl_der.to_vec(),
            this_update: parsed.as_ref().map(|p| p.0),
            next_update: parsed.as_ref().and_then(|p| p.1),
            issuer: parsed.as_ref().map(|p| p.2.clone()),
            number: parsed.and_then(|p| p.3),
        });
        Ok(self)
    }

    /// Requires a pinned key on the path.
    pub fn with_pins(mut self, pins: PinSet) -> Self {
        self.pins = Some(pins);
        self
    }

    /// Sets which EKU the peer must carry.
    pub fn for_role(mut self, role: PeerRole) -> Self {
        self.role = role;
        self
    }

    /// Checks `chain` (end entity first, then intermediates, DER) at `now`.
    /// Rejects revoked certificates (the end entity or any CA on its path),
    /// expired or not-yet-valid ones, an unknown issuer, a CRL past its
    /// nextUpdate, a missing CRL for any certificate on the path, and a pin
    /// mismatch. TEST-KEY-07. Under an OCSP [`RevocationPolicy`] the end
    /// entity's status comes from OCSP instead: with nothing stapled, from
    /// its AIA URL if fetching is on
    /// ([`PeerVerifier::check_peer_with_ocsp`] takes a stapled response).
    ///
    /// # Errors
    ///
    /// A [`Rejection`] naming the [`RejectReason`] (and, for revocation,
    /// the certificate on the path it concerns).
    pub fn check_peer(
        &self,
        chain: &[Vec<u8>],
        now: OffsetDateTime,
    ) -> Result<PeerInfo, Rejection> {
        crate::ocsp::check(self, chain, None, now)
    }

    /// Validates the path of `chain` at `now` with the CRLs as `crl_use`
    /// says, then the pins; returns what was learnt and the DER of the end
    /// entity's issuer (the first intermediate, or the anchor).
    pub(crate) fn check_path(
        &self,
        chain: &[Vec<u8>],
        now: OffsetDateTime,
        crl_use: CrlUse,
    ) -> Result<(PeerInfo, Vec<u8>), Rejection> {
        let (ee_der, intermediates) = split_chain(chain)?;
        let ee_der = CertificateDer::from(ee_der.as_slice());
        let ee = EndEntityCert::try_from(&ee_der).map_err(|e| {
            reject(
                RejectReason::Malformed,
                format!("end-entity certificate: {e}"),
            )
        })?;
        let anchor_ders: Vec<CertificateDer<'_>> = self
            .anchors
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        let anchors = anchor_ders
            .iter()
            .map(|d| webpki::anchor_from_trusted_cert(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| reject(RejectReason::Malformed, format!("trust anchor: {e}")))?;
        let inter: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        let ordered = self.ordered_crls();
        let crls = ordered
            .iter()
            .map(|c| BorrowedCertRevocationList::from_der(&c.der).map(CertRevocationList::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| reject(RejectReason::Malformed, format!("CRL: {e}")))?;
        let crl_refs: Vec<&CertRevocationList<'_>> = crls.iter().collect();
        let revocation = revocation_options(&crl_refs, crl_use)?;
        let secs = u64::try_from(now.unix_timestamp())
            .map_err(|_| reject(RejectReason::Invalid, "the check time is before 1970"))?;
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        let usage = match self.role {
            PeerRole::Client => KeyUsage::client_auth(),
            PeerRole::Server => KeyUsage::server_auth(),
        };
        let path = ee
            .verify_for_usage(ALGS, &anchors, &inter, time, usage, revocation, None)
            .map_err(|e| {
                let mut r = map_webpki(&e);
                if matches!(
                    r.reason,
                    RejectReason::Revoked
                        | RejectReason::RevocationUnknown
                        | RejectReason::CrlExpired
                ) {
                    // Name the certificate: the path without revocation checks,
                    // then the same CRL lookup webpki made, top down.
                    if let Ok(path) =
                        ee.verify_for_usage(ALGS, &anchors, &inter, time, usage, None, None)
                    {
                        if let Some(found) = locate(&path, &crl_refs, &ordered, r.reason, now) {
                            r = found;
                        }
                    }
                }
                r
            })?;

        let info = crate::x509::CertInfo::parse(&ee_der)
            .map_err(|e| reject(RejectReason::Malformed, e.message()))?;
        let matched_pin = self.matched_pin(&path, info.common_name.as_deref())?;
        let issuer = issuer_der(&path, &self.anchors);
        let info = PeerInfo {
            common_name: info.common_name,
            serial: info.serial,
            spki_fingerprint: info.spki_fingerprint,
            not_after: info.not_after,
            matched_pin,
        };
        Ok((info, issuer))
    }
}

impl PeerVerifier {
    /// The CRLs as webpki must see them: it uses the first CRL whose issuer
    /// matches, so newest first (latest thisUpdate, then highest CRL
    /// number), and an older CRL can never mask a later revocation.
    fn ordered_crls(&self) -> Vec<&Crl> {
        let mut ordered: Vec<&Crl> = self.crls.iter().collect();
        ordered.sort_by(|a, b| {
            let key = |c: &Crl| {
                let n = c.number.as_deref().unwrap_or_default();
                (c.this_update.unwrap_or(i64::MIN), n.len(), n.to_vec())
            };
            key(b).cmp(&key(a))
        });
        ordered
    }

    /// The pin on `path` that is in the pin set (`None` when no pins are
    /// required); `PinMismatch` if none is.
    fn matched_pin(
        &self,
        path: &webpki::VerifiedPath<'_>,
        common_name: Option<&str>,
    ) -> Result<Option<String>, Rejection> {
        let Some(pins) = &self.pins else {
            return Ok(None);
        };
        let mut spkis = vec![sha256_tag(&path.end_entity().subject_public_key_info())];
        for c in path.intermediate_certificates() {
            spkis.push(sha256_tag(&c.subject_public_key_info()));
        }
        spkis.push(sha256_tag(&webpki::spki_for_anchor(path.anchor())));
        match spkis.into_iter().find(|p| pins.contains(p)) {
            Some(p) => Ok(Some(p)),
            None => Err(reject(
                RejectReason::PinMismatch,
                format!(
                    "no key on the path of '{}' is in the pin set ({} pins)",
                    common_name.unwrap_or("?"),
                    pins.len()
                ),
            )),
        }
    }
}

/// The end entity and the rest of a chain of 1 to 8 certificates.
fn split_chain(chain: &[Vec<u8>]) -> Result<(&Vec<u8>, &[Vec<u8>]), Rejection> {
    let Some((ee, rest)) = chain.split_first() else {
        return Err(reject(RejectReason::Malformed, "the chain is empty"));
    };
    if chain.len() > 8 {
        return Err(reject(
            RejectReason::Malformed,
            "the chain has more than 8 certificates",
        ));
    }
    Ok((ee, rest))
}

/// The DER of the end entity's issuer on `path`: its first intermediate,
/// else the trusted root the path ends at.
fn issuer_der(path: &webpki::VerifiedPath<'_>, anchors: &[Vec<u8>]) -> Vec<u8> {
    if let Some(c) = path.intermediate_certificates().next() {
        return c.der().to_vec();
    }
    let subject = path.anchor().subject.as_ref();
    anchors
        .iter()
        .find(|d| {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(d.as_slice()))
                .is_ok_and(|a| a.subject.as_ref() == subject)
        })
        .cloned()
        .unwrap_or_default()
}

fn map_webpki(e: &webpki::Error) -> Rejection {
    use webpki::Error as W;
    let reason = match e {
        W::CertRevoked => RejectReason::Revoked,
        W::CertExpired { .. } => RejectReason::Expired,
        W::CertNotValidYet { .. } => RejectReason::NotYetValid,
        W::UnknownIssuer => RejectReason::UnknownIssuer,
        W::CrlExpired { .. } => RejectReason::CrlExpired,
        W::UnknownRevocationStatus => RejectReason::RevocationUnknown,
        W::InvalidSignatureForPublicKey | W::InvalidCrlSignatureForPublicKey => {
            RejectReason::BadSignature
        }
        W::BadDer | W::BadDerTime | W::TrailingData(_) => RejectReason::Malformed,
        _ => RejectReason::Invalid,
    };
    reject(reason, format!("{e}"))
}
