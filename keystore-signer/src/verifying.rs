//! The verifying key [`signature::Keypair`] gives: the reference version's
//! public key as the RustCrypto type of its algorithm.

use keystore_api::{Algorithm, Error, PublicKey, Result};
use sha2::Sha256;
use signature::Verifier;

/// A keystore key's public key as a RustCrypto verifying key (from the
/// `p256`, `p384`, `ed25519-dalek` and `rsa` crates: an implementation
/// independent of every backend), the [`Keypair::VerifyingKey`](signature::Keypair::VerifyingKey)
/// of [`KeystoreSigningKey`](crate::KeystoreSigningKey).
///
/// It verifies the signature types of its algorithm through
/// [`signature::Verifier`]; a signature of another algorithm's type does not
/// verify.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum VerifyingKey {
    /// An `ecdsa-p256-sha256` key: verifies [`p256::ecdsa::Signature`] and
    /// [`p256::ecdsa::DerSignature`].
    EcdsaP256(p256::ecdsa::VerifyingKey),
    /// An `ecdsa-p384-sha384` key: verifies [`p384::ecdsa::Signature`] and
    /// [`p384::ecdsa::DerSignature`].
    EcdsaP384(p384::ecdsa::VerifyingKey),
    /// An `ed25519` key: verifies [`ed25519_dalek::Signature`] strictly
    /// (RFC 8032; small-order keys and non-canonical signatures refused, as
    /// the keystore's own verification does).
    Ed25519(ed25519_dalek::VerifyingKey),
    /// An `rsa-*-pss-sha256` key (salt length 32): verifies [`rsa::pss::Signature`].
    RsaPss(rsa::pss::VerifyingKey<Sha256>),
    /// An `rsa-*-pkcs1-sha256` key: verifies [`rsa::pkcs1v15::Signature`].
    RsaPkcs1v15(rsa::pkcs1v15::VerifyingKey<Sha256>),
}

impl VerifyingKey {
    /// The verifying key for a keystore public key.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](keystore_api::ErrorKind::InvalidInput) when the SPKI does not parse as a key of
    /// its algorithm; [`ErrorKind::Unsupported`](keystore_api::ErrorKind::Unsupported) for an algorithm without
    /// signatures (symmetric, `ecdh-p256`) and for `ml-dsa-65`, which the
    /// adapter does not take.
    pub fn from_public_key(pk: &PublicKey) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::invalid_input(format!(
                "public key is not a valid {} SPKI: {e}",
                pk.algorithm()
            ))
        };
        match pk.algorithm() {
            Algorithm::EcdsaP256Sha256 => {
                use p256::pkcs8::DecodePublicKey;
                p256::ecdsa::VerifyingKey::from_public_key_der(pk.spki_der())
                    .map(VerifyingKey::EcdsaP256)
                    .map_err(|e| bad(&e))
            }
            Algorithm::EcdsaP384Sha384 => {
                use p384::pkcs8::DecodePublicKey;
                p384::ecdsa::VerifyingKey::from_public_key_der(pk.spki_der())
                    .map(VerifyingKey::EcdsaP384)
                    .map_err(|e| bad(&e))
            }
            Algorithm::Ed25519 => {
                use ed25519_dalek::pkcs8::DecodePublicKey;
                ed25519_dalek::VerifyingKey::from_public_key_der(pk.spki_der())
                    .map(VerifyingKey::Ed25519)
                    .map_err(|e| bad(&e))
            }
            alg if alg.rsa_bits().is_some() => {
                use rsa::pkcs8::DecodePublicKey;
                let key =
                    rsa::RsaPublicKey::from_public_key_der(pk.spki_der()).map_err(|e| bad(&e))?;
                Ok(if alg.is_rsa_pss() {
                    VerifyingKey::RsaPss(rsa::pss::VerifyingKey::new(key))
                } else {
                    VerifyingKey::RsaPkcs1v15(rsa::pkcs1v15::VerifyingKey::new(key))
                })
            }
            alg => Err(Error::unsupported(format!(
                "{alg} keys have no verifying key"
            ))),
        }
    }

    /// The P-256 key, for an `ecdsa-p256-sha256` key.
    pub fn as_ecdsa_p256(&self) -> Option<&p256::ecdsa::VerifyingKey> {
        match self {
            VerifyingKey::EcdsaP256(k) => Some(k),
            _ => None,
        }
    }

    /// The P-384 key, for an `ecdsa-p384-sha384` key.
    pub fn as_ecdsa_p384(&self) -> Option<&p384::ecdsa::VerifyingKey> {
        match self {
            VerifyingKey::EcdsaP384(k) => Some(k),
            _ => None,
        }
    }

    /// The Ed25519 key, for an `ed25519` key.
    pub fn as_ed25519(&self) -> Option<&ed25519_dalek::VerifyingKey> {
        match self {
            VerifyingKey::Ed25519(k) => Some(k),
            _ => None,
        }
    }

    /// The RSA-PSS key, for an `rsa-*-pss-sha256` key.
    pub fn as_rsa_pss(&self) -> Option<&rsa::pss::VerifyingKey<Sha256>> {
        match self {
            VerifyingKey::RsaPss(k) => Some(k),
            _ => None,
        }
    }

    /// The RSA PKCS#1 v1.5 key, for an `rsa-*-pkcs1-sha256` key.
    pub fn as_rsa_pkcs1v15(&self) -> Option<&rsa::pkcs1v15::VerifyingKey<Sha256>> {
        match self {
            VerifyingKey::RsaPkcs1v15(k) => Some(k),
            _ => None,
        }
    }
}

