//! A provisioning event log written before the log moved onto the keystore's
//! one chain primitive (`keystore_api::chain`) still verifies: the
//! rows below (hashes, MACs and head) were computed by the earlier code of
//! `provisioning/src/db.rs`, with the event-log key imported as 32 bytes of
//! 0x42 so that its MACs could be computed too.

mod common;

use common::{officer, t0, Store};
use keystore_api::{Algorithm, ErrorKind, KeySpec, ManualClock, SecretBytes, Usages};
use provisioning::{Factory, RootCa, EVENT_KEY};
use rusqlite::{params, Connection};
use std::sync::Arc;
use time::Duration;

/// (seq, id, at, actor, role, event, device_id, serial, fingerprint, detail,
/// prev_hash, hash, mac), as the earlier code stored them.
type Row = (
    i64,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

const ROWS: [Row; 3] = [
    (
        1,
        "00112233445566778899aabbccddeeff",
        "2026-01-04T09:00:00Z",
        "officer-1",
        "security-officer",
        "install-intermediate",
        None,
        Some("1a2b"),
        None,
        "CN=Example Production CA",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "3eb9b2559a4ff4ecc584675294ed45b9e0e29fac8cb050901fedc42981821738",
        "c9de564d2dc3da79517784b3f08098d50dcb53cfb2145ac0828a4c62c36c32be",
    ),
    (
        2,
        "ffeeddccbbaa99887766554433221100",
        "2026-01-04T09:05:00Z",
        "line-3",
        "operator",
        "provision",
        Some("DEV12345"),
        Some("7f00"),
        Some("sha256:0a0b0c"),
        "operator line-3 key version 1 certificate until 2026-02-03T09:05:00Z",
        "3eb9b2559a4ff4ecc584675294ed45b9e0e29fac8cb050901fedc42981821738",
        "ee0c8f07aaa4c550757c3792d68888b367750f07fa1bd23885a02c43bd1abb72",
        "a37e81b3c503687dc9b4bf5d8b018660203d43cb5a4278c213695696904b7d8a",
    ),
    (
        3,
        "0123456789abcdef0123456789abcdef",
        "2026-01-05T10:00:00Z",
        "officer-1",
        "security-officer",
        "revoke",
        Some("DEV12345"),
        Some("7f00"),
        None,
        "key-compromise",
        "ee0c8f07aaa4c550757c3792d68888b367750f07fa1bd23885a02c43bd1abb72",
        "28db3087782b4df63dce873d81943de2cfaae63770d4af947cf237c18679405c",
        "541fece961387053ad498f1efa6a3578544681db90c3a44afd46c2992a4b749e",
    ),
];

/// The head the earlier code wrote after entry #3.
const HEAD: (i64, &str, &str) = (
    3,
    "28db3087782b4df63dce873d81943de2cfaae63770d4af947cf237c18679405c",
    "39a0bae1c215a169a3fe505d90b5410750f94718236ef91fddff885d0ec3e1f3",
);

/// A store whose event-log key is the fixed one, and whose `pki.sqlite`
/// holds the earlier log.
fn store_with_old_log(dir: &std::path::Path) -> Store {
    let store = Store::open(dir, Arc::new(ManualClock::new(t0())));
    store
        .ks
        .import(
            &officer(),
            EVENT_KEY,
            KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::MAC),
            &SecretBytes::from_slice(&[0x42; 32]),
        )
        .expect("import the event-log key");
    let conn = Connection::open(dir.join("pki.sqlite")).expect("open pki.sqlite");
    for r in ROWS {
        conn.execute(
            "INSERT INTO events (seq, id, at, actor, role, event, device_id, serial, fingerprint,
                                 detail, prev_hash, hash, mac)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11, r.12],
        )
        .expect("insert event");
    }
    conn.execute(
        "INSERT INTO events_head (id, seq, hash, mac) VALUES (1, ?1, ?2, ?3)",
        params![HEAD.0, HEAD.1, HEAD.2],
    )
    .expect("insert head");
    store
}

#[test]
fn a_log_written_by_the_earlier_code_still_verifies_and_grows() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_old_log(tmp.path());
    let f = Factory::new(&store.ks, &store.db);
    let events = f.verify_events().expect("the earlier log verifies");
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["install-intermediate", "provision", "revoke"]);
    assert_eq!(events[1].device_id.as_deref(), Some("DEV12345"));

    // A new entry chains onto it (creating a root CA logs `init-root`), and
    // the whole log verifies, also after reopening.
    RootCa::new(&store.ks, &store.db)
        .init(&officer(), "Root", Duration::days(10), t0())
        .expect("init root");
    drop(store);
    let again = Store::open(tmp.path(), Arc::new(ManualClock::new(t0())));
    let events = RootCa::new(&again.ks, &again.db)
        .verify_events()
        .expect("the grown log verifies");
    assert_eq!(events.len(), 4);
    assert_eq!(events[3].event, "init-root");
}

#[test]
fn an_edit_to_the_earlier_log_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_old_log(tmp.path());
    let conn = Connection::open(tmp.path().join("pki.sqlite")).unwrap();
    conn.execute("UPDATE events SET detail = 'superseded' WHERE seq = 3", [])
        .unwrap();
    let err = Factory::new(&store.ks, &store.db)
        .verify_events()
        .unwrap_err();
    assert!(err.is(ErrorKind::Integrity), "{err}");
    assert!(err.to_string().contains("entry #3 was edited"), "{err}");
    // A MAC made under another key is a forgery, even with the chain intact.
    conn.execute(
        "UPDATE events SET detail = 'key-compromise', mac = ?1 WHERE seq = 3",
        [hex::encode([7u8; 32])],
    )
    .unwrap();
    let err = Factory::new(&store.ks, &store.db)
        .verify_events()
        .unwrap_err();
    assert!(err.to_string().contains("entry #3 has a bad MAC"), "{err}");
}
