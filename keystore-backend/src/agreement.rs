//! Key agreement: validated peer public keys, and the one-step KDF of
//! SP 800-56C Rev. 2 with H = SHA-256 that every backend applies to the
//! ECDH shared secret.
//!
//! The output is `K_1 ‖ K_2 ‖ …` truncated to the requested length, with
//! `K_i = SHA-256(be32(i) ‖ Z ‖ FixedInfo)`: what OpenSSL 3.0 calls `SSKDF`
//! with digest SHA-256. A backend computes `Z` inside itself and returns only
//! the KDF output; `Z` never crosses the contract.

use crate::algorithm::{Algorithm, EcCurve};
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use sha2::{Digest, Sha256};

/// Longest KDF output of an agreement, in bytes (255 SHA-256 blocks, as for
/// HKDF).
pub const MAX_AGREE_LEN: usize = 255 * 32;
/// Longest `FixedInfo` of an agreement, in bytes.
pub const MAX_FIXED_INFO_LEN: usize = 4096;

/// A peer's public key for ECDH, checked once: on the key's curve, not the
/// point at infinity, of the right length. Holds the uncompressed SEC1
/// point (`04 ‖ X ‖ Y`). Public data.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerPublicKey {
    curve: EcCurve,
    point: Vec<u8>,
}

impl PeerPublicKey {
    /// Parses a peer key for an agreement with a key of `algorithm`, from a
    /// DER `SubjectPublicKeyInfo`, a PEM `PUBLIC KEY`, or a SEC1 point
    /// (uncompressed or compressed).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for bytes
    /// that are none of these, a key on another curve or of another type, a
    /// point not on the curve, or the identity;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `algorithm` does
    /// no key agreement.
    pub fn parse(algorithm: Algorithm, bytes: &[u8]) -> Result<PeerPublicKey> {
        if algorithm != Algorithm::EcdhP256 {
            return Err(Error::policy(format!(
                "{algorithm} keys do no key agreement; use an ecdh-p256 key"
            )));
        }
        let bad = |what: &str| {
            Error::invalid_input(format!("peer public key refused for ecdh-p256: {what}"))
        };
        if bytes.is_empty() || bytes.len() > 16 * 1024 {
            return Err(bad("expected 1 byte to 16 KiB"));
        }
        let der;
        let bytes = match std::str::from_utf8(bytes) {
            Ok(text) if text.trim_start().starts_with("-----BEGIN") => {
                use p256::pkcs8::der::pem::PemLabel;
                let (label, body) = p256::pkcs8::der::pem::decode_vec(text.trim().as_bytes())
                    .map_err(|e| bad(&format!("not PEM ({e})")))?;
                if label != p256::pkcs8::SubjectPublicKeyInfoRef::PEM_LABEL {
                    return Err(bad(&format!("PEM label {label:?}, expected PUBLIC KEY")));
                }
                if body.first() != Some(&0x30) {
                    return Err(bad("the PEM body is not a SubjectPublicKeyInfo"));
                }
                der = body;
                &der[..]
            }
            _ => bytes,
        };
        let key = if bytes[0] == 0x30 {
            use p256::pkcs8::DecodePublicKey;
            match p256::PublicKey::from_public_key_der(bytes) {
                Ok(k) => k,
                Err(_) => {
                    let other = if p384::PublicKey::from_public_key_der(bytes).is_ok() {
                        "a P-384 key (wrong curve)"
                    } else {
                        "not a P-256 SubjectPublicKeyInfo (another curve or key type, or a point not on the curve)"
                    };
                    return Err(bad(other));
                }
            }
        } else {
            match bytes.len() {
                33 | 65 => {}
                n => {
                    return Err(bad(&format!(
                        "a SEC1 P-256 point is 33 or 65 bytes, got {n}"
                    )))
                }
            }
            p256::PublicKey::from_sec1_bytes(bytes)
                .map_err(|_| bad("not a point on P-256 (or the identity)"))?
        };
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        Ok(PeerPublicKey {
            curve: EcCurve::P256,
            point: key.to_encoded_point(false).as_bytes().to_vec(),
        })
    }

    /// The curve.
    pub fn curve(&self) -> EcCurve {
        self.curve
    }

    /// The uncompressed SEC1 point `04 ‖ X ‖ Y`.
    pub fn uncompressed_point(&self) -> &[u8] {
        &self.point
    }

    /// The affine X coordinate, big-endian, one field element long.
    pub fn x(&self) -> &[u8] {
        &self.point[1..1 + self.curve.field_len()]
    }

