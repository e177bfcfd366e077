//! Public keys (SPKI DER), fingerprints and host-side signature verification.
//!
//! Verification is a public-key operation, so it runs on the host, never in
//! the backend that signed: with the RustCrypto crates (`p256`, `p384`,
//! `ed25519-dalek`, `rsa`), and ML-DSA-65 with aws-lc-rs when feature
//! `aws-lc` is on (RustCrypto's `ml-dsa` otherwise).
//! (RUSTSEC-2023-0071 concerns the `rsa` crate's private-key operations only.)

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use base64::Engine;
use sha2::{Digest, Sha256};

/// A public key as a DER `SubjectPublicKeyInfo`, with its algorithm.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: Algorithm,
    spki_der: Vec<u8>,
}

impl PublicKey {
    /// Wraps an SPKI DER encoding. Checks that it parses as a key of `algorithm`.
    pub fn from_spki_der(algorithm: Algorithm, spki_der: Vec<u8>) -> Result<Self> {
        let pk = PublicKey {
            algorithm,
            spki_der,
        };
        pk.check()?;
        Ok(pk)
    }

    fn check(&self) -> Result<()> {
        use p256::pkcs8::DecodePublicKey;
        let bad = |what: &str| {
            Error::invalid_input(format!(
                "public key is not a valid {} SPKI: {what}",
                self.algorithm
            ))
        };
        match self.algorithm {
            Algorithm::EcdsaP256Sha256 => {
                p256::ecdsa::VerifyingKey::from_public_key_der(&self.spki_der)
                    .map_err(|e| bad(&e.to_string()))?;
            }
            Algorithm::EcdhP256 => {
                p256::PublicKey::from_public_key_der(&self.spki_der)
                    .map_err(|e| bad(&e.to_string()))?;
            }
            Algorithm::EcdsaP384Sha384 => {
                p384::ecdsa::VerifyingKey::from_public_key_der(&self.spki_der)
                    .map_err(|e| bad(&e.to_string()))?;
            }
            Algorithm::Ed25519 => {
                ed25519_key(&self.spki_der).ok_or_else(|| bad("not an Ed25519 key"))?;
            }
            Algorithm::MlDsa65 => {
                // Every 1,952-byte string encodes a public key (rho and packed
                // t1 coefficients of 10 bits each), so the prefix and the
                // length are the whole check; decoding would expand the matrix.
                let raw = self
                    .spki_der
                    .strip_prefix(&ML_DSA_65_SPKI_PREFIX[..])
                    .ok_or_else(|| bad("not an ML-DSA-65 SubjectPublicKeyInfo"))?;
                if raw.len() != 1952 {
                    return Err(bad("an ML-DSA-65 public key is 1,952 bytes"));
                }
            }
            alg if alg.rsa_bits().is_some() => {
                use rsa::traits::PublicKeyParts;
                let k = rsa::RsaPublicKey::from_public_key_der(&self.spki_der)
                    .map_err(|e| bad(&e.to_string()))?;
                if Some(k.n().bits()) != alg.rsa_bits() {
                    return Err(bad("wrong modulus size"));
                }
            }
            _ => return Err(bad("symmetric algorithms have no public key")),
        }
        Ok(())
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The DER `SubjectPublicKeyInfo`.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// `sha256:` followed by the hex SHA-256 of the SPKI DER.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(&self.spki_der)))
    }

    /// PEM (`-----BEGIN PUBLIC KEY-----`), readable by OpenSSL.
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki_der);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// Verifies `signature` over `message`. ECDSA signatures are accepted in
    /// DER or fixed `r‖s` form; Ed25519 is verified strictly (RFC 8032, no
    /// small-order keys); ML-DSA-65 with an empty context (FIPS 204). A
    /// signature that does not verify is
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity), and so is any
    /// signature for a key that does not sign (`ecdh-p256`).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        let fail = || Error::integrity("signature does not verify");
        match self.algorithm {
            Algorithm::EcdsaP256Sha256 => {
                use p256::ecdsa::signature::Verifier;
                use p256::pkcs8::DecodePublicKey;
                let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&self.spki_der)
                    .map_err(|_| fail())?;
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p256::ecdsa::Signature::from_slice(signature))
                    .map_err(|_| fail())?;
                vk.verify(message, &sig).map_err(|_| fail())
            }
            Algorithm::EcdsaP384Sha384 => {
                use p384::ecdsa::signature::Verifier;
                use p384::pkcs8::DecodePublicKey;
                let vk = p384::ecdsa::VerifyingKey::from_public_key_der(&self.spki_der)
                    .map_err(|_| fail())?;
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p384::ecdsa::Signature::from_slice(signature))
                    .map_err(|_| fail())?;
                vk.verify(message, &sig).map_err(|_| fail())
            }
            Algorithm::Ed25519 => {
                let vk = ed25519_key(&self.spki_der).ok_or_else(fail)?;
                let sig = ed25519_dalek::Signature::from_slice(signature).map_err(|_| fail())?;
                vk.verify_strict(message, &sig).map_err(|_| fail())
            }
            Algorithm::MlDsa65 => verify_ml_dsa_65(&self.spki_der, message, signature)
                .then_some(())
                .ok_or_else(fail),
            alg if alg.rsa_bits().is_some() => {
                use rsa::pkcs8::DecodePublicKey;
                use rsa::signature::Verifier;
                let pk =
                    rsa::RsaPublicKey::from_public_key_der(&self.spki_der).map_err(|_| fail())?;
                if alg.is_rsa_pss() {
                    let vk = rsa::pss::VerifyingKey::<Sha256>::new(pk);
                    let sig = rsa::pss::Signature::try_from(signature).map_err(|_| fail())?;
                    vk.verify(message, &sig).map_err(|_| fail())
                } else {
                    let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(pk);
                    let sig = rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| fail())?;
                    vk.verify(message, &sig).map_err(|_| fail())
                }
            }
            _ => Err(fail()),
        }
    }
}

