//! Lifecycle: rotation with grace, revocation and expiry, suspension, legal
//! transitions, scheduled rotation, backup rules, roles, decommission and
//! crash recovery. Time comes from an injected clock; nothing sleeps.

use crate::support::{
    auditor, create_or_prove_unsupported, expect_err, operator, so, spki, unsupported,
    verify_independently,
};
use crate::{Fixture, Outcome};
use keystore_api::{
    Actor, Algorithm, Backend, Clock, FaultPoint, KeySpec, KeyState, ManualClock, Operation, Role,
    SecretBytes, SignatureFormat, Usages,
};
use std::sync::Arc;
use time::{macros::datetime, Duration};

fn clock() -> Arc<ManualClock> {
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
        "KeyState",
        "verify with an expired version",
    );
    expect_err(
        ks.verify("peer-id", msg, &v1_sig, None),
        "Integrity",
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
        "KeyState",
        "sign after revoke",
    );
    expect_err(
        ks.verify("peer-id", msg, &v2_sig.bytes, Some(2)),
        "KeyState",
        "verify with a revoked version",
    );
    expect_err(
        ks.public_key("peer-id"),
        "KeyState",
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
    expect_err(ks.mac("session-mac", b"m"), "KeyState", "mac after revoke");
    expect_err(
        ks.derive_hkdf_sha256("session-master", b"s", b"i", 32),
        "KeyState",
        "derive after revoke",
    );
    // Revoked state survives a restart.
    drop(ks);
    let ks = fx.open_with_clock(clock.clone());
    expect_err(
        ks.sign("peer-id", msg, SignatureFormat::Der),
        "KeyState",
        "sign after restart",
    );
    let _ = (info, v1_handle);
    Outcome::Passed
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
    assert_eq!(old.grace_end.as_deref(), Some("2026-01-11T09:00:00Z"));
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
        "KeyState",
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
            "KeyState",
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
            "Unsupported",
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
        "KeyState",
        "resume an active version",
    );
    expect_err(
        ks.suspend(&so(), "t", 2),
        "NotFound",
        "suspend a missing version",
    );
    assert_eq!(ks.info("t").expect("info"), before, "nothing changed");
    ks.rotate(&so(), "t", Duration::hours(1)).expect("rotate");
    let rotated = ks.info("t").expect("info");
    expect_err(
        ks.resume(&so(), "t", 1),
        "KeyState",
        "resume a deactivated version",
    );
    expect_err(
        ks.suspend(&so(), "t", 1),
        "KeyState",
        "suspend a deactivated version",
    );
    ks.revoke(&so(), "t", 1, "test")
        .expect("revoke deactivated");
    let revoked = ks.info("t").expect("info");
    expect_err(
        ks.revoke(&so(), "t", 1, "again"),
        "KeyState",
        "revoke twice",
    );
    expect_err(
        ks.resume(&so(), "t", 1),
        "KeyState",
        "resume a compromised version",
    );
    expect_err(
        ks.suspend(&so(), "t", 1),
        "KeyState",
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
    expect_err(ks.revoke(&so(), "u", 1, ""), "InvalidInput", "empty reason");
    expect_err(
        ks.revoke(&so(), "u", 1, "two\nlines"),
        "InvalidInput",
        "multi-line reason",
    );
    expect_err(
        ks.rotate(&so(), "u", Duration::seconds(-1)),
        "InvalidInput",
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
    expect_err(ks.mac("s", b"m"), "KeyState", "mac while suspended");
    expect_err(
        ks.derive_hkdf_sha256("s-kdf", b"x", b"y", 16),
        "KeyState",
        "derive while suspended",
    );
    let ks = fx.restart(ks);
    expect_err(
        ks.mac("s", b"m"),
        "KeyState",
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
        "Policy",
        "operator rotation",
    );
    Outcome::Passed
}

/// TEST-KEY-38
pub fn backup_policy_refusals<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    expect_err(
        ks.create(
            &so(),
            "bad",
            KeySpec::new(Algorithm::EcdsaP256Sha256).backup_eligible(),
        ),
        "Policy",
        "a backup-eligible signing key",
    );
    if create_or_prove_unsupported::<F>(&ks, "signer", Algorithm::EcdsaP256Sha256).is_some() {
        for actor in [so(), operator(), auditor()] {
            expect_err(
                ks.backup(&actor, "signer", "kek"),
                "Policy",
                "backing up a signing key",
            );
        }
    }
    ks.import(
        &so(),
        "not-eligible",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&[3; 32]),
    )
    .expect("import");
    expect_err(
        ks.backup(&so(), "not-eligible", "kek"),
        "Policy",
        "a key not created backup-eligible",
    );
    ks.import(
        &so(),
        "eligible",
        KeySpec::new(Algorithm::HmacSha256).backup_eligible(),
        &SecretBytes::from_slice(&[4; 32]),
    )
    .expect("import eligible");
    assert!(ks.info("eligible").expect("info").backup_eligible);
    expect_err(
        ks.backup(&operator(), "eligible", "kek"),
        "Policy",
        "an operator backing up",
    );
    expect_err(
        ks.backup(&so(), "eligible", "no-such-kek"),
        "NotFound",
        "a missing KEK",
    );
    // A KEK needs the wrap usage: a plain AES key is refused.
    if create_or_prove_unsupported::<F>(&ks, "plain-aes", Algorithm::Aes256Gcm).is_some() {
        expect_err(
            ks.backup(&so(), "eligible", "plain-aes"),
            "Policy",
            "a KEK without the wrap usage",
        );
    }
    Outcome::Passed
}

