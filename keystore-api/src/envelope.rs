//! The versioned ciphertext envelope.
//!
//! ```text
//! offset  size  field
//! 0       2     magic "KE"
//! 2       1     envelope format (1)
//! 3       1     algorithm code (aes-256-gcm = 6)
//! 4       4     key version, big-endian
//! 8       12    nonce
//! 20      n+16  ciphertext ‖ tag
//! ```
//! The first 8 bytes (the header) are prepended to the caller's AAD before it
//! reaches the backend, so a header edit (another version, another format)
//! fails authentication like any other bit flip.

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};

const MAGIC: [u8; 2] = *b"KE";
const FORMAT: u8 = 1;
/// Header length in bytes (magic, format, algorithm, key version).
pub const HEADER_LEN: usize = 8;
/// Nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// Tag length in bytes.
pub const TAG_LEN: usize = 16;
/// The shortest valid envelope: header, nonce and tag around an empty plaintext.
pub const MIN_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// The header binding an envelope to its algorithm and key version.
pub(crate) fn header(alg: Algorithm, version: u32) -> [u8; HEADER_LEN] {
    let v = version.to_be_bytes();
    [
        MAGIC[0],
        MAGIC[1],
        FORMAT,
        alg.code(),
        v[0],
        v[1],
        v[2],
        v[3],
    ]
}

/// The AAD the backend authenticates: header ‖ caller AAD.
pub(crate) fn bound_aad(header: &[u8; HEADER_LEN], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + aad.len());
    out.extend_from_slice(header);
    out.extend_from_slice(aad);
    out
}

/// Assembles an envelope.
pub(crate) fn seal(header: &[u8; HEADER_LEN], nonce: &[u8; NONCE_LEN], ct: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + ct.len());
    out.extend_from_slice(header);
    out.extend_from_slice(nonce);
    out.extend_from_slice(ct);
    out
}

/// A parsed envelope, borrowing from the input.
pub(crate) struct Parsed<'a> {
    pub header: [u8; HEADER_LEN],
    pub algorithm: u8,
    pub version: u32,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: &'a [u8],
}

/// Splits an envelope. Too short is [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput); a header that is
/// not ours is [`ErrorKind::Integrity`](crate::ErrorKind::Integrity). The caller checks the algorithm code.
pub(crate) fn open(envelope: &[u8]) -> Result<Parsed<'_>> {
    if envelope.len() < MIN_LEN {
        return Err(Error::invalid_input(format!(
            "ciphertext envelope is {} bytes; at least {MIN_LEN} are required",
            envelope.len()
        )));
    }
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&envelope[..HEADER_LEN]);
    if header[..2] != MAGIC || header[2] != FORMAT {
        return Err(Error::integrity(
            "ciphertext envelope header is not a keystore envelope (corrupted?)",
        ));
    }
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&envelope[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
    Ok(Parsed {
        header,
        algorithm: header[3],
        version,
        nonce,
        ciphertext: &envelope[HEADER_LEN + NONCE_LEN..],
    })
}
