//! Storage: non-extractability, nothing in plaintext at rest, persistence,
//! destroy, credentials, metadata, uniqueness, concurrency.

use crate::support::so;
use crate::support::{
    create_or_prove_unsupported, expect_err, hkdf_reference, random_key, scan_files, spki,
    verify_independently, Bystanders,
};
use crate::{Fixture, Outcome};
use keystore_api::BackendKey;
use keystore_api::ErrorKind;
use keystore_api::KeyManagement;
use keystore_api::Mac;
use keystore_api::NewKey;
use keystore_api::{Algorithm, KeyClass, KeySpec, Origin, SecretBytes, SignatureFormat, Usages};
use sha2::Digest;

/// TEST-KEY-15
pub fn non_extractable_probe<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let mut probed = Vec::new();
    for alg in Algorithm::ALL {
        let name = format!("probe-{}", alg.id());
        if create_or_prove_unsupported::<F>(&ks, &name, alg).is_none() {
            continue;
        }
        // Use the key once, so any lazily written state exists.
        match alg.class() {
            KeyClass::Asymmetric if alg == Algorithm::EcdhP256 => {
                let peer = ks.public_key(&name).expect("public key");
                ks.agree_sha256_kdf(&name, peer.spki_der(), b"", 32)
                    .expect("agree");
            }
            KeyClass::Asymmetric => {
                ks.sign(&name, b"m", SignatureFormat::Der).expect("sign");
            }
            KeyClass::Symmetric if alg == Algorithm::Aes256Gcm => {
                ks.encrypt(&name, b"m", b"").expect("encrypt");
            }
            KeyClass::Symmetric => {
                ks.mac(&name, b"m").expect("mac");
            }
        }
        let checks = fx
            .probe_extraction(&ks, &name)
            .unwrap_or_else(|leak| panic!("{alg} on {}: extraction probe found: {leak}", F::NAME));
        assert!(!checks.is_empty(), "the probe reports what it checked");
        probed.push(alg);
    }
    assert!(!probed.is_empty(), "at least one algorithm was probed");
    Outcome::Passed
}

/// TEST-KEY-16
pub fn no_plaintext_at_rest<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let mut secrets = Vec::new();
    for alg in [Algorithm::HmacSha256, Algorithm::Aes256Gcm] {
        let k = random_key();
        let name = format!("scan-{}", alg.id());
        match ks.import(
            &so(),
            &name,
            KeySpec::new(alg),
            &SecretBytes::from_slice(&k),
        ) {
            Ok(_) => secrets.push((alg, k)),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Unsupported, "{e:?}"),
        }
    }
    assert!(
        !secrets.is_empty(),
        "the backend imports at least one symmetric algorithm"
    );
    // Use the keys, then restart so every buffered write reaches the files.
    for (alg, _) in &secrets {
        let name = format!("scan-{}", alg.id());
        match alg {
            Algorithm::Aes256Gcm => drop(ks.encrypt(&name, b"m", b"a").expect("encrypt")),
            _ => drop(ks.mac(&name, b"m").expect("mac")),
        }
    }
    let ks = fx.restart(ks);
    for (alg, k) in &secrets {
        let found = scan_files(fx, k);
        assert!(found.is_empty(), "{alg} key found at rest: {found:?}");
    }
    // The scan can fail: a hex copy of the key dropped beside the store's files is caught.
    let first = fx
        .files()
        .into_iter()
        .next()
        .expect("the store wrote files");
    let canary = first.with_file_name("scan-canary.txt");
    std::fs::write(&canary, hex::encode(secrets[0].1)).expect("write canary");
    let found = scan_files(fx, &secrets[0].1);
    std::fs::remove_file(&canary).expect("remove canary");
    assert!(
        found.iter().any(|f| f.contains("scan-canary")),
        "the scanner missed a hex-encoded key: {found:?}"
    );
    drop(ks);
    Outcome::Passed
}

