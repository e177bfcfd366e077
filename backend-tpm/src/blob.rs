//! The key handle: a key id and the TPM's (public, private) blob pair.
//!
//! ```text
//! "KT" | format = 1 | algorithm code (u8) | key id (16)
//! | TPM2B_PUBLIC  (u16 BE size | marshalled TPMT_PUBLIC)
//! | TPM2B_PRIVATE (u16 BE size | TPM-encrypted sensitive area with its integrity HMAC)
//! ```
//!
//! The handle is not secret: the private blob is encrypted and
//! integrity-protected by the TPM under a key derived from the storage
//! primary's seed, and is only usable inside the TPM that made it. The two
//! `TPM2B_*` parts are exactly what tpm2-tools reads (`tpm2_load -u -r`).
//!
//! The key id ties the handle to its registry entry (see `registry`), which
//! holds the key's auth value and the Name of its public area.

use crate::esys::{marshal_public, unmarshal_public};
use keystore_backend::{Algorithm, Component, Error, KeyHandle, Result};
use sha2::{Digest as _, Sha256};
use tss_esapi::structures::{Private, Public};

const MAGIC: &[u8; 2] = b"KT";
const FORMAT: u8 = 1;
/// Length of a key id.
pub(crate) const ID_LEN: usize = 16;
const HEADER_LEN: usize = 2 + 1 + 1 + ID_LEN;

/// A key id.
pub(crate) type KeyId = [u8; ID_LEN];

/// A parsed handle.
#[derive(Clone)]
pub(crate) struct Blob {
    pub id: KeyId,
    pub alg: Algorithm,
    pub public: Public,
    pub private: Private,
    /// The marshalled `TPMT_PUBLIC`, hashed into the Name.
    pub public_area: Vec<u8>,
}

/// The id and algorithm a handle claims, if it has this backend's framing
/// at all. Anything else is not a TPM key handle ([`ErrorKind::NotFound`](keystore_backend::ErrorKind::NotFound)).
pub(crate) fn peek(handle: &KeyHandle) -> Result<(KeyId, u8)> {
    let b = handle.as_bytes();
    if b.len() < HEADER_LEN || &b[..2] != MAGIC || b[2] != FORMAT {
        return Err(Error::not_found("not a TPM key handle"));
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&b[4..HEADER_LEN]);
    Ok((id, b[3]))
}

fn damaged(what: &str) -> Error {
    Error::integrity(format!("TPM key blob is damaged: {what}"))
}

/// Parses a whole handle whose header [`peek`] accepted. Malformed framing
/// is [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity).
pub(crate) fn parse(handle: &KeyHandle) -> Result<Blob> {
    let (id, code) = peek(handle)?;
    let alg = Algorithm::from_code(code).ok_or_else(|| damaged("unknown algorithm code"))?;
    let mut rest = &handle.as_bytes()[HEADER_LEN..];
    let public_area = take_sized(&mut rest).ok_or_else(|| damaged("public area truncated"))?;
    let private = take_sized(&mut rest).ok_or_else(|| damaged("private area truncated"))?;
    if !rest.is_empty() {
        return Err(damaged("trailing bytes"));
    }
    let public =
        unmarshal_public(public_area).ok_or_else(|| damaged("public area does not parse"))?;
    let private = Private::try_from(private).map_err(|_| damaged("private area too large"))?;
    Ok(Blob {
        id,
        alg,
        public,
        private,
        public_area: public_area.to_vec(),
    })
}

fn take_sized<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    if rest.len() < 2 {
        return None;
    }
    let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    if rest.len() < 2 + n || n == 0 {
        return None;
    }
    let (body, tail) = rest[2..].split_at(n);
    *rest = tail;
    Some(body)
}

/// Builds the handle of a freshly created key.
pub(crate) fn encode(
    id: &KeyId,
    alg: Algorithm,
    public: &Public,
    private: &Private,
) -> Result<KeyHandle> {
    let public = marshal_public(public)
        .map_err(|rc| Error::backend(Component::Tpm, "marshalling a public area failed", rc))?;
    let mut out = Vec::with_capacity(HEADER_LEN + public.len() + private.len() + 2);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(alg.code());
    out.extend_from_slice(id);
    out.extend_from_slice(&public);
    out.extend_from_slice(&(private.len() as u16).to_be_bytes());
    out.extend_from_slice(private.value());
    Ok(KeyHandle::new(out))
}

/// The TPM Name of a public area: `nameAlg (0x000B, SHA-256) ‖ SHA-256(TPMT_PUBLIC)`.
pub(crate) fn name(public_area: &[u8]) -> Vec<u8> {
    let mut n = vec![0x00, 0x0B];
    n.extend_from_slice(&Sha256::digest(public_area));
    n
}

/// Where the parts of a handle lie, for tests and tools that need the raw
/// `TPM2B_PUBLIC` / `TPM2B_PRIVATE` bytes (tpm2-tools files, tamper tests).
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Byte range of the `TPM2B_PUBLIC` (with its size prefix).
    pub public: std::ops::Range<usize>,
    /// Byte range of the `TPM2B_PRIVATE` (with its size prefix).
    pub private: std::ops::Range<usize>,
}

/// The layout of a well-formed handle.
#[cfg(feature = "test-support")]
pub fn layout(handle: &[u8]) -> Option<Layout> {
    if handle.len() < HEADER_LEN + 2 {
        return None;
    }
    let pub_len = u16::from_be_bytes([handle[HEADER_LEN], handle[HEADER_LEN + 1]]) as usize;
    let pub_end = HEADER_LEN + 2 + pub_len;
    if handle.len() < pub_end + 2 {
        return None;
    }
    let priv_len = u16::from_be_bytes([handle[pub_end], handle[pub_end + 1]]) as usize;
    let priv_end = pub_end + 2 + priv_len;
    (priv_end == handle.len()).then_some(Layout {
        public: HEADER_LEN..pub_end,
        private: pub_end..priv_end,
    })
}