/// TEST-KEY-39
pub fn backup_restore_round_trip<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let kek_bytes = [0x4b; 32];
    let kek_spec = KeySpec::new(Algorithm::Aes256Gcm).with_usages(Usages::WRAP);
    if let Err(e) = ks.import(&so(), "kek", kek_spec, &SecretBytes::from_slice(&kek_bytes)) {
        assert_eq!(e.kind(), "Unsupported", "{e:?}");
        return unsupported(Algorithm::Aes256Gcm, "import (backup KEK)");
    }
    let k = [0x33; 32];
    ks.import(
        &so(),
        "op-key",
        KeySpec::new(Algorithm::HmacSha256)
            .with_usages(Usages::DERIVE)
            .backup_eligible(),
        &SecretBytes::from_slice(&k),
    )
    .expect("import");
    ks.rotate(&so(), "op-key", Duration::days(1))
        .expect("rotate");
    let v2_out = ks
        .derive_hkdf_sha256("op-key", b"s", b"i", 32)
        .expect("derive v2");
    if !ks
        .backend()
        .capabilities()
        .supports(Algorithm::HmacSha256, Operation::Wrap)
    {
        expect_err(
            ks.backup(&so(), "op-key", "kek"),
            "Unsupported",
            "backup on a backend that cannot wrap",
        );
        return unsupported(Algorithm::HmacSha256, "wrap (backup)");
    }
    let blob = ks.backup(&so(), "op-key", "kek").expect("backup");
    assert!(
        !crate::support::contains(&blob, &k),
        "the backup holds no plaintext key"
    );
    assert!(!crate::support::contains(&blob, hex::encode(k).as_bytes()));
    // Restore into a fresh store of the same kind holding the same KEK.
    let mut other = F::setup().expect("second store");
    let ks2 = other.open();
    ks2.import(&so(), "kek", kek_spec, &SecretBytes::from_slice(&kek_bytes))
        .expect("import kek");
    expect_err(
        ks2.restore(&operator(), &blob, "kek", None),
        "Policy",
        "an operator restoring",
    );
    let restored = ks2.restore(&so(), &blob, "kek", None).expect("restore");
    assert_eq!(restored.versions.len(), 2);
    assert_eq!(
        restored.version(1).map(|v| v.state),
        Some(KeyState::Deactivated)
    );
    assert!(restored
        .versions
        .iter()
        .all(|v| v.origin == keystore_api::Origin::Restored));
    assert_eq!(
        ks2.derive_hkdf_sha256("op-key", b"s", b"i", 32)
            .expect("derive"),
        v2_out
    );
    // A relabelled backup does not unwrap.
    let tampered = String::from_utf8(blob.clone())
        .expect("utf8")
        .replace("\"op-key\"", "\"evil-key\"");
    expect_err(
        ks2.restore(&so(), tampered.as_bytes(), "kek", None),
        "Integrity",
        "a relabelled backup",
    );
    expect_err(
        ks2.restore(&so(), &blob, "kek", None),
        "AlreadyExists",
        "restoring over an existing key",
    );
    expect_err(
        ks2.restore(&so(), b"{not json", "kek", None),
        "InvalidInput",
        "garbage",
    );
    // The wrong KEK does not unwrap.
    ks2.import(
        &so(),
        "kek2",
        kek_spec,
        &SecretBytes::from_slice(&[0x4c; 32]),
    )
    .expect("import kek2");
    expect_err(
        ks2.restore(&so(), &blob, "kek2", Some("copy")),
        "Integrity",
        "the wrong KEK",
    );
    let events: Vec<String> = ks2
        .export_audit(&auditor())
        .expect("export")
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert!(events.contains(&"restore".to_string()));
    let events: Vec<String> = ks
        .export_audit(&auditor())
        .expect("export")
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert!(events.contains(&"backup".to_string()));
    Outcome::Passed
}