/// TEST-KEY-17
pub fn persistence_across_restart<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let by = Bystanders::create::<F>(&ks);
    let mut signers = Vec::new();
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Rsa2048PssSha256] {
        let name = format!("keep-{}", alg.id());
        if let Some(info) = create_or_prove_unsupported::<F>(&ks, &name, alg) {
            signers.push((name, alg, spki(&info)));
        }
    }
    let aes = create_or_prove_unsupported::<F>(&ks, "keep-aes", Algorithm::Aes256Gcm).is_some();
    let envelope = aes.then(|| {
        ks.encrypt("keep-aes", b"persisted", b"ctx")
            .expect("encrypt")
    });
    ks.create(
        &so(),
        "keep-hmac",
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
    )
    .expect("create a derive key");
    let derived = ks
        .derive_hkdf_sha256("keep-hmac", b"s", b"i", 48)
        .expect("derive");
    let listed = ks.list().expect("list");

    let ks = fx.restart(ks);
    let ks = fx.restart(ks);
    assert_eq!(
        ks.list().expect("list"),
        listed,
        "metadata survives restarts"
    );
    for (name, alg, spki) in &signers {
        assert_eq!(
            ks.public_key(name).expect("public key").spki_der(),
            &spki[..],
            "{alg}: same public key"
        );
        let sig = ks
            .sign(name, b"after restart", SignatureFormat::Der)
            .expect("sign");
        assert!(
            verify_independently(*alg, spki, b"after restart", &sig.bytes),
            "{alg}: old public key verifies"
        );
    }
    if let Some(env) = envelope {
        assert_eq!(
            ks.decrypt("keep-aes", &env, b"ctx")
                .expect("decrypt")
                .expose(),
            b"persisted"
        );
    }
    assert_eq!(
        ks.derive_hkdf_sha256("keep-hmac", b"s", b"i", 48)
            .expect("derive"),
        derived
    );
    by.assert_intact::<F>(&ks);
    Outcome::Passed
}

/// TEST-KEY-18
pub fn destroy_removes_material<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let by = Bystanders::create::<F>(&ks);
    let k = random_key();
    ks.import(
        &so(),
        "doomed-mac",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&k),
    )
    .expect("import");
    let mut doomed = vec!["doomed-mac"];
    if create_or_prove_unsupported::<F>(&ks, "doomed-ec", Algorithm::EcdsaP256Sha256).is_some() {
        doomed.push("doomed-ec");
    }
    for name in &doomed {
        let handle = ks.backend_handle(name, 1).expect("handle");
        assert!(
            ks.backend().list().expect("list").contains(&handle),
            "backend lists the key"
        );
        ks.destroy(&so(), name).expect("destroy");
        expect_err(ks.info(name), ErrorKind::NotFound, "info after destroy");
        expect_err(
            ks.sign(name, b"m", SignatureFormat::Der),
            ErrorKind::NotFound,
            "sign after destroy",
        );
        expect_err(ks.mac(name, b"m"), ErrorKind::NotFound, "mac after destroy");
        expect_err(
            ks.derive_hkdf_sha256(name, b"s", b"i", 32),
            ErrorKind::NotFound,
            "derive after destroy",
        );
        expect_err(
            ks.destroy(&so(), name),
            ErrorKind::NotFound,
            "destroy twice",
        );
        assert!(
            !ks.backend().list().expect("list").contains(&handle),
            "backend no longer lists the key"
        );
        expect_err(
            ks.backend().hmac_sha256(
                &BackendKey::new(handle.clone(), Algorithm::HmacSha256),
                b"m",
            ),
            ErrorKind::NotFound,
            "backend use of a destroyed handle",
        );
        fx.assert_material_gone(&ks, &handle)
            .unwrap_or_else(|e| panic!("{name}: material not gone: {e}"));
        assert!(
            ks.list().expect("list").iter().all(|i| i.name != *name),
            "list omits destroyed keys"
        );
    }
    let ks = fx.restart(ks);
    for name in &doomed {
        expect_err(
            ks.info(name),
            ErrorKind::NotFound,
            "destroyed key stays destroyed after restart",
        );
    }
    assert!(
        scan_files(fx, &k).is_empty(),
        "no trace of the destroyed key at rest"
    );
    by.assert_intact::<F>(&ks);
    Outcome::Passed
}

