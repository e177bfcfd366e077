//! The RustCrypto provider: pure Rust, for targets without a C toolchain.
//! ECDSA P-256 (`p256`, deterministic RFC 6979 nonces), AES-256-GCM
//! (`aes-gcm`) and HMAC-SHA256 (`hmac`). RSA is deliberately absent: the
//! `rsa` crate's private-key operations are variable-time (RUSTSEC-2023-0071,
//! Marvin), so this provider answers RSA with `Error::Unsupported` rather
//! than sign with it.

use keystore_backend::{AeadSealed, Algorithm, Component, Error, PublicKey, Result, SecretBytes};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use zeroize::Zeroizing;

/// A usable key. `SigningKey` and `Aes256Gcm` zeroize themselves on drop.
pub(crate) enum Key {
    Ecdsa(Box<p256::ecdsa::SigningKey>),
    Aes(Box<aes_gcm::Aes256Gcm>),
    Hmac(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Key::Ecdsa(_) => "Material::Ecdsa([REDACTED])",
            Key::Aes(_) => "Material::Aes([REDACTED])",
            Key::Hmac(_) => "Material::Hmac([REDACTED])",
        })
    }
}

fn unsupported(alg: Algorithm) -> Error {
    if alg.rsa_bits().is_none() {
        return Error::unsupported(format!(
            "{alg}: the RustCrypto provider serves ecdsa-p256-sha256, aes-256-gcm and \
             hmac-sha256 only; use the aws-lc-rs provider"
        ));
    }
    Error::unsupported(format!(
        "{alg}: the RustCrypto provider does not sign with RSA (the rsa crate is variable-time, \
         RUSTSEC-2023-0071); use the aws-lc-rs provider"
    ))
}

/// Fresh material for `alg`, serialised as the aws-lc-rs provider does
/// (PKCS#8 for ECDSA, raw bytes for secrets), so records are interchangeable.
pub(crate) fn generate(alg: Algorithm) -> Result<SecretBytes> {
    match alg {
        Algorithm::EcdsaP256Sha256 => loop {
            let mut scalar = Zeroizing::new([0u8; 32]);
            crate::random(&mut scalar[..])?;
            // A uniformly random 256-bit string is a valid scalar except with
            // probability about 2^-32; draw again if not.
            if let Ok(sk) = p256::SecretKey::from_slice(&scalar[..]) {
                let doc = sk.to_pkcs8_der().map_err(|_| {
                    Error::backend_msg(Component::Soft, "ECDSA key serialisation failed")
                })?;
                return Ok(SecretBytes::from_slice(doc.as_bytes()));
            }
        },
        Algorithm::Aes256Gcm | Algorithm::HmacSha256 => {
            let mut s = SecretBytes::zeroed(32);
            crate::random(s.expose_mut())?;
            Ok(s)
        }
        rsa => Err(unsupported(rsa)),
    }
}

/// Parses record plaintext; failure means the record is damaged.
pub(crate) fn parse(alg: Algorithm, bytes: &SecretBytes) -> Result<Key> {
    let bad = || Error::integrity(format!("soft record does not hold a valid {alg} key"));
    match alg {
        Algorithm::EcdsaP256Sha256 => p256::SecretKey::from_pkcs8_der(bytes.expose())
            .map(|sk| Key::Ecdsa(Box::new(sk.into())))
            .map_err(|_| bad()),
        Algorithm::Aes256Gcm => {
            use aes_gcm::KeyInit;
            aes_gcm::Aes256Gcm::new_from_slice(bytes.expose())
                .map(|k| Key::Aes(Box::new(k)))
                .map_err(|_| bad())
        }
        Algorithm::HmacSha256 => {
            let mut k = Zeroizing::new([0u8; 32]);
            if bytes.len() != 32 {
                return Err(bad());
            }
            k.copy_from_slice(bytes.expose());
            Ok(Key::Hmac(k))
        }
        rsa => Err(unsupported(rsa)),
    }
}

impl Key {
    fn mismatch(&self, op: &str) -> Error {
        Error::policy(format!("{op} is not an operation of this key's algorithm"))
    }

    pub(crate) fn public_key(&self, alg: Algorithm) -> Result<PublicKey> {
        let Key::Ecdsa(sk) = self else {
            return Err(Error::policy(format!("{alg} keys have no public key")));
        };
        let der = sk
            .verifying_key()
            .to_public_key_der()
            .map_err(|_| Error::backend_msg(Component::Soft, "public key encoding failed"))?;
        PublicKey::from_spki_der(alg, der.as_bytes().to_vec())
    }

    pub(crate) fn sign(&self, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>> {
        use p256::ecdsa::signature::Signer;
        match self {
            Key::Ecdsa(sk) => {
                let sig: p256::ecdsa::Signature = sk
                    .try_sign(message)
                    .map_err(|_| Error::backend_msg(Component::Soft, "ECDSA signing failed"))?;
                Ok(sig.to_bytes().to_vec())
            }
            _ if alg.rsa_bits().is_some() => Err(unsupported(alg)),
            _ => Err(self.mismatch("sign")),
        }
    }

    pub(crate) fn agree_sha256_kdf(
        &self,
        _peer: &keystore_backend::PeerPublicKey,
        _fixed_info: &[u8],
        _len: usize,
    ) -> Result<SecretBytes> {
        Err(unsupported(Algorithm::EcdhP256))
    }

    pub(crate) fn hmac(&self, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        use hmac::Mac;
        let Key::Hmac(k) = self else {
            return Err(self.mismatch("HMAC"));
        };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&k[..])
            .map_err(|_| Error::backend_msg(Component::Soft, "HMAC rejected a 32-byte key"))?;
        mac.update(data);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&mac.finalize().into_bytes());
        Ok(out)
    }

    pub(crate) fn encrypt(&self, aad: &[u8], plaintext: &[u8]) -> Result<AeadSealed> {
        use aes_gcm::AeadInPlace;
        let Key::Aes(k) = self else {
            return Err(self.mismatch("encrypt"));
        };
        let mut nonce = [0u8; 12];
        crate::random(&mut nonce)?;
        let mut buf = Vec::with_capacity(plaintext.len() + 16);
        buf.extend_from_slice(plaintext);
        k.encrypt_in_place(&nonce.into(), aad, &mut buf)
            .map_err(|_| Error::backend_msg(Component::Soft, "AES-GCM encryption failed"))?;
        Ok(AeadSealed {
            nonce,
            ciphertext: buf,
        })
    }

    pub(crate) fn decrypt(
        &self,
        aad: &[u8],
        nonce: &[u8; 12],
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        use aes_gcm::AeadInPlace;
        let Key::Aes(k) = self else {
            return Err(self.mismatch("decrypt"));
        };
        if ciphertext.len() < 16 {
            return Err(Error::integrity("ciphertext is shorter than its tag"));
        }
        let (ct, tag) = ciphertext.split_at(ciphertext.len() - 16);
        let tag: [u8; 16] = tag
            .try_into()
            .map_err(|_| Error::integrity("ciphertext is shorter than its tag"))?;
        let mut buf = SecretBytes::from_slice(ct);
        k.decrypt_in_place_detached(&(*nonce).into(), aad, buf.expose_mut(), &tag.into())
            .map_err(|_| Error::integrity("AES-GCM authentication failed"))?;
        Ok(buf)
    }
}
