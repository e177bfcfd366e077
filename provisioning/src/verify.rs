//! Peer checks (REQ-KEY-REV-03, REQ-KEY-PIN-01; TEST-KEY-07): path
//! validation and CRL checks with rustls-webpki, CRL expiry (nextUpdate)
//! enforced, then SPKI pins.
//!
//! ```text
//! // REQ-KEY-REV-03; TEST-KEY-07
//! if (cert_is_revoked(peer_cert) || expired(peer_cert)) reject_connection();
//! ```

use crate::util::{sha256_tag, shorten};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::collections::BTreeSet;
use std::fmt;
use time::OffsetDateTime;
use webpki::{
    BorrowedCertRevocationList, CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};

/// The signature algorithms accepted on certificates and CRLs.
pub(crate) static ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
];

/// Why a peer was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// A CRL lists the certificate (or, with whole-chain checks, a CA on its path).
    Revoked,
    /// The certificate's notAfter has passed.
    Expired,
    /// The certificate's notBefore is still ahead.
    NotYetValid,
    /// No path to a trusted root (unknown or untrusted issuer).
    UnknownIssuer,
    /// The authoritative CRL is past its nextUpdate: revocation status is stale.
    CrlExpired,
    /// No authoritative CRL was available for a certificate that needs one.
    RevocationUnknown,
    /// The path validated but no certificate on it carries a pinned key.
    PinMismatch,
    /// A signature on the certificate or the CRL does not verify.
    BadSignature,
    /// The certificate, chain or CRL cannot be parsed.
    Malformed,
    /// Any other validation failure (wrong key usage, name constraints, ...).
    Invalid,
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
            | RejectReason::RevocationUnknown => E::KeyState(msg),
            RejectReason::UnknownIssuer | RejectReason::PinMismatch => E::Auth(msg),
            RejectReason::BadSignature | RejectReason::Invalid => E::Integrity(msg),
            RejectReason::Malformed => E::InvalidInput(msg),
        }
    }
}

fn reject(reason: RejectReason, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
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
            return Err(keystore_api::Error::InvalidInput(format!(
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

/// Checks peer certificate chains against trust anchors, CRLs and pins.
#[derive(Debug, Clone)]
pub struct PeerVerifier {
    anchors: Vec<Vec<u8>>,
    crls: Vec<Vec<u8>>,
    pins: Option<PinSet>,
    depth: RevocationCheckDepth,
    role: PeerRole,
}

impl PeerVerifier {
    /// Trusts the root certificate `root_der` (DER). The peer is a client.
    pub fn new(root_der: &[u8]) -> keystore_api::Result<Self> {
        let v = PeerVerifier {
            anchors: Vec::new(),
            crls: Vec::new(),
            pins: None,
            depth: RevocationCheckDepth::EndEntity,
            role: PeerRole::Client,
        };
        v.with_anchor(root_der)
    }

    /// Trusts another root.
    pub fn with_anchor(mut self, root_der: &[u8]) -> keystore_api::Result<Self> {
        let der = CertificateDer::from(root_der);
        webpki::anchor_from_trusted_cert(&der).map_err(|e| {
            keystore_api::Error::InvalidInput(format!("not a usable trust anchor: {e}"))
        })?;
        self.anchors.push(root_der.to_vec());
        Ok(self)
    }

    /// Adds a CRL (DER). Each certificate that is checked needs an
    /// authoritative CRL from its issuer; a missing one rejects the peer
    /// (`RevocationUnknown`), a stale one too (`CrlExpired`).
    pub fn with_crl(mut self, crl_der: &[u8]) -> keystore_api::Result<Self> {
        BorrowedCertRevocationList::from_der(crl_der)
            .map_err(|e| keystore_api::Error::InvalidInput(format!("not a usable CRL: {e}")))?;
        self.crls.push(crl_der.to_vec());
        Ok(self)
    }

    /// Requires a pinned key on the path.
    pub fn with_pins(mut self, pins: PinSet) -> Self {
        self.pins = Some(pins);
        self
    }

    /// Checks revocation of every CA on the path too (needs a CRL from the
    /// root, which the offline root issues at its ceremonies), not only of
    /// the end entity.
    pub fn check_whole_chain(mut self) -> Self {
        self.depth = RevocationCheckDepth::Chain;
        self
    }

    /// Sets which EKU the peer must carry.
    pub fn for_role(mut self, role: PeerRole) -> Self {
        self.role = role;
        self
    }

    /// Checks `chain` (end entity first, then intermediates, DER) at `now`.
    /// Rejects revoked certificates, expired or not-yet-valid ones, an
    /// unknown issuer, a CRL past its nextUpdate, a missing CRL, and a pin
    /// mismatch. TEST-KEY-07.
    pub fn check_peer(
        &self,
        chain: &[Vec<u8>],
        now: OffsetDateTime,
    ) -> Result<PeerInfo, Rejection> {
        let Some((ee_der, intermediates)) = chain.split_first() else {
            return Err(reject(RejectReason::Malformed, "the chain is empty"));
        };
        if chain.len() > 8 {
            return Err(reject(
                RejectReason::Malformed,
                "the chain has more than 8 certificates",
            ));
        }
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
        let crls = self
            .crls
            .iter()
            .map(|d| BorrowedCertRevocationList::from_der(d).map(CertRevocationList::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| reject(RejectReason::Malformed, format!("CRL: {e}")))?;
        let crl_refs: Vec<&CertRevocationList<'_>> = crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crl_refs)
            .map_err(|_| {
                reject(
                    RejectReason::RevocationUnknown,
                    "no CRL was supplied: revocation status cannot be checked",
                )
            })?
            .with_depth(self.depth)
            .with_status_policy(UnknownStatusPolicy::Deny)
            .with_expiration_policy(ExpirationPolicy::Enforce)
            .build();
        let secs = u64::try_from(now.unix_timestamp())
            .map_err(|_| reject(RejectReason::Invalid, "the check time is before 1970"))?;
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        let usage = match self.role {
            PeerRole::Client => KeyUsage::client_auth(),
            PeerRole::Server => KeyUsage::server_auth(),
        };
        let path = ee
            .verify_for_usage(ALGS, &anchors, &inter, time, usage, Some(revocation), None)
            .map_err(map_webpki)?;

        let info = crate::x509::CertInfo::parse(&ee_der)
            .map_err(|e| reject(RejectReason::Malformed, e.message()))?;
        let matched_pin = match &self.pins {
            None => None,
            Some(pins) => {
                let mut spkis = vec![sha256_tag(&path.end_entity().subject_public_key_info())];
                for c in path.intermediate_certificates() {
                    spkis.push(sha256_tag(&c.subject_public_key_info()));
                }
                spkis.push(sha256_tag(&webpki::spki_for_anchor(path.anchor())));
                match spkis.into_iter().find(|p| pins.contains(p)) {
                    Some(p) => Some(p),
                    None => {
                        return Err(reject(
                            RejectReason::PinMismatch,
                            format!(
                                "no key on the path of '{}' is in the pin set ({} pins)",
                                info.common_name.as_deref().unwrap_or("?"),
                                pins.len()
                            ),
                        ))
                    }
                }
            }
        };
        Ok(PeerInfo {
            common_name: info.common_name,
            serial: info.serial,
            spki_fingerprint: info.spki_fingerprint,
            not_after: info.not_after,
            matched_pin,
        })
    }
}

fn map_webpki(e: webpki::Error) -> Rejection {
    use webpki::Error as W;
    let reason = match &e {
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
