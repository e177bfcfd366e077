//! Roles and decommission: duties enforced, refusals audited, and nothing
//! usable after decommission.

use crate::support::{auditor, create_or_prove_unsupported, expect_err, operator, so};
use crate::{Fixture, Outcome};
use keystore_api::BackendKey;
use keystore_api::ErrorKind;
use keystore_api::KeyManagement;
use keystore_api::Mac;
use keystore_api::{Actor, Algorithm, KeySpec, Role, SecretBytes, SignatureFormat};
use time::Duration;

/// TEST-KEY-40
pub fn roles_enforced_and_refusals_audited<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let app = Actor::new("telemetry-app", Role::Application).expect("actor");
    ks.create(&operator(), "k", KeySpec::new(Algorithm::HmacSha256))
        .expect("operators create keys");
    expect_err(
        ks.create(&app, "k2", KeySpec::new(Algorithm::HmacSha256)),
        ErrorKind::Policy,
        "application creates",
    );
    expect_err(
        ks.create(&auditor(), "k2", KeySpec::new(Algorithm::HmacSha256)),
        ErrorKind::Policy,
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
        expect_err(res, ErrorKind::Policy, &format!("operator {what}"));
    }
    ks.mac("k", b"m").expect("the key is untouched by refusals");
    // Credentials: the first security-officer credential bootstraps; later
    // ones need the security officer.
    let so_secret = SecretBytes::from_slice(b"officer passphrase");
    ks.set_role_credential(None, Role::SecurityOfficer, &so_secret)
        .expect("bootstrap");
    expect_err(
        ks.set_role_credential(None, Role::Operator, &so_secret),
        ErrorKind::Policy,
        "credential without an actor",
    );
    expect_err(
        ks.set_role_credential(
            Some(&operator()),
            Role::Operator,
            &SecretBytes::from_slice(b"operator pass"),
        ),
        ErrorKind::Policy,
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
        ErrorKind::Auth,
        "wrong credential",
    );
    expect_err(
        ks.authenticate("bob", Role::Operator, &so_secret),
        ErrorKind::Auth,
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
    let refused: Vec<_> = trail
        .iter()
        .filter(|e| e.event == keystore_api::AuditEvent::Refused)
        .collect();
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
        ErrorKind::Policy,
        "operator decommission",
    );
    let done = ks.decommission(&so()).expect("decommission");
    let exported = &done.trail.entries;
    let last = exported.last().expect("final record");
    assert_eq!(last.event, keystore_api::AuditEvent::Decommission);
    assert_eq!(last.actor, "suite-security-officer");
    assert!(exported
        .iter()
        .any(|e| e.event == keystore_api::AuditEvent::Import
            && e.key_name.as_deref() == Some("session")));
    // No key is usable through any API.
    expect_err(
        ks.mac("session", b"m"),
        ErrorKind::NotFound,
        "mac after decommission",
    );
    expect_err(
        ks.derive_hkdf_sha256("session", b"s", b"i", 32),
        ErrorKind::NotFound,
        "derive after decommission",
    );
    expect_err(
        ks.sign("identity", b"m", SignatureFormat::Der),
        ErrorKind::NotFound,
        "sign after decommission",
    );
    assert!(ks.list().expect("list").is_empty());
    expect_err(
        ks.create(&so(), "new", KeySpec::new(Algorithm::HmacSha256)),
        ErrorKind::KeyState,
        "create after decommission",
    );
    expect_err(
        ks.decommission(&so()),
        ErrorKind::KeyState,
        "decommission twice",
    );
    for h in &handles {
        assert!(
            ks.backend()
                .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"m")
                .is_err(),
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
