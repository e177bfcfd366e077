//! Bad input: the right `ErrorKind`, never a panic, every other key intact.

use crate::support::so;
use crate::support::{expect_err, unsupported, Bystanders};
use crate::{Fixture, Outcome, Tamper};
use keystore_api::BackendKey;
use keystore_api::ErrorKind;
use keystore_api::KeyManagement;
use keystore_api::Mac;
use keystore_api::{envelope, limits, Algorithm, KeySpec, SecretBytes, SignatureFormat, Usages};

/// TEST-KEY-19
pub fn unknown_key_not_found<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let by = Bystanders::create::<F>(&ks);
    let n = "no-such-key";
    let env = vec![0u8; envelope::MIN_LEN + 4];
    expect_err(ks.info(n), ErrorKind::NotFound, "info");
    expect_err(ks.public_key(n), ErrorKind::NotFound, "public_key");
    expect_err(
        ks.sign(n, b"m", SignatureFormat::Der),
        ErrorKind::NotFound,
        "sign",
    );
    expect_err(
        ks.verify(n, b"m", &[1; 64], None),
        ErrorKind::NotFound,
        "verify",
    );
    expect_err(ks.encrypt(n, b"m", b""), ErrorKind::NotFound, "encrypt");
    expect_err(ks.decrypt(n, &env, b""), ErrorKind::NotFound, "decrypt");
    expect_err(ks.mac(n, b"m"), ErrorKind::NotFound, "mac");
    expect_err(
        ks.verify_mac(n, b"m", &[0; 32]),
        ErrorKind::NotFound,
        "verify_mac",
    );
    expect_err(
        ks.derive_hkdf_sha256(n, b"s", b"i", 32),
        ErrorKind::NotFound,
        "derive",
    );
    expect_err(ks.destroy(&so(), n), ErrorKind::NotFound, "destroy");
    expect_err(
        ks.backend_handle(n, 1),
        ErrorKind::NotFound,
        "backend_handle",
    );
    expect_err(
        ks.backend_handle("bystander-mac", 9),
        ErrorKind::NotFound,
        "unknown version",
    );
    // The backend answers unknown handles with NotFound too.
    let bogus = keystore_api::KeyHandle::new(vec![0xEE; 16]);
    expect_err(
        ks.backend()
            .hmac_sha256(&BackendKey::new(bogus.clone(), Algorithm::HmacSha256), b"x"),
        ErrorKind::NotFound,
        "backend hmac on an unknown handle",
    );
    expect_err(
        ks.backend().destroy(&bogus),
        ErrorKind::NotFound,
        "backend destroy of an unknown handle",
    );
    by.assert_intact::<F>(&ks);
    Outcome::Passed
}

/// TEST-KEY-20
pub fn wrong_usage_is_policy<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let by = Bystanders::create::<F>(&ks);
    let env = vec![0u8; envelope::MIN_LEN];
    // A signing key cannot encrypt, decrypt, MAC or derive.
    expect_err(
        ks.encrypt("bystander-ec", b"m", b""),
        ErrorKind::Policy,
        "encrypt with ECDSA",
    );
    expect_err(
        ks.decrypt("bystander-ec", &env, b""),
        ErrorKind::Policy,
        "decrypt with ECDSA",
    );
    expect_err(
        ks.mac("bystander-ec", b"m"),
        ErrorKind::Policy,
        "mac with ECDSA",
    );
    expect_err(
        ks.derive_hkdf_sha256("bystander-ec", b"s", b"i", 32),
        ErrorKind::Policy,
        "derive with ECDSA",
    );
    // A secret key cannot sign and has no public key.
    expect_err(
        ks.sign("bystander-mac", b"m", SignatureFormat::Der),
        ErrorKind::Policy,
        "sign with HMAC",
    );
    expect_err(
        ks.public_key("bystander-mac"),
        ErrorKind::Policy,
        "public key of HMAC",
    );
    expect_err(
        ks.encrypt("bystander-mac", b"m", b""),
        ErrorKind::Policy,
        "encrypt with HMAC",
    );
    // Restricted usages hold within one algorithm.
    let k = SecretBytes::from_slice(&[3u8; 32]);
    ks.import(
        &so(),
        "derive-only",
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
        &k,
    )
    .expect("import derive-only");
    expect_err(
        ks.mac("derive-only", b"m"),
        ErrorKind::Policy,
        "mac with a derive-only key",
    );
    ks.derive_hkdf_sha256("derive-only", b"s", b"i", 16)
        .expect("derive-only derives");
    ks.import(
        &so(),
        "mac-only",
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::MAC),
        &k,
    )
    .expect("import mac-only");
    expect_err(
        ks.derive_hkdf_sha256("mac-only", b"s", b"i", 16),
        ErrorKind::Policy,
        "derive with a mac-only key",
    );
    ks.create(
        &so(),
        "sign-only",
        KeySpec::new(Algorithm::EcdsaP256Sha256).with_usages(Usages::SIGN),
    )
    .expect("create sign-only");
    let sig = ks
        .sign("sign-only", b"m", SignatureFormat::Der)
        .expect("sign");
    expect_err(
        ks.verify("sign-only", b"m", &sig.bytes, None),
        ErrorKind::Policy,
        "verify with a sign-only key",
    );
    // Usages an algorithm does not permit are refused at creation, before the backend.
    let before = ks.backend().list().expect("list").len();
    expect_err(
        ks.create(
            &so(),
            "bad",
            KeySpec::new(Algorithm::EcdsaP256Sha256).with_usages(Usages::ENCRYPT),
        ),
        ErrorKind::Policy,
        "ECDSA with encrypt",
    );
    expect_err(
        ks.create(
            &so(),
            "bad",
            KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::empty()),
        ),
        ErrorKind::Policy,
        "no usages",
    );
    expect_err(
        ks.import(
            &so(),
            "bad",
            KeySpec::new(Algorithm::Aes256Gcm).with_usages(Usages::SIGN),
            &k,
        ),
        ErrorKind::Policy,
        "AES with sign",
    );
    assert_eq!(
        ks.backend().list().expect("list").len(),
        before,
        "refused creations left no backend object"
    );
    expect_err(
        ks.info("bad"),
        ErrorKind::NotFound,
        "refused key is not recorded",
    );
    by.assert_intact::<F>(&ks);
    Outcome::Passed
}

