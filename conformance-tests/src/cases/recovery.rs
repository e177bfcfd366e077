//! Crash recovery: interrupted create, rotate, destroy, sweep and revoke
//! recover, missing material is marked, damaged metadata never destroys a
//! key. Time comes from an injected clock; nothing sleeps.

use super::lifecycle::clock;
use crate::support::{auditor, expect_err, so};
use crate::{Fixture, Outcome};
use keystore_api::BackendKey;
use keystore_api::ErrorKind;
use keystore_api::KeyManagement;
use keystore_api::Mac;
use keystore_api::{Algorithm, FaultPoint, KeySpec, KeyState, SecretBytes};
use time::Duration;

/// TEST-KEY-47
pub fn crash_during_create_or_rotate_recovers<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    ks.inject_fault(FaultPoint::AfterBackendCreate);
    expect_err(
        ks.create(&so(), "half-made", KeySpec::new(Algorithm::HmacSha256)),
        ErrorKind::Backend,
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
        ErrorKind::NotFound,
        "the half-made key is not there (old state)",
    );
    ks.create(&so(), "half-made", KeySpec::new(Algorithm::HmacSha256))
        .expect("the name is free");
    let tag = ks.mac("half-made", b"m").expect("mac");
    ks.inject_fault(FaultPoint::AfterBackendRotate);
    expect_err(
        ks.rotate(&so(), "half-made", Duration::hours(1)),
        ErrorKind::Backend,
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
    expect_err(
        ks.destroy(&so(), "d"),
        ErrorKind::Backend,
        "crash in destroy",
    );
    drop(ks);
    let ks = fx.open_with_clock(clock.clone());
    assert!(
        ks.reconcile_report().completed.iter().any(|c| c.0 == "d"),
        "{:?}",
        ks.reconcile_report()
    );
    expect_err(
        ks.info("d"),
        ErrorKind::NotFound,
        "destroy completed (new state)",
    );
    fx.assert_material_gone(&ks, &h)
        .unwrap_or_else(|e| panic!("{e}"));
    // sweep
    ks.rotate(&so(), "sw", Duration::hours(1)).expect("rotate");
    let h = ks.backend_handle("sw", 1).expect("handle");
    clock.advance(Duration::hours(2));
    ks.inject_fault(FaultPoint::AfterBackendSweep);
    expect_err(ks.sweep(&so()), ErrorKind::Backend, "crash in sweep");
    drop(ks);
    let ks = fx.open_with_clock(clock.clone());
    let v1 = ks
        .info("sw")
        .expect("info")
        .version(1)
        .cloned()
        .expect("v1");
    assert_eq!(v1.state, KeyState::Destroyed, "sweep completed (new state)");
    expect_err(
        ks.backend_handle("sw", 1),
        ErrorKind::KeyState,
        "no dangling handle",
    );
    fx.assert_material_gone(&ks, &h)
        .unwrap_or_else(|e| panic!("{e}"));
    ks.mac("sw", b"m").expect("version 2 works");
    // revoke
    let h = ks.backend_handle("rv", 1).expect("handle");
    ks.inject_fault(FaultPoint::AfterBackendRevoke);
    expect_err(
        ks.revoke(&so(), "rv", 1, "stolen"),
        ErrorKind::Backend,
        "crash in revoke",
    );
    expect_err(
        ks.mac("rv", b"m"),
        ErrorKind::KeyState,
        "refused at once, before the crash",
    );
    drop(ks);
    let ks = fx.open_with_clock(clock.clone());
    assert_eq!(
        ks.info("rv").expect("info").versions[0].state,
        KeyState::Compromised
    );
    expect_err(
        ks.backend_handle("rv", 1),
        ErrorKind::KeyState,
        "no dangling handle",
    );
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
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e:?}");
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
        ErrorKind::KeyState,
        "use of a missing key",
    );
    assert_eq!(ks.mac("staying", b"m").expect("mac"), tag);
    let trail = ks.export_audit(&auditor()).expect("export");
    assert!(trail
        .iter()
        .any(|e| e.event == keystore_api::AuditEvent::Missing
            && e.key_name.as_deref() == Some("vanishing")));
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
        .hmac_sha256(
            &BackendKey::new(genuine.clone(), Algorithm::HmacSha256),
            b"m",
        )
        .expect("backend mac");
    if let Err(e) = ks.backend().list() {
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e:?}");
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
            .hmac_sha256(
                &BackendKey::new(genuine.clone(), Algorithm::HmacSha256),
                b"m"
            )
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