/// TEST-KEY-22
pub fn wrong_credentials_rejected<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let by = Bystanders::create::<F>(&ks);
    drop(ks);
    expect_err(
        fx.open_with_wrong_credentials(),
        ErrorKind::Auth,
        "open with wrong credentials",
    );
    expect_err(
        fx.open_with_wrong_credentials(),
        ErrorKind::Auth,
        "a second wrong attempt",
    );
    let ks = fx.open();
    by.assert_intact::<F>(&ks);
    Outcome::Passed
}

/// TEST-KEY-26
pub fn import_symmetric_only<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let by = Bystanders::create::<F>(&ks);
    let before = ks.backend().list().expect("list").len();
    let k = SecretBytes::from_slice(&[4u8; 32]);
    for alg in Algorithm::ALL
        .into_iter()
        .filter(|a| a.class() == KeyClass::Asymmetric)
    {
        expect_err(
            ks.import(&so(), "private", KeySpec::new(alg), &k),
            ErrorKind::Policy,
            &format!("import {alg}"),
        );
        expect_err(
            ks.backend().import(&NewKey::new(alg, "private"), &k),
            ErrorKind::Policy,
            &format!("backend import {alg}"),
        );
    }
    assert_eq!(ks.backend().list().expect("list").len(), before);
    let info = ks
        .import(&so(), "imported", KeySpec::new(Algorithm::HmacSha256), &k)
        .expect("import HMAC");
    assert_eq!(info.active().expect("active").origin, Origin::Imported);
    by.assert_intact::<F>(&ks);
    Outcome::Passed
}

/// TEST-KEY-28
pub fn list_and_info_metadata<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    assert!(
        ks.list().expect("list").is_empty(),
        "a fresh store is empty"
    );
    ks.import(
        &so(),
        "b-mac",
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
        &SecretBytes::from_slice(&[6; 32]),
    )
    .expect("import");
    let ec = create_or_prove_unsupported::<F>(&ks, "a-ec", Algorithm::EcdsaP256Sha256);
    let list = ks.list().expect("list");
    let names: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
    let want: Vec<&str> = if ec.is_some() {
        vec!["a-ec", "b-mac"]
    } else {
        vec!["b-mac"]
    };
    assert_eq!(names, want, "sorted by name");
    let mac = ks.info("b-mac").expect("info");
    assert_eq!(mac.algorithm, Algorithm::HmacSha256);
    assert_eq!(mac.usages, Usages::DERIVE);
    assert_eq!(mac.versions.len(), 1);
    let v = mac.active().expect("active");
    assert_eq!((v.version, v.origin), (1, Origin::Imported));
    assert!(
        v.public_key.is_none() && v.fingerprint.is_none(),
        "secret keys have no public key"
    );
    if let Some(ec) = ec {
        let v = ec.active().expect("active");
        assert_eq!(v.origin, Origin::Generated);
        assert_eq!(ec.usages, Usages::SIGN | Usages::VERIFY);
        let spki = spki(&ec);
        let fp = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&spki)));
        assert_eq!(v.fingerprint.as_deref(), Some(fp.as_str()));
        assert_eq!(v.created_at.offset(), time::UtcOffset::UTC);
        assert_eq!(v.created_at.nanosecond(), 0, "stored to the second");
    }
    Outcome::Passed
}

