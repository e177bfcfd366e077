//! rustls: [`SigningKey`] and [`Signer`] over the keystore (ECDSA P-256 and
//! P-384, Ed25519, RSA-PSS, RSA PKCS#1 v1.5 in TLS 1.2), certificate chains
//! from PEM or DER, and [`certified_key`], which pairs a chain with the key
//! version its leaf names.

use crate::key::{active_version, KeystoreSigningKey, Mode};
use crate::SigningKeystore;
use keystore_api::{Algorithm, Error, Result, SignatureFormat};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::ops::Deref;
use std::sync::Arc;

/// The one TLS signature scheme a key of `alg` can make.
///
/// ECDSA P-256 keys make `ecdsa_secp256r1_sha256`, ECDSA P-384 keys
/// `ecdsa_secp384r1_sha384`, Ed25519 keys `ed25519`, RSA-PSS keys
/// `rsa_pss_rsae_sha256` (all in TLS 1.2 and 1.3), RSA PKCS#1 v1.5 keys
/// `rsa_pkcs1_sha256` (TLS 1.2 only: TLS 1.3 does not allow PKCS#1 v1.5 in
/// handshake signatures, so rustls never offers it there). `None` for keys
/// that do not sign (symmetric, `ecdh-p256`) and for `ml-dsa-65`, which the
/// adapter does not take.
pub fn tls_signature_scheme(alg: Algorithm) -> Option<SignatureScheme> {
    match alg {
        Algorithm::EcdsaP256Sha256 => Some(SignatureScheme::ECDSA_NISTP256_SHA256),
        Algorithm::EcdsaP384Sha384 => Some(SignatureScheme::ECDSA_NISTP384_SHA384),
        Algorithm::Ed25519 => Some(SignatureScheme::ED25519),
        a if a.rsa_bits().is_some() && a.is_rsa_pss() => Some(SignatureScheme::RSA_PSS_SHA256),
        a if a.rsa_bits().is_some() => Some(SignatureScheme::RSA_PKCS1_SHA256),
        _ => None,
    }
}

/// A keystore error as a rustls error, the keystore error kept as the source.
fn to_tls_error(e: Error) -> rustls::Error {
    rustls::Error::Other(rustls::OtherError(Arc::new(e)))
}

