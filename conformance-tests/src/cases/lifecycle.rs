//! Lifecycle: rotation with grace, revocation and expiry, suspension, legal
//! transitions and scheduled rotation. Time comes from an injected clock;
//! nothing sleeps.

use crate::support::{
    create_or_prove_unsupported, expect_err, operator, so, spki, unsupported, verify_independently,
};
use crate::{Fixture, Outcome};
use keystore_api::ErrorKind;
use keystore_api::KeyManagement;
use keystore_api::{
    Algorithm, Clock, KeySpec, KeyState, ManualClock, Operation, SecretBytes, SignatureFormat,
    Usages,
};
use std::sync::Arc;
use time::{macros::datetime, Duration};

pub(super) fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(datetime!(2026-01-04 09:00 UTC)))
}

/// TEST-KEY-07
pub fn revoked_and_expired_rejected<F: Fixture>(fx: &mut F) -> Outcome {
    let clock = clock();
    let ks = fx.open_with_clock(clock.clone());
    let Some(info) = create_or_prove_unsupported::<F>(&ks, "peer-id", Algorithm::EcdsaP256Sha256)
    else {
        return unsupported(Algorithm::EcdsaP256Sha256, "generate");
    };
    let msg = b"handshake transcript";
    let v1_sig = ks
        .sign("peer-id", msg, SignatureFormat::Der)
        .expect("sign")
        .bytes;
    let v1_handle = ks.backend_handle("peer-id", 1).expect("handle");
    // Expired: after rotation with a 1-hour grace, version 1 verifies for the
    // hour and is rejected once it has passed, even before any sweep.
    ks.rotate(&so(), "peer-id", Duration::hours(1))
        .expect("rotate");
    assert_eq!(
        ks.verify("peer-id", msg, &v1_sig, None)
            .expect("within grace"),
        1
    );
    clock.advance(Duration::minutes(61));
    expect_err(
        ks.verify("peer-id", msg, &v1_sig, Some(1)),
        ErrorKind::KeyState,
        "verify with an expired version",
    );
    expect_err(
        ks.verify("peer-id", msg, &v1_sig, None),
        ErrorKind::Integrity,
        "no allowed version verifies the old signature",
    );
    // Revoked: version 2 is compromised at once; every use is KeyState.
    let v2_sig = ks
        .sign("peer-id", msg, SignatureFormat::Der)
        .expect("sign v2");
    assert_eq!(v2_sig.version, 2);
    let v2_handle = ks.backend_handle("peer-id", 2).expect("handle");
    ks.revoke(&so(), "peer-id", 2, "key found on a returned unit")
        .expect("revoke");
    expect_err(
        ks.sign("peer-id", msg, SignatureFormat::Der),
        ErrorKind::KeyState,
        "sign after revoke",
    );
    expect_err(
        ks.verify("peer-id", msg, &v2_sig.bytes, Some(2)),
        ErrorKind::KeyState,
        "verify with a revoked version",
    );
    expect_err(
        ks.public_key("peer-id"),
        ErrorKind::KeyState,
        "public key of a revoked active version",
    );
    let info2 = ks.info("peer-id").expect("info");
    let v2 = info2.version(2).expect("v2");
    assert_eq!(v2.state, KeyState::Compromised);
    assert_eq!(v2.reason.as_deref(), Some("key found on a returned unit"));
    assert_eq!(
        v2.fingerprint,
        info2.version(2).and_then(|v| v.fingerprint.clone()),
        "fingerprint kept"
    );
    fx.assert_material_gone(&ks, &v2_handle)
        .unwrap_or_else(|e| panic!("revoked material remains: {e}"));
    // Symmetric keys too: a revoked HMAC key neither MACs nor derives (a
    // key holds mac or derive, never both: one key of each).
    ks.import(
        &so(),
        "session-mac",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&[1; 32]),
    )
    .expect("import");
    ks.import(
        &so(),
        "session-master",
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
        &SecretBytes::from_slice(&[1; 32]),
    )
    .expect("import");
    ks.mac("session-mac", b"m").expect("mac before revoke");
    ks.derive_hkdf_sha256("session-master", b"s", b"i", 32)
        .expect("derive before revoke");
    ks.revoke(&so(), "session-mac", 1, "leaked")
        .expect("revoke");
    ks.revoke(&so(), "session-master", 1, "leaked")
        .expect("revoke");
    expect_err(
        ks.mac("session-mac", b"m"),
        ErrorKind::KeyState,
        "mac after revoke",
    );
    expect_err(
        ks.derive_hkdf_sha256("session-master", b"s", b"i", 32),
        ErrorKind::KeyState,
        "derive after revoke",
    );
    // Revoked state survives a restart.
    drop(ks);
    let ks = fx.open_with_clock(clock.clone());
    expect_err(
        ks.sign("peer-id", msg, SignatureFormat::Der),
        ErrorKind::KeyState,
        "sign after restart",
    );
    let _ = (info, v1_handle);
    // The device identity's certificate: CRL, OCSP and pins, with the key
    // in this backend (real time: the PKI checks run at the wall clock).
    drop(ks);
    let ks = fx.open();
    super::device::device_certificate_revoked::<F>(&ks)
}

