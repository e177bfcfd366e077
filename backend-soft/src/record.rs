//! Sealed key records.
//!
//! ```text
//! "KSREC" | format=1 | algorithm code | nonce (12) | AES-256-GCM(store key, material) ‖ tag
//! AAD = "KSREC" | format | algorithm code | store id (16) | record id (16)
//! ```
//! The AAD binds the record to its store, its id (the file name and handle)
//! and its algorithm, so a record copied over another key's file, moved
//! between stores, or relabelled with another algorithm fails authentication.

use crate::prim::SealKey;
use keystore_backend::{Algorithm, Component, Error, Result, SecretBytes};

const MAGIC: &[u8; 5] = b"KSREC";
const FORMAT: u8 = 1;
const PREFIX_LEN: usize = 5 + 1 + 1 + 12;

/// Length of a record id (and of a soft key handle).
pub(crate) const ID_LEN: usize = 16;

/// Seals and opens records under the store key.
pub(crate) struct Sealer {
    key: SealKey,
    store_id: [u8; 16],
}

impl Sealer {
    pub(crate) fn new(store_key: &SecretBytes, store_id: [u8; 16]) -> Result<Self> {
        Ok(Sealer {
            key: SealKey::new(store_key.expose())?,
            store_id,
        })
    }

    fn aad(&self, alg: Algorithm, id: &[u8; ID_LEN]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(5 + 2 + 32);
        aad.extend_from_slice(MAGIC);
        aad.push(FORMAT);
        aad.push(alg.code());
        aad.extend_from_slice(&self.store_id);
        aad.extend_from_slice(id);
        aad
    }

    /// Seals `material` as record `id`.
    pub(crate) fn seal(
        &self,
        alg: Algorithm,
        id: &[u8; ID_LEN],
        material: &SecretBytes,
    ) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        crate::random(&mut nonce)?;
        let mut out = Vec::with_capacity(PREFIX_LEN + material.len() + 16);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.push(alg.code());
        out.extend_from_slice(&nonce);
        let mut body = material.expose().to_vec();
        let sealed = self.key.seal(nonce, &self.aad(alg, id), &mut body);
        if sealed.is_err() {
            zeroize::Zeroize::zeroize(&mut body);
            return Err(Error::backend_msg(
                Component::Soft,
                "sealing a key record failed",
            ));
        }
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens record `id`, returning its algorithm and material. Any damage,
    /// truncation or swap is [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity).
    pub(crate) fn open(&self, id: &[u8; ID_LEN], bytes: &[u8]) -> Result<(Algorithm, SecretBytes)> {
        let bad =
            |what: &str| Error::integrity(format!("soft record {} is {what}", hex::encode(id)));
        if bytes.len() < PREFIX_LEN + 16 {
            return Err(bad("truncated"));
        }
        if &bytes[..5] != MAGIC || bytes[5] != FORMAT {
            return Err(bad("not a sealed record (corrupted header)"));
        }
        let alg = Algorithm::from_code(bytes[6])
            .ok_or_else(|| bad("labelled with an unknown algorithm"))?;
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&bytes[7..PREFIX_LEN]);
        let mut body = SecretBytes::from_slice(&bytes[PREFIX_LEN..]);
        let n = self
            .key
            .open(nonce, &self.aad(alg, id), body.expose_mut())
            .map_err(|_| {
                bad("corrupted, truncated or not this key's record (authentication failed)")
            })?;
        Ok((alg, SecretBytes::from_slice(&body.expose()[..n])))
    }
}