/// TEST-KEY-21
pub fn empty_and_oversized_inputs<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let by = Bystanders::create::<F>(&ks);
    let spec = KeySpec::new(Algorithm::HmacSha256);
    for bad_name in [
        "", "a/b", "../etc", ".hidden", "-flag", "spa ce", "nul\0", "ünï",
    ] {
        expect_err(
            ks.create(&so(), bad_name, spec),
            ErrorKind::InvalidInput,
            &format!("name {bad_name:?}"),
        );
    }
    let long = "n".repeat(limits::MAX_NAME_LEN + 1);
    expect_err(
        ks.create(&so(), &long, spec),
        ErrorKind::InvalidInput,
        "name too long",
    );
    expect_err(
        ks.sign(&long, b"m", SignatureFormat::Der),
        ErrorKind::InvalidInput,
        "sign with a too-long name",
    );
    ks.create(&so(), &"n".repeat(limits::MAX_NAME_LEN), spec)
        .expect("a name at the limit is fine");
    let big = vec![0u8; limits::MAX_DATA_LEN + 1];
    let big_aad = vec![0u8; limits::MAX_AAD_LEN + 1];
    expect_err(
        ks.sign("bystander-ec", &big, SignatureFormat::Der),
        ErrorKind::InvalidInput,
        "oversized message",
    );
    expect_err(
        ks.verify("bystander-ec", &big, &[1; 64], None),
        ErrorKind::InvalidInput,
        "oversized verify message",
    );
    expect_err(
        ks.mac("bystander-mac", &big),
        ErrorKind::InvalidInput,
        "oversized MAC input",
    );
    expect_err(
        ks.derive_hkdf_sha256("bystander-mac", &big_aad, b"i", 32),
        ErrorKind::InvalidInput,
        "oversized salt",
    );
    expect_err(
        ks.derive_hkdf_sha256("bystander-mac", b"s", &big_aad, 32),
        ErrorKind::InvalidInput,
        "oversized info",
    );
    ks.import(
        &so(),
        "aes",
        KeySpec::new(Algorithm::Aes256Gcm),
        &SecretBytes::from_slice(&[1; 32]),
    )
    .or_else(|e| {
        if e.kind() == ErrorKind::Unsupported {
            Ok(ks.info("bystander-mac").expect("info"))
        } else {
            Err(e)
        }
    })
    .expect("import aes or Unsupported");
    if ks.info("aes").is_ok() {
        expect_err(
            ks.encrypt("aes", &big, b""),
            ErrorKind::InvalidInput,
            "oversized plaintext",
        );
        expect_err(
            ks.encrypt("aes", b"m", &big_aad),
            ErrorKind::InvalidInput,
            "oversized AAD",
        );
        expect_err(
            ks.decrypt("aes", &[], b""),
            ErrorKind::InvalidInput,
            "empty envelope",
        );
        expect_err(
            ks.decrypt("aes", &[0u8; envelope::MIN_LEN - 1], b""),
            ErrorKind::InvalidInput,
            "short envelope",
        );
        expect_err(
            ks.decrypt("aes", &[0u8; envelope::MIN_LEN], b""),
            ErrorKind::Integrity,
            "garbage envelope",
        );
    }
    // Secrets of the wrong size.
    expect_err(
        ks.import(&so(), "s0", spec, &SecretBytes::new(Vec::new())),
        ErrorKind::InvalidInput,
        "empty secret",
    );
    expect_err(
        ks.import(&so(), "s1", spec, &SecretBytes::from_slice(&[1; 31])),
        ErrorKind::InvalidInput,
        "31-byte secret",
    );
    expect_err(
        ks.import(&so(), "s2", spec, &SecretBytes::from_slice(&[1; 33])),
        ErrorKind::InvalidInput,
        "33-byte secret",
    );
    expect_err(
        ks.import(&so(), "s3", spec, &SecretBytes::from_slice(&big)),
        ErrorKind::InvalidInput,
        "oversized secret",
    );
    by.assert_intact::<F>(&ks);
    Outcome::Passed
}

