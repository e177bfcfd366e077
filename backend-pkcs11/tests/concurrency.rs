//! Concurrency on one keystore over one SoftHSM2 token: two threads make
//! 500 ECDSA signatures each while two more sign with RSA-PSS and run
//! AES-GCM and HMAC. Every result is checked independently (RustCrypto
//! `p256`, `rsa`, `hmac`), and no operation may fail.

use backend_pkcs11::testing::softhsm_or_skip;
use keystore_api::{Actor, Algorithm, KeySpec, Keystore, Role, SecretBytes, SignatureFormat};
use std::sync::Mutex;

const ECDSA_THREADS: usize = 2;
const ECDSA_SIGNS: usize = 500;

#[test]
fn two_threads_times_500_signatures_all_verify() {
    let Some(hsm) = softhsm_or_skip() else {
        return;
    };
    let token = hsm.new_token("conc").expect("token");
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = token.open().expect("open backend");
    let ks = Keystore::open(backend, &dir.path().join("metadata.sqlite")).expect("keystore");
    let so = Actor::new("concurrency-so", Role::SecurityOfficer).expect("actor");
    let ec = ks
        .create(&so, "ec", KeySpec::new(Algorithm::EcdsaP256Sha256))
        .expect("create ec");
    let ec_spki = ec
        .active()
        .and_then(|v| v.public_key.clone())
        .expect("spki");
    let rsa = ks
        .create(&so, "rsa", KeySpec::new(Algorithm::Rsa2048PssSha256))
        .expect("create rsa");
    let rsa_spki = rsa
        .active()
        .and_then(|v| v.public_key.clone())
        .expect("spki");
    let k = [0x5au8; 32];
    ks.import(
        &so,
        "mac",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&k),
    )
    .expect("import mac");
    ks.create(&so, "aes", KeySpec::new(Algorithm::Aes256Gcm))
        .expect("create aes");
    let failures = Mutex::new(Vec::<String>::new());
    let fail = |m: String| failures.lock().unwrap_or_else(|p| p.into_inner()).push(m);

    std::thread::scope(|s| {
        for t in 0..ECDSA_THREADS {
            let (ks, spki, fail) = (&ks, &ec_spki, &fail);
            s.spawn(move || {
                use p256::ecdsa::signature::Verifier;
                use p256::pkcs8::DecodePublicKey;
                let vk = p256::ecdsa::VerifyingKey::from_public_key_der(spki.spki_der())
                    .expect("p256 key");
                for i in 0..ECDSA_SIGNS {
                    let msg = format!("thread {t} message {i}");
                    let format = if i % 2 == 0 {
                        SignatureFormat::Der
                    } else {
                        SignatureFormat::Fixed
                    };
                    match ks.sign("ec", msg.as_bytes(), format) {
                        Ok(sig) => {
                            let parsed = match format {
                                SignatureFormat::Der => {
                                    p256::ecdsa::Signature::from_der(&sig.bytes)
                                }
                                SignatureFormat::Fixed => {
                                    p256::ecdsa::Signature::from_slice(&sig.bytes)
                                }
                            };
                            if !parsed.is_ok_and(|p| vk.verify(msg.as_bytes(), &p).is_ok()) {
                                fail(format!("thread {t}: signature {i} does not verify"));
                            }
                        }
                        Err(e) => fail(format!("thread {t}: sign {i}: {e}")),
                    }
                }
            });
        }
        {
            let (ks, spki, fail) = (&ks, &rsa_spki, &fail);
            s.spawn(move || {
                use rsa::pkcs8::DecodePublicKey;
                use rsa::signature::Verifier;
                let pk = rsa::RsaPublicKey::from_public_key_der(spki.spki_der()).expect("rsa key");
                let vk = rsa::pss::VerifyingKey::<sha2::Sha256>::new(pk);
                for i in 0..60 {
                    let msg = format!("rsa message {i}");
                    match ks.sign("rsa", msg.as_bytes(), SignatureFormat::Der) {
                        Ok(sig) => {
                            let ok = rsa::pss::Signature::try_from(&sig.bytes[..])
                                .is_ok_and(|s| vk.verify(msg.as_bytes(), &s).is_ok());
                            if !ok {
                                fail(format!("RSA-PSS signature {i} does not verify"));
                            }
                        }
                        Err(e) => fail(format!("rsa sign {i}: {e}")),
                    }
                }
            });
        }
        {
            let (ks, fail) = (&ks, &fail);
            s.spawn(move || {
                use hmac::Mac;
                for i in 0..300u32 {
                    let data = i.to_be_bytes();
                    match ks.mac("mac", &data) {
                        Ok(tag) => {
                            let mut r =
                                hmac::Hmac::<sha2::Sha256>::new_from_slice(&k).expect("key");
                            r.update(&data);
                            if r.finalize().into_bytes()[..] != tag[..] {
                                fail(format!("HMAC {i} differs from the reference"));
                            }
                        }
                        Err(e) => fail(format!("mac {i}: {e}")),
                    }
                    let pt = format!("plaintext {i}");
                    match ks
                        .encrypt("aes", pt.as_bytes(), b"ctx")
                        .and_then(|env| ks.decrypt("aes", &env, b"ctx"))
                    {
                        Ok(back) if back.expose() == pt.as_bytes() => {}
                        Ok(_) => fail(format!("AES-GCM round trip {i} changed the plaintext")),
                        Err(e) => fail(format!("aes {i}: {e}")),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    // The pool grew to the concurrency level, not with the operation count.
    let opened = ks.backend().sessions_opened();
    assert!(
        opened <= 8,
        "{opened} sessions opened for ~1,900 operations"
    );
}
