//! The provisioning crate end to end on real soft keystores: CA hierarchy,
//! device provisioning, uniqueness, renewal, revocation and pin checks
//! (TEST-KEY-07), records and the event log.

mod common;

use common::{officer, operator, t0, Pki, Store};
use keystore_api::{
    Actor, Algorithm, AuditEvent, Clock, Error, ErrorKind, KeySpec, KeyState, Origin, Role,
    SignatureFormat,
};
use provisioning::{
    shared_key_name, verify_csr, CertInfo, Device, DeviceRequest, PeerVerifier, PinSet,
    Provisioner, ProvisioningRecord, RejectReason, RootCa, DEVICE_KEY, ROOT_KEY,
};
use std::sync::Arc;
use time::Duration;
use x509_parser::prelude::{FromDer, X509Certificate};

fn chain(p: &provisioning::Provisioned) -> Vec<Vec<u8>> {
    vec![
        p.issued.certificate.der.clone(),
        p.issued.intermediate.der.clone(),
    ]
}

fn verifier(pki: &Pki) -> PeerVerifier {
    let f = pki.factory();
    let crl = match f.current_crl().expect("crl") {
        Some(c) => c,
        None => f
            .issue_crl(&operator(), pki.now(), Duration::days(7))
            .expect("issue crl"),
    };
    PeerVerifier::new(&f.root().expect("root").der)
        .expect("anchor")
        .with_crl(&crl)
        .expect("crl")
        .with_crl(&pki.root_crl)
        .expect("root crl")
}

/// A verifier trusting `pki`'s root with the root's CRL and `crl`.
fn verifier_with(pki: &Pki, crl: &[u8]) -> PeerVerifier {
    PeerVerifier::new(&pki.factory().root().expect("root").der)
        .expect("anchor")
        .with_crl(&pki.root_crl)
        .expect("root crl")
        .with_crl(crl)
        .expect("crl")
}

/// Provisions `id` with its identity key in the production store (shared mode).
fn provision(pki: &Pki, id: &str) -> provisioning::Provisioned {
    let f = pki.factory();
    let key = shared_key_name(id).expect("key name");
    let dev = Device::new(&pki.prod.ks, &pki.prod.db, &key).expect("device");
    Provisioner::new(&f, operator())
        .provision(&dev, &operator(), id, "line-3", pki.now())
        .expect("provision")
}

#[test]
fn ca_hierarchy_root_is_offline_and_provisioning_runs_without_its_store() {
    let pki = Pki::new();
    // The root's store is not needed after the ceremony: remove it entirely.
    assert!(pki.root_dir.join("soft").is_dir());
    std::fs::remove_dir_all(&pki.root_dir).expect("remove root store");
    assert!(!pki.root_dir.exists());

    let f = pki.factory();
    let root = f.root().expect("root cert");
    let inter = f.intermediate().expect("intermediate cert");
    assert!(root.is_ca && inter.is_ca);
    assert_eq!(inter.issuer, root.subject);
    // The root key is not in the production keystore; the intermediate key is.
    assert!(matches!(
        pki.prod.ks.info(ROOT_KEY),
        Err(ref e) if e.is(ErrorKind::NotFound)
    ));
    let ikey = pki
        .prod
        .ks
        .info(provisioning::INTERMEDIATE_KEY)
        .expect("intermediate key");
    assert_eq!(ikey.active().unwrap().origin, Origin::Generated);
    assert_eq!(
        ikey.active().unwrap().fingerprint.as_deref(),
        Some(inter.spki_fingerprint.as_str())
    );
    // Path length: the intermediate may only issue end-entity certificates.
    let (_, x) = X509Certificate::from_der(&inter.der).unwrap();
    let bc = x.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));

    let p = provision(&pki, "DEV12345");
    verifier(&pki)
        .check_peer(&chain(&p), pki.now())
        .expect("fresh device chain validates");
    // Revocation and CRLs run on the production side too.
    f.revoke(
        &officer(),
        &p.issued.certificate.serial,
        "key-compromise",
        pki.now(),
    )
    .expect("revoke without the root");
}

#[test]
fn refused_provisioning_operations_are_audited_in_the_store_whose_key_they_would_use() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(keystore_api::ManualClock::new(t0()));
    let root = Store::open(&tmp.path().join("root"), clock.clone());
    let prod = Store::open(&tmp.path().join("prod"), clock);
    let auditor = Actor::new("eve", Role::Auditor).unwrap();
    // Every refusal is the keystore's ordinary `refused` entry, made by
    // `Keystore::authorize` in the store whose key the operation would use.
    let err = RootCa::new(&root.ks, &root.db)
        .init(&operator(), "Root", Duration::days(10), t0())
        .unwrap_err();
    assert!(err.is(ErrorKind::Policy), "{err}");
    assert_eq!(
        err.to_string(),
        "policy: creating the root CA needs the security-officer role; 'station-3' acts as operator"
    );
    let f = provisioning::Factory::new(&prod.ks, &prod.db);
    assert!(matches!(
        f.request_intermediate(&operator(), "Prod CA"),
        Err(ref e) if e.is(ErrorKind::Policy)
    ));
    // An auditor is refused the same way.
    assert!(matches!(
        f.issue_crl(&auditor, t0(), Duration::days(7)),
        Err(ref e) if e.is(ErrorKind::Policy)
    ));
    let trail = |s: &Store| s.ks.export_audit(&officer()).expect("export");
    let root_trail = trail(&root);
    let refused: Vec<_> = root_trail
        .iter()
        .filter(|e| e.event == AuditEvent::Refused)
        .collect();
    assert_eq!(refused.len(), 1, "{root_trail:?}");
    assert_eq!(refused[0].role, "operator");
    assert_eq!(
        refused[0].detail,
        "creating the root CA refused: needs the security-officer role"
    );
    let prod_trail = trail(&prod);
    assert!(
        prod_trail.iter().any(|e| e.event == AuditEvent::Refused
            && e.detail
                == "requesting an intermediate CA refused: needs the security-officer role"),
        "{prod_trail:?}"
    );
    assert!(
        prod_trail.iter().any(|e| e.event == AuditEvent::Refused
            && e.actor == "eve"
            && e.role == "auditor"
            && e.detail == "issuing a CRL refused: needs the security-officer or operator role"),
        "{prod_trail:?}"
    );
    // Neither store's trail holds the other's refusals, and both still verify.
    assert!(!root_trail.iter().any(|e| e.detail.contains("intermediate")));
    for s in [&root, &prod] {
        let report = s.ks.verify_audit(&officer()).expect("verify");
        assert!(report.first_bad.is_none(), "{report:?}");
    }
}

