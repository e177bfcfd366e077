//! RustCrypto's [`signature::Signer`] and [`signature::Keypair`]: ECDSA
//! P-256 and P-384 in fixed and DER form, Ed25519, RSA-PSS and RSA PKCS#1
//! v1.5, each only for a key of its algorithm.

use crate::key::KeystoreSigningKey;
use crate::verifying::VerifyingKey;
use crate::SigningKeystore;
use keystore_api::{Algorithm, Error, SignatureFormat};
use std::ops::Deref;

/// A keystore error as a `signature::Error`, the keystore error its source.
fn to_signature_error(e: Error) -> signature::Error {
    signature::Error::from_source(e)
}

impl<K, Ks> KeystoreSigningKey<K>
where
    K: Deref<Target = Ks>,
    Ks: SigningKeystore + ?Sized,
{
    /// Signs for a RustCrypto signature type: checks the key's algorithm
    /// with `fits`, signs, and decodes the bytes with `decode`.
    fn try_sign_as<S>(
        &self,
        message: &[u8],
        what: &str,
        fits: fn(Algorithm) -> bool,
        format: SignatureFormat,
        decode: fn(&[u8]) -> signature::Result<S>,
    ) -> signature::Result<S> {
        if !fits(self.algorithm) {
            return Err(to_signature_error(self.wrong_algorithm(what)));
        }
        let sig = self.sign(message, format).map_err(to_signature_error)?;
        decode(&sig.bytes).map_err(|_| {
            to_signature_error(
                Error::backend_msg(
                    keystore_api::Component::Keystore,
                    format!("the keystore returned a malformed {what} signature"),
                )
                .with_key(&self.name)
                .with_version(sig.version),
            )
        })
    }
}

fn is_ecdsa_p256(a: Algorithm) -> bool {
    a == Algorithm::EcdsaP256Sha256
}

fn is_ecdsa_p384(a: Algorithm) -> bool {
    a == Algorithm::EcdsaP384Sha384
}

fn is_ed25519(a: Algorithm) -> bool {
    a == Algorithm::Ed25519
}

fn is_rsa_pss(a: Algorithm) -> bool {
    a.rsa_bits().is_some() && a.is_rsa_pss()
}

fn is_rsa_pkcs1(a: Algorithm) -> bool {
    a.rsa_bits().is_some() && !a.is_rsa_pss()
}

/// ECDSA P-256 with SHA-256, fixed `r‖s`.
///
/// # Errors
/// `signature::Error` whose source is the keystore [`Error`]: `Unsupported`
/// for a key of another algorithm, otherwise those of
/// [`KeystoreSigningKey::sign`].
impl<K, Ks> signature::Signer<p256::ecdsa::Signature> for KeystoreSigningKey<K>
where
    K: Deref<Target = Ks>,
    Ks: SigningKeystore + ?Sized,
{
    fn try_sign(&self, msg: &[u8]) -> signature::Result<p256::ecdsa::Signature> {
        self.try_sign_as(
            msg,
            "ECDSA P-256",
            is_ecdsa_p256,
            SignatureFormat::Fixed,
            p256::ecdsa::Signature::from_slice,
        )
    }
}

/// ECDSA P-256 with SHA-256, ASN.1 DER.
///
/// # Errors
/// As for [`p256::ecdsa::Signature`].
impl<K, Ks> signature::Signer<p256::ecdsa::DerSignature> for KeystoreSigningKey<K>
where
    K: Deref<Target = Ks>,
    Ks: SigningKeystore + ?Sized,
{
    fn try_sign(&self, msg: &[u8]) -> signature::Result<p256::ecdsa::DerSignature> {
        self.try_sign_as(
            msg,
            "ECDSA P-256",
            is_ecdsa_p256,
            SignatureFormat::Der,
            p256::ecdsa::DerSignature::from_bytes,
        )
    }
}

