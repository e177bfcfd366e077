//! Evidence that can be checked off the device (TEST-KEY-72..74): signed
//! audit checkpoints verified with nothing but trusted public keys (and by
//! OpenSSL), rollback of the metadata detected where the backend has a
//! monotonic counter (else its `Unsupported` proven), and the signed
//! crypto-erase certificate of a decommission.

use crate::support::{auditor, expect_err, openssl_verifies, so};
use crate::{Fixture, Outcome};
use keystore_api::{
    Algorithm, AuditExport, ErrorKind, KeySpec, Keystore, MonotonicCounter, PublicKey,
};
use std::path::{Path, PathBuf};

/// The signing keys' public parts, as an auditor records them beforehand.
fn trust_anchors<B: keystore_api::Backend>(ks: &Keystore<B>) -> Vec<PublicKey> {
    ks.audit_signers()
        .expect("signers")
        .iter()
        .map(|s| s.public_key().expect("public key"))
        .collect()
}

fn busy<B: keystore_api::Backend>(ks: &Keystore<B>, prefix: &str) {
    for i in 0..3 {
        let name = format!("{prefix}-{i}");
        ks.create(&so(), &name, KeySpec::new(Algorithm::HmacSha256))
            .expect("create");
        ks.rotate(&so(), &name, time::Duration::ZERO)
            .expect("rotate");
    }
    ks.destroy(&so(), &format!("{prefix}-0")).expect("destroy");
}

/// Re-encodes `export` after `edit` on its entries, recomputing nothing.
fn edited(export: &AuditExport, edit: impl FnOnce(&mut AuditExport)) -> AuditExport {
    let mut e = export.clone();
    edit(&mut e);
    AuditExport::from_json_lines(&e.to_json_lines().expect("encode")).expect("parse")
}

/// TEST-KEY-72
pub fn audit_checkpoints_verify_offline<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let anchors = trust_anchors(&ks);
    assert_eq!(anchors.len(), 1, "one signing key at first");
    busy(&ks, "cp");
    let export = ks.export_audit_evidence(&auditor()).expect("export");
    let text = export.to_json_lines().expect("encode");
    let parsed = AuditExport::from_json_lines(&text).expect("parse");
    assert_eq!(parsed, export, "the JSON lines round-trip");
    let n = export.entries.len() as u64;
    let report = parsed.verify_offline(&anchors);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.covered_through, n, "{report:?}");
    assert!(
        report.checkpoints_verified >= 2,
        "bound + export: {report:?}"
    );
    // OpenSSL checks every checkpoint signature on its own.
    for c in &export.checkpoints {
        let sig = hex::decode(&c.signature).expect("hex");
        assert!(
            openssl_verifies(&anchors[0], &c.signed_message(), &sig),
            "OpenSSL rejects checkpoint #{}",
            c.number
        );
    }
    // An edit without the chain recomputed is named at its entry.
    let bad = edited(&export, |e| e.entries[2].detail.push_str(" (edited)"));
    let r = bad.verify_offline(&anchors);
    assert_eq!(r.first_bad.as_ref().map(|b| b.0), Some(3), "{r:?}");
    // An edit with the chain recomputed (no key needed for that) fails
    // against the signed head.
    let rewritten = edited(&export, |e| {
        e.entries[2].actor = "someone-else".into();
        let mut prev = keystore_api::chain::GENESIS.to_vec();
        for entry in &mut e.entries {
            entry.prev_hash = hex::encode(&prev);
            prev = recompute(entry, &prev);
            entry.hash = hex::encode(&prev);
        }
    });
    let r = rewritten.verify_offline(&anchors);
    let (seq, why) = r.first_bad.clone().expect("rewrite detected");
    assert!(seq <= 3 && why.contains("rewritten"), "{r:?}");
    // A cut-off tail, and an untrusted key.
    let cut = edited(&export, |e| {
        e.entries.truncate(e.entries.len() - 2);
    });
    let r = cut.verify_offline(&anchors);
    assert_eq!(r.first_bad.as_ref().map(|b| b.0), Some(n - 1), "{r:?}");
    let other = tempfile::tempdir().expect("tempdir");
    let kek = other.path().join("kek");
    backend_soft::create_key_file(&kek).expect("key file");
    let stranger = Keystore::open(
        backend_soft::SoftStore::create(
            &other.path().join("soft"),
            &backend_soft::Unlock::KeyFile(kek),
            backend_soft::Kdf::KeyFile,
        )
        .expect("another store"),
        &other.path().join("m.sqlite"),
    )
    .expect("another keystore");
    let r = export.verify_offline(&trust_anchors(&stranger));
    assert!(
        r.first_bad
            .as_ref()
            .is_some_and(|b| b.1.contains("not a trusted key")),
        "{r:?}"
    );
    // Rotation: the outgoing key hands over; the old anchor still suffices.
    let new = ks.rotate_audit_signer(&so()).expect("rotate signer");
    busy(&ks, "after");
    let export = ks.export_audit_evidence(&auditor()).expect("export");
    let r = export.verify_offline(&anchors);
    assert!(r.is_intact(), "{r:?}");
    assert_eq!(r.signers_used.len(), 2, "{r:?}");
    assert!(r.signers_used.contains(&new.fingerprint));
    let only_new = export.verify_offline(&[new.public_key().expect("new key")]);
    assert!(
        !only_new.is_intact(),
        "the first checkpoints need the old anchor"
    );
    assert!(ks.verify_audit(&auditor()).expect("verify").is_intact());
    // A store id edited to smuggle lines into the signed text is refused
    // before anything is signed with it.
    drop(ks);
    let conn = rusqlite::Connection::open(fx.metadata_path()).expect("metadata");
    conn.execute_batch(
        "UPDATE store SET store_id = store_id || char(10) || 'handover: sha256:00';",
    )
    .expect("tamper");
    drop(conn);
    let refused = match fx.try_open() {
        Err(e) => e,
        Ok(ks) => match ks.export_audit_evidence(&auditor()) {
            Err(e) => e,
            Ok(_) => panic!("a checkpoint was signed over an edited store id"),
        },
    };
    assert_eq!(refused.kind(), ErrorKind::Integrity, "{refused:?}");
    Outcome::Passed
}

