//! Public keys (SPKI DER), fingerprints and host-side signature verification.
//!
//! Verification is a public-key operation, so it runs on the host with the
//! RustCrypto `p256` and `rsa` crates, never in the backend that signed.
//! (RUSTSEC-2023-0071 concerns the `rsa` crate's private-key operations only.)

use crate::algorithm::{Algorithm, KeyClass};
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
            alg if alg.class() == KeyClass::Asymmetric => {
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
    /// DER or fixed `r‖s` form. A signature that does not verify is
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity).
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
            alg => {
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
        }
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}
