//! Signatures in their standard encodings, tagged with the key version that made them.

use crate::algorithm::Algorithm;
use crate::error::{Component, Error, Result};

/// Encoding of an ECDSA signature. RSA, Ed25519 and ML-DSA signatures have
/// one encoding and ignore this choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureFormat {
    /// ASN.1 DER `ECDSA-Sig-Value` (what OpenSSL and X.509 expect).
    #[default]
    Der,
    /// Fixed-width big-endian `r‖s`, 64 bytes for P-256 and 96 for P-384
    /// (JOSE, COSE).
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

/// Converts a backend's raw signature (ECDSA: fixed `r‖s`; RSA, Ed25519 and
/// ML-DSA: the signature bytes) into the requested encoding, after checking
/// its length for the algorithm.
pub(crate) fn encode(alg: Algorithm, raw: Vec<u8>, format: SignatureFormat) -> Result<Vec<u8>> {
    let malformed = || {
        Error::backend_msg(
            Component::Keystore,
            format!("backend returned a malformed {alg} signature"),
        )
    };
    if Some(raw.len()) != alg.signature_len() {
        return Err(malformed());
    }
    match (alg, format) {
        (Algorithm::EcdsaP256Sha256, SignatureFormat::Der) => {
            let sig = p256::ecdsa::Signature::from_slice(&raw).map_err(|_| malformed())?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        (Algorithm::EcdsaP384Sha384, SignatureFormat::Der) => {
            let sig = p384::ecdsa::Signature::from_slice(&raw).map_err(|_| malformed())?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        _ => Ok(raw),
    }
}
