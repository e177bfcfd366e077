//! The aws-lc-rs provider: fast, constant-time (RSA included), FIPS-capable
//! through aws-lc-rs's `fips` feature. Private and secret material lives in
//! aws-lc-rs objects (which cleanse on free) or in zeroizing buffers, and is
//! never returned.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, PqdsaKeyPair, RsaEncoding, RsaKeyPair,
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, ML_DSA_65_SIGNING,
    RSA_PKCS1_SHA256, RSA_PSS_SHA256,
};
use aws_lc_rs::{aead, agreement, hmac, rsa::KeySize};
use keystore_backend::agreement::{one_step_kdf_sha256, PeerPublicKey};
use keystore_backend::{AeadSealed, Algorithm, Component, Error, PublicKey, Result, SecretBytes};
use zeroize::Zeroizing;

/// A usable key, parsed from its sealed record. Lives behind an `Arc` in the
/// cache, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Key {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    MlDsa(PqdsaKeyPair),
    Ecdh(agreement::PrivateKey),
    Rsa(RsaKeyPair),
    Aes(aead::LessSafeKey),
    Hmac(hmac::Key),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Key::Ecdsa(_) => "Material::Ecdsa([REDACTED])",
            Key::Ed25519(_) => "Material::Ed25519([REDACTED])",
            Key::MlDsa(_) => "Material::MlDsa([REDACTED])",
            Key::Ecdh(_) => "Material::Ecdh([REDACTED])",
            Key::Rsa(_) => "Material::Rsa([REDACTED])",
            Key::Aes(_) => "Material::Aes([REDACTED])",
            Key::Hmac(_) => "Material::Hmac([REDACTED])",
        })
    }
}

fn crypto_err(what: &str) -> Error {
    Error::backend_msg(Component::Soft, what.to_string())
}

/// Generates fresh material for `alg` with the OS RNG and returns its
/// serialisation for sealing (PKCS#8 DER for private keys, raw bytes for
/// secrets).
pub(crate) fn generate(alg: Algorithm) -> Result<SecretBytes> {
    let serialise = |what: &str| crypto_err(&format!("{what} key serialisation failed"));
    match alg {
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => {
            let kp = EcdsaKeyPair::generate(ecdsa_signing(alg))
                .map_err(|_| crypto_err("ECDSA key generation failed"))?;
            let doc = kp.to_pkcs8v1().map_err(|_| serialise("ECDSA"))?;
            Ok(SecretBytes::from_slice(doc.as_ref()))
        }
        Algorithm::Ed25519 => {
            let kp = Ed25519KeyPair::generate()
                .map_err(|_| crypto_err("Ed25519 key generation failed"))?;
            let doc = kp.to_pkcs8v1().map_err(|_| serialise("Ed25519"))?;
            Ok(SecretBytes::from_slice(doc.as_ref()))
        }
        Algorithm::MlDsa65 => {
            let kp = PqdsaKeyPair::generate(&ML_DSA_65_SIGNING)
                .map_err(|_| crypto_err("ML-DSA-65 key generation failed"))?;
            let doc = kp.to_pkcs8v1().map_err(|_| serialise("ML-DSA-65"))?;
            Ok(SecretBytes::from_slice(doc.as_ref()))
        }
        Algorithm::EcdhP256 => {
            let k = agreement::PrivateKey::generate(&agreement::ECDH_P256)
                .map_err(|_| crypto_err("ECDH P-256 key generation failed"))?;
            let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k)
                .map_err(|_| serialise("ECDH"))?;
            Ok(SecretBytes::from_slice(der.as_ref()))
        }
        Algorithm::Aes256Gcm | Algorithm::HmacSha256 => {
            let mut s = SecretBytes::zeroed(32);
            crate::random(s.expose_mut())?;
            Ok(s)
        }
        rsa => {
            let size = match rsa.rsa_bits() {
                Some(2048) => KeySize::Rsa2048,
                _ => KeySize::Rsa3072,
            };
            let kp =
                RsaKeyPair::generate(size).map_err(|_| crypto_err("RSA key generation failed"))?;
            let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp)
                .map_err(|_| crypto_err("RSA key serialisation failed"))?;
            Ok(SecretBytes::from_slice(der.as_ref()))
        }
    }
}

/// Parses sealed-record plaintext into usable material. Failure means the
/// record is damaged ([`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity)).
pub(crate) fn parse(alg: Algorithm, bytes: &SecretBytes) -> Result<Key> {
    let bad = || Error::integrity(format!("soft record does not hold a valid {alg} key"));
    match alg {
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => {
            EcdsaKeyPair::from_pkcs8(ecdsa_signing(alg), bytes.expose())
                .map(Key::Ecdsa)
                .map_err(|_| bad())
        }
        Algorithm::Ed25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes.expose())
            .map(Key::Ed25519)
            .map_err(|_| bad()),
        Algorithm::MlDsa65 => PqdsaKeyPair::from_pkcs8(&ML_DSA_65_SIGNING, bytes.expose())
            .map(Key::MlDsa)
            .map_err(|_| bad()),
        Algorithm::EcdhP256 => {
            agreement::PrivateKey::from_private_key_der(&agreement::ECDH_P256, bytes.expose())
                .map(Key::Ecdh)
                .map_err(|_| bad())
        }
        Algorithm::Aes256Gcm => aead::UnboundKey::new(&aead::AES_256_GCM, bytes.expose())
            .map(|k| Key::Aes(aead::LessSafeKey::new(k)))
            .map_err(|_| bad()),
        Algorithm::HmacSha256 => {
            if bytes.len() != 32 {
                return Err(bad());
            }
            Ok(Key::Hmac(hmac::Key::new(hmac::HMAC_SHA256, bytes.expose())))
        }
        rsa => {
            let kp = RsaKeyPair::from_pkcs8(bytes.expose()).map_err(|_| bad())?;
            if Some(kp.public_modulus_len() * 8) != rsa.rsa_bits() {
                return Err(bad());
            }
            Ok(Key::Rsa(kp))
        }
    }
}