#[test]
fn root_store_refuses_a_second_root_and_only_officers_run_ceremonies() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(keystore_api::ManualClock::new(t0()));
    let root = Store::open(&tmp.path().join("root"), clock.clone());
    let ca = RootCa::new(&root.ks, &root.db);
    let err = ca
        .init(&operator(), "Root", Duration::days(10), t0())
        .unwrap_err();
    assert!(err.is(ErrorKind::Policy), "{err}");
    ca.init(&common::custodian(), "Root", Duration::days(10), t0())
        .expect("init");
    assert!(matches!(
        ca.init(&common::custodian(), "Root", Duration::days(10), t0()),
        Err(ref e) if e.is(ErrorKind::AlreadyExists)
    ));
    let prod = Store::open(&tmp.path().join("prod"), clock);
    let f = provisioning::Factory::new(&prod.ks, &prod.db);
    assert!(matches!(
        f.request_intermediate(&operator(), "Prod CA"),
        Err(ref e) if e.is(ErrorKind::Policy)
    ));
    // Nothing can be provisioned before the ceremony.
    let dev = Device::new(&prod.ks, &prod.db, "device.a.identity").unwrap();
    let err = Provisioner::new(&f, operator())
        .provision(&dev, &operator(), "a", "line-1", t0())
        .unwrap_err();
    assert!(err.is(ErrorKind::NotFound), "{err}");
    let events = ca.verify_events().expect("root events verify");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "init-root");
}