/// The DER prefix of an Ed25519 SPKI (RFC 8410): SEQUENCE, the algorithm
/// `1.3.101.112`, and the BIT STRING header of the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER prefix of an ML-DSA-65 SPKI (the IETF LAMPS X.509 profile): SEQUENCE, the algorithm
/// `2.16.840.1.101.3.4.3.18`, and the BIT STRING header of the 1,952-byte key.
const ML_DSA_65_SPKI_PREFIX: [u8; 22] = [
    0x30, 0x82, 0x07, 0xb2, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03,
    0x12, 0x03, 0x82, 0x07, 0xa1, 0x00,
];

fn ed25519_key(spki: &[u8]) -> Option<ed25519_dalek::VerifyingKey> {
    let raw = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    ed25519_dalek::VerifyingKey::from_bytes(raw.try_into().ok()?).ok()
}

/// ML-DSA-65 verification with an empty context: aws-lc-rs when compiled
/// in, else RustCrypto's `ml-dsa`.
#[cfg(feature = "aws-lc")]
fn verify_ml_dsa_65(spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use aws_lc_rs::signature::{UnparsedPublicKey, ML_DSA_65};
    let Some(raw) = spki.strip_prefix(&ML_DSA_65_SPKI_PREFIX[..]) else {
        return false;
    };
    UnparsedPublicKey::new(&ML_DSA_65, raw)
        .verify(message, signature)
        .is_ok()
}

/// ML-DSA-65 verification with an empty context: aws-lc-rs when compiled
/// in, else RustCrypto's `ml-dsa`.
#[cfg(not(feature = "aws-lc"))]
fn verify_ml_dsa_65(spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Some(vk) = ml_dsa_65_key(spki) else {
        return false;
    };
    ml_dsa::Signature::<ml_dsa::MlDsa65>::try_from(signature)
        .map(|sig| vk.verify_with_context(message, &[], &sig))
        .unwrap_or(false)
}

#[cfg(not(feature = "aws-lc"))]
fn ml_dsa_65_key(spki: &[u8]) -> Option<ml_dsa::VerifyingKey<ml_dsa::MlDsa65>> {
    let raw = spki.strip_prefix(&ML_DSA_65_SPKI_PREFIX[..])?;
    let encoded = ml_dsa::EncodedVerifyingKey::<ml_dsa::MlDsa65>::try_from(raw).ok()?;
    Some(ml_dsa::VerifyingKey::decode(&encoded))
}

/// The SPKI DER of a raw Ed25519 public key (32 bytes), as PKCS#11 tokens
/// and other devices return it.
pub fn ed25519_spki(raw: &[u8; 32]) -> Vec<u8> {
    let mut out = ED25519_SPKI_PREFIX.to_vec();
    out.extend_from_slice(raw);
    out
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ML-DSA-65 signature made by RustCrypto's `ml-dsa` verifies through
    /// whichever verifier is compiled in (aws-lc-rs or `ml-dsa`), and a
    /// changed message or signature does not.
    #[test]
    fn ml_dsa_65_interoperates() {
        let seed = ml_dsa::Seed::from([7u8; 32]);
        let sk = ml_dsa::ExpandedSigningKey::<ml_dsa::MlDsa65>::from_seed(&seed);
        let mut spki = ML_DSA_65_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&sk.verifying_key().encode());
        for bad in [&spki[..spki.len() - 1], &spki[1..]] {
            assert!(PublicKey::from_spki_der(Algorithm::MlDsa65, bad.to_vec()).is_err());
        }
        let pk = PublicKey::from_spki_der(Algorithm::MlDsa65, spki).expect("valid SPKI");
        let sig = sk
            .sign_deterministic(b"firmware", &[])
            .expect("sign")
            .encode();
        assert_eq!(sig.len(), 3309);
        pk.verify(b"firmware", &sig).expect("verifies");
        assert!(pk.verify(b"firmwarf", &sig).is_err());
        let mut bad = sig.to_vec();
        bad[100] ^= 1;
        assert!(pk.verify(b"firmware", &bad).is_err());
        assert!(pk.verify(b"firmware", &sig[..3308]).is_err());
    }
}