/// Shared body of the tamper cases.
fn tamper_case<F: Fixture>(fx: &mut F, how: Tamper<'_>, victim_alg: Algorithm) -> Outcome {
    let ks = fx.open();
    let by = Bystanders::create::<F>(&ks);
    let spec = KeySpec::new(victim_alg);
    let created = match victim_alg {
        Algorithm::HmacSha256 => ks
            .import(&so(), "victim", spec, &SecretBytes::from_slice(&[0x11; 32]))
            .map(|_| ()),
        _ => ks.create(&so(), "victim", spec).map(|_| ()),
    };
    if let Err(e) = created {
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e:?}");
        return unsupported(victim_alg, "generate");
    }
    if let Tamper::SwapWith(other) = how {
        ks.import(&so(), other, spec, &SecretBytes::from_slice(&[0x22; 32]))
            .expect("import swap source");
    }
    fx.tamper(&ks, "victim", how);
    let ks = fx.restart(ks);
    let res = match victim_alg {
        Algorithm::HmacSha256 => ks.mac("victim", b"m").map(|_| ()),
        _ => ks.sign("victim", b"m", SignatureFormat::Der).map(|_| ()),
    };
    expect_err(
        res,
        ErrorKind::Integrity,
        &format!("using a record after {how:?}"),
    );
    if let Tamper::SwapWith(other) = how {
        ks.mac(other, b"m").expect("the swap source is intact");
    }
    by.assert_intact::<F>(&ks);
    Outcome::Passed
}

/// TEST-KEY-23
pub fn corrupted_record_detected<F: Fixture>(fx: &mut F) -> Outcome {
    tamper_case(fx, Tamper::Corrupt, Algorithm::EcdsaP256Sha256)
}

/// TEST-KEY-24
pub fn truncated_record_detected<F: Fixture>(fx: &mut F) -> Outcome {
    tamper_case(fx, Tamper::Truncate, Algorithm::HmacSha256)
}

/// TEST-KEY-25
pub fn swapped_record_detected<F: Fixture>(fx: &mut F) -> Outcome {
    tamper_case(fx, Tamper::SwapWith("swap-source"), Algorithm::HmacSha256)
}

/// TEST-KEY-27
pub fn duplicate_name_rejected<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let by = Bystanders::create::<F>(&ks);
    let before = ks.backend().list().expect("list").len();
    expect_err(
        ks.create(
            &so(),
            "bystander-ec",
            KeySpec::new(Algorithm::EcdsaP256Sha256),
        ),
        ErrorKind::AlreadyExists,
        "create over a key",
    );
    expect_err(
        ks.import(
            &so(),
            "bystander-mac",
            KeySpec::new(Algorithm::HmacSha256),
            &SecretBytes::from_slice(&[9; 32]),
        ),
        ErrorKind::AlreadyExists,
        "import over a key",
    );
    assert_eq!(
        ks.backend().list().expect("list").len(),
        before,
        "no backend object was created or lost"
    );
    by.assert_intact::<F>(&ks);
    // A destroyed key's tombstone keeps its name.
    ks.import(
        &so(),
        "gone",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&[8; 32]),
    )
    .expect("import");
    ks.destroy(&so(), "gone").expect("destroy");
    expect_err(
        ks.create(&so(), "gone", KeySpec::new(Algorithm::HmacSha256)),
        ErrorKind::AlreadyExists,
        "reuse a tombstoned name",
    );
    by.assert_intact::<F>(&ks);
    Outcome::Passed
}