/// ECDSA P-384 with SHA-384, fixed `r‖s` (96 bytes).
///
/// # Errors
/// As for [`p256::ecdsa::Signature`].
impl<K, Ks> signature::Signer<p384::ecdsa::Signature> for KeystoreSigningKey<K>
where
    K: Deref<Target = Ks>,
    Ks: SigningKeystore + ?Sized,
{
    fn try_sign(&self, msg: &[u8]) -> signature::Result<p384::ecdsa::Signature> {
        self.try_sign_as(
            msg,
            "ECDSA P-384",
            is_ecdsa_p384,
            SignatureFormat::Fixed,
            p384::ecdsa::Signature::from_slice,
        )
    }
}

/// ECDSA P-384 with SHA-384, ASN.1 DER.
///
/// # Errors
/// As for [`p256::ecdsa::Signature`].
impl<K, Ks> signature::Signer<p384::ecdsa::DerSignature> for KeystoreSigningKey<K>
where
    K: Deref<Target = Ks>,
    Ks: SigningKeystore + ?Sized,
{
    fn try_sign(&self, msg: &[u8]) -> signature::Result<p384::ecdsa::DerSignature> {
        self.try_sign_as(
            msg,
            "ECDSA P-384",
            is_ecdsa_p384,
            SignatureFormat::Der,
            p384::ecdsa::DerSignature::from_bytes,
        )
    }
}

/// Ed25519 (RFC 8032, pure EdDSA over the whole message): the `ed25519`
/// crate's signature, which `ed25519_dalek::Signature` re-exports.
///
/// # Errors
/// As for [`p256::ecdsa::Signature`].
impl<K, Ks> signature::Signer<ed25519_dalek::Signature> for KeystoreSigningKey<K>
where
    K: Deref<Target = Ks>,
    Ks: SigningKeystore + ?Sized,
{
    fn try_sign(&self, msg: &[u8]) -> signature::Result<ed25519_dalek::Signature> {
        self.try_sign_as(
            msg,
            "Ed25519",
            is_ed25519,
            SignatureFormat::Der,
            ed25519_dalek::Signature::from_slice,
        )
    }
}

/// RSASSA-PSS with SHA-256 (MGF1-SHA256, salt length 32), for `rsa-*-pss-sha256` keys.
///
/// # Errors
/// As for [`p256::ecdsa::Signature`].
impl<K, Ks> signature::Signer<rsa::pss::Signature> for KeystoreSigningKey<K>
where
    K: Deref<Target = Ks>,
    Ks: SigningKeystore + ?Sized,
{
    fn try_sign(&self, msg: &[u8]) -> signature::Result<rsa::pss::Signature> {
        self.try_sign_as(msg, "RSA-PSS", is_rsa_pss, SignatureFormat::Der, |b| {
            rsa::pss::Signature::try_from(b)
        })
    }
}

/// RSASSA-PKCS1-v1_5 with SHA-256, for `rsa-*-pkcs1-sha256` keys.
///
/// # Errors
/// As for [`p256::ecdsa::Signature`].
impl<K, Ks> signature::Signer<rsa::pkcs1v15::Signature> for KeystoreSigningKey<K>
where
    K: Deref<Target = Ks>,
    Ks: SigningKeystore + ?Sized,
{
    fn try_sign(&self, msg: &[u8]) -> signature::Result<rsa::pkcs1v15::Signature> {
        self.try_sign_as(
            msg,
            "RSA PKCS#1 v1.5",
            is_rsa_pkcs1,
            SignatureFormat::Der,
            |b| rsa::pkcs1v15::Signature::try_from(b),
        )
    }
}

/// The reference version's public key (see [`KeystoreSigningKey`]'s
/// "Versions": a following adapter's later signatures may come from a newer
/// version).
impl<K> signature::Keypair for KeystoreSigningKey<K> {
    type VerifyingKey = VerifyingKey;

    fn verifying_key(&self) -> VerifyingKey {
        self.verifying_key.clone()
    }
}
