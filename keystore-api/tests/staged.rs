//! Staged rotation: `rotate_staged` (a version in pre-activation),
//! `sign_pre_active` (its proof of possession), `activate` and
//! `discard_pre_active`; the active version is untouched until activation.

use keystore_api::{
    Actor, Algorithm, AuditEvent, ErrorKind, KeySpec, KeyState, Keystore, ManualClock, Role,
    SignatureFormat,
};
use std::path::Path;
use std::sync::Arc;
use time::macros::datetime;
use time::Duration;

fn soft(dir: &Path) -> backend_soft::SoftStore {
    let kf = dir.join("kek");
    let unlock = backend_soft::Unlock::KeyFile(kf.clone());
    if kf.exists() {
        return backend_soft::SoftStore::open(&dir.join("soft"), &unlock).unwrap();
    }
    backend_soft::create_key_file(&kf).unwrap();
    backend_soft::SoftStore::create(&dir.join("soft"), &unlock, backend_soft::Kdf::KeyFile).unwrap()
}

fn open(dir: &Path) -> Keystore<backend_soft::SoftStore> {
    let clock = Arc::new(ManualClock::new(datetime!(2026-03-01 12:00:00 UTC)));
    Keystore::open_with_clock(soft(dir), &dir.join("m.sqlite"), clock).unwrap()
}

fn so() -> Actor {
    Actor::new("officer", Role::SecurityOfficer).unwrap()
}

fn identity(ks: &Keystore<backend_soft::SoftStore>) {
    ks.create(&so(), "id", KeySpec::new(Algorithm::EcdsaP256Sha256))
        .unwrap();
}

#[test]
fn a_staged_version_is_not_used_until_activated() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path());
    identity(&ks);
    let info = ks.rotate_staged(&so(), "id").unwrap();
    let staged = info.pre_active().unwrap().clone();
    assert_eq!(staged.version, 2);
    assert_eq!(staged.state, KeyState::PreActivation);
    assert_eq!(info.active().unwrap().version, 1);
    // Every ordinary use still goes to version 1.
    let sig = ks.sign("id", b"m", SignatureFormat::Der).unwrap();
    assert_eq!(sig.version, 1);
    assert_eq!(
        ks.public_key("id").unwrap().fingerprint(),
        info.active().unwrap().fingerprint.clone().unwrap()
    );
    // The staged key signs proofs of possession; nothing verifies with it yet.
    let pop = ks
        .sign_pre_active(&so(), "id", 2, b"csr", SignatureFormat::Der)
        .unwrap();
    assert_eq!(pop.version, 2);
    staged
        .public_key
        .as_ref()
        .unwrap()
        .verify(b"csr", &pop.bytes)
        .unwrap();
    let e = ks.verify("id", b"csr", &pop.bytes, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    let e = ks.verify("id", b"csr", &pop.bytes, Some(2)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyState);
    // Only a pre-activation version signs proofs of possession.
    let e = ks
        .sign_pre_active(&so(), "id", 1, b"x", SignatureFormat::Der)
        .unwrap_err();
    assert_eq!((e.kind(), e.version()), (ErrorKind::KeyState, Some(1)));
    // One staged version at a time; no plain rotation meanwhile; no resume.
    for e in [
        ks.rotate_staged(&so(), "id").unwrap_err(),
        ks.rotate(&so(), "id", Duration::days(1)).unwrap_err(),
        ks.resume(&so(), "id", 2).unwrap_err(),
        ks.suspend(&so(), "id", 2).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::KeyState, "{e}");
    }

    let info = ks.activate(&so(), "id", 2, Duration::days(7)).unwrap();
    assert_eq!(info.active().unwrap().version, 2);
    assert!(info.pre_active().is_none());
    let old = info.version(1).unwrap();
    assert_eq!(old.state, KeyState::Deactivated);
    assert_eq!(
        old.grace_end,
        Some(datetime!(2026-03-01 12:00:00 UTC) + Duration::days(7))
    );
    assert_eq!(
        ks.sign("id", b"m", SignatureFormat::Der).unwrap().version,
        2
    );
    assert_eq!(ks.verify("id", b"csr", &pop.bytes, None).unwrap(), 2);
    // Activation is of a pre-activation version only.
    let e = ks.activate(&so(), "id", 2, Duration::ZERO).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyState);
    let e = ks.activate(&so(), "id", 9, Duration::ZERO).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let trail = ks.export_audit(&so()).unwrap();
    let events: Vec<_> = trail.iter().map(|e| e.event.as_str()).collect();
    assert!(
        events.ends_with(&["stage", "proof-of-possession", "state", "rotate"]),
        "{events:?}"
    );
    let pop_entry = trail
        .iter()
        .find(|e| e.event == AuditEvent::ProofOfPossession)
        .unwrap();
    assert_eq!(pop_entry.key_version, Some(2));
    assert_eq!(pop_entry.fingerprint, staged.fingerprint);
    ks.verify_audit(&so()).unwrap();
}