/// TEST-KEY-34
pub fn rotation_with_grace_period<F: Fixture>(fx: &mut F) -> Outcome {
    let clock = clock();
    let ks = fx.open_with_clock(clock.clone());
    let Some(v1) = create_or_prove_unsupported::<F>(&ks, "fw-signer", Algorithm::EcdsaP256Sha256)
    else {
        return unsupported(Algorithm::EcdsaP256Sha256, "generate");
    };
    let old_spki = spki(&v1);
    let old_sig = ks
        .sign("fw-signer", b"image 1", SignatureFormat::Der)
        .expect("sign");
    let old_handle = ks.backend_handle("fw-signer", 1).expect("handle");
    let rotated = ks
        .rotate(&so(), "fw-signer", Duration::days(7))
        .expect("rotate");
    assert_eq!(rotated.versions.len(), 2);
    assert_eq!(rotated.active().map(|v| v.version), Some(2));
    let old = rotated.version(1).expect("v1");
    assert_eq!(old.state, KeyState::Deactivated);
    assert_eq!(
        old.grace_end,
        Some(time::macros::datetime!(2026-01-11 09:00:00 UTC))
    );
    let new_spki = spki(&rotated);
    assert_ne!(old_spki, new_spki, "rotation made a new key");
    // New signatures come from version 2 only.
    for _ in 0..3 {
        let s = ks
            .sign("fw-signer", b"image 2", SignatureFormat::Der)
            .expect("sign");
        assert_eq!(s.version, 2);
        assert!(verify_independently(
            Algorithm::EcdsaP256Sha256,
            &new_spki,
            b"image 2",
            &s.bytes
        ));
        assert!(!verify_independently(
            Algorithm::EcdsaP256Sha256,
            &old_spki,
            b"image 2",
            &s.bytes
        ));
    }
    // During grace the old version verifies.
    clock.advance(Duration::days(6));
    assert_eq!(
        ks.verify("fw-signer", b"image 1", &old_sig.bytes, None)
            .expect("old sig in grace"),
        1
    );
    // After grace: sweep destroys the material and leaves a tombstone.
    clock.advance(Duration::days(2));
    assert_eq!(
        ks.sweep(&so()).expect("sweep"),
        vec![("fw-signer".to_string(), 1)]
    );
    assert!(
        ks.sweep(&so()).expect("second sweep").is_empty(),
        "sweep is idempotent"
    );
    let after = ks.info("fw-signer").expect("info");
    let tomb = after.version(1).expect("tombstone");
    assert_eq!(tomb.state, KeyState::Destroyed);
    assert_eq!(
        tomb.fingerprint, old.fingerprint,
        "the tombstone keeps the public fingerprint"
    );
    fx.assert_material_gone(&ks, &old_handle)
        .unwrap_or_else(|e| panic!("swept material remains: {e}"));
    expect_err(
        ks.verify("fw-signer", b"image 1", &old_sig.bytes, Some(1)),
        ErrorKind::KeyState,
        "verify with a destroyed version",
    );
    // Symmetric rotation: an envelope made under v1 decrypts during grace, never after.
    if ks
        .backend()
        .capabilities()
        .supports(Algorithm::Aes256Gcm, Operation::Generate)
    {
        ks.create(&so(), "disk", KeySpec::new(Algorithm::Aes256Gcm))
            .expect("create aes");
        let env1 = ks.encrypt("disk", b"record", b"ctx").expect("encrypt");
        ks.rotate(&so(), "disk", Duration::hours(1))
            .expect("rotate aes");
        let env2 = ks.encrypt("disk", b"record", b"ctx").expect("encrypt");
        assert_eq!(
            u32::from_be_bytes([env2[4], env2[5], env2[6], env2[7]]),
            2,
            "new envelopes name version 2"
        );
        assert_eq!(
            ks.decrypt("disk", &env1, b"ctx")
                .expect("old envelope in grace")
                .expose(),
            b"record"
        );
        clock.advance(Duration::hours(2));
        expect_err(
            ks.decrypt("disk", &env1, b"ctx"),
            ErrorKind::KeyState,
            "old envelope after grace",
        );
        assert_eq!(
            ks.decrypt("disk", &env2, b"ctx")
                .expect("new envelope")
                .expose(),
            b"record"
        );
    } else {
        expect_err(
            ks.create(&so(), "disk", KeySpec::new(Algorithm::Aes256Gcm)),
            ErrorKind::Unsupported,
            "AES",
        );
    }
    Outcome::Passed
}