/// TEST-KEY-29
pub fn debug_output_redacts_secrets<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let k = random_key();
    let secret = SecretBytes::from_slice(&k);
    ks.import(
        &so(),
        "redact",
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
        &secret,
    )
    .expect("import");
    let derived = ks
        .derive_hkdf_sha256("redact", b"s", b"i", 32)
        .expect("derive");
    let mut texts = vec![
        format!("{ks:?}"),
        format!("{:?}", ks.backend()),
        format!("{secret:?}"),
        format!("{derived:?}"),
        format!("{:?}", ks.list().expect("list")),
    ];
    for e in [
        ks.sign("redact", b"m", SignatureFormat::Der)
            .map(|_| ())
            .unwrap_err(),
        ks.derive_hkdf_sha256("redact", b"s", b"i", 0)
            .map(|_| ())
            .unwrap_err(),
        ks.import(
            &so(),
            "redact",
            KeySpec::new(Algorithm::HmacSha256),
            &secret,
        )
        .map(|_| ())
        .unwrap_err(),
    ] {
        texts.push(format!("{e:?}"));
        texts.push(e.to_string());
    }
    for (what, bytes) in [
        ("imported key", k.to_vec()),
        ("derived key", derived.expose().to_vec()),
    ] {
        let forms = [
            hex::encode(&bytes),
            hex::encode_upper(&bytes),
            format!("{:?}", bytes),
            format!("{:?}", &bytes[..8])
                .trim_end_matches(']')
                .to_string(),
        ];
        for t in &texts {
            for f in &forms {
                assert!(!t.contains(f.as_str()), "{what} appears in output: {t}");
            }
        }
    }
    assert!(format!("{secret:?}").contains("REDACTED"));
    Outcome::Passed
}

/// TEST-KEY-30
pub fn generated_keys_are_unique<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    if let (Some(a), Some(b)) = (
        create_or_prove_unsupported::<F>(&ks, "u-ec-1", Algorithm::EcdsaP256Sha256),
        create_or_prove_unsupported::<F>(&ks, "u-ec-2", Algorithm::EcdsaP256Sha256),
    ) {
        assert_ne!(spki(&a), spki(&b), "two generated ECDSA keys are equal");
    }
    ks.create(&so(), "u-mac-1", KeySpec::new(Algorithm::HmacSha256))
        .expect("create");
    ks.create(&so(), "u-mac-2", KeySpec::new(Algorithm::HmacSha256))
        .expect("create");
    assert_ne!(
        ks.mac("u-mac-1", b"x").expect("mac"),
        ks.mac("u-mac-2", b"x").expect("mac")
    );
    if create_or_prove_unsupported::<F>(&ks, "u-aes-1", Algorithm::Aes256Gcm).is_some() {
        create_or_prove_unsupported::<F>(&ks, "u-aes-2", Algorithm::Aes256Gcm).expect("second AES");
        let env = ks.encrypt("u-aes-1", b"x", b"").expect("encrypt");
        expect_err(
            ks.decrypt("u-aes-2", &env, b""),
            ErrorKind::Integrity,
            "another generated AES key decrypts",
        );
    }
    Outcome::Passed
}

/// TEST-KEY-31
pub fn concurrent_operations<F: Fixture>(fx: &mut F) -> Outcome
where
    F::Backend: Sync,
{
    let ks = fx.open();
    let k = [0x77u8; 32];
    ks.import(
        &so(),
        "c-mac",
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
        &SecretBytes::from_slice(&k),
    )
    .expect("import");
    let ec =
        create_or_prove_unsupported::<F>(&ks, "c-ec", Algorithm::EcdsaP256Sha256).map(|i| spki(&i));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let ks = &ks;
                let ec = ec.as_ref();
                s.spawn(move || {
                    for i in 0..50u32 {
                        let msg = format!("thread {t} message {i}");
                        if let Some(spki) = ec {
                            let sig = ks
                                .sign("c-ec", msg.as_bytes(), SignatureFormat::Der)
                                .expect("sign");
                            assert!(verify_independently(
                                Algorithm::EcdsaP256Sha256,
                                spki,
                                msg.as_bytes(),
                                &sig.bytes
                            ));
                        }
                        let out = ks
                            .derive_hkdf_sha256("c-mac", msg.as_bytes(), b"i", 32)
                            .expect("derive");
                        assert_eq!(
                            out.expose(),
                            &hkdf_reference(&k, msg.as_bytes(), b"i", 32)[..]
                        );
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("worker thread panicked");
        }
    });
    Outcome::Passed
}
