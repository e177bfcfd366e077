//! AES-256-GCM envelopes and HMAC, checked against the RustCrypto crates.

use crate::support::so;
use crate::support::{expect_err, unsupported};
use crate::{Fixture, Outcome};
use keystore_api::ErrorKind;
use keystore_api::KeyManagement;
use keystore_api::{envelope, Algorithm, KeySpec, Operation, SecretBytes};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const K: [u8; 32] = [0x42; 32];

/// Imports K as an AES key named `aes` if the backend can; else proves Unsupported.
fn aes_key<F: Fixture>(ks: &keystore_api::Keystore<F::Backend>) -> bool {
    let caps = ks.backend().capabilities();
    let spec = KeySpec::new(Algorithm::Aes256Gcm);
    if caps.supports(Algorithm::Aes256Gcm, Operation::Import) {
        ks.import(&so(), "aes", spec, &SecretBytes::from_slice(&K))
            .expect("import aes");
        true
    } else {
        expect_err(
            ks.import(&so(), "aes", spec, &SecretBytes::from_slice(&K)),
            ErrorKind::Unsupported,
            "AES import",
        );
        expect_err(
            ks.create(&so(), "aes2", spec),
            ErrorKind::Unsupported,
            "AES generate",
        );
        false
    }
}

/// Decrypts an envelope with the aes-gcm crate, per the envelope contract.
fn independent_open(envelope: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&K).ok()?;
    let (header, rest) = envelope.split_at(envelope::HEADER_LEN);
    let (nonce, ct) = rest.split_at(envelope::NONCE_LEN);
    let mut full_aad = header.to_vec();
    full_aad.extend_from_slice(aad);
    cipher
        .decrypt(
            &<[u8; 12]>::try_from(nonce).ok()?.into(),
            Payload {
                msg: ct,
                aad: &full_aad,
            },
        )
        .ok()
}

/// TEST-KEY-08
pub fn aead_envelope_interop<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    if !aes_key::<F>(&ks) {
        return unsupported(Algorithm::Aes256Gcm, "import/encrypt");
    }
    for (pt, aad) in [
        (&b""[..], &b""[..]),
        (b"x", b""),
        (b"", b"aad only"),
        (&[7u8; 70000][..], b"large"),
    ] {
        let env = ks.encrypt("aes", pt, aad).expect("encrypt");
        assert_eq!(env.len(), envelope::MIN_LEN + pt.len());
        assert_eq!(&env[..4], &[b'K', b'E', 1, Algorithm::Aes256Gcm.code()]);
        assert_eq!(
            u32::from_be_bytes([env[4], env[5], env[6], env[7]]),
            1,
            "envelope names version 1"
        );
        assert_eq!(
            independent_open(&env, aad).as_deref(),
            Some(pt),
            "aes-gcm crate decrypts the envelope"
        );
        assert_eq!(ks.decrypt("aes", &env, aad).expect("decrypt").expose(), pt);
        expect_err(
            ks.decrypt("aes", &env, b"other aad"),
            ErrorKind::Integrity,
            "wrong AAD",
        );
    }
    // Nonces are fresh: two encryptions of the same plaintext differ.
    let a = ks.encrypt("aes", b"same", b"").expect("encrypt");
    let b = ks.encrypt("aes", b"same", b"").expect("encrypt");
    assert_ne!(a[8..20], b[8..20], "nonce reused");
    // A generated AES key works too.
    ks.create(&so(), "aes-gen", KeySpec::new(Algorithm::Aes256Gcm))
        .expect("generate aes");
    let env = ks.encrypt("aes-gen", b"hello", b"ctx").expect("encrypt");
    assert_eq!(
        ks.decrypt("aes-gen", &env, b"ctx")
            .expect("decrypt")
            .expose(),
        b"hello"
    );
    expect_err(
        ks.decrypt("aes", &env, b"ctx"),
        ErrorKind::Integrity,
        "another key's envelope",
    );
    Outcome::Passed
}

/// TEST-KEY-09
pub fn hmac_matches_reference<F: Fixture>(fx: &mut F) -> Outcome {
    use hmac::Mac;
    let ks = fx.open();
    let spec = KeySpec::new(Algorithm::HmacSha256);
    if !ks
        .backend()
        .capabilities()
        .supports(Algorithm::HmacSha256, Operation::Import)
    {
        expect_err(
            ks.import(&so(), "mac", spec, &SecretBytes::from_slice(&K)),
            ErrorKind::Unsupported,
            "HMAC import",
        );
        return unsupported(Algorithm::HmacSha256, "import");
    }
    ks.import(&so(), "mac", spec, &SecretBytes::from_slice(&K))
        .expect("import hmac");
    for data in [&b""[..], b"abc", &[1u8; 10000][..]] {
        let tag = ks.mac("mac", data).expect("mac");
        let mut reference = hmac::Hmac::<sha2::Sha256>::new_from_slice(&K).expect("key");
        reference.update(data);
        assert_eq!(&tag[..], &reference.finalize().into_bytes()[..]);
        ks.verify_mac("mac", data, &tag).expect("verify_mac");
        let mut bad = tag;
        bad[0] ^= 0x80;
        expect_err(
            ks.verify_mac("mac", data, &bad),
            ErrorKind::Integrity,
            "wrong tag",
        );
        expect_err(
            ks.verify_mac("mac", data, &tag[..31]),
            ErrorKind::Integrity,
            "short tag",
        );
    }
    Outcome::Passed
}

/// TEST-KEY-11
pub fn prop_aead_round_trip<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    if !aes_key::<F>(&ks) {
        return unsupported(Algorithm::Aes256Gcm, "import/encrypt");
    }
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    runner
        .run(
            &(
                prop::collection::vec(any::<u8>(), 0..4096),
                prop::collection::vec(any::<u8>(), 0..256),
            ),
            |(pt, aad)| {
                let env = ks
                    .encrypt("aes", &pt, &aad)
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                let back = ks
                    .decrypt("aes", &env, &aad)
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(back.expose(), &pt[..]);
                prop_assert_eq!(independent_open(&env, &aad), Some(pt.clone()));
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    Outcome::Passed
}

/// TEST-KEY-12
pub fn prop_aead_bit_flip_rejected<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    if !aes_key::<F>(&ks) {
        return unsupported(Algorithm::Aes256Gcm, "import/encrypt");
    }
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    runner
        .run(
            &(
                prop::collection::vec(any::<u8>(), 0..512),
                prop::collection::vec(any::<u8>(), 1..64),
                any::<prop::sample::Index>(),
                0u8..8,
                any::<bool>(),
            ),
            |(pt, aad, index, bit, flip_aad)| {
                let env = ks
                    .encrypt("aes", &pt, &aad)
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                let (env2, aad2) = if flip_aad {
                    let mut a = aad.clone();
                    let i = index.index(a.len());
                    a[i] ^= 1 << bit;
                    (env.clone(), a)
                } else {
                    // Any byte: header, nonce, ciphertext or tag.
                    let mut e = env.clone();
                    let i = index.index(e.len());
                    e[i] ^= 1 << bit;
                    (e, aad.clone())
                };
                match ks.decrypt("aes", &env2, &aad2) {
                    Ok(_) => {
                        return Err(TestCaseError::fail("a modified envelope or AAD decrypted"))
                    }
                    Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Integrity, "{:?}", e),
                }
                // The untouched envelope still opens: nothing else was harmed.
                prop_assert_eq!(
                    ks.decrypt("aes", &env, &aad)
                        .map(|p| p.expose().to_vec())
                        .ok(),
                    Some(pt)
                );
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    Outcome::Passed
}