fn ecdsa_signing(alg: Algorithm) -> &'static aws_lc_rs::signature::EcdsaSigningAlgorithm {
    if alg == Algorithm::EcdsaP384Sha384 {
        &ECDSA_P384_SHA384_FIXED_SIGNING
    } else {
        &ECDSA_P256_SHA256_FIXED_SIGNING
    }
}

impl Key {
    fn mismatch(&self, op: &str) -> Error {
        Error::policy(format!("{op} is not an operation of this key's algorithm"))
    }

    /// The public key, for private keys.
    pub(crate) fn public_key(&self, alg: Algorithm) -> Result<PublicKey> {
        let der = match self {
            Key::Ecdsa(kp) => kp
                .public_key()
                .as_der()
                .map_err(|_| crypto_err("public key encoding failed"))?
                .as_ref()
                .to_vec(),
            Key::Rsa(kp) => kp
                .public_key()
                .as_der()
                .map_err(|_| crypto_err("public key encoding failed"))?
                .as_ref()
                .to_vec(),
            Key::Ed25519(kp) => kp
                .public_key()
                .as_der()
                .map_err(|_| crypto_err("public key encoding failed"))?
                .as_ref()
                .to_vec(),
            Key::MlDsa(kp) => kp
                .public_key()
                .as_der()
                .map_err(|_| crypto_err("public key encoding failed"))?
                .as_ref()
                .to_vec(),
            Key::Ecdh(k) => k
                .compute_public_key()
                .and_then(|pk| pk.as_der())
                .map_err(|_| crypto_err("public key encoding failed"))?
                .as_ref()
                .to_vec(),
            _ => return Err(Error::policy(format!("{alg} keys have no public key"))),
        };
        PublicKey::from_spki_der(alg, der)
    }

    /// Signs `message`: ECDSA as fixed `r‖s`, RSA in the key's fixed scheme.
    pub(crate) fn sign(&self, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>> {
        let rng = SystemRandom::new();
        match self {
            Key::Ecdsa(kp) => kp
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| crypto_err("ECDSA signing failed")),
            Key::Ed25519(kp) => kp
                .try_sign(message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| crypto_err("Ed25519 signing failed")),
            Key::MlDsa(kp) => {
                let mut sig = vec![0u8; ML_DSA_65_SIGNING.signature_len()];
                let n = kp
                    .sign(message, &mut sig)
                    .map_err(|_| crypto_err("ML-DSA-65 signing failed"))?;
                sig.truncate(n);
                Ok(sig)
            }
            Key::Rsa(kp) => {
                let scheme: &'static dyn RsaEncoding = if alg.is_rsa_pss() {
                    &RSA_PSS_SHA256
                } else {
                    &RSA_PKCS1_SHA256
                };
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(scheme, &rng, message, &mut sig)
                    .map_err(|_| crypto_err("RSA signing failed"))?;
                Ok(sig)
            }
            _ => Err(self.mismatch("sign")),
        }
    }

    /// ECDH with `peer`, then the one-step KDF; the shared secret stays in
    /// aws-lc-rs's zeroizing buffer.
    pub(crate) fn agree_sha256_kdf(
        &self,
        peer: &PeerPublicKey,
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        let Key::Ecdh(k) = self else {
            return Err(self.mismatch("key agreement"));
        };
        let peer =
            agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, peer.uncompressed_point());
        agreement::agree(
            k,
            peer,
            Error::invalid_input("the peer public key was refused by ECDH"),
            |z| one_step_kdf_sha256(z, fixed_info, len),
        )
    }

    /// HMAC-SHA256 of `data`.
    pub(crate) fn hmac(&self, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        match self {
            Key::Hmac(k) => {
                let tag = hmac::sign(k, data);
                let mut out = Zeroizing::new([0u8; 32]);
                out.copy_from_slice(tag.as_ref());
                Ok(out)
            }
            _ => Err(self.mismatch("HMAC")),
        }
    }

    /// AES-256-GCM under a fresh random nonce.
    pub(crate) fn encrypt(&self, aad: &[u8], plaintext: &[u8]) -> Result<AeadSealed> {
        let Key::Aes(k) = self else {
            return Err(self.mismatch("encrypt"));
        };
        let mut nonce = [0u8; 12];
        crate::random(&mut nonce)?;
        let mut buf = Vec::with_capacity(plaintext.len() + 16);
        buf.extend_from_slice(plaintext);
        k.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| crypto_err("AES-GCM encryption failed"))?;
        Ok(AeadSealed {
            nonce,
            ciphertext: buf,
        })
    }

    /// AES-256-GCM decryption; any mismatch is [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity).
    pub(crate) fn decrypt(
        &self,
        aad: &[u8],
        nonce: &[u8; 12],
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        let Key::Aes(k) = self else {
            return Err(self.mismatch("decrypt"));
        };
        if ciphertext.len() < 16 {
            return Err(Error::integrity("ciphertext is shorter than its tag"));
        }
        let mut buf = SecretBytes::from_slice(ciphertext);
        let n = k
            .open_in_place(
                aead::Nonce::assume_unique_for_key(*nonce),
                aead::Aad::from(aad),
                buf.expose_mut(),
            )
            .map_err(|_| Error::integrity("AES-GCM authentication failed"))?
            .len();
        Ok(SecretBytes::from_slice(&buf.expose()[..n]))
    }
}
