//! The audit trail: events with ids and times, and tamper evidence. The
//! tamper cases edit the SQLite database directly, as an attacker with file
//! access would, and verification must name the first bad entry.

use crate::support::{auditor, expect_err, operator, so};
use crate::{Fixture, Outcome};
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
        "InvalidInput",
        "a reserved event name",
    );
    expect_err(
        ks.record_event(&so(), "Bad Name", None, "x"),
        "InvalidInput",
        "a malformed event name",
    );
    expect_err(
        ks.record_event(&so(), "note", None, "two\nlines"),
        "InvalidInput",
        "a multi-line detail",
    );
    expect_err(
        ks.record_event(&auditor(), "note", None, "x"),
        "Policy",
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
        let t = time::OffsetDateTime::parse(&e.at, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
        assert_eq!(t.offset(), time::UtcOffset::UTC);
        assert!(e.at.ends_with('Z'));
        assert!(!e.actor.is_empty() && !e.role.is_empty());
    }
    let rotate = trail.iter().find(|e| e.event == "rotate").expect("rotate");
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
        "Policy",
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
