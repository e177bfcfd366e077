//! rcgen (feature `rcgen`): [`rcgen::SigningKey`] and
//! [`rcgen::PublicKeyData`], so that certificates, CSRs and CRLs are built
//! by rcgen and signed through the keystore.

use crate::key::{active_version, check_signing_algorithm, KeystoreSigningKey, Mode};
use crate::SigningKeystore;
use keystore_api::{Algorithm, Error, Result, SignatureFormat};
use std::ops::Deref;

/// The rcgen signature algorithm for a keystore algorithm: ECDSA P-256
/// (`ecdsa-with-SHA256`), ECDSA P-384 (`ecdsa-with-SHA384`, DER
/// signatures), Ed25519 (`id-Ed25519`, RFC 8410) and RSA PKCS#1 v1.5
/// (`sha256WithRSAEncryption`) keys can sign certificates, CSRs and CRLs.
/// RSA-PSS keys cannot (their X.509 algorithm identifiers carry parameters
/// rcgen does not write), symmetric and `ecdh-p256` keys sign nothing, and
/// `ml-dsa-65` keys are not taken by this adapter.
///
/// # Errors
/// [`ErrorKind::Unsupported`](keystore_api::ErrorKind::Unsupported) for any other algorithm.
pub fn rcgen_algorithm(alg: Algorithm) -> Result<&'static rcgen::SignatureAlgorithm> {
    match alg {
        Algorithm::EcdsaP256Sha256 => Ok(&rcgen::PKCS_ECDSA_P256_SHA256),
        Algorithm::EcdsaP384Sha384 => Ok(&rcgen::PKCS_ECDSA_P384_SHA384),
        Algorithm::Ed25519 => Ok(&rcgen::PKCS_ED25519),
        Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa3072Pkcs1Sha256 => {
            Ok(&rcgen::PKCS_RSA_SHA256)
        }
        Algorithm::MlDsa65 => Err(Error::unsupported(
            "ml-dsa-65 keys are not taken by keystore-signer's rcgen adapter; sign X.509 \
             certificates, CSRs and CRLs with an ecdsa-p256-sha256, ecdsa-p384-sha384, ed25519 \
             or rsa-*-pkcs1-sha256 key",
        )),
        other => Err(Error::unsupported(format!(
            "{other} keys cannot sign X.509 certificates, CSRs or CRLs here; use an \
             ecdsa-p256-sha256, ecdsa-p384-sha384, ed25519 or rsa-*-pkcs1-sha256 key"
        ))),
    }
}

impl<K, Ks> KeystoreSigningKey<K>
where
    K: Deref<Target = Ks>,
    Ks: SigningKeystore + ?Sized,
{
    /// An adapter for rcgen: pinned to the version of `name` active now,
    /// checked to be a key rcgen can sign with ([`rcgen_algorithm`]) and whose
    /// public key rcgen re-encodes byte for byte to the keystore's SPKI (or
    /// certificates would carry a key the keystore does not hold).
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`](keystore_api::ErrorKind::Unsupported) for a key [`rcgen_algorithm`] refuses
    /// (symmetric, `ecdh-p256`, RSA-PSS, `ml-dsa-65`), or a public key that
    /// does not re-encode; otherwise as [`pinned`](Self::pinned).
    pub fn for_rcgen(ks: K, name: &str) -> Result<Self> {
        let info = ks.info(name)?;
        check_signing_algorithm(name, info.algorithm)?;
        rcgen_algorithm(info.algorithm).map_err(|e| e.with_key(name))?;
        let active = active_version(&info)?.clone();
        let key = Self::from_info(ks, &info, &active, Mode::Pinned(active.version))?;
        use rcgen::PublicKeyData;
        if key.subject_public_key_info() != key.spki_der() {
            return Err(Error::unsupported(format!(
                "the public key of '{name}' does not re-encode to the same SubjectPublicKeyInfo"
            ))
            .with_key(name));
        }
        Ok(key)
    }

    /// Turns an rcgen error into a keystore error, restoring the keystore
    /// error behind a refused signature (rcgen reports only
    /// `RemoteKeyError`); any other rcgen error is
    /// [`ErrorKind::InvalidInput`](keystore_api::ErrorKind::InvalidInput).
    pub fn map_rcgen_error(&self, e: rcgen::Error) -> Error {
        if matches!(e, rcgen::Error::RemoteKeyError) {
            if let Some(inner) = self
                .rcgen_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return inner;
            }
        }
        Error::invalid_input(format!("cannot encode the X.509 structure: {e}"))
    }
}

/// The reference version's public key. For an RSA-PSS key (which rcgen
/// cannot sign with) the algorithm reported is RSA PKCS#1, whose SPKI
/// encoding is the keystore's; signing is refused.
impl<K> rcgen::PublicKeyData for KeystoreSigningKey<K> {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        rcgen_algorithm(self.algorithm).unwrap_or(&rcgen::PKCS_RSA_SHA256)
    }
}

/// Signs with the reference version only, in either mode (ECDSA in DER, as
/// X.509 carries it; Ed25519 and RSA in their one encoding); a refusal is
/// `rcgen::Error::RemoteKeyError`, and
/// [`map_rcgen_error`](KeystoreSigningKey::map_rcgen_error) gives the
/// keystore error behind it.
impl<K, Ks> rcgen::SigningKey for KeystoreSigningKey<K>
where
    K: Deref<Target = Ks>,
    Ks: SigningKeystore + ?Sized,
{
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let fail = |e: Error| {
            *self.rcgen_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            rcgen::Error::RemoteKeyError
        };
        rcgen_algorithm(self.algorithm).map_err(|e| fail(e.with_key(&self.name)))?;
        self.sign_as_reference(msg, SignatureFormat::Der)
            .map_err(fail)
    }
}
