//! The store's own primitives (OS randomness and the AES-256-GCM that seals
//! records and wraps the store key), from aws-lc-rs when the `aws-lc`
//! feature is on, else from RustCrypto. Both give the same bytes on disk, so
//! a store written by one opens with the other.

use keystore_backend::{Component, Error, Result};

/// Fills `buf` from the OS random generator.
pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    #[cfg(feature = "aws-lc")]
    let ok = aws_lc_rs::rand::fill(buf).is_ok();
    #[cfg(not(feature = "aws-lc"))]
    let ok = getrandom::getrandom(buf).is_ok();
    if ok {
        Ok(())
    } else {
        Err(Error::backend_msg(
            Component::Soft,
            "the OS random generator failed",
        ))
    }
}

/// An AES-256-GCM key for the store's own sealing.
pub(crate) struct SealKey {
    #[cfg(feature = "aws-lc")]
    key: aws_lc_rs::aead::LessSafeKey,
    #[cfg(not(feature = "aws-lc"))]
    key: Box<aes_gcm::Aes256Gcm>,
}

impl SealKey {
    /// A key from 32 bytes.
    pub(crate) fn new(bytes: &[u8]) -> Result<SealKey> {
        let bad = || Error::backend_msg(Component::Soft, "AES-256-GCM rejected a 32-byte key");
        #[cfg(feature = "aws-lc")]
        {
            use aws_lc_rs::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
            let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| bad())?;
            Ok(SealKey {
                key: LessSafeKey::new(unbound),
            })
        }
        #[cfg(not(feature = "aws-lc"))]
        {
            use aes_gcm::KeyInit;
            Ok(SealKey {
                key: Box::new(aes_gcm::Aes256Gcm::new_from_slice(bytes).map_err(|_| bad())?),
            })
        }
    }

    /// Encrypts `buf` in place and appends the 16-byte tag.
    pub(crate) fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> Result<()> {
        let failed = || Error::backend_msg(Component::Soft, "AES-256-GCM sealing failed");
        #[cfg(feature = "aws-lc")]
        {
            use aws_lc_rs::aead::{Aad, Nonce};
            self.key
                .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
                .map_err(|_| failed())
        }
        #[cfg(not(feature = "aws-lc"))]
        {
            use aes_gcm::AeadInPlace;
            self.key
                .encrypt_in_place(&nonce.into(), aad, buf)
                .map_err(|_| failed())
        }
    }

    /// Decrypts ciphertext‖tag in place; returns the plaintext length. Any
    /// mismatch is `Err(())` and the caller decides what it means.
    pub(crate) fn open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> std::result::Result<usize, ()> {
        #[cfg(feature = "aws-lc")]
        {
            use aws_lc_rs::aead::{Aad, Nonce};
            self.key
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
                .map(|p| p.len())
                .map_err(|_| ())
        }
        #[cfg(not(feature = "aws-lc"))]
        {
            use aes_gcm::AeadInPlace;
            if buf.len() < 16 {
                return Err(());
            }
            let (ct, tag) = buf.split_at_mut(buf.len() - 16);
            let tag: [u8; 16] = (&*tag).try_into().map_err(|_| ())?;
            self.key
                .decrypt_in_place_detached(&nonce.into(), aad, ct, &tag.into())
                .map(|_| ct.len())
                .map_err(|_| ())
        }
    }
}