#[test]
fn device_provisioning_csr_certificate_record_and_audit() {
    let pki = Pki::new();
    let f = pki.factory();
    // The device has its own keystore (its own directory and backend).
    let dev_store = Store::open(&pki.path("device-DEV12345"), pki.clock.clone());
    let dev = Device::new(&dev_store.ks, &dev_store.db, DEVICE_KEY).unwrap();
    let p = Provisioner::new(&f, operator())
        .with_validity(Duration::days(14))
        .provision(&dev, &operator(), "DEV12345", "line-3", pki.now())
        .expect("provision");

    // The device keystore's audit trail records the provisioning event
    // (REQ-KEY-PROV-02), with an id, a time, the actor and the key version.
    let auditor = keystore_api::Actor::new("auditor", keystore_api::Role::Auditor).unwrap();
    let trail = dev_store.ks.export_audit(&auditor).unwrap();
    let ev = trail
        .iter()
        .find(|e| e.event.as_str() == "provision")
        .expect("a provision event in the device keystore's audit trail");
    assert!(!ev.event.is_keystore(), "an application event");
    assert_eq!(
        (ev.key_name.as_deref(), ev.key_version),
        (Some(DEVICE_KEY), Some(1))
    );
    assert!(ev.detail.contains("DEV12345") && ev.detail.contains("line-3"));
    assert!(dev_store.ks.verify_audit(&auditor).unwrap().is_intact());

    // The identity key was generated inside the device's backend.
    let key = dev_store.ks.info(DEVICE_KEY).unwrap();
    let v1 = key.active().unwrap();
    assert_eq!((v1.version, v1.origin), (1, Origin::Generated));
    assert_eq!(key.algorithm, Algorithm::EcdsaP256Sha256);
    assert!(matches!(
        pki.prod.ks.info(DEVICE_KEY),
        Err(ref e) if e.is(ErrorKind::NotFound)
    ));

    // A CSR from the key names the device in CN and serialNumber and verifies.
    let (csr, version) = dev.csr("DEV12345").unwrap();
    assert_eq!(version, 1);
    let parsed = verify_csr(&csr.der).unwrap();
    assert_eq!(parsed.common_name.as_deref(), Some("DEV12345"));
    assert_eq!(parsed.subject_serial_number.as_deref(), Some("DEV12345"));
    assert_eq!(parsed.fingerprint(), v1.fingerprint.clone().unwrap());
    let mut tampered = csr.der.clone();
    let n = tampered.len();
    tampered[n - 5] ^= 1;
    assert!(verify_csr(&tampered).is_err());

    // The certificate: subject, key usages, validity, issuer, key.
    let cert = &p.issued.certificate;
    assert_eq!(cert.common_name.as_deref(), Some("DEV12345"));
    assert_eq!(cert.subject_serial_number.as_deref(), Some("DEV12345"));
    assert_eq!(Some(cert.spki_fingerprint.clone()), v1.fingerprint);
    assert!(!cert.is_ca);
    assert_eq!(cert.not_after, pki.now() + Duration::days(14));
    assert!(cert.not_before <= pki.now());
    let (_, x) = X509Certificate::from_der(&cert.der).unwrap();
    let ku = x.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);

    // Default validity is 30 days.
    let p30 = provision(&pki, "DEV-30");
    assert_eq!(
        p30.issued.certificate.not_after,
        pki.now() + Duration::days(30)
    );

    // Stored with the key version on the device side.
    let installed = dev.current().unwrap().expect("installed");
    assert_eq!(installed.key_version, 1);
    assert_eq!(installed.der, cert.der);
    assert!(installed.chain_pem.contains("BEGIN CERTIFICATE"));
    // ... and registered on the factory side.
    let issued = f.certificates("DEV12345").unwrap();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].key_version, 1);
    assert_eq!(issued[0].fingerprint, cert.spki_fingerprint);

    // The record: the source's fields, in YAML, with the identity key fingerprint.
    let yaml = p.issued.record.to_yaml().unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(v["device_id"].as_str(), Some("DEV12345"));
    assert_eq!(v["operator"].as_str(), Some("line-3"));
    assert_eq!(v["date"].as_str(), Some("2026-01-04"));
    assert_eq!(
        v["keys"]["identity_cert"].as_str(),
        Some(cert.digest.as_str())
    );
    assert_eq!(
        v["keys"]["bootstrap_ca"].as_str(),
        Some(f.root().unwrap().digest.as_str())
    );
    assert_eq!(
        v["keys"]["identity_key"].as_str(),
        v1.fingerprint.as_deref()
    );
    assert!(cert.digest.starts_with("sha256:") && cert.digest.len() == 71);
    assert_eq!(
        ProvisioningRecord::from_yaml(&yaml).unwrap(),
        p.issued.record
    );
    assert_eq!(f.record("DEV12345").unwrap(), p.issued.record);
    assert_eq!(p.issued.record.device_backend.as_deref(), Some("soft"));

    // The registry's event: id, RFC 3339 time, actor, device, serial; the log verifies.
    let events = f.verify_events().unwrap();
    let e = events
        .iter()
        .find(|e| e.event == "provision" && e.device_id.as_deref() == Some("DEV12345"))
        .expect("provision event");
    assert_eq!(e.id, p.issued.event_id);
    assert_eq!(e.id.len(), 32);
    assert_eq!(e.at, "2026-01-04T09:00:00Z");
    assert_eq!(e.actor, "station-3");
    assert_eq!(e.serial.as_deref(), Some(cert.serial.as_str()));
    // The device keystore audited the key generation itself.
    let trail = dev_store.ks.export_audit(&officer()).unwrap();
    assert!(trail
        .iter()
        .any(|a| a.event == AuditEvent::Generate && a.key_name.as_deref() == Some(DEVICE_KEY)));
}

#[test]
fn req5_registry_refuses_a_second_unit_with_the_same_id_or_key() {
    let pki = Pki::new();
    let f = pki.factory();
    provision(&pki, "DEV-1");
    let keys_before = pki.prod.ks.list().unwrap().len();

    // Same device id again: refused before any key is generated.
    let dev = Device::new(&pki.prod.ks, &pki.prod.db, "device.DEV-1.other").unwrap();
    let err = Provisioner::new(&f, operator())
        .provision(&dev, &operator(), "DEV-1", "line-4", pki.now())
        .unwrap_err();
    assert!(err.is(ErrorKind::AlreadyExists), "{err}");
    assert!(err.to_string().contains("DEV-1"), "{err}");
    assert_eq!(pki.prod.ks.list().unwrap().len(), keys_before);

    // A unit that presents another unit's key (a CSR for DEV-2 signed by
    // DEV-1's key): refused, the key is never issued to two units.
    let dev1 = Device::new(
        &pki.prod.ks,
        &pki.prod.db,
        &shared_key_name("DEV-1").unwrap(),
    )
    .unwrap();
    let (csr, version) = dev1.csr("DEV-2").unwrap();
    let err = f
        .provision(
            &operator(),
            &DeviceRequest {
                device_id: "DEV-2",
                operator: "line-3",
                csr_der: &csr.der,
                key_version: version,
                validity: Duration::days(30),
                device_backend: None,
            },
            pki.now(),
        )
        .unwrap_err();
    assert!(err.is(ErrorKind::AlreadyExists), "{err}");
    assert!(err.to_string().contains("DEV-1"), "{err}");
    assert!(f.record("DEV-2").is_err());

    // The same id through the factory API directly (a second station) is refused too.
    let other = Device::new(&pki.prod.ks, &pki.prod.db, "device.x.identity").unwrap();
    let (csr, version) = other.generate(&operator(), "DEV-1").unwrap();
    let err = f
        .provision(
            &operator(),
            &DeviceRequest {
                device_id: "DEV-1",
                operator: "line-9",
                csr_der: &csr.der,
                key_version: version,
                validity: Duration::days(30),
                device_backend: None,
            },
            pki.now(),
        )
        .unwrap_err();
    assert!(err.is(ErrorKind::AlreadyExists), "{err}");

    // The schema itself refuses duplicates, whatever the code above does.
    let conn = rusqlite::Connection::open(pki.prod.dir.join("pki.sqlite")).unwrap();
    let fp = f.certificates("DEV-1").unwrap()[0].fingerprint.clone();
    let dup = conn.execute(
        "INSERT INTO device_keys (fingerprint, device_id, key_version, registered_at)
         VALUES (?1, 'DEV-1', 9, 'x')",
        [fp],
    );
    assert!(dup.is_err());
    assert_eq!(f.device_count().unwrap(), 1);

    // A CSR whose subject names another device is refused.
    let (csr, version) = other.csr("DEV-7").unwrap();
    let err = f
        .provision(
            &operator(),
            &DeviceRequest {
                device_id: "DEV-8",
                operator: "line-3",
                csr_der: &csr.der,
                key_version: version,
                validity: Duration::days(30),
                device_backend: None,
            },
            pki.now(),
        )
        .unwrap_err();
    assert!(err.is(ErrorKind::InvalidInput), "{err}");
}

