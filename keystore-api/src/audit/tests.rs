//! The trail's stored format: hashes of existing trails, typed entries.

use super::*;

fn row(seq: u64, id: &str, at: &str, actor: &str, role: &str, event: &str) -> Stored {
    Stored {
        seq,
        id: id.into(),
        at: at.into(),
        actor: actor.into(),
        role: role.into(),
        event: event.into(),
        key_name: None,
        key_version: None,
        fingerprint: None,
        detail: String::new(),
        prev_hash: Vec::new(),
        hash: Vec::new(),
        mac: Vec::new(),
    }
}

/// Hashes computed by the code before the chain was shared (captured
/// constants): trails written then must still verify.
#[test]
fn chain_hashes_are_those_of_existing_trails() {
    let mut a = row(
        1,
        "00112233445566778899aabbccddeeff",
        "2026-01-04T09:00:00Z",
        "keystore",
        "system",
        "audit-init",
    );
    a.detail = "audit key created in the soft backend".into();
    let h1 = a.chain_hash(&GENESIS);
    assert_eq!(
        hex::encode(h1),
        "f736ec215edfa6515106122148205d670f46293827cbe4a08fa6b5140c9a78b6"
    );
    let mut b = row(
        2,
        "ffeeddccbbaa99887766554433221100",
        "2026-01-04T09:05:00Z",
        "officer-1",
        "security-officer",
        "rotate",
    );
    b.key_name = Some("device-identity".into());
    b.key_version = Some(2);
    b.fingerprint = Some("sha256:0a0b0c".into());
    b.detail = "version 1 deactivated until 2026-01-11T09:00:00Z".into();
    assert_eq!(
        hex::encode(b.chain_hash(&h1)),
        "11611cf9e9f5aeda2c27e1ae74c4bcb22c5dfcd1b6d9f9211fec73a8c97ead20"
    );
}

#[test]
fn stored_text_becomes_typed_or_integrity() {
    let ok = row(3, "00", "2026-01-04T09:00:00Z", "a", "operator", "state");
    let e = ok.into_entry().unwrap();
    assert_eq!(e.event, AuditEvent::StateChange);
    assert_eq!(crate::clock::rfc3339(e.at), "2026-01-04T09:00:00Z");
    let json = serde_json::to_string(&e).unwrap();
    assert!(json.contains("\"at\":\"2026-01-04T09:00:00Z\""), "{json}");
    assert!(json.contains("\"event\":\"state\""), "{json}");
    assert_eq!(serde_json::from_str::<AuditEntry>(&json).unwrap(), e);
    let bad_time = row(4, "00", "yesterday", "a", "operator", "state");
    let err = bad_time.into_entry().unwrap_err();
    assert!(
        err.is(ErrorKind::Integrity) && err.to_string().contains("#4"),
        "{err}"
    );
    let bad_event = row(
        5,
        "00",
        "2026-01-04T09:00:00Z",
        "a",
        "operator",
        "Not An Event",
    );
    assert!(bad_event.into_entry().unwrap_err().is(ErrorKind::Integrity));
}
