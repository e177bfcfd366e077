//! Signatures in their standard encodings, tagged with the key version that made them.

use crate::algorithm::Algorithm;
use crate::error::{Component, Error, Result};

/// Encoding of an ECDSA signature. RSA signatures have one encoding and
/// ignore this choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureFormat {
    /// ASN.1 DER `ECDSA-Sig-Value` (what OpenSSL and X.509 expect).
    #[default]
    Der,
    /// Fixed-width big-endian `r‖s`, 64 bytes for P-256 (JOSE, COSE).
    Fixed,
}

/// A signature and the key version that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The key version that made the signature.
    pub version: u32,
    /// The encoding of `bytes`.
    pub format: SignatureFormat,
    /// The encoded signature.
    pub bytes: Vec<u8>,
}

/// Converts a backend's raw signature (ECDSA: fixed `r‖s`; RSA: the signature
/// bytes) into the requested encoding.
pub(crate) fn encode(alg: Algorithm, raw: Vec<u8>, format: SignatureFormat) -> Result<Vec<u8>> {
    match (alg, format) {
        (Algorithm::EcdsaP256Sha256, SignatureFormat::Der) => {
            let sig = p256::ecdsa::Signature::from_slice(&raw).map_err(|_| {
                Error::backend_msg(
                    Component::Keystore,
                    "backend returned a malformed ECDSA signature",
                )
            })?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        (Algorithm::EcdsaP256Sha256, SignatureFormat::Fixed) => {
            if raw.len() != 64 {
                return Err(Error::backend_msg(
                    Component::Keystore,
                    "backend returned a malformed ECDSA signature",
                ));
            }
            Ok(raw)
        }
        _ => Ok(raw),
    }
}