#[test]
fn imported_or_foreign_keys_are_not_provisioned_and_bad_input_never_panics() {
    let pki = Pki::new();
    let f = pki.factory();
    let p = Provisioner::new(&f, operator());
    let dev = Device::new(&pki.prod.ks, &pki.prod.db, "device.k.identity").unwrap();
    for (id, op) in [
        ("", "l"),
        ("a b", "l"),
        ("ok", ""),
        ("ok", "has space"),
        ("_x", "l"),
    ] {
        let err = p
            .provision(&dev, &operator(), id, op, pki.now())
            .unwrap_err();
        assert!(err.is(ErrorKind::InvalidInput), "{id:?}/{op:?}: {err}");
    }
    // An HMAC key cannot be an identity key.
    pki.prod
        .ks
        .create(
            &operator(),
            "device.h.identity",
            KeySpec::new(Algorithm::HmacSha256),
        )
        .unwrap();
    let hdev = Device::new(&pki.prod.ks, &pki.prod.db, "device.h.identity").unwrap();
    let err = p
        .provision(&hdev, &operator(), "h", "line-1", pki.now())
        .unwrap_err();
    assert!(err.is(ErrorKind::Unsupported), "{err}");
    // Garbage CSRs and certificates are errors, not panics.
    for junk in [
        &b""[..],
        b"\x30",
        b"\x30\x03\x02\x01\x00",
        &[0xffu8; 300][..],
    ] {
        assert!(verify_csr(junk).is_err());
        assert!(CertInfo::parse(junk).is_err());
        let req = DeviceRequest {
            device_id: "j",
            operator: "l",
            csr_der: junk,
            key_version: 1,
            validity: Duration::days(1),
            device_backend: None,
        };
        assert!(f.provision(&operator(), &req, pki.now()).is_err());
    }
    // The application role provisions nothing.
    let app = Actor::new("app", Role::Application).unwrap();
    let err = Provisioner::new(&f, app)
        .provision(&dev, &operator(), "k", "line-1", pki.now())
        .unwrap_err();
    assert!(err.is(ErrorKind::Policy), "{err}");
    // Validity bounds.
    let err = Provisioner::new(&f, operator())
        .with_validity(Duration::ZERO)
        .provision(&dev, &operator(), "k", "line-1", pki.now())
        .unwrap_err();
    assert!(err.is(ErrorKind::InvalidInput), "{err}");
}

