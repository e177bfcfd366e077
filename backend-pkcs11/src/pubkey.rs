//! Public keys read from token objects, encoded as SPKI DER.
//!
//! - EC (P-256, P-384): `CKA_EC_PARAMS` must be the curve's named-curve
//!   OID; `CKA_EC_POINT` is the DER OCTET STRING around the uncompressed
//!   point `04‖X‖Y` (PKCS#11 2.40), or the bare point (some older tokens).
//!   Checked on the curve by `p256`/`p384`.
//! - Ed25519: `CKA_EC_PARAMS` is the OID 1.3.101.112 (what this crate sets)
//!   or the PKCS#11 3.0 PrintableString `edwards25519`; `CKA_EC_POINT` is the
//!   32-byte key, DER OCTET STRING-wrapped (SoftHSM) or bare.
//! - RSA: `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`, encoded with the `rsa`
//!   crate (public-key code only).
//!
//! [`Verifier`] checks the token's signatures on the host with aws-lc-rs,
//! parsed once per key.

use crate::objects::not_offered;
use aws_lc_rs::signature::{self as aws, ParsedPublicKey, VerificationAlgorithm};
use keystore_backend::{Algorithm, EcCurve, Error, PublicKey, Result};

/// DER of the `prime256v1` (P-256) named-curve OID, the `CKA_EC_PARAMS` we set.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// DER of the `secp384r1` (P-384) named-curve OID 1.3.132.0.34.
pub(crate) const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
/// DER of the Ed25519 OID 1.3.101.112 (RFC 8410), the `CKA_EC_PARAMS` we
/// set for Ed25519 keys (SoftHSM 2.6.1 accepts it, and the PrintableString).
pub(crate) const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
/// DER of the PrintableString `edwards25519` (the PKCS#11 3.0 curve name).
const ED25519_NAME_PARAMS: &[u8] = b"\x13\x0cedwards25519";

/// The `CKA_EC_PARAMS` of `alg`'s keys, for EC and Edwards algorithms.
pub(crate) fn ec_params(alg: Algorithm) -> Option<&'static [u8]> {
    match (alg.ec_curve(), alg) {
        (Some(EcCurve::P256), _) => Some(P256_PARAMS),
        (Some(EcCurve::P384), _) => Some(P384_PARAMS),
        (None, Algorithm::Ed25519) => Some(ED25519_PARAMS),
        (None, _) => None,
    }
}

fn bad(what: &str) -> Error {
    Error::integrity(format!("token public key object: {what}"))
}

/// `point` without a DER OCTET STRING header around `n` bytes (`n` < 128),
/// or `point` itself if it is `n` bytes.
fn octets(point: &[u8], n: usize) -> Option<&[u8]> {
    match point {
        [0x04, len, rest @ ..] if *len as usize == n && rest.len() == n => Some(rest),
        _ if point.len() == n => Some(point),
        _ => None,
    }
}

/// SPKI of an EC key of `alg` (ECDSA P-256 or P-384, ECDH P-256) from its
/// `CKA_EC_PARAMS` and `CKA_EC_POINT`.
pub(crate) fn ec_spki(alg: Algorithm, params: &[u8], point: &[u8]) -> Result<PublicKey> {
    let (curve, name) = match alg.ec_curve() {
        Some(c @ EcCurve::P256) => (c, "P-256"),
        Some(c @ EcCurve::P384) => (c, "P-384"),
        None => return Err(bad(&format!("{alg} keys are not EC keys"))),
    };
    if Some(params) != ec_params(alg) {
        return Err(bad(&format!("CKA_EC_PARAMS is not the {name} curve")));
    }
    let raw = octets(point, 1 + 2 * curve.field_len())
        .filter(|raw| raw[0] == 0x04)
        .ok_or_else(|| bad(&format!("CKA_EC_POINT is not an uncompressed {name} point")))?;
    let off_curve = || bad(&format!("CKA_EC_POINT is not on the {name} curve"));
    let encode = || bad("cannot encode the EC public key");
    let der = match curve {
        EcCurve::P256 => {
            use p256::pkcs8::EncodePublicKey;
            p256::PublicKey::from_sec1_bytes(raw)
                .map_err(|_| off_curve())?
                .to_public_key_der()
                .map_err(|_| encode())?
        }
        EcCurve::P384 => {
            use p384::pkcs8::EncodePublicKey;
            p384::PublicKey::from_sec1_bytes(raw)
                .map_err(|_| off_curve())?
                .to_public_key_der()
                .map_err(|_| encode())?
        }
    };
    PublicKey::from_spki_der(alg, der.as_bytes().to_vec())
}

