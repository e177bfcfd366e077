//! The store header: KDF parameters, salt and the wrapped store key.
//!
//! ```text
//! "KSSOFT" | format (1, or 2 for a provider KEK) | kek kind (1 pbkdf2, 2 argon2id, 3 key file, 4 provider)
//! | kdf params (pbkdf2: iterations u32; argon2id: m KiB u32, t u32, p u32; key file: none)
//! | format 2 only: provider kind len u8 | provider kind | sealed KEK len u16 | sealed KEK
//! | salt len u8 | salt | store id (16)
//! | wrapped store key: nonce (12) | AES-256-GCM(KEK, store key) (32 + 16 tag)
//! | SHA-256 of everything before it (32)
//! ```
//! The wrap authenticates every preceding header byte as AAD, so parameters
//! cannot be lowered without the KEK. The trailing digest tells a corrupted
//! header ([`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity)) apart from a wrong passphrase ([`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth)).
//! Format 1 headers (passphrase and key-file stores) are written and read
//! exactly as before; format 2 exists only for provider-sealed KEKs, so a
//! build without providers reports such a store as unsupported.

use crate::kek::{Kdf, Kek};
use crate::prim::SealKey;
use keystore_backend::{Component, Error, Result, SecretBytes};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 6] = b"KSSOFT";
const FORMAT: u8 = 1;
const FORMAT_SEALED: u8 = 2;
const WRAPPED_LEN: usize = 12 + 32 + 16;

/// A KEK provider's kind and the sealed KEK it can unseal (not secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealedKek {
    pub kind: String,
    pub blob: Vec<u8>,
}

/// A parsed store header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub kdf: Kdf,
    pub salt: Vec<u8>,
    /// Present exactly when `kdf` is [`Kdf::Provider`].
    pub sealed: Option<SealedKek>,
    pub store_id: [u8; 16],
    pub wrapped: [u8; WRAPPED_LEN],
}

impl Header {
    /// Wraps `store_key` under `kek` into a new header.
    pub(crate) fn seal(
        kdf: Kdf,
        salt: Vec<u8>,
        sealed: Option<SealedKek>,
        store_id: [u8; 16],
        kek: &Kek,
        store_key: &SecretBytes,
    ) -> Result<Header> {
        if (kdf == Kdf::Provider) != sealed.is_some() {
            return Err(Error::backend_msg(
                Component::Soft,
                "a provider KEK needs its sealed form, and only it has one",
            ));
        }
        let mut h = Header {
            kdf,
            salt,
            sealed,
            store_id,
            wrapped: [0u8; WRAPPED_LEN],
        };
        let aad = h.authenticated_prefix();
        let mut nonce = [0u8; 12];
        crate::random(&mut nonce)?;
        let key = SealKey::new(kek.expose())?;
        let mut buf = store_key.expose().to_vec();
        key.seal(nonce, &aad, &mut buf)?;
        h.wrapped[..12].copy_from_slice(&nonce);
        h.wrapped[12..].copy_from_slice(&buf);
        Ok(h)
    }

    /// Unwraps the store key. A wrong KEK is [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth).
    pub(crate) fn unwrap_store_key(&self, kek: &Kek) -> Result<SecretBytes> {
        let aad = self.authenticated_prefix();
        let key = SealKey::new(kek.expose())?;
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&self.wrapped[..12]);
        let mut buf = SecretBytes::from_slice(&self.wrapped[12..]);
        let n = key
            .open(nonce, &aad, buf.expose_mut())
            .map_err(|_| Error::auth("wrong passphrase or key file for this soft store"))?;
        Ok(SecretBytes::from_slice(&buf.expose()[..n]))
    }

    fn authenticated_prefix(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(MAGIC);
        match &self.sealed {
            None => {
                out.push(FORMAT);
                self.kdf.encode(&mut out);
            }
            Some(sealed) => {
                out.push(FORMAT_SEALED);
                self.kdf.encode(&mut out);
                out.push(sealed.kind.len() as u8);
                out.extend_from_slice(sealed.kind.as_bytes());
                out.extend_from_slice(&(sealed.blob.len() as u16).to_be_bytes());
                out.extend_from_slice(&sealed.blob);
            }
        }
        out.push(self.salt.len() as u8);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.store_id);
        out
    }

    /// The header bytes as stored.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.authenticated_prefix();
        out.extend_from_slice(&self.wrapped);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Parses stored header bytes. Anything malformed is [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Header> {
        let bad = |what: &str| Error::integrity(format!("soft store header is corrupted: {what}"));
        if bytes.len() < 32 {
            return Err(bad("too short"));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body)[..] != *digest {
            return Err(bad("checksum mismatch"));
        }
        let mut r = Reader(body);
        if r.take(6)? != MAGIC {
            return Err(bad("not a soft store header"));
        }
        let format = r.u8()?;
        if format != FORMAT && format != FORMAT_SEALED {
            return Err(Error::unsupported(format!(
                "soft store header format {format} is not supported by this build"
            )));
        }
        let kdf = Kdf::decode(&mut r)?;
        if (format == FORMAT_SEALED) != (kdf == Kdf::Provider) {
            return Err(bad("KEK kind does not match the header format"));
        }
        let sealed = if format == FORMAT_SEALED {
            let kind_len = r.u8()? as usize;
            let kind = String::from_utf8(r.take(kind_len)?.to_vec())
                .map_err(|_| bad("provider kind is not UTF-8"))?;
            let blob_len = r.u16()? as usize;
            let blob = r.take(blob_len)?.to_vec();
            Some(SealedKek { kind, blob })
        } else {
            None
        };
        let salt_len = r.u8()? as usize;
        let salt = r.take(salt_len)?.to_vec();
        let mut store_id = [0u8; 16];
        store_id.copy_from_slice(r.take(16)?);
        let mut wrapped = [0u8; WRAPPED_LEN];
        wrapped.copy_from_slice(r.take(WRAPPED_LEN)?);
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Header {
            kdf,
            salt,
            sealed,
            store_id,
            wrapped,
        })
    }
}

/// A bounds-checked reader over header bytes.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::integrity("soft store header is truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}