#[test]
fn renew_if_due_rotates_the_key_and_the_old_certificate_verifies_during_grace() {
    let pki = Pki::new();
    let f = pki.factory();
    let dev_store = Store::open(&pki.path("dev"), pki.clock.clone());
    let dev = Device::new(&dev_store.ks, &dev_store.db, DEVICE_KEY).unwrap();
    let prov = Provisioner::new(&f, operator()).with_grace(Duration::days(3));
    let first = prov
        .provision(&dev, &officer(), "DEV-R", "line-3", pki.now())
        .unwrap();
    let old_chain = chain(&first);
    let old_fp = first.issued.certificate.spki_fingerprint.clone();
    // A signature made by the first key before renewal.
    let sig = dev_store
        .ks
        .sign(DEVICE_KEY, b"telemetry", SignatureFormat::Der)
        .unwrap();

    // Not due 10 days in (20 days left, threshold 7 days).
    pki.clock.advance(Duration::days(10));
    assert!(prov
        .renew_if_due(&dev, &officer(), pki.now(), Duration::days(7))
        .unwrap()
        .is_none());
    assert_eq!(dev_store.ks.info(DEVICE_KEY).unwrap().versions.len(), 1);

    // Due 24 days in: the key is rotated and a new certificate installed.
    pki.clock.advance(Duration::days(14));
    let renewed = prov
        .renew_if_due(&dev, &officer(), pki.now(), Duration::days(7))
        .unwrap()
        .expect("renewal due");
    let info = dev_store.ks.info(DEVICE_KEY).unwrap();
    assert_eq!(info.active().unwrap().version, 2);
    assert_eq!(info.version(1).unwrap().state, KeyState::Deactivated);
    let new_fp = renewed.issued.certificate.spki_fingerprint.clone();
    assert_ne!(new_fp, old_fp);
    assert_eq!(renewed.installed.key_version, 2);
    assert_eq!(
        renewed.issued.certificate.not_after,
        pki.now() + Duration::days(30)
    );
    assert_eq!(dev.current().unwrap().unwrap().key_version, 2);
    assert_eq!(dev.installed().unwrap().len(), 2);
    // The registry keeps the original record and holds both keys.
    assert_eq!(f.record("DEV-R").unwrap().keys.identity_key, old_fp);
    assert_eq!(f.certificates("DEV-R").unwrap().len(), 2);
    // Not due again right after.
    assert!(prov
        .renew_if_due(&dev, &officer(), pki.now(), Duration::days(7))
        .unwrap()
        .is_none());

    // During the grace: old and new pins, both certificates verify, and so
    // does the old key's signature.
    pki.clock.advance(Duration::days(2));
    let pins = f.pins_for_device("DEV-R", pki.now()).unwrap();
    assert!(pins.contains(&old_fp) && pins.contains(&new_fp));
    let v = verifier(&pki).with_pins(pins);
    v.check_peer(&old_chain, pki.now())
        .expect("old certificate verifies during the grace");
    v.check_peer(&chain(&renewed), pki.now())
        .expect("new certificate verifies");
    assert_eq!(
        dev_store
            .ks
            .verify(DEVICE_KEY, b"telemetry", &sig.bytes, None)
            .unwrap(),
        1
    );

    // After the grace: the old pin is gone and the old key no longer verifies.
    pki.clock.advance(Duration::days(2));
    let pins = f.pins_for_device("DEV-R", pki.now()).unwrap();
    assert!(!pins.contains(&old_fp) && pins.contains(&new_fp));
    let v = verifier(&pki).with_pins(pins);
    let err = v.check_peer(&old_chain, pki.now()).unwrap_err();
    assert_eq!(err.reason, RejectReason::PinMismatch, "{err}");
    v.check_peer(&chain(&renewed), pki.now()).unwrap();
    assert!(matches!(
        dev_store
            .ks
            .verify(DEVICE_KEY, b"telemetry", &sig.bytes, None),
        Err(ref e) if e.is(ErrorKind::Integrity) || e.is(ErrorKind::KeyState)
    ));
    // Renewal needs a provisioned identity.
    let fresh = Device::new(&dev_store.ks, &dev_store.db, "device.none").unwrap();
    assert!(matches!(
        prov.renew_if_due(&fresh, &officer(), pki.now(), Duration::days(7)),
        Err(ref e) if e.is(ErrorKind::NotFound)
    ));
}

#[test]
fn test_key_07_revoked_certificate_is_rejected() {
    let pki = Pki::new();
    let f = pki.factory();
    let a = provision(&pki, "DEV-A");
    let b = provision(&pki, "DEV-B");
    let v = verifier(&pki);
    v.check_peer(&chain(&a), pki.now()).unwrap();
    let before = f.current_crl().unwrap().expect("a CRL was issued");

    // Only the security officer revokes.
    let err = f
        .revoke(&operator(), &a.issued.certificate.serial, "lost", pki.now())
        .unwrap_err();
    assert!(err.is(ErrorKind::Policy), "{err}");
    let crl = f
        .revoke(
            &officer(),
            &a.issued.certificate.serial,
            "key-compromise: unit stolen",
            pki.now(),
        )
        .unwrap();
    let v = verifier_with(&pki, &crl);
    let err = v.check_peer(&chain(&a), pki.now()).unwrap_err();
    assert_eq!(err.reason, RejectReason::Revoked, "{err}");
    // The rejection names the device's certificate, not its CA.
    assert_eq!(
        err.serial.as_deref(),
        Some(a.issued.certificate.serial.as_str())
    );
    assert!(
        err.detail.contains("end-entity certificate 'CN=DEV-A"),
        "{err}"
    );
    assert!(Error::from(err).is(ErrorKind::KeyState));
    // Other units are unaffected.
    v.check_peer(&chain(&b), pki.now()).unwrap();
    // The CRL from before, issued in the same second, cannot mask the
    // revocation in either order: the higher CRL number counts.
    for (one, two) in [(&before, &crl), (&crl, &before)] {
        let err = verifier_with(&pki, one)
            .with_crl(two)
            .unwrap()
            .check_peer(&chain(&a), pki.now())
            .unwrap_err();
        assert_eq!(err.reason, RejectReason::Revoked, "{err}");
    }
    // The CRL lists the serial with its reason, and its number grows.
    let (_, parsed) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl).unwrap();
    let serials: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert_eq!(serials, vec![a.issued.certificate.serial.clone()]);
    assert!(parsed.crl_number().is_some());
    // Revoking twice, or an unknown serial, is an error.
    assert!(matches!(
        f.revoke(&officer(), &a.issued.certificate.serial, "again", pki.now()),
        Err(ref e) if e.is(ErrorKind::KeyState)
    ));
    assert!(matches!(
        f.revoke(&officer(), "00ff", "x", pki.now()),
        Err(ref e) if e.is(ErrorKind::NotFound)
    ));
    assert!(matches!(
        f.revoke(&officer(), "not hex", "x", pki.now()),
        Err(ref e) if e.is(ErrorKind::InvalidInput)
    ));
    // Revoking a device revokes its certificates; pins drop the revoked key.
    let (serials, crl) = f
        .revoke_device(&officer(), "DEV-B", "decommissioned", pki.now())
        .unwrap();
    assert_eq!(serials, vec![b.issued.certificate.serial.clone()]);
    let v = verifier_with(&pki, &crl);
    assert_eq!(
        v.check_peer(&chain(&b), pki.now()).unwrap_err().reason,
        RejectReason::Revoked
    );
    assert!(f.pins_for_device("DEV-B", pki.now()).unwrap().is_empty());
}

