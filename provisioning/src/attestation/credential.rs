//! `TPM2_MakeCredential` in software (TPM 2.0 Library Part 1, 24 "Credential
//! Protection"), for an RSA endorsement key: the factory wraps a fresh
//! secret so that only the TPM holding the EK can unwrap it
//! (`TPM2_ActivateCredential`), and only for the object with the given
//! Name (the attestation key).
//!
//! - seed (32 bytes, the EK's Name algorithm SHA-256): for an RSA EK,
//!   random and encrypted to the EK with RSA-OAEP (SHA-256, label
//!   `"IDENTITY\0"`); for an ECC P-256 EK, `KDFe(SHA-256, Z, "IDENTITY",
//!   x_eph, x_ek, 256)` from an ephemeral ECDH with the EK, the ephemeral
//!   point being the encrypted secret;
//! - symmetric key: `KDFa(SHA-256, seed, "STORAGE", Name, "", bits)` for the
//!   EK's symmetric algorithm (AES-CFB, zero IV), over `TPM2B_DIGEST(secret)`;
//! - integrity: `HMAC-SHA-256(KDFa(SHA-256, seed, "INTEGRITY", "", "", 256),
//!   encIdentity || Name)`.

use super::tpm::{Public, PublicKey, ALG_AES, ALG_CFB, ALG_SHA256, ECC_NIST_P256};
use crate::util::random_bytes;
use hmac::{Hmac, Mac};
use keystore_api::{Error, Result};
use sha2::Sha256;

/// The wrapped credential: the `TPM2B_ID_OBJECT` and
/// `TPM2B_ENCRYPTED_SECRET` buffers (without their size prefixes).
#[derive(Debug, Clone)]
pub(crate) struct Credential {
    pub(crate) blob: Vec<u8>,
    pub(crate) encrypted_secret: Vec<u8>,
}

/// `KDFa` (Part 1, 11.4.10.2) with HMAC-SHA-256: `bits` bits of
/// `HMAC(key, [i]_32 || label || 0x00 || context_u || context_v || [bits]_32)`.
fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + 32);
    let mut i: u32 = 1;
    while out.len() < bytes {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(&i.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        i += 1;
    }
    out.truncate(bytes);
    out
}

/// AES-CFB with a zero IV, in place, for 128- or 256-bit keys.
fn aes_cfb_encrypt(key: &[u8], buf: &mut [u8]) -> Result<()> {
    use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
    let iv = [0u8; 16];
    match key.len() {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new(key.into(), &iv.into()).encrypt(buf),
        32 => cfb_mode::Encryptor::<aes::Aes256>::new(key.into(), &iv.into()).encrypt(buf),
        n => {
            return Err(Error::unsupported(format!(
                "an EK whose symmetric key has {n} bytes"
            )))
        }
    }
    Ok(())
}

/// A random seed encrypted to an RSA EK (OAEP, SHA-256, `"IDENTITY\0"`).
fn rsa_seed(modulus: &[u8], exponent: u32) -> Result<(Vec<u8>, Vec<u8>)> {
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from(exponent),
    )
    .map_err(|e| Error::invalid_input(format!("the EK's RSA public key is unusable: {e}")))?;
    let seed = random_bytes::<32>()?;
    let encrypted = key
        .encrypt(
            &mut rand_core::OsRng,
            rsa::Oaep::new_with_label::<Sha256, _>("IDENTITY\0"),
            &seed,
        )
        .map_err(|e| Error::invalid_input(format!("cannot encrypt to the EK: {e}")))?;
    Ok((seed.to_vec(), encrypted))
}

/// `KDFe` (Part 1, 11.4.10.3) with SHA-256, one 256-bit block:
/// `SHA-256([1]_32 || Z || label || 0x00 || party_u || party_v)`.
fn kdfe(z: &[u8], label: &str, party_u: &[u8], party_v: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    h.update(label.as_bytes());
    h.update([0]);
    h.update(party_u);
    h.update(party_v);
    h.finalize().to_vec()
}