#[test]
fn a_discarded_version_is_destroyed_and_the_next_stage_is_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path());
    identity(&ks);
    ks.rotate_staged(&so(), "id").unwrap();
    let handle = ks.backend_handle("id", 2).unwrap();
    ks.discard_pre_active(&so(), "id", 2).unwrap();
    let info = ks.info("id").unwrap();
    assert_eq!(info.version(2).unwrap().state, KeyState::Destroyed);
    assert_eq!(info.active().unwrap().version, 1);
    assert!(!keystore_api::KeyManagement::list(ks.backend())
        .unwrap()
        .contains(&handle));
    let e = ks
        .sign_pre_active(&so(), "id", 2, b"x", SignatureFormat::Der)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyState);
    let e = ks.discard_pre_active(&so(), "id", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyState);
    let info = ks.rotate_staged(&so(), "id").unwrap();
    assert_eq!(info.pre_active().unwrap().version, 3);
    // A full destroy takes the staged material too.
    let h3 = ks.backend_handle("id", 3).unwrap();
    ks.destroy(&so(), "id").unwrap();
    assert!(!keystore_api::KeyManagement::list(ks.backend())
        .unwrap()
        .contains(&h3));
}

#[test]
fn staging_needs_the_security_officer_and_refusals_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path());
    identity(&ks);
    let op = Actor::new("line-3", Role::Operator).unwrap();
    let e = ks.rotate_staged(&op, "id").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Policy);
    ks.rotate_staged(&so(), "id").unwrap();
    for e in [
        ks.sign_pre_active(&op, "id", 2, b"x", SignatureFormat::Der)
            .unwrap_err(),
        ks.activate(&op, "id", 2, Duration::ZERO).unwrap_err(),
        ks.discard_pre_active(&op, "id", 2).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Policy, "{e}");
    }
    let refused = ks
        .export_audit(&so())
        .unwrap()
        .into_iter()
        .filter(|e| e.event == AuditEvent::Refused && e.actor == "line-3")
        .count();
    assert_eq!(refused, 4);
    assert_eq!(ks.info("id").unwrap().pre_active().unwrap().version, 2);
}

#[test]
fn a_staged_version_survives_reopening_with_the_material_check() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ks = open(dir.path());
        identity(&ks);
        ks.rotate_staged(&so(), "id").unwrap();
    }
    let ks = Keystore::open_with(
        soft(dir.path()),
        &dir.path().join("m.sqlite"),
        Arc::new(keystore_api::SystemClock),
        keystore_api::OpenOptions::new().check_material(true),
    )
    .unwrap();
    let report = ks.reconcile_report();
    assert!(report.is_clean(), "{report:?}");
    ks.sign_pre_active(&so(), "id", 2, b"x", SignatureFormat::Der)
        .unwrap();
    ks.activate(&so(), "id", 2, Duration::ZERO).unwrap();
}

#[test]
fn a_version_3_database_is_migrated_with_every_row_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.sqlite");
    {
        let ks = open(dir.path());
        identity(&ks);
        ks.rotate(&so(), "id", Duration::days(1)).unwrap();
    }
    // Put the table back as schema version 3 had it (no pre-activation,
    // and no usage limits of schema 5, nor schema 6's evidence).
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "DROP TABLE audit_checkpoints;
         DROP TABLE audit_signers;
         ALTER TABLE store DROP COLUMN store_id;
         ALTER TABLE store DROP COLUMN rollback_counter;
         ALTER TABLE keys DROP COLUMN encryption_limit;
         ALTER TABLE key_versions DROP COLUMN encryptions_reserved;",
    )
    .unwrap();
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'key_versions'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let old = sql
        .replace("'pre-activation', ", "")
        .replace("key_versions", "key_versions_v3");
    assert!(!old.contains("pre-activation"));
    conn.execute_batch(&format!(
        "BEGIN; {old}; INSERT INTO key_versions_v3 SELECT * FROM key_versions;
         DROP TABLE key_versions; ALTER TABLE key_versions_v3 RENAME TO key_versions;
         CREATE UNIQUE INDEX key_versions_one_active ON key_versions(key_id) WHERE state = 'active';
         PRAGMA user_version = 3; COMMIT;"
    ))
    .unwrap();
    drop(conn);
    let ks = open(dir.path());
    let info = ks.info("id").unwrap();
    assert_eq!(info.versions.len(), 2);
    assert_eq!(info.active().unwrap().version, 2);
    assert_eq!(info.version(1).unwrap().state, KeyState::Deactivated);
    ks.rotate_staged(&so(), "id").unwrap();
    ks.verify_audit(&so()).unwrap();
    let v: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 6);
}
