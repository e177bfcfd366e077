//! `Keystore::authorize`: the keystore's own duty check for applications,
//! refusals audited as ordinary `refused` entries; typed audit entries.

use keystore_api::{
    Actor, Algorithm, AuditEvent, Duty, ErrorKind, KeySpec, Keystore, ManualClock, Role,
};
use std::sync::Arc;
use time::macros::datetime;

fn keystore(dir: &std::path::Path) -> Keystore<backend_soft::SoftStore> {
    let kf = dir.join("kek");
    backend_soft::create_key_file(&kf).unwrap();
    let soft = backend_soft::SoftStore::create(
        &dir.join("soft"),
        &backend_soft::Unlock::KeyFile(kf),
        backend_soft::Kdf::KeyFile,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(datetime!(2026-03-01 12:00:00 UTC)));
    Keystore::open_with_clock(soft, &dir.join("m.sqlite"), clock).unwrap()
}

fn actor(id: &str, role: Role) -> Actor {
    Actor::new(id, role).unwrap()
}

#[test]
fn authorize_allows_as_the_duty_table_says_and_audits_refusals_like_the_keystore() {
    let dir = tempfile::tempdir().unwrap();
    let ks = keystore(dir.path());
    let so = actor("officer", Role::SecurityOfficer);
    let auditor = actor("eve", Role::Auditor);
    let before = ks.export_audit(&so).unwrap().len();

    // Allowed checks change nothing.
    for duty in Duty::ALL {
        for role in Role::ALL {
            if duty.allows(role) {
                ks.authorize(&actor("ok", role), *duty, "an allowed operation")
                    .unwrap();
            }
        }
    }
    assert_eq!(ks.export_audit(&so).unwrap().len(), before);

    // A refusal: Policy in the keystore's words, and a `refused` entry.
    let op = actor("line-3", Role::Operator);
    let err = ks
        .authorize(&op, Duty::ManageCa, "signing an intermediate CA")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert_eq!(
        err.to_string(),
        "policy: signing an intermediate CA needs the security-officer role; \
         'line-3' acts as operator"
    );
    // The keystore's own refusal, for comparison: the same shape.
    let own = ks
        .create(&auditor, "k", KeySpec::new(Algorithm::HmacSha256))
        .unwrap_err();
    assert_eq!(own.kind(), ErrorKind::Policy);
    let trail = ks.export_audit(&so).unwrap();
    let refused: Vec<_> = trail
        .iter()
        .filter(|e| e.event == AuditEvent::Refused)
        .collect();
    assert_eq!(refused.len(), 2, "{trail:?}");
    assert_eq!(
        (
            refused[0].actor.as_str(),
            refused[0].role.as_str(),
            refused[0].detail.as_str()
        ),
        (
            "line-3",
            "operator",
            "signing an intermediate CA refused: needs the security-officer role"
        )
    );
    assert_eq!(
        refused[1].detail,
        "create refused: needs the security-officer or operator role"
    );
    assert_eq!(refused[0].at, datetime!(2026-03-01 12:00:00 UTC));
    assert!(ks.verify_audit(&so).unwrap().is_intact());

    // The operation's name goes into the trail: one short line.
    for bad in ["", "two\nlines", &"x".repeat(10_000)] {
        let err = ks.authorize(&op, Duty::ManageCa, bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
}

#[test]
fn application_events_are_typed_and_cannot_be_the_keystores() {
    let dir = tempfile::tempdir().unwrap();
    let ks = keystore(dir.path());
    let so = actor("officer", Role::SecurityOfficer);
    ks.record_event(&so, "pki-ceremony", None, "root signed the intermediate")
        .unwrap();
    for reserved in AuditEvent::KEYSTORE {
        let err = ks
            .record_event(&so, reserved.as_str(), None, "forged")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{reserved}");
    }
    let trail = ks.export_audit(&so).unwrap();
    assert_eq!(trail[0].event, AuditEvent::AuditInit);
    let last = trail.last().unwrap();
    assert_eq!(last.event, AuditEvent::application("pki-ceremony").unwrap());
    assert!(!last.event.is_keystore());
}
