//! The audit trail: events with ids and times, and tamper evidence. The
//! tamper cases edit the SQLite database directly, as an attacker with file
//! access would, and verification must name the first bad entry.

use crate::support::{auditor, expect_err, operator, so};
use crate::{Fixture, Outcome};
use keystore_api::ErrorKind;
use keystore_api::{Algorithm, KeySpec, SecretBytes, SignatureFormat};
use time::Duration;

/// Makes a trail of at least eight entries and returns its length.
fn busy_trail<F: Fixture>(fx: &mut F) -> usize {
    let ks = fx.open();
    ks.import(
        &so(),
        "a",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&[1; 32]),
    )
    .expect("import");
    ks.create(&so(), "b", KeySpec::new(Algorithm::HmacSha256))
        .expect("create");
    ks.rotate(&so(), "b", Duration::ZERO).expect("rotate");
    ks.sweep(&so()).expect("sweep");
    ks.suspend(&so(), "a", 1).expect("suspend");
    ks.resume(&so(), "a", 1).expect("resume");
    let _ = ks.rotate(&operator(), "a", Duration::ZERO);
    ks.destroy(&so(), "a").expect("destroy");
    let n = ks.export_audit(&auditor()).expect("export").len();
    assert!(n >= 8, "trail has {n} entries");
    assert!(ks.verify_audit(&auditor()).expect("verify").is_intact());
    n
}

fn tamper_sql<F: Fixture>(fx: &F, sql: &str) {
    let conn = rusqlite::Connection::open(fx.metadata_path()).expect("open metadata");
    conn.execute_batch(sql).expect("tamper");
}

fn first_bad<F: Fixture>(fx: &mut F) -> (u64, String) {
    let ks = fx.open();
    let report = ks.verify_audit(&auditor()).expect("verification runs");
    report.first_bad.expect("tampering detected")
}

/// TEST-KEY-41
pub fn audit_records_lifecycle_events<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    ks.import(
        &so(),
        "imp",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&[7; 32]),
    )
    .expect("import");
    ks.create(&so(), "gen", KeySpec::new(Algorithm::HmacSha256))
        .expect("create");
    ks.rotate(&so(), "gen", Duration::ZERO).expect("rotate");
    ks.sweep(&so()).expect("sweep");
    ks.suspend(&so(), "imp", 1).expect("suspend");
    ks.revoke(&so(), "imp", 1, "audit test").expect("revoke");
    ks.destroy(&so(), "gen").expect("destroy");
    // Applications add their own events (e.g. provisioning), never the keystore's.
    ks.record_event(
        &operator(),
        "provision",
        Some(("imp", 1)),
        "unit DEV1 on line-3",
    )
    .expect("record an application event");
    expect_err(
        ks.record_event(&so(), "rotate", None, "forged"),
        ErrorKind::InvalidInput,
        "a reserved event name",
    );
    expect_err(
        ks.record_event(&so(), "Bad Name", None, "x"),
        ErrorKind::InvalidInput,
        "a malformed event name",
    );
    expect_err(
        ks.record_event(&so(), "note", None, "two\nlines"),
        ErrorKind::InvalidInput,
        "a multi-line detail",
    );
    expect_err(
        ks.record_event(&auditor(), "note", None, "x"),
        ErrorKind::Policy,
        "an auditor writing events",
    );
    // Use operations are not audited (hot path) and do not disturb the chain.
    let _ = ks.sign("none", b"m", SignatureFormat::Der);
    let trail = ks.export_audit(&auditor()).expect("export");
    let events: Vec<&str> = trail.iter().map(|e| e.event.as_str()).collect();
    for want in [
        "audit-init",
        "import",
        "generate",
        "rotate",
        "state",
        "sweep",
        "destroy",
    ] {
        assert!(
            events.contains(&want),
            "event {want} missing from {events:?}"
        );
    }
    let mut ids = std::collections::HashSet::new();
    for (i, e) in trail.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.id.len(), 32, "128-bit id");
        assert!(ids.insert(e.id.clone()), "ids are unique");
        assert_eq!(e.at.offset(), time::UtcOffset::UTC);
        assert_eq!(e.at.nanosecond(), 0, "whole seconds");
        // Exported as the RFC 3339 UTC text the trail stores.
        let json = serde_json::to_value(e).expect("json");
        let at = json["at"].as_str().expect("at is text");
        assert!(at.ends_with('Z'), "{at}");
        assert_eq!(
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .expect("RFC 3339"),
            e.at
        );
        assert!(!e.actor.is_empty() && !e.role.is_empty());
    }
    let rotate = trail
        .iter()
        .find(|e| e.event == keystore_api::AuditEvent::Rotate)
        .expect("rotate");
    let provision = trail
        .iter()
        .find(|e| e.event.as_str() == "provision")
        .expect("the application event");
    assert!(!provision.event.is_keystore());
    assert_eq!(
        (rotate.key_name.as_deref(), rotate.key_version),
        (Some("gen"), Some(2))
    );
    assert_eq!(rotate.actor, "suite-security-officer");
    assert_eq!(rotate.role, "security-officer");
    let revoke = trail
        .iter()
        .find(|e| e.detail.contains("compromised"))
        .expect("revoke event");
    assert!(revoke.detail.contains("audit test"));
    // JSON lines export round-trips.
    let line = serde_json::to_string(&trail[0]).expect("json");
    let back: keystore_api::AuditEntry = serde_json::from_str(&line).expect("parse");
    assert_eq!(back, trail[0]);
    assert!(ks.verify_audit(&auditor()).expect("verify").is_intact());
    expect_err(
        ks.export_audit(&operator()),
        ErrorKind::Policy,
        "operators do not read the trail",
    );
    Outcome::Passed
}

