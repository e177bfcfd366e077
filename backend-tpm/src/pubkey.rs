//! Public keys and signatures out of TPM structures.

use keystore_api::{Algorithm, Error, PublicKey, Result};
use tss_esapi::structures::{Public, Signature};

fn bad(what: &str) -> Error {
    Error::Integrity(format!("TPM public area: {what}"))
}

/// Left-pads a big-endian integer to `n` bytes.
fn pad(v: &[u8], n: usize) -> Result<Vec<u8>> {
    let v = {
        let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
        &v[first..]
    };
    if v.len() > n {
        return Err(bad("integer longer than its field"));
    }
    let mut out = vec![0u8; n - v.len()];
    out.extend_from_slice(v);
    Ok(out)
}

/// The SPKI public key of a TPM key of `alg`.
pub fn spki(alg: Algorithm, public: &Public) -> Result<PublicKey> {
    let der = match (alg, public) {
        (Algorithm::EcdsaP256Sha256, Public::Ecc { unique, .. }) => {
            use p256::pkcs8::EncodePublicKey;
            let mut sec1 = vec![0x04];
            sec1.extend(pad(unique.x().value(), 32)?);
            sec1.extend(pad(unique.y().value(), 32)?);
            let pk = p256::PublicKey::from_sec1_bytes(&sec1)
                .map_err(|_| bad("ECC point is not on P-256"))?;
            pk.to_public_key_der()
                .map_err(|_| bad("cannot encode the P-256 key"))?
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

/// The signature bytes the keystore expects: ECDSA as fixed `r‖s`
/// (32 bytes each), RSA as the modulus-length signature.
pub fn signature_bytes(alg: Algorithm, sig: Signature) -> Result<Vec<u8>> {
    let wrong = || {
        Error::backend_msg(
            "tpm",
            format!("the TPM returned a signature of the wrong kind for {alg}"),
        )
    };
    match (alg, sig) {
        (Algorithm::EcdsaP256Sha256, Signature::EcDsa(s)) => {
            let mut out = pad(s.signature_r().value(), 32).map_err(|_| wrong())?;
            out.extend(pad(s.signature_s().value(), 32).map_err(|_| wrong())?);
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
    pad(v, n).ok()
}