#[test]
fn test_key_07_expired_and_not_yet_valid_certificates_are_rejected() {
    let pki = Pki::new();
    let a = provision(&pki, "DEV-E");
    let cert = &a.issued.certificate;
    let v = verifier(&pki);
    // Valid at both edges.
    v.check_peer(&chain(&a), cert.not_before).unwrap();
    // Expired: a day after notAfter (with a CRL that is still current).
    let later = cert.not_after + Duration::days(1);
    let f = pki.factory();
    let crl = f.issue_crl(&operator(), later, Duration::days(7)).unwrap();
    let v_later = verifier_with(&pki, &crl);
    let err = v_later.check_peer(&chain(&a), later).unwrap_err();
    assert_eq!(err.reason, RejectReason::Expired, "{err}");
    // Not yet valid: before notBefore.
    let err = v
        .check_peer(&chain(&a), cert.not_before - Duration::seconds(1))
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::NotYetValid, "{err}");
}

#[test]
fn unknown_issuer_stale_or_missing_crl_and_pin_mismatch_are_rejected() {
    let pki = Pki::new();
    let a = provision(&pki, "DEV-U");
    let f = pki.factory();

    // A chain from another PKI (another root, another intermediate) is unknown.
    let other = Pki::named(t0(), "Other Root", "Other Production CA");
    let stranger = provision(&other, "DEV-U");
    let err = verifier(&pki)
        .check_peer(&chain(&stranger), pki.now())
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::UnknownIssuer, "{err}");
    assert!(Error::from(err).is(ErrorKind::Auth));
    // An impostor CA that copies our CA names does not verify either.
    let impostor = Pki::new();
    let forged = provision(&impostor, "DEV-U");
    let err = verifier(&pki)
        .check_peer(&chain(&forged), pki.now())
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::BadSignature, "{err}");
    // The device certificate without its intermediate is unknown too.
    let err = verifier(&pki)
        .check_peer(&chain(&a)[..1], pki.now())
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::UnknownIssuer, "{err}");

    // A CRL past its nextUpdate: revocation status is stale.
    let crl = f
        .issue_crl(&operator(), pki.now(), Duration::days(1))
        .unwrap();
    let v = verifier_with(&pki, &crl);
    v.check_peer(&chain(&a), pki.now() + Duration::hours(23))
        .unwrap();
    let err = v
        .check_peer(&chain(&a), pki.now() + Duration::hours(25))
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::CrlExpired, "{err}");
    assert!(
        err.detail.contains("'CN=Keystore Test Production CA'"),
        "{err}"
    );
    assert_eq!(
        err.serial.as_deref(),
        Some(a.issued.certificate.serial.as_str())
    );

    // No CRL at all, or only another issuer's CRL: status unknown, rejected.
    let v = PeerVerifier::new(&f.root().unwrap().der).unwrap();
    let err = v.check_peer(&chain(&a), pki.now()).unwrap_err();
    assert_eq!(err.reason, RejectReason::RevocationUnknown, "{err}");
    // The root's CRL alone leaves the device's status unknown ...
    let err = PeerVerifier::new(&f.root().unwrap().der)
        .unwrap()
        .with_crl(&pki.root_crl)
        .unwrap()
        .check_peer(&chain(&a), pki.now())
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::RevocationUnknown, "{err}");
    assert_eq!(
        err.serial.as_deref(),
        Some(a.issued.certificate.serial.as_str())
    );
    // ... and the intermediate's CRL alone leaves the intermediate's unknown.
    let inter_crl = f.current_crl().unwrap().expect("a CRL was issued");
    let err = PeerVerifier::new(&f.root().unwrap().der)
        .unwrap()
        .with_crl(&inter_crl)
        .unwrap()
        .check_peer(&chain(&a), pki.now())
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::RevocationUnknown, "{err}");
    assert_eq!(
        err.serial.as_deref(),
        Some(f.intermediate().unwrap().serial.as_str())
    );
    assert!(
        err.detail
            .contains("no CRL from its issuer 'CN=Keystore Test Root CA'"),
        "{err}"
    );
    let foreign_crl = other
        .factory()
        .issue_crl(&operator(), pki.now(), Duration::days(7))
        .unwrap();
    let err = PeerVerifier::new(&f.root().unwrap().der)
        .unwrap()
        .with_crl(&foreign_crl)
        .unwrap()
        .with_crl(&pki.root_crl)
        .unwrap()
        .check_peer(&chain(&a), pki.now())
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::RevocationUnknown, "{err}");

    // Pins: a matching pin passes, a pin set without the key fails.
    let good = PinSet::new()
        .with(&a.issued.certificate.spki_fingerprint)
        .unwrap();
    let info = verifier(&pki)
        .with_pins(good)
        .check_peer(&chain(&a), pki.now())
        .unwrap();
    assert_eq!(info.common_name.as_deref(), Some("DEV-U"));
    assert_eq!(
        info.matched_pin.as_deref(),
        Some(a.issued.certificate.spki_fingerprint.as_str())
    );
    let wrong = PinSet::new()
        .with(&stranger.issued.certificate.spki_fingerprint)
        .unwrap();
    let err = verifier(&pki)
        .with_pins(wrong)
        .check_peer(&chain(&a), pki.now())
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::PinMismatch, "{err}");
    // Pinning the intermediate key accepts every device under it.
    let inter = PinSet::new()
        .with(&f.intermediate().unwrap().spki_fingerprint)
        .unwrap();
    verifier(&pki)
        .with_pins(inter)
        .check_peer(&chain(&a), pki.now())
        .unwrap();
    assert!(PinSet::new().with("md5:00").is_err());

    // Garbage in, rejection out.
    for bad in [vec![], vec![vec![0u8; 3]], vec![b"\x30\x80".to_vec()]] {
        let err = verifier(&pki).check_peer(&bad, pki.now()).unwrap_err();
        assert_eq!(err.reason, RejectReason::Malformed, "{err}");
    }
    assert!(PeerVerifier::new(b"junk").is_err());
    assert!(verifier(&pki).with_crl(b"junk").is_err());
}