/// TEST-KEY-40
pub fn roles_enforced_and_refusals_audited<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let app = Actor::new("telemetry-app", Role::Application).expect("actor");
    ks.create(&operator(), "k", KeySpec::new(Algorithm::HmacSha256))
        .expect("operators create keys");
    expect_err(
        ks.create(&app, "k2", KeySpec::new(Algorithm::HmacSha256)),
        "Policy",
        "application creates",
    );
    expect_err(
        ks.create(&auditor(), "k2", KeySpec::new(Algorithm::HmacSha256)),
        "Policy",
        "auditor creates",
    );
    for (what, res) in [
        (
            "rotate",
            ks.rotate(&operator(), "k", Duration::ZERO).map(|_| ()),
        ),
        ("revoke", ks.revoke(&operator(), "k", 1, "x")),
        ("destroy", ks.destroy(&operator(), "k")),
        ("decommission", ks.decommission(&operator()).map(|_| ())),
        ("verify audit", ks.verify_audit(&operator()).map(|_| ())),
        ("cryptoperiod", ks.set_cryptoperiod(&operator(), "k", None)),
    ] {
        expect_err(res, "Policy", &format!("operator {what}"));
    }
    ks.mac("k", b"m").expect("the key is untouched by refusals");
    // Credentials: the first security-officer credential bootstraps; later
    // ones need the security officer.
    let so_secret = SecretBytes::from_slice(b"officer passphrase");
    ks.set_role_credential(None, Role::SecurityOfficer, &so_secret)
        .expect("bootstrap");
    expect_err(
        ks.set_role_credential(None, Role::Operator, &so_secret),
        "Policy",
        "credential without an actor",
    );
    expect_err(
        ks.set_role_credential(
            Some(&operator()),
            Role::Operator,
            &SecretBytes::from_slice(b"operator pass"),
        ),
        "Policy",
        "an operator setting credentials",
    );
    let officer = ks
        .authenticate("alice", Role::SecurityOfficer, &so_secret)
        .expect("authenticate");
    expect_err(
        ks.authenticate(
            "mallory",
            Role::SecurityOfficer,
            &SecretBytes::from_slice(b"guess guess"),
        ),
        "Auth",
        "wrong credential",
    );
    expect_err(
        ks.authenticate("bob", Role::Operator, &so_secret),
        "Auth",
        "no operator credential yet",
    );
    ks.set_role_credential(
        Some(&officer),
        Role::Operator,
        &SecretBytes::from_slice(b"operator pass"),
    )
    .expect("set");
    ks.authenticate(
        "bob",
        Role::Operator,
        &SecretBytes::from_slice(b"operator pass"),
    )
    .expect("operator logs in");
    let trail = ks.export_audit(&auditor()).expect("auditors export");
    let refused: Vec<_> = trail.iter().filter(|e| e.event == "refused").collect();
    assert!(
        refused.len() >= 8,
        "every refusal is audited: {}",
        refused.len()
    );
    assert!(refused
        .iter()
        .any(|e| e.actor == "telemetry-app" && e.role == "application"));
    assert!(refused
        .iter()
        .any(|e| e.actor == "suite-operator" && e.detail.contains("rotate")));
    assert!(ks.verify_audit(&auditor()).expect("verify").is_intact());
    Outcome::Passed
}