/// A seed agreed with an ECC P-256 EK through an ephemeral key; the
/// encrypted secret is the ephemeral point (`TPMS_ECC_POINT`).
fn ecc_seed(x: &[u8], y: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = super::ek::sec1_point(x, y, 32)?;
    let ek = p256::PublicKey::from_sec1_bytes(&point)
        .map_err(|_| Error::invalid_input("the EK's public key is not a point on P-256"))?;
    let eph = p256::ecdh::EphemeralSecret::random(&mut rand_core::OsRng);
    let eph_point = eph.public_key().to_encoded_point(false);
    let z = eph.diffie_hellman(&ek);
    let (ex, ey) = (
        eph_point.x().map(|v| v.to_vec()).unwrap_or_default(),
        eph_point.y().map(|v| v.to_vec()).unwrap_or_default(),
    );
    let seed = kdfe(z.raw_secret_bytes(), "IDENTITY", &ex, &point[1..33]);
    let mut encrypted = Vec::with_capacity(68);
    for c in [&ex, &ey] {
        encrypted.extend_from_slice(&(c.len() as u16).to_be_bytes());
        encrypted.extend_from_slice(c);
    }
    Ok((seed, encrypted))
}

/// Wraps `secret` (at most 32 bytes) for the TPM holding the endorsement key
/// `ek`, bound to the object named `name`. Only RSA EKs with a SHA-256 Name
/// and AES-CFB (the TCG default RSA EK template) are supported.
pub(crate) fn make_credential(ek: &Public, name: &[u8], secret: &[u8]) -> Result<Credential> {
    if secret.len() > 32 {
        return Err(Error::invalid_input("a credential is at most 32 bytes"));
    }
    if ek.name_alg != ALG_SHA256 {
        return Err(Error::unsupported(
            "an EK whose Name algorithm is not SHA-256",
        ));
    }
    let sym_bits = match ek.symmetric {
        Some((ALG_AES, bits, ALG_CFB)) if bits == 128 || bits == 256 => u32::from(bits),
        _ => {
            return Err(Error::unsupported(
                "an EK whose symmetric algorithm is not AES-CFB",
            ))
        }
    };
    let (seed, encrypted_secret) = match &ek.key {
        PublicKey::Rsa { modulus, exponent } => rsa_seed(modulus, *exponent)?,
        PublicKey::Ecc { curve, x, y } if *curve == ECC_NIST_P256 => ecc_seed(x, y)?,
        _ => {
            return Err(Error::unsupported(
                "credential activation with an EK that is neither RSA nor ECC P-256",
            ))
        }
    };
    let sym_key = kdfa(&seed, "STORAGE", name, &[], sym_bits);
    let mut enc_identity = (secret.len() as u16).to_be_bytes().to_vec();
    enc_identity.extend_from_slice(secret);
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;
    let hmac_key = kdfa(&seed, "INTEGRITY", &[], &[], 256);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&hmac_key).expect("HMAC takes any key");
    mac.update(&enc_identity);
    mac.update(name);
    let outer = mac.finalize().into_bytes();
    let mut blob = 32u16.to_be_bytes().to_vec();
    blob.extend_from_slice(&outer);
    blob.extend_from_slice(&enc_identity);
    Ok(Credential {
        blob,
        encrypted_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_matches_a_hand_computed_block() {
        // One block: HMAC(key, 00000001 || "STORAGE" || 00 || u || v || 00000080).
        let key = [7u8; 32];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(&[0, 0, 0, 1]);
        mac.update(b"STORAGE\0");
        mac.update(b"name");
        mac.update(&[0, 0, 0, 128]);
        let full = mac.finalize().into_bytes();
        assert_eq!(
            kdfa(&key, "STORAGE", b"name", &[], 128),
            full[..16].to_vec()
        );
        // 256 bits need one block; 264 bits two.
        assert_eq!(kdfa(&key, "INTEGRITY", &[], &[], 264).len(), 33);
    }
}