/// REQ-KEY-REV-03, TEST-KEY-07 (item 5 of the security review): the root
/// custodian revokes a production intermediate; every device under it is
/// rejected, devices under another intermediate of the same root are not.
#[test]
fn a_device_under_a_revoked_intermediate_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(keystore_api::ManualClock::new(t0()));
    let root = Store::open(&tmp.path().join("root"), clock.clone());
    let line_a = Store::open(&tmp.path().join("line-a"), clock.clone());
    let line_b = Store::open(&tmp.path().join("line-b"), clock.clone());
    let ca = RootCa::new(&root.ks, &root.db);
    ca.init(&common::custodian(), "Root", Duration::days(3650), t0())
        .unwrap();
    // Two factories, each with its own intermediate under the same root.
    let fa = provisioning::Factory::new(&line_a.ks, &line_a.db);
    let fb = provisioning::Factory::new(&line_b.ks, &line_b.db);
    let inter_a = provisioning::ceremony(
        &ca,
        &common::custodian(),
        &fa,
        &officer(),
        "Line A CA",
        Duration::days(365),
        t0(),
    )
    .unwrap();
    let inter_b = provisioning::ceremony(
        &ca,
        &common::custodian(),
        &fb,
        &officer(),
        "Line B CA",
        Duration::days(365),
        t0(),
    )
    .unwrap();
    let provision_on = |f: &provisioning::Factory<'_, _>, store: &Store, id: &str| {
        let dev = Device::new(&store.ks, &store.db, &shared_key_name(id).unwrap()).unwrap();
        Provisioner::new(f, operator())
            .provision(&dev, &operator(), id, "line-1", t0())
            .unwrap()
    };
    let a = provision_on(&fa, &line_a, "DEV-UNDER-A");
    let b = provision_on(&fb, &line_b, "DEV-UNDER-B");
    let crl_a = fa.issue_crl(&operator(), t0(), Duration::days(7)).unwrap();
    let crl_b = fb.issue_crl(&operator(), t0(), Duration::days(7)).unwrap();
    let root_crl_before = ca
        .issue_crl(&common::custodian(), t0(), Duration::days(30))
        .unwrap();
    let v = |root_crls: &[&[u8]]| {
        let mut v = PeerVerifier::new(&ca.certificate().unwrap().der)
            .unwrap()
            .with_crl(&crl_a)
            .unwrap()
            .with_crl(&crl_b)
            .unwrap();
        for c in root_crls {
            v = v.with_crl(c).unwrap();
        }
        v
    };
    let t = t0() + Duration::minutes(1);
    v(&[&root_crl_before]).check_peer(&chain(&a), t).unwrap();
    v(&[&root_crl_before]).check_peer(&chain(&b), t).unwrap();

    // Only the root's security officer revokes; a bad serial is refused.
    assert!(matches!(
        ca.revoke_intermediate(
            &operator(),
            &inter_a.serial,
            "ca-compromise",
            t,
            Duration::days(30)
        ),
        Err(ref e) if e.is(ErrorKind::Policy)
    ));
    assert!(matches!(
        ca.revoke_intermediate(&common::custodian(), "not hex", "x", t, Duration::days(30)),
        Err(ref e) if e.is(ErrorKind::InvalidInput)
    ));
    assert!(matches!(
        ca.revoke_intermediate(&common::custodian(), "00ff", "x", t, Duration::days(30)),
        Err(ref e) if e.is(ErrorKind::NotFound)
    ));
    assert!(matches!(
        ca.revoke_intermediate(
            &common::custodian(),
            &inter_a.serial,
            "x",
            t,
            Duration::ZERO
        ),
        Err(ref e) if e.is(ErrorKind::InvalidInput)
    ));
    assert!(ca
        .signed_intermediates()
        .unwrap()
        .iter()
        .all(|i| i.revoked_at.is_none()));

    let root_crl = ca
        .revoke_intermediate(
            &common::custodian(),
            &inter_a.serial,
            "ca-compromise: line A's token was lost",
            t,
            Duration::days(30),
        )
        .unwrap();
    assert_eq!(
        ca.current_crl().unwrap().as_deref(),
        Some(root_crl.as_slice())
    );
    // The root's CRL lists the intermediate, with its reason code.
    let (_, parsed) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&root_crl).unwrap();
    let listed: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert_eq!(listed, vec![inter_a.serial.clone()]);

    // The device under the revoked intermediate: Revoked, naming the intermediate.
    let err = v(&[&root_crl]).check_peer(&chain(&a), t).unwrap_err();
    assert_eq!(err.reason, RejectReason::Revoked, "{err}");
    assert_eq!(err.serial.as_deref(), Some(inter_a.serial.as_str()));
    assert_eq!(err.subject.as_deref(), Some("CN=Line A CA"));
    assert!(
        err.detail
            .contains("intermediate CA certificate 'CN=Line A CA'")
            && err.detail.contains("revoked by its issuer 'CN=Root'"),
        "{err}"
    );
    assert!(Error::from(err).is(ErrorKind::KeyState));
    // The device under the other intermediate still passes.
    let info = v(&[&root_crl]).check_peer(&chain(&b), t).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("DEV-UNDER-B"));
    // An older root CRL given as well, in either order, cannot mask the revocation.
    for crls in [[&root_crl_before, &root_crl], [&root_crl, &root_crl_before]] {
        let crls: Vec<&[u8]> = crls.iter().map(|c| c.as_slice()).collect();
        let err = v(&crls)
            .check_peer(&chain(&a), t + Duration::seconds(1))
            .unwrap_err();
        assert_eq!(err.reason, RejectReason::Revoked, "{err}");
    }
    // Without the root's CRL the intermediate's status is unknown: rejected.
    let err = v(&[]).check_peer(&chain(&b), t).unwrap_err();
    assert_eq!(err.reason, RejectReason::RevocationUnknown, "{err}");
    assert_eq!(err.serial.as_deref(), Some(inter_b.serial.as_str()));

    // Revoking twice is a state error; the registry shows the revocation.
    assert!(matches!(
        ca.revoke_intermediate(
            &common::custodian(),
            &inter_a.serial,
            "again",
            t,
            Duration::days(30)
        ),
        Err(ref e) if e.is(ErrorKind::KeyState)
    ));
    let signed = ca.signed_intermediates().unwrap();
    assert_eq!(signed.len(), 2);
    assert_eq!(signed[0].serial, inter_a.serial);
    assert!(signed[0].revoked_at.is_some() && signed[1].revoked_at.is_none());
    // Audited in the root's event log.
    let events = ca.verify_events().unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "init-root",
            "sign-intermediate",
            "sign-intermediate",
            "crl",
            "revoke-intermediate",
            "crl"
        ]
    );
    let revoke = &events[4];
    assert_eq!(revoke.actor, "root-custodian");
    assert_eq!(revoke.serial.as_deref(), Some(inter_a.serial.as_str()));
    assert!(
        revoke.detail.contains("line A's token was lost"),
        "{}",
        revoke.detail
    );

    // A stale root CRL is stale for every device under the root.
    let short = ca
        .issue_crl(&common::custodian(), t, Duration::days(1))
        .unwrap();
    let later = t + Duration::days(2);
    let err = v(&[&short]).check_peer(&chain(&b), later).unwrap_err();
    assert_eq!(err.reason, RejectReason::CrlExpired, "{err}");
    assert!(err.detail.contains("the CRL of 'CN=Root'"), "{err}");
    assert_eq!(err.serial.as_deref(), Some(inter_b.serial.as_str()));
}

