//! Public keys read from token objects, encoded as SPKI DER.
//!
//! - EC: `CKA_EC_PARAMS` must be the P-256 OID; `CKA_EC_POINT` is the DER
//!   OCTET STRING around the uncompressed point `04‖X‖Y` (PKCS#11 2.40), or
//!   the bare point (some older tokens). Checked on the curve by `p256`.
//! - RSA: `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`, encoded with the `rsa`
//!   crate (public-key code only).

use keystore_api::{Algorithm, Error, PublicKey, Result};

/// DER of the `prime256v1` (P-256) named-curve OID, the `CKA_EC_PARAMS` we set.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

fn bad(what: &str) -> Error {
    Error::Integrity(format!("token public key object: {what}"))
}

/// SPKI of a P-256 key from its `CKA_EC_PARAMS` and `CKA_EC_POINT`.
pub(crate) fn ec_spki(params: &[u8], point: &[u8]) -> Result<PublicKey> {
    use p256::pkcs8::EncodePublicKey;
    if params != P256_PARAMS {
        return Err(bad("CKA_EC_PARAMS is not the P-256 curve"));
    }
    let raw = match point {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        [0x04, ..] if point.len() == 65 => point,
        _ => return Err(bad("CKA_EC_POINT is not an uncompressed P-256 point")),
    };
    let pk = p256::PublicKey::from_sec1_bytes(raw)
        .map_err(|_| bad("CKA_EC_POINT is not on the P-256 curve"))?;
    let der = pk
        .to_public_key_der()
        .map_err(|_| bad("cannot encode the EC public key"))?;
    PublicKey::from_spki_der(Algorithm::EcdsaP256Sha256, der.as_bytes().to_vec())
}

/// SPKI of an RSA key from its modulus and public exponent (big-endian).
pub(crate) fn rsa_spki(alg: Algorithm, modulus: &[u8], exponent: &[u8]) -> Result<PublicKey> {
    use rsa::pkcs8::EncodePublicKey;
    let n = rsa::BigUint::from_bytes_be(modulus);
    let e = rsa::BigUint::from_bytes_be(exponent);
    let pk = rsa::RsaPublicKey::new(n, e).map_err(|_| bad("invalid RSA public key"))?;
    let der = pk
        .to_public_key_der()
        .map_err(|_| bad("cannot encode the RSA public key"))?;
    PublicKey::from_spki_der(alg, der.as_bytes().to_vec())
        .map_err(|_| bad(&format!("the RSA key does not fit {alg}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_forms() {
        let sk = p256::SecretKey::from_slice(&[7u8; 32]).expect("scalar");
        let point = sk.public_key().to_sec1_bytes(); // 04‖X‖Y, uncompressed
        assert_eq!(point.len(), 65);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(&point);
        let a = ec_spki(P256_PARAMS, &wrapped).expect("wrapped");
        let b = ec_spki(P256_PARAMS, &point).expect("bare");
        assert_eq!(a, b);
        assert_eq!(
            ec_spki(P256_PARAMS, &point[..64]).unwrap_err().kind(),
            "Integrity"
        );
        assert_eq!(
            ec_spki(&[0x06, 0x01, 0x00], &point).unwrap_err().kind(),
            "Integrity"
        );
    }
}