/// TEST-KEY-42
pub fn audit_detects_edit<F: Fixture>(fx: &mut F) -> Outcome {
    busy_trail(fx);
    tamper_sql(
        fx,
        "UPDATE audit SET detail = detail || ' (harmless)' WHERE seq = 4;",
    );
    let (seq, why) = first_bad(fx);
    assert_eq!(seq, 4, "{why}");
    tamper_sql(
        fx,
        "UPDATE audit SET detail = replace(detail, ' (harmless)', '') WHERE seq = 4;",
    );
    assert!(
        fx.open()
            .verify_audit(&auditor())
            .expect("verify")
            .is_intact(),
        "undoing the edit restores the chain"
    );
    // A forged MAC (or an edit with a recomputed hash) fails the MAC check.
    tamper_sql(fx, "UPDATE audit SET mac = zeroblob(32) WHERE seq = 2;");
    let (seq, why) = first_bad(fx);
    assert_eq!(seq, 2, "{why}");
    assert!(why.contains("MAC"), "{why}");
    Outcome::Passed
}

/// TEST-KEY-43
pub fn audit_detects_deletion<F: Fixture>(fx: &mut F) -> Outcome {
    busy_trail(fx);
    tamper_sql(fx, "DELETE FROM audit WHERE seq = 3;");
    let (seq, why) = first_bad(fx);
    assert_eq!(seq, 3, "{why}");
    Outcome::Passed
}

/// TEST-KEY-44
pub fn audit_detects_reordering<F: Fixture>(fx: &mut F) -> Outcome {
    busy_trail(fx);
    tamper_sql(
        fx,
        "UPDATE audit SET seq = -5 WHERE seq = 5; UPDATE audit SET seq = 5 WHERE seq = 6; UPDATE audit SET seq = 6 WHERE seq = -5;",
    );
    let (seq, why) = first_bad(fx);
    assert_eq!(seq, 5, "{why}");
    Outcome::Passed
}