#[test]
fn the_event_log_detects_edits_and_deletions() {
    let pki = Pki::new();
    provision(&pki, "DEV-L1");
    provision(&pki, "DEV-L2");
    let f = pki.factory();
    let n = f.verify_events().unwrap().len();
    assert!(n >= 3, "install-intermediate and two provisions");
    let conn = rusqlite::Connection::open(pki.prod.dir.join("pki.sqlite")).unwrap();
    conn.execute(
        "UPDATE events SET detail = 'operator line-9' WHERE event = 'provision' AND device_id = 'DEV-L1'",
        [],
    )
    .unwrap();
    let err = f.verify_events().unwrap_err();
    assert!(err.is(ErrorKind::Integrity), "{err}");
    let pki2 = Pki::new();
    provision(&pki2, "DEV-M1");
    provision(&pki2, "DEV-M2");
    let conn = rusqlite::Connection::open(pki2.prod.dir.join("pki.sqlite")).unwrap();
    conn.execute("DELETE FROM events WHERE device_id = 'DEV-M1'", [])
        .unwrap();
    assert!(matches!(
        pki2.factory().verify_events(),
        Err(ref e) if e.is(ErrorKind::Integrity)
    ));
    // Cutting off the tail is visible through the MAC'd head.
    let pki3 = Pki::new();
    provision(&pki3, "DEV-N1");
    let conn = rusqlite::Connection::open(pki3.prod.dir.join("pki.sqlite")).unwrap();
    conn.execute(
        "DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)",
        [],
    )
    .unwrap();
    let err = pki3.factory().verify_events().unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn interrupted_provisioning_reuses_the_generated_key() {
    let pki = Pki::new();
    let f = pki.factory();
    let key = shared_key_name("DEV-I").unwrap();
    let dev = Device::new(&pki.prod.ks, &pki.prod.db, &key).unwrap();
    // The device generated its key and CSR, then the station lost power.
    let (csr1, _) = dev.generate(&operator(), "DEV-I").unwrap();
    let p = Provisioner::new(&f, operator())
        .provision(&dev, &operator(), "DEV-I", "line-3", pki.now())
        .unwrap();
    assert_eq!(p.issued.certificate.spki_fingerprint, csr1.fingerprint());
    assert_eq!(pki.prod.ks.info(&key).unwrap().versions.len(), 1);
    // Once certified, the key is not handed out again.
    assert!(matches!(
        dev.generate(&operator(), "DEV-I"),
        Err(ref e) if e.is(ErrorKind::AlreadyExists)
    ));
    let _ = pki.clock.now();
}
