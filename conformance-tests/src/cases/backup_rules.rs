//! Backup: the backup policy's refusals and a backup-restore round trip.

use crate::support::{auditor, create_or_prove_unsupported, expect_err, operator, so, unsupported};
use crate::{Fixture, Outcome};
use keystore_api::ErrorKind;
use keystore_api::KeyManagement;
use keystore_api::{Algorithm, KeySpec, KeyState, Operation, SecretBytes, Usages};
use time::Duration;

/// TEST-KEY-38
pub fn backup_policy_refusals<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    expect_err(
        ks.create(
            &so(),
            "bad",
            KeySpec::new(Algorithm::EcdsaP256Sha256).backup_eligible(),
        ),
        ErrorKind::Policy,
        "a backup-eligible signing key",
    );
    if create_or_prove_unsupported::<F>(&ks, "signer", Algorithm::EcdsaP256Sha256).is_some() {
        for actor in [so(), operator(), auditor()] {
            expect_err(
                ks.backup(&actor, "signer", "kek"),
                ErrorKind::Policy,
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
        ErrorKind::Policy,
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
        ErrorKind::Policy,
        "an operator backing up",
    );
    expect_err(
        ks.backup(&so(), "eligible", "no-such-kek"),
        ErrorKind::NotFound,
        "a missing KEK",
    );
    // A KEK needs the wrap usage: a plain AES key is refused.
    if create_or_prove_unsupported::<F>(&ks, "plain-aes", Algorithm::Aes256Gcm).is_some() {
        expect_err(
            ks.backup(&so(), "eligible", "plain-aes"),
            ErrorKind::Policy,
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
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e:?}");
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
            ErrorKind::Unsupported,
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
        ErrorKind::Policy,
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
        ErrorKind::Integrity,
        "a relabelled backup",
    );
    expect_err(
        ks2.restore(&so(), &blob, "kek", None),
        ErrorKind::AlreadyExists,
        "restoring over an existing key",
    );
    expect_err(
        ks2.restore(&so(), b"{not json", "kek", None),
        ErrorKind::InvalidInput,
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
        ErrorKind::Integrity,
        "the wrong KEK",
    );
    let events: Vec<String> = ks2
        .export_audit(&auditor())
        .expect("export")
        .into_iter()
        .map(|e| e.event.to_string())
        .collect();
    assert!(events.contains(&"restore".to_string()));
    let events: Vec<String> = ks
        .export_audit(&auditor())
        .expect("export")
        .into_iter()
        .map(|e| e.event.to_string())
        .collect();
    assert!(events.contains(&"backup".to_string()));
    Outcome::Passed
}