/// TEST-KEY-45
pub fn audit_detects_truncation<F: Fixture>(fx: &mut F) -> Outcome {
    let n = busy_trail(fx);
    tamper_sql(fx, "DELETE FROM audit WHERE seq > 6;");
    let (seq, why) = first_bad(fx);
    assert_eq!(seq, 7, "{why}");
    assert!(why.contains("truncated"), "{why}");
    // Truncating the head along with the entries is caught by the head MAC.
    tamper_sql(
        fx,
        "UPDATE audit_head SET seq = 6, hash = (SELECT hash FROM audit WHERE seq = 6);",
    );
    let (seq, why) = first_bad(fx);
    assert_eq!(seq, 6, "{why}");
    let _ = n;
    Outcome::Passed
}

/// Recomputes the hash chain from entry #1 and the head's hash, as an
/// attacker with write access to the database and the (public) entry format
/// would after editing an entry. The MACs cannot be recomputed without the
/// audit key, and are left as they are.
fn recompute_chain<F: Fixture>(fx: &F) {
    use sha2::Digest;
    fn field(h: &mut sha2::Sha256, v: Option<&[u8]>) {
        match v {
            None => h.update([0u8]),
            Some(b) => {
                h.update([1u8]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }
    type Row = (
        u64,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<u32>,
        Option<String>,
        String,
    );
    let conn = rusqlite::Connection::open(fx.metadata_path()).expect("open metadata");
    let rows: Vec<Row> = conn
        .prepare(
            "SELECT seq, id, at, actor, role, event, key_name, key_version, fingerprint, detail
             FROM audit ORDER BY seq",
        )
        .expect("prepare")
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut prev = vec![0u8; 32];
    for (seq, id, at, actor, role, event, key_name, key_version, fp, detail) in rows {
        let mut h = sha2::Sha256::new();
        h.update(b"keystore-audit-entry-v1");
        h.update(seq.to_be_bytes());
        for f in [&id, &at, &actor, &role, &event] {
            field(&mut h, Some(f.as_bytes()));
        }
        field(&mut h, key_name.as_deref().map(str::as_bytes));
        let v = key_version.map(u32::to_be_bytes);
        field(&mut h, v.as_ref().map(|v| &v[..]));
        field(&mut h, fp.as_deref().map(str::as_bytes));
        field(&mut h, Some(detail.as_bytes()));
        field(&mut h, Some(&prev));
        let hash = h.finalize().to_vec();
        conn.execute(
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            rusqlite::params![prev, hash, seq],
        )
        .expect("rewrite the chain");
        prev = hash;
    }
    conn.execute("UPDATE audit_head SET hash = ?1", [&prev])
        .expect("rewrite the head");
}

/// Edits entry `seq` (its detail) and recomputes the chain after it.
fn forge_entry<F: Fixture>(fx: &F, seq: u64) {
    tamper_sql(
        fx,
        &format!("UPDATE audit SET detail = 'nothing happened here' WHERE seq = {seq};"),
    );
    recompute_chain(fx);
}

/// Verification must fail with `Error::Integrity` whose message holds `names`.
#[track_caller]
fn verify_is_integrity<F: Fixture>(fx: &mut F, names: &str, what: &str) {
    let ks = fx.open();
    match ks.verify_audit(&auditor()) {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Integrity, "{what}: {e:?}");
            assert!(e.to_string().contains(names), "{what}: {e}");
        }
        Ok(r) => panic!("{what}: verification answered a report {r:?}, not Integrity"),
    }
}

/// TEST-KEY-55
pub fn audit_never_claims_unchecked_macs<F: Fixture>(fx: &mut F) -> Outcome {
    use keystore_api::AuditCoverage;
    busy_trail(fx);
    let handle_of = |fx: &F, sql: &str| -> Vec<u8> {
        rusqlite::Connection::open(fx.metadata_path())
            .expect("open metadata")
            .query_row(sql, [], |r| r.get(0))
            .expect("a handle")
    };
    let audit_key = handle_of(fx, "SELECT audit_key FROM store WHERE id = 1");
    let put_back = format!(
        "UPDATE store SET audit_key = x'{}', decommissioned_at = NULL;",
        hex::encode(&audit_key)
    );

    // An edited entry with a recomputed chain: only its MAC gives it away
    // (which also proves the chain was recomputed correctly).
    forge_entry(fx, 3);
    let (seq, why) = first_bad(fx);
    assert_eq!(seq, 3, "{why}");
    assert!(
        why.contains("MAC"),
        "the forged chain itself verifies: {why}"
    );

    // Live store, audit key reference removed: Integrity, never a
    // chain-only pass, and no writer appends unMAC'd entries.
    tamper_sql(fx, "UPDATE store SET audit_key = NULL;");
    verify_is_integrity(fx, "missing from a live store", "NULL audit_key");
    {
        let ks = fx.open();
        let err = ks
            .create(&so(), "after-null", KeySpec::new(Algorithm::HmacSha256))
            .expect_err("no write without the audit key");
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err:?}");
        assert!(ks.info("after-null").is_err(), "nothing was recorded");
    }
    // The state decommission leaves, faked on a live store.
    tamper_sql(
        fx,
        "UPDATE store SET decommissioned_at = '2020-01-01T00:00:00Z';",
    );
    verify_is_integrity(
        fx,
        "marked decommissioned",
        "NULL audit_key + decommissioned_at",
    );
    // A reference replaced by one of the store's own keys.
    tamper_sql(fx, &put_back);
    let b = handle_of(
        fx,
        "SELECT v.handle FROM key_versions v JOIN keys k ON k.id = v.key_id
         WHERE k.name = 'b' AND v.handle IS NOT NULL LIMIT 1",
    );
    tamper_sql(
        fx,
        &format!("UPDATE store SET audit_key = x'{}';", hex::encode(&b)),
    );
    verify_is_integrity(fx, "replaced", "audit_key = key b's handle");
    // A reference to an object the backend does not hold.
    tamper_sql(
        fx,
        &format!("UPDATE store SET audit_key = x'{}';", "ee".repeat(16)),
    );
    verify_is_integrity(fx, "not in the", "audit_key = an unknown handle");
    // With the reference back, the forged entry is caught again.
    tamper_sql(fx, &put_back);
    let (seq, why) = first_bad(fx);
    assert_eq!(seq, 3, "{why}");

    // A real decommission destroys the audit key: the chain alone is
    // checked, and the report says so.
    let ks = fx.open();
    ks.decommission(&so()).expect("decommission");
    forge_entry(fx, 4);
    let report = ks
        .verify_audit(&auditor())
        .expect("a decommissioned trail verifies its chain");
    assert!(
        matches!(report.checked, AuditCoverage::ChainOnly { .. }),
        "{report:?}"
    );
    assert!(!report.macs_checked(), "{report:?}");
    assert!(
        !report.is_intact(),
        "a chain-only check never reports the trail intact: {report:?}"
    );
    // The recomputed chain itself verifies, but not against the heads the
    // audit signing key signed before it was destroyed.
    let (_, why) = report
        .first_bad
        .clone()
        .expect("a rewritten chain is caught by the signed checkpoints");
    assert!(why.contains("signed checkpoint"), "{report:?}");
    assert!(
        report
            .warnings()
            .iter()
            .any(|w| w.contains("MACs NOT checked")),
        "{:?}",
        report.warnings()
    );
    // An edit without a recomputed chain is still named.
    tamper_sql(fx, "UPDATE audit SET actor = 'mallory' WHERE seq = 5;");
    let report = ks.verify_audit(&auditor()).expect("verification runs");
    assert_eq!(
        report.first_bad.as_ref().map(|b| b.0),
        Some(5),
        "{report:?}"
    );
    assert!(!report.macs_checked() && !report.is_intact());
    Outcome::Passed
}
