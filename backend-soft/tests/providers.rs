//! Differential test of the two crypto providers on the same sealed records:
//! each verifies the other's signatures, and HMAC/HKDF and AES-GCM agree
//! byte for byte across them.

#![cfg(all(feature = "aws-lc", feature = "rustcrypto"))]

use backend_soft::{create_key_file, CryptoProvider, Kdf, SoftStore, Unlock};
use keystore_api::{Algorithm, KeyHandle, SecretBytes};
use keystore_backend::Aead;
use keystore_backend::BackendKey;
use keystore_backend::ErrorKind;
use keystore_backend::KeyManagement;
use keystore_backend::Mac;
use keystore_backend::NewKey;
use keystore_backend::Signing;
use std::path::Path;

fn open(dir: &Path, provider: CryptoProvider) -> SoftStore {
    let kf = dir.join("kek");
    if !kf.exists() {
        create_key_file(&kf).unwrap();
    }
    let unlock = Unlock::KeyFile(kf);
    let store = if SoftStore::exists(&dir.join("s")) {
        SoftStore::open(&dir.join("s"), &unlock).unwrap()
    } else {
        SoftStore::create(&dir.join("s"), &unlock, Kdf::KeyFile).unwrap()
    };
    store.with_provider(provider).unwrap()
}

/// aws-lc-rs's verifier.
fn aws_verifies(spki: &[u8], msg: &[u8], fixed_sig: &[u8]) -> bool {
    use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_FIXED};
    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, spki)
        .map(|k| k.verify_sig(msg, fixed_sig).is_ok())
        .unwrap_or(false)
}

/// RustCrypto's verifier.
fn rustcrypto_verifies(spki: &[u8], msg: &[u8], fixed_sig: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
    p256::ecdsa::Signature::from_slice(fixed_sig)
        .map(|s| vk.verify(msg, &s).is_ok())
        .unwrap_or(false)
}

#[test]
fn providers_verify_each_other_and_agree_on_every_byte() {
    let msg = b"differential";
    for creator in [CryptoProvider::AwsLc, CryptoProvider::RustCrypto] {
        let dir = tempfile::tempdir().unwrap();
        let (ec, hmac, aes, spki): (KeyHandle, KeyHandle, KeyHandle, Vec<u8>);
        {
            let s = open(dir.path(), creator);
            let g = s
                .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "ec"))
                .unwrap();
            spki = g.public_key.unwrap().spki_der().to_vec();
            ec = g.handle;
            hmac = s
                .import(
                    &NewKey::new(Algorithm::HmacSha256, "h"),
                    &SecretBytes::from_slice(&[9; 32]),
                )
                .unwrap();
            aes = s
                .generate(&NewKey::new(Algorithm::Aes256Gcm, "a"))
                .unwrap()
                .handle;
        }
        let mut sigs = Vec::new();
        let mut tags = Vec::new();
        let mut sealed = Vec::new();
        for user in [CryptoProvider::AwsLc, CryptoProvider::RustCrypto] {
            let s = open(dir.path(), user);
            assert_eq!(s.provider(), user);
            assert_eq!(
                s.public_key(&BackendKey::new(ec.clone(), Algorithm::EcdsaP256Sha256))
                    .unwrap()
                    .spki_der(),
                &spki[..],
                "{user:?} reads the same public key from a {creator:?} record"
            );
            sigs.push(
                s.sign(
                    &BackendKey::new(ec.clone(), Algorithm::EcdsaP256Sha256),
                    msg,
                )
                .unwrap(),
            );
            tags.push(
                *s.hmac_sha256(
                    &BackendKey::new(hmac.clone(), Algorithm::HmacSha256),
                    b"salt",
                )
                .unwrap(),
            );
            sealed.push((
                user,
                s.encrypt(
                    &BackendKey::new(aes.clone(), Algorithm::Aes256Gcm),
                    b"aad",
                    b"plaintext",
                )
                .unwrap(),
            ));
        }
        for sig in &sigs {
            assert!(
                aws_verifies(&spki, msg, sig),
                "aws-lc-rs verifies ({creator:?} record)"
            );
            assert!(
                rustcrypto_verifies(&spki, msg, sig),
                "RustCrypto verifies ({creator:?} record)"
            );
        }
        assert_eq!(
            tags[0], tags[1],
            "HMAC (the HKDF extract step) is identical"
        );
        for (made_by, ct) in &sealed {
            for user in [CryptoProvider::AwsLc, CryptoProvider::RustCrypto] {
                let s = open(dir.path(), user);
                let pt = s
                    .decrypt(
                        &BackendKey::new(aes.clone(), Algorithm::Aes256Gcm),
                        b"aad",
                        &ct.nonce,
                        &ct.ciphertext,
                    )
                    .unwrap();
                assert_eq!(
                    pt.expose(),
                    b"plaintext",
                    "{user:?} opens {made_by:?}'s ciphertext"
                );
            }
        }
    }
}

#[test]
fn rustcrypto_refuses_rsa_rather_than_sign_in_variable_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), CryptoProvider::RustCrypto);
    assert!(!s.capabilities().supports(
        Algorithm::Rsa2048PssSha256,
        keystore_api::Operation::Generate
    ));
    assert_eq!(
        s.generate(&NewKey::new(Algorithm::Rsa2048PssSha256, "r"))
            .unwrap_err()
            .kind(),
        ErrorKind::Unsupported
    );
    drop(s);
    // An RSA key made by aws-lc-rs is not silently used by RustCrypto either.
    let h = open(dir.path(), CryptoProvider::AwsLc)
        .generate(&NewKey::new(Algorithm::Rsa2048Pkcs1Sha256, "r"))
        .unwrap()
        .handle;
    let s = open(dir.path(), CryptoProvider::RustCrypto);
    assert_eq!(
        s.sign(
            &BackendKey::new(h.clone(), Algorithm::Rsa2048Pkcs1Sha256),
            b"m"
        )
        .unwrap_err()
        .kind(),
        ErrorKind::Unsupported
    );
}
