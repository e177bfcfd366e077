//! The crypto-erase certificate a decommission ends with (REQ-KEY-WIPE-01):
//! what was destroyed, when, by whom, by which method, and the final audit
//! checkpoint, signed by the store's audit signing key just before that key
//! is destroyed too. It verifies off the device after the store is gone
//! ([`ErasureCertificate::verify`]).
//!
//! The certificate is a JSON object holding its body as a JSON **string**
//! (`body`), the signer's fingerprint and the signature. The signature is
//! ECDSA P-256 with SHA-256, DER, hex, over the bytes of
//! [`ERASURE_DOMAIN`], a `\n`, then the body string's bytes, so any JSON
//! reader can check it without re-encoding anything.

use super::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::public_key::PublicKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The format name, and the first line of the signed bytes.
pub const ERASURE_DOMAIN: &str = "keystore-erasure-certificate-v1";

/// One key the decommission destroyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErasedKey {
    /// The key's name.
    pub name: String,
    /// Its algorithm (`ecdsa-p256-sha256`, ...).
    pub algorithm: String,
    /// Its versions: number, state before the erasure, public fingerprint.
    pub versions: Vec<ErasedVersion>,
}

/// One version of an [`ErasedKey`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErasedVersion {
    /// The version number.
    pub version: u32,
    /// Its state before the erasure (`active`, `destroyed`, ...).
    pub state: String,
    /// Whether it still had material in the backend (destroyed now).
    pub had_material: bool,
    /// The public fingerprint, for asymmetric keys.
    pub fingerprint: Option<String>,
}

/// What the certificate states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErasureStatement {
    /// Always [`ERASURE_DOMAIN`].
    pub format: String,
    /// The store's random id.
    pub store_id: String,
    /// The backend's name.
    pub backend: String,
    /// How the backend erases ([`KeyManagement::erasure_method`](crate::KeyManagement::erasure_method)).
    pub method: String,
    /// When the erasure was done (UTC).
    #[serde(with = "super::rfc3339_text")]
    pub at: OffsetDateTime,
    /// Who ordered it, and in which role.
    pub actor: String,
    /// The actor's role.
    pub role: String,
    /// Every key the store held, with its versions.
    pub keys: Vec<ErasedKey>,
    /// Backend objects destroyed before the signature (keys' material, the
    /// audit MAC key, keys of interrupted operations).
    pub objects_destroyed: u64,
    /// The audit signing key that signs this certificate; it is destroyed
    /// right after signing.
    pub signing_key_destroyed_after_signature: String,
    /// The monotonic counter removed from the device, if the store had one.
    pub counter_removed: Option<String>,
    /// The last checkpoint, covering the trail's final (`decommission`) entry.
    pub final_checkpoint: Checkpoint,
}

/// A signed [`ErasureStatement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErasureCertificate {
    /// Always [`ERASURE_DOMAIN`].
    pub format: String,
    /// The statement, as the JSON text that was signed.
    pub body: String,
    /// The signing key's fingerprint.
    pub signer: String,
    /// ECDSA P-256 SHA-256 over `ERASURE_DOMAIN ‖ "\n" ‖ body`, DER, hex.
    pub signature: String,
}

impl ErasureCertificate {
    /// The bytes a certificate with `body` signs.
    pub(crate) fn signed_bytes(body: &str) -> Vec<u8> {
        let mut m = format!("{ERASURE_DOMAIN}\n").into_bytes();
        m.extend_from_slice(body.as_bytes());
        m
    }

    /// The certificate of `statement`, signed by `sign` (DER).
    pub(crate) fn sign(
        statement: &ErasureStatement,
        signer: &PublicKey,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<Self> {
        let body = serde_json::to_string(statement)
            .map_err(|e| Error::invalid_input(format!("cannot encode the certificate: {e}")))?;
        let signature = sign(&Self::signed_bytes(&body))?;
        let cert = ErasureCertificate {
            format: ERASURE_DOMAIN.to_string(),
            body,
            signer: signer.fingerprint(),
            signature: hex::encode(signature),
        };
        cert.verify(std::slice::from_ref(signer))?;
        Ok(cert)
    }

    /// Checks the signature with the one of `trusted` whose fingerprint the
    /// certificate names, and returns the statement.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when no trusted
    /// key is the signer, the signature does not verify, or the body is not
    /// a statement of this format.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<ErasureStatement> {
        if self.format != ERASURE_DOMAIN {
            return Err(Error::integrity(format!(
                "not an erasure certificate of format {ERASURE_DOMAIN}"
            )));
        }
        let key = trusted
            .iter()
            .find(|k| k.fingerprint() == self.signer)
            .ok_or_else(|| {
                Error::integrity(format!(
                    "the certificate is signed by {}, which is not a trusted key",
                    self.signer
                ))
            })?;
        let sig = hex::decode(&self.signature)
            .map_err(|_| Error::integrity("the certificate's signature is not hex"))?;
        key.verify(&Self::signed_bytes(&self.body), &sig)
            .map_err(|_| Error::integrity("the erasure certificate's signature does not verify"))?;
        let statement: ErasureStatement = serde_json::from_str(&self.body)
            .map_err(|e| Error::integrity(format!("the certificate's body is malformed: {e}")))?;
        if statement.format != ERASURE_DOMAIN {
            return Err(Error::integrity(
                "the certificate's body has another format",
            ));
        }
        Ok(statement)
    }
}