impl Verifier<p256::ecdsa::Signature> for VerifyingKey {
    fn verify(&self, msg: &[u8], signature: &p256::ecdsa::Signature) -> signature::Result<()> {
        match self {
            VerifyingKey::EcdsaP256(k) => k.verify(msg, signature),
            _ => Err(signature::Error::new()),
        }
    }
}

impl Verifier<p256::ecdsa::DerSignature> for VerifyingKey {
    fn verify(&self, msg: &[u8], signature: &p256::ecdsa::DerSignature) -> signature::Result<()> {
        match self {
            VerifyingKey::EcdsaP256(k) => k.verify(msg, signature),
            _ => Err(signature::Error::new()),
        }
    }
}

impl Verifier<p384::ecdsa::Signature> for VerifyingKey {
    fn verify(&self, msg: &[u8], signature: &p384::ecdsa::Signature) -> signature::Result<()> {
        match self {
            VerifyingKey::EcdsaP384(k) => k.verify(msg, signature),
            _ => Err(signature::Error::new()),
        }
    }
}

impl Verifier<p384::ecdsa::DerSignature> for VerifyingKey {
    fn verify(&self, msg: &[u8], signature: &p384::ecdsa::DerSignature) -> signature::Result<()> {
        match self {
            VerifyingKey::EcdsaP384(k) => k.verify(msg, signature),
            _ => Err(signature::Error::new()),
        }
    }
}

impl Verifier<ed25519_dalek::Signature> for VerifyingKey {
    fn verify(&self, msg: &[u8], signature: &ed25519_dalek::Signature) -> signature::Result<()> {
        match self {
            VerifyingKey::Ed25519(k) => k.verify_strict(msg, signature),
            _ => Err(signature::Error::new()),
        }
    }
}

impl Verifier<rsa::pss::Signature> for VerifyingKey {
    fn verify(&self, msg: &[u8], signature: &rsa::pss::Signature) -> signature::Result<()> {
        match self {
            VerifyingKey::RsaPss(k) => k.verify(msg, signature),
            _ => Err(signature::Error::new()),
        }
    }
}

impl Verifier<rsa::pkcs1v15::Signature> for VerifyingKey {
    fn verify(&self, msg: &[u8], signature: &rsa::pkcs1v15::Signature) -> signature::Result<()> {
        match self {
            VerifyingKey::RsaPkcs1v15(k) => k.verify(msg, signature),
            _ => Err(signature::Error::new()),
        }
    }
}

impl spki::EncodePublicKey for VerifyingKey {
    fn to_public_key_der(&self) -> spki::Result<spki::Document> {
        match self {
            VerifyingKey::EcdsaP256(k) => k.to_public_key_der(),
            VerifyingKey::EcdsaP384(k) => k.to_public_key_der(),
            VerifyingKey::Ed25519(k) => k.to_public_key_der(),
            VerifyingKey::RsaPss(k) => k.to_public_key_der(),
            VerifyingKey::RsaPkcs1v15(k) => k.to_public_key_der(),
        }
    }
}
