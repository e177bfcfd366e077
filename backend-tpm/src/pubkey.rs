//! Public keys and signatures out of TPM structures.

use keystore_backend::{Algorithm, Component, Error, PublicKey, Result};
use tss_esapi::structures::{Public, Signature};

fn bad(what: &str) -> Error {
    Error::integrity(format!("TPM public area: {what}"))
}

/// Left-pads a big-endian integer to `n` bytes.
fn pad(v: &[u8], n: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    pad_into(&mut out, v, n).ok_or_else(|| bad("integer longer than its field"))?;
    Ok(out)
}

/// Appends a big-endian integer left-padded to `n` bytes to `out` (no
/// allocation when `out` has the room); `None` if it needs more than `n`.
fn pad_into(out: &mut Vec<u8>, v: &[u8], n: usize) -> Option<()> {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    let v = v.get(first..)?;
    let zeros = n.checked_sub(v.len())?;
    out.resize(out.len() + zeros, 0);
    out.extend_from_slice(v);
    Some(())
}

/// The SPKI public key of a TPM key of `alg`.
pub(crate) fn spki(alg: Algorithm, public: &Public) -> Result<PublicKey> {
    let der = match (alg, public) {
        // ECDSA and ECDH keys on P-256 share one SPKI: id-ecPublicKey, prime256v1.
        (Algorithm::EcdsaP256Sha256 | Algorithm::EcdhP256, Public::Ecc { unique, .. }) => {
            use p256::pkcs8::EncodePublicKey;
            let sec1 = uncompressed(unique, 32)?;
            let pk = p256::PublicKey::from_sec1_bytes(&sec1)
                .map_err(|_| bad("ECC point is not on P-256"))?;
            pk.to_public_key_der()
                .map_err(|_| bad("cannot encode the P-256 key"))?
                .as_bytes()
                .to_vec()
        }
        (Algorithm::EcdsaP384Sha384, Public::Ecc { unique, .. }) => {
            use p384::pkcs8::EncodePublicKey;
            let sec1 = uncompressed(unique, 48)?;
            let pk = p384::PublicKey::from_sec1_bytes(&sec1)
                .map_err(|_| bad("ECC point is not on P-384"))?;
            pk.to_public_key_der()
                .map_err(|_| bad("cannot encode the P-384 key"))?
                .as_bytes()
                .to_vec()
        }
        (
            a,
            Public::Rsa {
                unique, parameters, ..
            },
        ) if a.rsa_bits().is_some() => {
            use rsa::pkcs8::EncodePublicKey;
            let e = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            let n = rsa::BigUint::from_bytes_be(unique.value());
            let pk = rsa::RsaPublicKey::new(n, rsa::BigUint::from(e))
                .map_err(|_| bad("RSA modulus or exponent rejected"))?;
            pk.to_public_key_der()
                .map_err(|_| bad("cannot encode the RSA key"))?
                .as_bytes()
                .to_vec()
        }
        _ => return Err(bad(&format!("not a {alg} public area"))),
    };
    PublicKey::from_spki_der(alg, der)
}

/// The uncompressed SEC1 point `04 ‖ X ‖ Y` of a TPM ECC point, each
/// coordinate left-padded to `field_len` bytes.
fn uncompressed(point: &tss_esapi::structures::EccPoint, field_len: usize) -> Result<Vec<u8>> {
    let mut sec1 = Vec::with_capacity(1 + 2 * field_len);
    sec1.push(0x04);
    sec1.extend(pad(point.x().value(), field_len)?);
    sec1.extend(pad(point.y().value(), field_len)?);
    Ok(sec1)
}

/// The signature bytes the keystore expects: ECDSA as fixed `r‖s` (each
/// left-padded to the curve's field length: 32 bytes on P-256, 48 on
/// P-384), RSA as the modulus-length signature.
pub(crate) fn signature_bytes(alg: Algorithm, sig: Signature) -> Result<Vec<u8>> {
    let wrong = || {
        Error::backend_msg(
            Component::Tpm,
            format!("the TPM returned a signature of the wrong kind for {alg}"),
        )
    };
    match (alg, sig) {
        (Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384, Signature::EcDsa(s)) => {
            let n = alg.ec_curve().ok_or_else(wrong)?.field_len();
            let mut out = Vec::with_capacity(2 * n);
            pad_into(&mut out, s.signature_r().value(), n).ok_or_else(wrong)?;
            pad_into(&mut out, s.signature_s().value(), n).ok_or_else(wrong)?;
            Ok(out)
        }
        (a, Signature::RsaPss(s)) if a.is_rsa_pss() => {
            rsa_bytes(a, s.signature().value()).ok_or_else(wrong)
        }
        (a, Signature::RsaSsa(s)) if a.rsa_bits().is_some() && !a.is_rsa_pss() => {
            rsa_bytes(a, s.signature().value()).ok_or_else(wrong)
        }
        _ => Err(wrong()),
    }
}

fn rsa_bytes(alg: Algorithm, v: &[u8]) -> Option<Vec<u8>> {
    let n = alg.rsa_bits()? / 8;
    let mut out = Vec::with_capacity(n);
    pad_into(&mut out, v, n)?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_strips_and_refuses_overlong_integers() {
        assert_eq!(pad(&[1, 2], 4).expect("pad"), [0, 0, 1, 2]);
        assert_eq!(pad(&[0, 0, 0, 1, 2], 4).expect("pad"), [0, 0, 1, 2]);
        assert_eq!(pad(&[], 2).expect("pad"), [0, 0]);
        assert_eq!(pad(&[9; 4], 4).expect("pad"), [9; 4]);
        assert!(pad(&[9; 5], 4).is_err());
        let mut out = vec![7];
        assert_eq!(pad_into(&mut out, &[0, 5], 3), Some(()));
        assert_eq!(out, [7, 0, 0, 5]);
        assert_eq!(pad_into(&mut out, &[1, 2], 1), None);
    }
}