fn recompute(entry: &keystore_api::AuditEntry, prev: &[u8]) -> Vec<u8> {
    let version = entry.key_version.map(u32::to_be_bytes);
    let mut h = keystore_api::chain::ChainHasher::new(b"keystore-audit-entry-v1", entry.seq);
    h.text(Some(&entry.id))
        .text(Some(&keystore_api::rfc3339(entry.at)))
        .text(Some(&entry.actor))
        .text(Some(&entry.role))
        .text(Some(entry.event.as_str()))
        .text(entry.key_name.as_deref())
        .field(version.as_ref().map(|v| &v[..]))
        .text(entry.fingerprint.as_deref())
        .text(Some(&entry.detail))
        .field(Some(prev));
    h.finish().to_vec()
}

/// The metadata database and the files beside it.
fn db_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| {
            let mut n = db.as_os_str().to_owned();
            n.push(s);
            PathBuf::from(n)
        })
        .collect()
}

fn copy_db(db: &Path, to: &Path) {
    for (from, to) in db_files(db).iter().zip(db_files(to)) {
        let _ = std::fs::remove_file(&to);
        if from.exists() {
            std::fs::copy(from, &to).expect("copy metadata");
        }
    }
}

/// TEST-KEY-73
pub fn metadata_rollback_detected<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let db = fx.metadata_path();
    let saved = db.with_extension("saved");
    busy(&ks, "old");
    let counter = ks.rollback_counter().expect("rollback counter");
    let export = ks.export_audit_evidence(&auditor()).expect("export");
    let Some(counter) = counter else {
        // No counter: the backend itself says so, and the export does not
        // claim protection.
        let e = expect_err(
            ks.backend().counter_create(),
            ErrorKind::Unsupported,
            "a monotonic counter",
        );
        assert!(
            export.store.rollback_protection.starts_with("NONE"),
            "{:?}",
            export.store
        );
        return Outcome::UnsupportedVerified(e.message().to_string());
    };
    assert!(export.store.rollback_protection.contains(&counter.counter));
    let last = export.checkpoints.last().expect("checkpoint");
    assert_eq!(last.counter_value, Some(counter.value + 1), "{last:?}");
    assert_eq!(
        ks.rollback_counter().expect("read").expect("counter").value,
        counter.value + 1,
        "the export raised the counter"
    );
    drop(ks);
    copy_db(&db, &saved);
    // Newer state: a key destroyed, checkpointed (the counter goes up).
    let ks = fx.open();
    busy(&ks, "new");
    ks.checkpoint(&auditor()).expect("checkpoint");
    drop(ks);
    let newest = db.with_extension("newest");
    copy_db(&db, &newest);
    // The older copy restored: refused at open, naming counter and head.
    copy_db(&saved, &db);
    let e = match fx.try_open() {
        Ok(_) => panic!("a rolled-back database opened"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");
    let msg = e.message();
    assert!(
        msg.contains("rollback detected")
            && msg.contains(&counter.counter)
            && msg.contains("audit head #"),
        "{msg}"
    );
    // Only the audit tables rolled back: refused too.
    copy_db(&newest, &db);
    {
        let conn = rusqlite::Connection::open(&db).expect("db");
        conn.execute_batch(&format!(
            "ATTACH '{}' AS old;
             DELETE FROM main.audit; INSERT INTO main.audit SELECT * FROM old.audit;
             DELETE FROM main.audit_head; INSERT INTO main.audit_head SELECT * FROM old.audit_head;
             DELETE FROM main.audit_checkpoints;
             INSERT INTO main.audit_checkpoints SELECT * FROM old.audit_checkpoints;",
            saved.display()
        ))
        .expect("swap audit tables");
    }
    let e = match fx.try_open() {
        Ok(_) => panic!("a database with rolled-back audit tables opened"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");
    // The newest copy opens and verifies.
    copy_db(&newest, &db);
    let ks = fx.open();
    assert!(ks.verify_audit(&auditor()).expect("verify").is_intact());
    Outcome::Passed
}

/// TEST-KEY-74
pub fn decommission_erasure_certificate<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let anchors = trust_anchors(&ks);
    busy(&ks, "erase");
    let names: Vec<String> = ks
        .list()
        .expect("list")
        .into_iter()
        .map(|k| k.name)
        .collect();
    let done = ks.decommission(&so()).expect("decommission");
    let cert = &done.certificate;
    let st = cert.verify(&anchors).expect("the certificate verifies");
    assert_eq!(st.backend, ks.backend_name(), "{st:?}");
    assert!(!st.method.is_empty());
    assert_eq!(st.actor, "suite-security-officer");
    let listed: Vec<&str> = st.keys.iter().map(|k| k.name.as_str()).collect();
    for n in &names {
        assert!(listed.contains(&n.as_str()), "{n} missing from {listed:?}");
    }
    assert!(st.objects_destroyed >= names.len() as u64, "{st:?}");
    assert_eq!(done.trail.checkpoints.last(), Some(&st.final_checkpoint));
    let last = done.trail.entries.last().expect("entries");
    assert_eq!(last.event, keystore_api::AuditEvent::Decommission);
    assert_eq!(st.final_checkpoint.seq, last.seq);
    let r = done.trail.verify_offline(&anchors);
    assert!(r.is_intact(), "{r:?}");
    // OpenSSL verifies the certificate's signature on its own.
    let mut signed = format!("{}\n", keystore_api::ERASURE_DOMAIN).into_bytes();
    signed.extend_from_slice(cert.body.as_bytes());
    let sig = hex::decode(&cert.signature).expect("hex");
    assert!(
        openssl_verifies(&anchors[0], &signed, &sig),
        "OpenSSL rejects the certificate"
    );
    // An edited certificate does not verify.
    let mut forged = cert.clone();
    forged.body = forged.body.replacen("erase-1", "erase-9", 1);
    assert_ne!(forged.body, cert.body);
    expect_err(
        forged.verify(&anchors),
        ErrorKind::Integrity,
        "forged certificate",
    );
    // Nothing is left: the store refuses to create keys, the backend is empty.
    expect_err(
        ks.create(&so(), "again", KeySpec::new(Algorithm::HmacSha256)),
        ErrorKind::KeyState,
        "create after decommission",
    );
    use keystore_api::KeyManagement;
    assert!(ks.backend().list().expect("list").is_empty());
    if let Some(c) = &st.counter_removed {
        assert!(c.contains("NV index") && c.ends_with(" removed"), "{c}");
    }
    // The decommissioned store still opens, and verifies its chain only.
    drop(ks);
    let ks = fx.open();
    let report = ks.verify_audit(&auditor()).expect("verify");
    assert!(
        report.chain_intact() && !report.macs_checked(),
        "{report:?}"
    );
    Outcome::Passed
}