/// The key for rustls. `public_key` is the reference version's SPKI for a
/// pinned adapter and the active version's for a following one (so that
/// [`CertifiedKey::keys_match`] compares a certificate with the key that
/// will sign); `None` when the keystore cannot tell (no active version).
impl<K, Ks> SigningKey for KeystoreSigningKey<K>
where
    K: Deref<Target = Ks> + Clone + Send + Sync + 'static,
    Ks: SigningKeystore + ?Sized + 'static,
{
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = tls_signature_scheme(self.algorithm)?;
        if !offered.contains(&scheme) {
            return None;
        }
        Some(Box::new(TlsSigner {
            key: self.clone(),
            scheme,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        match self.mode {
            Mode::Pinned(_) => Some(SubjectPublicKeyInfoDer::from(self.spki_der())),
            Mode::Follow => self
                .active_public_key()
                .ok()
                .map(|pk| SubjectPublicKeyInfoDer::from(pk.spki_der().to_vec())),
        }
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.algorithm {
            Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => SignatureAlgorithm::ECDSA,
            Algorithm::Ed25519 => SignatureAlgorithm::ED25519,
            // An adapter holds only the signing algorithms: the rest are RSA.
            _ => SignatureAlgorithm::RSA,
        }
    }
}

/// One handshake's signer: the adapter and the scheme chosen for it.
struct TlsSigner<K> {
    key: KeystoreSigningKey<K>,
    scheme: SignatureScheme,
}

impl<K> std::fmt::Debug for TlsSigner<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSigner")
            .field("key", &self.key)
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl<K, Ks> Signer for TlsSigner<K>
where
    K: Deref<Target = Ks> + Send + Sync,
    Ks: SigningKeystore + ?Sized,
{
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, rustls::Error> {
        // TLS carries ECDSA signatures in DER; RSA and Ed25519 have one encoding.
        self.key
            .sign(message, SignatureFormat::Der)
            .map(|s| s.bytes)
            .map_err(to_tls_error)
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Certificates from PEM (every `CERTIFICATE` block, in order) or from one
/// DER certificate.
///
/// # Errors
/// [`ErrorKind::InvalidInput`](keystore_api::ErrorKind::InvalidInput) for PEM that does not parse or holds no
/// certificate, or empty input.
pub fn certificate_chain(pem_or_der: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let trimmed = pem_or_der.trim_ascii_start();
    if trimmed.is_empty() {
        return Err(Error::invalid_input("no certificate: the input is empty"));
    }
    if !trimmed.starts_with(b"-----BEGIN") {
        return Ok(vec![CertificateDer::from(pem_or_der.to_vec())]);
    }
    let chain = CertificateDer::pem_slice_iter(pem_or_der)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid_input(format!("certificate PEM does not parse: {e}")))?;
    if chain.is_empty() {
        return Err(Error::invalid_input("the PEM holds no CERTIFICATE block"));
    }
    Ok(chain)
}

/// A rustls [`CertifiedKey`] from a certificate chain (leaf first) and a
/// keystore key, for a client's or a server's identity.
///
/// The leaf's SubjectPublicKeyInfo must be the public key of the version
/// that will sign: a pinned adapter's version, or for a following adapter
/// the version active now. The key placed in the `CertifiedKey` is pinned to
/// that version, so after a rotation the handshake fails at once with a
/// `KeyState` error (the source of a `rustls::Error::Other`) instead of
/// sending a signature the peer cannot verify under the certificate. Build
/// a new `CertifiedKey` when the certificate for the new version is
/// installed (a `ResolvesClientCert`/`ResolvesServerCert` can do so per
/// handshake with a following adapter). rustls'
/// [`CertifiedKey::keys_match`] runs as a last check.
///
/// # Errors
/// [`ErrorKind::InvalidInput`](keystore_api::ErrorKind::InvalidInput) for an empty chain, a leaf that does not
/// parse, or a leaf whose public key is no version's of this key;
/// [`ErrorKind::KeyState`](keystore_api::ErrorKind::KeyState) when the leaf names another version of the key than
/// the one that signs (a certificate not yet renewed after a rotation, or
/// issued for an older version), or the key has no active version;
/// [`ErrorKind::Integrity`](keystore_api::ErrorKind::Integrity) when rustls' own check finds the keys differ;
/// otherwise the errors of [`Keystore::info`](keystore_api::Keystore::info).
pub fn certified_key<K, Ks>(
    chain: Vec<CertificateDer<'static>>,
    key: &KeystoreSigningKey<K>,
) -> Result<CertifiedKey>
where
    K: Deref<Target = Ks> + Clone + Send + Sync + 'static,
    Ks: SigningKeystore + ?Sized + 'static,
{
    let leaf = chain
        .first()
        .ok_or_else(|| Error::invalid_input("the certificate chain is empty"))?;
    let leaf_spki = rustls::server::ParsedCertificate::try_from(leaf)
        .map_err(|e| Error::invalid_input(format!("the leaf certificate does not parse: {e}")))?
        .subject_public_key_info()
        .as_ref()
        .to_vec();
    let name = key.name();
    let info = key.keystore().info(name)?;
    let signing = match key.mode() {
        Mode::Pinned(v) => v,
        Mode::Follow => active_version(&info)?.version,
    };
    let named = info
        .versions
        .iter()
        .find(|v| {
            v.public_key
                .as_ref()
                .is_some_and(|pk| pk.spki_der() == leaf_spki.as_slice())
        })
        .ok_or_else(|| {
            Error::invalid_input(format!(
                "the leaf certificate's public key is not a key of '{name}'"
            ))
            .with_key(name)
        })?;
    if named.version != signing {
        return Err(Error::key_state(format!(
            "the leaf certificate names version {} of key '{name}', but version {signing} signs; \
             install the certificate issued for version {signing}",
            named.version
        ))
        .with_key(name)
        .with_version(named.version));
    }
    let pinned = match key.mode() {
        Mode::Pinned(_) => key.clone(),
        Mode::Follow => KeystoreSigningKey::from_info(
            key.ks.clone(),
            &info,
            named,
            Mode::Pinned(named.version),
        )?,
    };
    let certified = CertifiedKey::new(chain, Arc::new(pinned));
    certified.keys_match().map_err(|e| {
        Error::integrity(format!(
            "rustls finds the certificate and key '{name}' do not match: {e}"
        ))
        .with_key(name)
    })?;
    Ok(certified)
}