/// TEST-KEY-46
pub fn decommission_leaves_nothing_usable<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let signer =
        create_or_prove_unsupported::<F>(&ks, "identity", Algorithm::EcdsaP256Sha256).is_some();
    ks.import(
        &so(),
        "session",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&[5; 32]),
    )
    .expect("import");
    let mut handles = vec![ks.backend_handle("session", 1).expect("handle")];
    if signer {
        handles.push(ks.backend_handle("identity", 1).expect("handle"));
    }
    expect_err(
        ks.decommission(&operator()),
        "Policy",
        "operator decommission",
    );
    let exported = ks.decommission(&so()).expect("decommission");
    let last = exported.last().expect("final record");
    assert_eq!(last.event, "decommission");
    assert_eq!(last.actor, "suite-security-officer");
    assert!(exported
        .iter()
        .any(|e| e.event == "import" && e.key_name.as_deref() == Some("session")));
    // No key is usable through any API.
    expect_err(
        ks.mac("session", b"m"),
        "NotFound",
        "mac after decommission",
    );
    expect_err(
        ks.derive_hkdf_sha256("session", b"s", b"i", 32),
        "NotFound",
        "derive after decommission",
    );
    expect_err(
        ks.sign("identity", b"m", SignatureFormat::Der),
        "NotFound",
        "sign after decommission",
    );
    assert!(ks.list().expect("list").is_empty());
    expect_err(
        ks.create(&so(), "new", KeySpec::new(Algorithm::HmacSha256)),
        "KeyState",
        "create after decommission",
    );
    expect_err(ks.decommission(&so()), "KeyState", "decommission twice");
    for h in &handles {
        assert!(
            ks.backend().hmac_sha256(h, b"m").is_err(),
            "backend still uses a wiped key"
        );
        fx.assert_material_gone(&ks, h)
            .unwrap_or_else(|e| panic!("material survives decommission: {e}"));
    }
    assert!(ks.backend().list().map(|l| l.is_empty()).unwrap_or(true));
    // The final record remains in the metadata too.
    let trail = ks.export_audit(&auditor()).expect("export");
    assert_eq!(trail.last().map(|e| e.event.as_str()), Some("decommission"));
    Outcome::Passed
}

