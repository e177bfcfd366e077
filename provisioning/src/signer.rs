//! The bridge between rcgen and the keystore: an [`rcgen::SigningKey`] whose
//! `sign` is [`Keystore::sign`]. The private key never leaves the backend;
//! rcgen only sees the public key and the signatures.

use keystore_api::{Algorithm, Backend, Error, KeyState, Keystore, Result, SignatureFormat};
use std::sync::Mutex;

/// A keystore key, pinned to the version that is active when the signer is
/// made, presented to rcgen as a signing key.
///
/// Certificates carry the public key of one version; if the key is rotated
/// between [`KeystoreSigner::new`] and a signature, the signature would be
/// made by another version and the certificate would not verify. The signer
/// therefore refuses signatures whose version differs from its own.
pub struct KeystoreSigner<'a, B: Backend> {
    ks: &'a Keystore<B>,
    name: String,
    version: u32,
    algorithm: Algorithm,
    spki_der: Vec<u8>,
    /// The BIT STRING contents of the SPKI (the raw public key), as rcgen wants it.
    raw_public_key: Vec<u8>,
    rcgen_alg: &'static rcgen::SignatureAlgorithm,
    /// The keystore error behind the last failed signature: rcgen can only
    /// report an opaque `RemoteKeyError`.
    last_error: Mutex<Option<Error>>,
}

impl<B: Backend> std::fmt::Debug for KeystoreSigner<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoreSigner")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The rcgen signature algorithm for a keystore algorithm. ECDSA P-256 and
/// RSA PKCS#1 v1.5 keys can sign certificates; RSA-PSS keys cannot (their
/// X.509 algorithm identifiers carry parameters rcgen does not write), and
/// symmetric keys have no public key.
pub(crate) fn rcgen_algorithm(alg: Algorithm) -> Result<&'static rcgen::SignatureAlgorithm> {
    match alg {
        Algorithm::EcdsaP256Sha256 => Ok(&rcgen::PKCS_ECDSA_P256_SHA256),
        Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa3072Pkcs1Sha256 => {
            Ok(&rcgen::PKCS_RSA_SHA256)
        }
        other => Err(Error::unsupported(format!(
            "{other} keys cannot sign X.509 certificates, CSRs or CRLs here; \
             use ecdsa-p256-sha256 or an rsa-*-pkcs1-sha256 key"
        ))),
    }
}

impl<'a, B: Backend> KeystoreSigner<'a, B> {
    /// A signer for the active version of `name`.
    pub fn new(ks: &'a Keystore<B>, name: &str) -> Result<Self> {
        let info = ks.info(name)?;
        let rcgen_alg = rcgen_algorithm(info.algorithm)?;
        let active = info.active().ok_or_else(|| {
            Error::key_state(format!(
                "key '{name}' has no active version (suspended, revoked or rotated away)"
            ))
        })?;
        debug_assert_eq!(active.state, KeyState::Active);
        let pk = active.public_key.as_ref().ok_or_else(|| {
            Error::integrity(format!("metadata holds no public key for '{name}'"))
        })?;
        let spki_der = pk.spki_der().to_vec();
        let raw_public_key = spki_bit_string(&spki_der)?;
        let signer = KeystoreSigner {
            ks,
            name: name.to_string(),
            version: active.version,
            algorithm: info.algorithm,
            spki_der,
            raw_public_key,
            rcgen_alg,
            last_error: Mutex::new(None),
        };
        // rcgen re-encodes the SPKI from the raw key and its algorithm; it
        // must come out byte for byte as the keystore's, or certificates
        // would carry a key the keystore does not hold.
        use rcgen::PublicKeyData;
        if signer.subject_public_key_info() != signer.spki_der {
            return Err(Error::unsupported(format!(
                "the public key of '{name}' does not re-encode to the same SubjectPublicKeyInfo"
            )));
        }
        Ok(signer)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key version every signature must come from.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The DER SubjectPublicKeyInfo of that version.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// `sha256:` fingerprint of the SPKI (the keystore's fingerprint format).
    pub fn fingerprint(&self) -> String {
        crate::util::sha256_tag(&self.spki_der)
    }

    /// Turns an rcgen error into a keystore error, restoring the keystore
    /// error behind a failed remote signature.
    pub fn map_err(&self, e: rcgen::Error) -> Error {
        if matches!(e, rcgen::Error::RemoteKeyError) {
            if let Some(inner) = self
                .last_error
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

impl<B: Backend> rcgen::PublicKeyData for KeystoreSigner<'_, B> {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.rcgen_alg
    }
}

impl<B: Backend> rcgen::SigningKey for KeystoreSigner<'_, B> {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let fail = |e: Error| {
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            rcgen::Error::RemoteKeyError
        };
        let sig = self
            .ks
            .sign(&self.name, msg, SignatureFormat::Der)
            .map_err(fail)?;
        if sig.version != self.version {
            return Err(fail(Error::key_state(format!(
                "key '{}' was rotated while signing (version {} signed, the certificate names version {})",
                self.name, sig.version, self.version
            ))));
        }
        Ok(sig.bytes)
    }
}

/// The BIT STRING contents of a SubjectPublicKeyInfo.
pub(crate) fn spki_bit_string(spki_der: &[u8]) -> Result<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|_| Error::invalid_input("a public key is not a valid SPKI"))?;
    if !rest.is_empty() {
        return Err(Error::invalid_input(
            "a public key has trailing bytes after its SPKI",
        ));
    }
    Ok(spki.subject_public_key.data.to_vec())
}