/// TEST-KEY-35
pub fn illegal_transitions_change_nothing<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    ks.create(&so(), "t", KeySpec::new(Algorithm::HmacSha256))
        .expect("create");
    let before = ks.info("t").expect("info");
    expect_err(
        ks.resume(&so(), "t", 1),
        ErrorKind::KeyState,
        "resume an active version",
    );
    expect_err(
        ks.suspend(&so(), "t", 2),
        ErrorKind::NotFound,
        "suspend a missing version",
    );
    assert_eq!(ks.info("t").expect("info"), before, "nothing changed");
    ks.rotate(&so(), "t", Duration::hours(1)).expect("rotate");
    let rotated = ks.info("t").expect("info");
    expect_err(
        ks.resume(&so(), "t", 1),
        ErrorKind::KeyState,
        "resume a deactivated version",
    );
    expect_err(
        ks.suspend(&so(), "t", 1),
        ErrorKind::KeyState,
        "suspend a deactivated version",
    );
    ks.revoke(&so(), "t", 1, "test")
        .expect("revoke deactivated");
    let revoked = ks.info("t").expect("info");
    expect_err(
        ks.revoke(&so(), "t", 1, "again"),
        ErrorKind::KeyState,
        "revoke twice",
    );
    expect_err(
        ks.resume(&so(), "t", 1),
        ErrorKind::KeyState,
        "resume a compromised version",
    );
    expect_err(
        ks.suspend(&so(), "t", 1),
        ErrorKind::KeyState,
        "suspend a compromised version",
    );
    assert_eq!(
        ks.info("t").expect("info"),
        revoked,
        "refused transitions changed nothing"
    );
    ks.suspend(&so(), "t", 2).expect("suspend v2");
    ks.create(&so(), "u", KeySpec::new(Algorithm::HmacSha256))
        .expect("create");
    expect_err(
        ks.revoke(&so(), "u", 1, ""),
        ErrorKind::InvalidInput,
        "empty reason",
    );
    expect_err(
        ks.revoke(&so(), "u", 1, "two\nlines"),
        ErrorKind::InvalidInput,
        "multi-line reason",
    );
    expect_err(
        ks.rotate(&so(), "u", Duration::seconds(-1)),
        ErrorKind::InvalidInput,
        "negative grace",
    );
    assert_eq!(ks.info("u").expect("info").versions.len(), 1);
    let _ = rotated;
    Outcome::Passed
}

/// TEST-KEY-36
pub fn suspend_and_resume<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    ks.import(
        &so(),
        "s",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&[2; 32]),
    )
    .expect("import");
    // A key holds mac or derive, never both: a derive key beside it.
    ks.import(
        &so(),
        "s-kdf",
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
        &SecretBytes::from_slice(&[2; 32]),
    )
    .expect("import");
    let tag = ks.mac("s", b"m").expect("mac");
    let okm = ks
        .derive_hkdf_sha256("s-kdf", b"x", b"y", 16)
        .expect("derive");
    ks.suspend(&operator(), "s", 1)
        .expect("an operator suspends");
    ks.suspend(&operator(), "s-kdf", 1)
        .expect("an operator suspends");
    expect_err(
        ks.mac("s", b"m"),
        ErrorKind::KeyState,
        "mac while suspended",
    );
    expect_err(
        ks.derive_hkdf_sha256("s-kdf", b"x", b"y", 16),
        ErrorKind::KeyState,
        "derive while suspended",
    );
    let ks = fx.restart(ks);
    expect_err(
        ks.mac("s", b"m"),
        ErrorKind::KeyState,
        "still suspended after restart",
    );
    ks.resume(&operator(), "s", 1).expect("an operator resumes");
    ks.resume(&operator(), "s-kdf", 1)
        .expect("an operator resumes");
    assert_eq!(
        ks.mac("s", b"m").expect("mac after resume"),
        tag,
        "the same key came back"
    );
    assert_eq!(
        ks.derive_hkdf_sha256("s-kdf", b"x", b"y", 16)
            .expect("derive after resume"),
        okm,
        "the same derive key came back"
    );
    Outcome::Passed
}

/// TEST-KEY-37
pub fn scheduled_rotation_when_due<F: Fixture>(fx: &mut F) -> Outcome {
    let clock = clock();
    let ks = fx.open_with_clock(clock.clone());
    let spec = KeySpec::new(Algorithm::HmacSha256).with_cryptoperiod(Duration::days(30));
    ks.create(&so(), "periodic", spec).expect("create");
    ks.create(&so(), "forever", KeySpec::new(Algorithm::HmacSha256))
        .expect("create");
    let t0 = clock.now();
    assert!(ks.due(t0 + Duration::days(29)).expect("due").is_empty());
    let due = ks.due(t0 + Duration::days(30)).expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].name.as_str(), due[0].version), ("periodic", 1));
    assert_eq!(due[0].due_at, "2026-02-03T09:00:00Z");
    clock.advance(Duration::days(31));
    let rotated = ks
        .rotate_due(&so(), clock.now(), Duration::days(1))
        .expect("rotate_due");
    assert_eq!(rotated, vec!["periodic".to_string()]);
    assert_eq!(
        ks.info("periodic")
            .expect("info")
            .active()
            .map(|v| v.version),
        Some(2)
    );
    assert!(
        ks.due(clock.now()).expect("due").is_empty(),
        "the new version starts a new period"
    );
    assert_eq!(ks.info("forever").expect("info").versions.len(), 1);
    expect_err(
        ks.rotate_due(&operator(), clock.now(), Duration::ZERO),
        ErrorKind::Policy,
        "operator rotation",
    );
    Outcome::Passed
}