/// TEST-KEY-47
pub fn crash_during_create_or_rotate_recovers<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    ks.inject_fault(FaultPoint::AfterBackendCreate);
    expect_err(
        ks.create(&so(), "half-made", KeySpec::new(Algorithm::HmacSha256)),
        "Backend",
        "crash in create",
    );
    let ks = fx.restart(ks);
    let report = ks.reconcile_report().clone();
    assert!(
        report.orphans_removed.len() == 1 || report.listing_unsupported,
        "{report:?}"
    );
    expect_err(
        ks.info("half-made"),
        "NotFound",
        "the half-made key is not there (old state)",
    );
    ks.create(&so(), "half-made", KeySpec::new(Algorithm::HmacSha256))
        .expect("the name is free");
    let tag = ks.mac("half-made", b"m").expect("mac");
    ks.inject_fault(FaultPoint::AfterBackendRotate);
    expect_err(
        ks.rotate(&so(), "half-made", Duration::hours(1)),
        "Backend",
        "crash in rotate",
    );
    let ks = fx.restart(ks);
    let report = ks.reconcile_report().clone();
    assert!(
        report.orphans_removed.len() == 1 || report.listing_unsupported,
        "{report:?}"
    );
    let info = ks.info("half-made").expect("info");
    assert_eq!(info.versions.len(), 1, "old state: one version");
    assert_eq!(info.active().map(|v| v.version), Some(1));
    assert_eq!(
        ks.mac("half-made", b"m").expect("mac"),
        tag,
        "the key was not lost"
    );
    let again = fx.restart(ks);
    assert!(
        again.reconcile_report().is_clean(),
        "a second open finds nothing to do"
    );
    assert!(again.verify_audit(&auditor()).expect("verify").is_intact());
    Outcome::Passed
}

/// TEST-KEY-48
pub fn crash_during_destroy_sweep_revoke_recovers<F: Fixture>(fx: &mut F) -> Outcome {
    let clock = clock();
    let ks = fx.open_with_clock(clock.clone());
    for n in ["d", "sw", "rv", "keep"] {
        ks.create(&so(), n, KeySpec::new(Algorithm::HmacSha256))
            .expect("create");
    }
    let keep = ks.mac("keep", b"m").expect("mac");
    // destroy
    let h = ks.backend_handle("d", 1).expect("handle");
    ks.inject_fault(FaultPoint::AfterBackendDestroy);
    expect_err(ks.destroy(&so(), "d"), "Backend", "crash in destroy");
    drop(ks);
    let ks = fx.open_with_clock(clock.clone());
    assert!(
        ks.reconcile_report().completed.iter().any(|c| c.0 == "d"),
        "{:?}",
        ks.reconcile_report()
    );
    expect_err(ks.info("d"), "NotFound", "destroy completed (new state)");
    fx.assert_material_gone(&ks, &h)
        .unwrap_or_else(|e| panic!("{e}"));
    // sweep
    ks.rotate(&so(), "sw", Duration::hours(1)).expect("rotate");
    let h = ks.backend_handle("sw", 1).expect("handle");
    clock.advance(Duration::hours(2));
    ks.inject_fault(FaultPoint::AfterBackendSweep);
    expect_err(ks.sweep(&so()), "Backend", "crash in sweep");
    drop(ks);
    let ks = fx.open_with_clock(clock.clone());
    let v1 = ks
        .info("sw")
        .expect("info")
        .version(1)
        .cloned()
        .expect("v1");
    assert_eq!(v1.state, KeyState::Destroyed, "sweep completed (new state)");
    expect_err(ks.backend_handle("sw", 1), "KeyState", "no dangling handle");
    fx.assert_material_gone(&ks, &h)
        .unwrap_or_else(|e| panic!("{e}"));
    ks.mac("sw", b"m").expect("version 2 works");
    // revoke
    let h = ks.backend_handle("rv", 1).expect("handle");
    ks.inject_fault(FaultPoint::AfterBackendRevoke);
    expect_err(
        ks.revoke(&so(), "rv", 1, "stolen"),
        "Backend",
        "crash in revoke",
    );
    expect_err(
        ks.mac("rv", b"m"),
        "KeyState",
        "refused at once, before the crash",
    );
    drop(ks);
    let ks = fx.open_with_clock(clock.clone());
    assert_eq!(
        ks.info("rv").expect("info").versions[0].state,
        KeyState::Compromised
    );
    expect_err(ks.backend_handle("rv", 1), "KeyState", "no dangling handle");
    fx.assert_material_gone(&ks, &h)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ks.mac("keep", b"m").expect("bystander"),
        keep,
        "no other key was lost"
    );
    assert!(ks.verify_audit(&auditor()).expect("verify").is_intact());
    Outcome::Passed
}

