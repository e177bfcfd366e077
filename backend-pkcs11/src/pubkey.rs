//! Public keys read from token objects, encoded as SPKI DER.
//!
//! - EC: `CKA_EC_PARAMS` must be the P-256 OID; `CKA_EC_POINT` is the DER
//!   OCTET STRING around the uncompressed point `04‖X‖Y` (PKCS#11 2.40), or
//!   the bare point (some older tokens). Checked on the curve by `p256`.
//! - RSA: `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`, encoded with the `rsa`
//!   crate (public-key code only).
//!
//! [`Verifier`] checks the token's signatures on the host with aws-lc-rs,
//! parsed once per key.

use aws_lc_rs::signature::{self as aws, ParsedPublicKey, VerificationAlgorithm};
use keystore_backend::{Algorithm, Error, PublicKey, Result};

/// DER of the `prime256v1` (P-256) named-curve OID, the `CKA_EC_PARAMS` we set.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

fn bad(what: &str) -> Error {
    Error::integrity(format!("token public key object: {what}"))
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

/// A key's public key with its aws-lc-rs form, parsed once, for verifying
/// the signatures the token makes with the key.
pub(crate) struct Verifier {
    public: PublicKey,
    parsed: ParsedPublicKey,
}

impl Verifier {
    /// Parses `public` (SPKI DER, which aws-lc-rs accepts for EC and RSA
    /// keys alongside the raw point and `RSAPublicKey`). A key aws-lc-rs
    /// rejects is [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity): it came from the token's public key
    /// object.
    pub(crate) fn new(public: PublicKey) -> Result<Verifier> {
        let alg = public.algorithm();
        let scheme: &'static dyn VerificationAlgorithm = match alg {
            Algorithm::EcdsaP256Sha256 => &aws::ECDSA_P256_SHA256_FIXED,
            Algorithm::Rsa2048PssSha256 | Algorithm::Rsa3072PssSha256 => {
                &aws::RSA_PSS_2048_8192_SHA256
            }
            Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa3072Pkcs1Sha256 => {
                &aws::RSA_PKCS1_2048_8192_SHA256
            }
            Algorithm::Aes256Gcm | Algorithm::HmacSha256 => {
                return Err(Error::policy(format!("{alg} keys have no public key")))
            }
            _ => return Err(Error::unsupported(format!("{alg} keys are not offered"))),
        };
        let parsed = ParsedPublicKey::new(scheme, public.spki_der())
            .map_err(|_| bad(&format!("not a valid {alg} public key for verification")))?;
        Ok(Verifier { public, parsed })
    }

    /// The public key.
    pub(crate) fn public(&self) -> &PublicKey {
        &self.public
    }

    /// True if `signature` (ECDSA: fixed `r‖s`; RSA: as the token made it)
    /// is a valid signature over `message`.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.parsed.verify_sig(message, signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystore_backend::ErrorKind;

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
            ErrorKind::Integrity
        );
        assert_eq!(
            ec_spki(&[0x06, 0x01, 0x00], &point).unwrap_err().kind(),
            ErrorKind::Integrity
        );
    }
}

#[cfg(test)]
mod verifier_tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};

    #[test]
    fn ecdsa_fixed_signatures_verify_from_the_spki() {
        let sk = p256::SecretKey::from_slice(&[9u8; 32]).expect("scalar");
        let point = sk.public_key().to_sec1_bytes();
        let v = Verifier::new(ec_spki(P256_PARAMS, &point).expect("spki")).expect("parse");
        use p256::ecdsa::signature::Signer;
        let sig: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(&sk).sign(b"message");
        let fixed = sig.to_bytes();
        assert!(v.verifies(b"message", &fixed));
        assert!(!v.verifies(b"massage", &fixed));
        assert!(
            !v.verifies(b"message", sig.to_der().as_bytes()),
            "fixed form only"
        );
        let other = EcdsaKeyPair::generate(&aws::ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
        let sig = other.sign(&SystemRandom::new(), b"message").expect("sign");
        assert!(
            !v.verifies(b"message", sig.as_ref()),
            "another key's signature"
        );
    }

    #[test]
    fn rsa_signatures_verify_from_the_spki() {
        let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
        let spki = kp.public_key().as_der().expect("spki").as_ref().to_vec();
        let rng = SystemRandom::new();
        for (alg, padding) in [
            (
                Algorithm::Rsa2048PssSha256,
                &aws::RSA_PSS_SHA256 as &dyn aws::RsaEncoding,
            ),
            (Algorithm::Rsa2048Pkcs1Sha256, &aws::RSA_PKCS1_SHA256),
        ] {
            let v = Verifier::new(PublicKey::from_spki_der(alg, spki.clone()).expect("pk"))
                .expect("parse");
            let mut sig = vec![0u8; kp.public_modulus_len()];
            kp.sign(padding, &rng, b"message", &mut sig).expect("sign");
            assert!(v.verifies(b"message", &sig), "{alg}");
            assert!(!v.verifies(b"massage", &sig), "{alg}");
            sig[10] ^= 1;
            assert!(!v.verifies(b"message", &sig), "{alg}");
        }
        // A PSS signature does not pass as PKCS#1 v1.5, nor the reverse.
        let pss = Verifier::new(
            PublicKey::from_spki_der(Algorithm::Rsa2048PssSha256, spki.clone()).expect("pk"),
        )
        .expect("parse");
        let mut sig = vec![0u8; kp.public_modulus_len()];
        kp.sign(&aws::RSA_PKCS1_SHA256, &rng, b"m", &mut sig)
            .expect("sign");
        assert!(!pss.verifies(b"m", &sig));
    }
}