/// SPKI of an Ed25519 key from its `CKA_EC_PARAMS` and `CKA_EC_POINT`.
pub(crate) fn ed25519_spki(params: &[u8], point: &[u8]) -> Result<PublicKey> {
    if params != ED25519_PARAMS && params != ED25519_NAME_PARAMS {
        return Err(bad("CKA_EC_PARAMS is not the Ed25519 curve"));
    }
    let raw: &[u8; 32] = octets(point, 32)
        .and_then(|raw| raw.try_into().ok())
        .ok_or_else(|| bad("CKA_EC_POINT is not a 32-byte Ed25519 key"))?;
    PublicKey::from_spki_der(
        Algorithm::Ed25519,
        keystore_backend::public_key::ed25519_spki(raw),
    )
    .map_err(|_| bad("CKA_EC_POINT is not a valid Ed25519 key"))
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
/// the signatures the token makes with the key (ECDH keys have none).
pub(crate) struct Verifier {
    public: PublicKey,
    parsed: Option<ParsedPublicKey>,
}

impl Verifier {
    /// Parses `public` (SPKI DER, which aws-lc-rs accepts for EC, Ed25519
    /// and RSA keys alongside their raw forms). A key aws-lc-rs rejects is
    /// [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity): it
    /// came from the token's public key object.
    pub(crate) fn new(public: PublicKey) -> Result<Verifier> {
        let alg = public.algorithm();
        let scheme: &'static dyn VerificationAlgorithm = match alg {
            Algorithm::EcdsaP256Sha256 => &aws::ECDSA_P256_SHA256_FIXED,
            Algorithm::EcdsaP384Sha384 => &aws::ECDSA_P384_SHA384_FIXED,
            Algorithm::Ed25519 => &aws::ED25519,
            Algorithm::Rsa2048PssSha256 | Algorithm::Rsa3072PssSha256 => {
                &aws::RSA_PSS_2048_8192_SHA256
            }
            Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa3072Pkcs1Sha256 => {
                &aws::RSA_PKCS1_2048_8192_SHA256
            }
            // Checked on the curve by `ec_spki`; it verifies nothing.
            Algorithm::EcdhP256 => {
                return Ok(Verifier {
                    public,
                    parsed: None,
                })
            }
            Algorithm::Aes256Gcm | Algorithm::HmacSha256 => {
                return Err(Error::policy(format!("{alg} keys have no public key")))
            }
            Algorithm::MlDsa65 => return Err(not_offered(alg)),
        };
        let parsed = ParsedPublicKey::new(scheme, public.spki_der())
            .map_err(|_| bad(&format!("not a valid {alg} public key for verification")))?;
        Ok(Verifier {
            public,
            parsed: Some(parsed),
        })
    }

    /// The public key.
    pub(crate) fn public(&self) -> &PublicKey {
        &self.public
    }

    /// True if `signature` (ECDSA: fixed `r‖s`; Ed25519 and RSA: as the
    /// token made it) is a valid signature over `message`; false for a key
    /// that does not sign.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.parsed
            .as_ref()
            .is_some_and(|p| p.verify_sig(message, signature).is_ok())
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
        let p256 = Algorithm::EcdsaP256Sha256;
        let a = ec_spki(p256, P256_PARAMS, &wrapped).expect("wrapped");
        let b = ec_spki(p256, P256_PARAMS, &point).expect("bare");
        assert_eq!(a, b);
        let ecdh = ec_spki(Algorithm::EcdhP256, P256_PARAMS, &wrapped).expect("ecdh");
        assert_eq!(ecdh.spki_der(), a.spki_der(), "the same SPKI");
        for (params, point) in [
            (P256_PARAMS, &point[..64]),
            (&[0x06, 0x01, 0x00][..], &point[..]),
            (P384_PARAMS, &point[..]),
        ] {
            let e = ec_spki(p256, params, point).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        }
        // A P-256 point under the P-384 OID, and the reverse.
        assert_eq!(
            ec_spki(Algorithm::EcdsaP384Sha384, P384_PARAMS, &wrapped)
                .unwrap_err()
                .kind(),
            ErrorKind::Integrity
        );
    }

    #[test]
    fn p384_point_forms() {
        let sk = p384::SecretKey::from_slice(&[7u8; 48]).expect("scalar");
        let point = sk.public_key().to_sec1_bytes();
        assert_eq!(point.len(), 97);
        let mut wrapped = vec![0x04, 0x61];
        wrapped.extend_from_slice(&point);
        let alg = Algorithm::EcdsaP384Sha384;
        let a = ec_spki(alg, P384_PARAMS, &wrapped).expect("wrapped");
        assert_eq!(a, ec_spki(alg, P384_PARAMS, &point).expect("bare"));
        assert_eq!(a.algorithm(), alg);
        let mut off = point.to_vec();
        off[96] ^= 1;
        for (params, point) in [(P384_PARAMS, &off[..]), (P256_PARAMS, &point[..])] {
            let e = ec_spki(alg, params, point).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        }
    }

    #[test]
    fn ed25519_point_forms() {
        let raw = ed25519_raw(&[5u8; 32]);
        let mut wrapped = vec![0x04, 0x20];
        wrapped.extend_from_slice(&raw);
        let a = ed25519_spki(ED25519_PARAMS, &wrapped).expect("wrapped");
        assert_eq!(a, ed25519_spki(ED25519_PARAMS, &raw).expect("bare"));
        assert_eq!(
            a,
            ed25519_spki(ED25519_NAME_PARAMS, &wrapped).expect("curve name")
        );
        assert_eq!(
            a.spki_der(),
            keystore_backend::public_key::ed25519_spki(&raw).as_slice()
        );
        for (params, point) in [
            (P256_PARAMS, &wrapped[..]),
            (ED25519_PARAMS, &wrapped[..33]),
            (ED25519_PARAMS, &raw[..31]),
        ] {
            let e = ed25519_spki(params, point).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        }
        assert_eq!(ec_params(Algorithm::Ed25519), Some(ED25519_PARAMS));
        assert_eq!(ec_params(Algorithm::EcdhP256), Some(P256_PARAMS));
        assert_eq!(ec_params(Algorithm::MlDsa65), None);
    }

    /// The raw public key of the Ed25519 seed `seed`.
    pub(super) fn ed25519_raw(seed: &[u8; 32]) -> [u8; 32] {
        use aws_lc_rs::signature::KeyPair;
        let kp = aws::Ed25519KeyPair::from_seed_unchecked(seed).expect("seed");
        kp.public_key().as_ref().try_into().expect("32 bytes")
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
        let v =
            Verifier::new(ec_spki(Algorithm::EcdsaP256Sha256, P256_PARAMS, &point).expect("spki"))
                .expect("parse");
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

    #[test]
    fn p384_and_ed25519_signatures_verify_from_the_spki() {
        let rng = SystemRandom::new();
        let kp = EcdsaKeyPair::generate(&aws::ECDSA_P384_SHA384_FIXED_SIGNING).expect("key");
        let pk = ec_spki(
            Algorithm::EcdsaP384Sha384,
            P384_PARAMS,
            kp.public_key().as_ref(),
        )
        .expect("spki");
        let v = Verifier::new(pk).expect("parse");
        let sig = kp.sign(&rng, b"message").expect("sign");
        assert_eq!(sig.as_ref().len(), 96);
        assert!(v.verifies(b"message", sig.as_ref()));
        assert!(!v.verifies(b"massage", sig.as_ref()));

        let seed = [6u8; 32];
        let ed = aws::Ed25519KeyPair::from_seed_unchecked(&seed).expect("seed");
        let v = Verifier::new(
            ed25519_spki(ED25519_PARAMS, &super::tests::ed25519_raw(&seed)).expect("spki"),
        )
        .expect("parse");
        let sig = ed.sign(b"message");
        assert!(v.verifies(b"message", sig.as_ref()));
        assert!(!v.verifies(b"massage", sig.as_ref()));
    }

    #[test]
    fn ecdh_keys_verify_nothing() {
        let sk = p256::SecretKey::from_slice(&[9u8; 32]).expect("scalar");
        let point = sk.public_key().to_sec1_bytes();
        let v = Verifier::new(ec_spki(Algorithm::EcdhP256, P256_PARAMS, &point).expect("spki"))
            .expect("an ECDH public key is kept");
        assert_eq!(v.public().algorithm(), Algorithm::EcdhP256);
        assert!(!v.verifies(b"m", &[0u8; 64]));
    }
}