/// TEST-KEY-49
pub fn missing_material_is_marked_not_dropped<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    ks.create(&so(), "vanishing", KeySpec::new(Algorithm::HmacSha256))
        .expect("create");
    ks.create(&so(), "staying", KeySpec::new(Algorithm::HmacSha256))
        .expect("create");
    let tag = ks.mac("staying", b"m").expect("mac");
    if let Err(e) = ks.backend().list() {
        assert_eq!(e.kind(), "Unsupported", "{e:?}");
        return Outcome::UnsupportedVerified(
            "backend object listing (no reconciliation of missing material)".into(),
        );
    }
    // The object disappears behind the keystore's back.
    let h = ks.backend_handle("vanishing", 1).expect("handle");
    ks.backend()
        .destroy(&h)
        .expect("destroy behind the keystore's back");
    let ks = fx.restart(ks);
    assert_eq!(
        ks.reconcile_report().missing,
        vec![("vanishing".to_string(), 1)]
    );
    let info = ks.info("vanishing").expect("still listed, not dropped");
    assert_eq!(info.versions[0].state, KeyState::Compromised);
    assert_eq!(
        info.versions[0].reason.as_deref(),
        Some("material missing from the backend at open")
    );
    expect_err(
        ks.mac("vanishing", b"m"),
        "KeyState",
        "use of a missing key",
    );
    assert_eq!(ks.mac("staying", b"m").expect("mac"), tag);
    let trail = ks.export_audit(&auditor()).expect("export");
    assert!(trail
        .iter()
        .any(|e| e.event == "missing" && e.key_name.as_deref() == Some("vanishing")));
    Outcome::Passed
}

/// TEST-KEY-50
pub fn damaged_metadata_never_destroys_a_key<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let k = [0x61u8; 32];
    ks.import(
        &so(),
        "precious",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&k),
    )
    .expect("import");
    let genuine = ks.backend_handle("precious", 1).expect("handle");
    let tag = ks
        .backend()
        .hmac_sha256(&genuine, b"m")
        .expect("backend mac");
    if let Err(e) = ks.backend().list() {
        assert_eq!(e.kind(), "Unsupported", "{e:?}");
        return Outcome::UnsupportedVerified("backend object listing (reconciliation)".into());
    }
    drop(ks);
    // Bit rot (or an attacker) changes the stored handle.
    let conn = rusqlite::Connection::open(fx.metadata_path()).expect("metadata");
    conn.execute_batch(
        "UPDATE key_versions SET handle = zeroblob(length(handle))
         WHERE key_id = (SELECT id FROM keys WHERE name = 'precious');",
    )
    .expect("damage the handle");
    drop(conn);
    let ks = fx.open();
    let report = ks.reconcile_report().clone();
    assert!(
        report.orphans_removed.is_empty(),
        "a genuine key was destroyed as an orphan: {report:?}"
    );
    assert!(
        report.unreferenced.contains(&genuine),
        "the genuine object is reported: {report:?}"
    );
    assert!(
        ks.backend().list().expect("list").contains(&genuine),
        "the object survives"
    );
    assert_eq!(
        ks.backend()
            .hmac_sha256(&genuine, b"m")
            .expect("still usable below the keystore"),
        tag
    );
    // The damaged version is not usable through the keystore.
    assert!(
        ks.mac("precious", b"m").is_err(),
        "a damaged handle must not be used"
    );
    // And a second open does not destroy it either.
    let ks = fx.restart(ks);
    assert!(ks.backend().list().expect("list").contains(&genuine));
    Outcome::Passed
}