    /// The affine Y coordinate, big-endian, one field element long.
    pub fn y(&self) -> &[u8] {
        &self.point[1 + self.curve.field_len()..]
    }
}

impl std::fmt::Debug for PeerPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PeerPublicKey({:?}, {})",
            self.curve,
            hex::encode(&self.point)
        )
    }
}

/// Checks the `FixedInfo` and output length of an agreement.
///
/// # Errors
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a length
/// of 0 or over [`MAX_AGREE_LEN`], or a `fixed_info` over
/// [`MAX_FIXED_INFO_LEN`].
pub fn check_kdf_input(fixed_info: &[u8], len: usize) -> Result<()> {
    if len == 0 || len > MAX_AGREE_LEN {
        return Err(Error::invalid_input(format!(
            "an agreement's output is 1 to {MAX_AGREE_LEN} bytes, got {len}"
        )));
    }
    if fixed_info.len() > MAX_FIXED_INFO_LEN {
        return Err(Error::invalid_input(format!(
            "FixedInfo is at most {MAX_FIXED_INFO_LEN} bytes, got {}",
            fixed_info.len()
        )));
    }
    Ok(())
}

/// The number of SHA-256 blocks the one-step KDF needs for `len` bytes.
pub fn kdf_blocks(len: usize) -> u32 {
    len.div_ceil(32) as u32
}

/// The one-step KDF (SP 800-56C Rev. 2, §4.1, option 1, H = SHA-256) over
/// the shared secret `z`. The caller holds `z` in zeroizing memory; the
/// output is returned as [`SecretBytes`], and the hash state is not kept.
///
/// # Errors
/// As [`check_kdf_input`].
pub fn one_step_kdf_sha256(z: &[u8], fixed_info: &[u8], len: usize) -> Result<SecretBytes> {
    check_kdf_input(fixed_info, len)?;
    let mut out = SecretBytes::zeroed(len);
    for (i, chunk) in out.expose_mut().chunks_mut(32).enumerate() {
        let mut h = Sha256::new();
        h.update((i as u32 + 1).to_be_bytes());
        h.update(z);
        h.update(fixed_info);
        let block = zeroize::Zeroizing::new(<[u8; 32]>::from(h.finalize()));
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn kdf_matches_the_definition() {
        let z = [7u8; 32];
        let out = one_step_kdf_sha256(&z, b"info", 40).expect("kdf");
        let mut expect = Vec::new();
        for i in 1u32..=2 {
            let mut h = Sha256::new();
            h.update(i.to_be_bytes());
            h.update(z);
            h.update(b"info");
            expect.extend_from_slice(&h.finalize());
        }
        assert_eq!(out.expose(), &expect[..40]);
        assert_eq!(kdf_blocks(40), 2);
        assert_eq!(kdf_blocks(32), 1);
    }

    #[test]
    fn bad_lengths_are_refused() {
        for len in [0, MAX_AGREE_LEN + 1] {
            let e = one_step_kdf_sha256(&[1; 32], b"", len).expect_err("refused");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
        let e =
            one_step_kdf_sha256(&[1; 32], &[0; MAX_FIXED_INFO_LEN + 1], 32).expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn peer_keys_are_validated() {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let secret = p256::SecretKey::from_slice(&[3u8; 32]).expect("scalar");
        let point = secret.public_key().to_encoded_point(false);
        let ok = PeerPublicKey::parse(Algorithm::EcdhP256, point.as_bytes()).expect("valid");
        assert_eq!(ok.uncompressed_point(), point.as_bytes());
        assert_eq!(ok.x().len(), 32);
        let compressed = secret.public_key().to_encoded_point(true);
        assert_eq!(
            PeerPublicKey::parse(Algorithm::EcdhP256, compressed.as_bytes())
                .expect("compressed")
                .uncompressed_point(),
            point.as_bytes()
        );
        let mut off_curve = point.as_bytes().to_vec();
        off_curve[64] ^= 1;
        let identity = [0u8; 1];
        for bad in [&off_curve[..], &identity[..], &point.as_bytes()[..64]] {
            let e = PeerPublicKey::parse(Algorithm::EcdhP256, bad).expect_err("refused");
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        }
        let e = PeerPublicKey::parse(Algorithm::EcdsaP256Sha256, point.as_bytes())
            .expect_err("not an agreement key");
        assert_eq!(e.kind(), ErrorKind::Policy);
    }
}
