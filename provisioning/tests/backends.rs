//! The provisioning flow end to end across backends: the offline root on
//! soft, the factory's intermediate on a PKCS#11 token (SoftHSM2), the device
//! identity key in a TPM (swtpm). A missing simulator fails with an install
//! hint unless `KEYSTORE_TEST_SKIP` names its backend.

mod common;

use backend_pkcs11::testing::softhsm_or_skip;
use backend_tpm::swtpm::Swtpm;
use backend_tpm::{TpmBackend, TpmConfig};
use common::{custodian, officer, operator, Store};
use keystore_api::{Keystore, ManualClock, Origin};
use provisioning::{
    ceremony, Device, Factory, PeerVerifier, PkiDb, Provisioner, RejectReason, RootCa, DEVICE_KEY,
    INTERMEDIATE_KEY,
};
use std::process::Command;
use std::sync::Arc;
use test_support::skip::skip_requested;
use time::{Duration, OffsetDateTime};

#[test]
fn provisioning_with_the_intermediate_on_pkcs11_and_the_device_key_in_a_tpm() {
    let Some(hsm) = softhsm_or_skip() else { return };
    if !backend_tpm::swtpm::available() && skip_requested("tpm") {
        eprintln!("SKIPPED (KEYSTORE_TEST_SKIP names tpm): swtpm is missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let start = OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(start));

    // The factory: its keys (the intermediate, the event-log MAC key) on a token.
    let token = hsm.new_token("prov").expect("SoftHSM2 token");
    let fks = Keystore::open_with_clock(
        token.open().expect("open token"),
        &tmp.path().join("factory.sqlite"),
        clock.clone(),
    )
    .unwrap();
    let fdb = PkiDb::open(&tmp.path().join("factory-pki.sqlite")).unwrap();
    let factory = Factory::new(&fks, &fdb);
    let root_crl = {
        // The offline root: soft, its own directory, open for the ceremony only.
        let root = Store::open(&tmp.path().join("root"), clock.clone());
        let rca = RootCa::new(&root.ks, &root.db);
        rca.init(&custodian(), "Interop Root", Duration::days(3650), start)
            .unwrap();
        ceremony(
            &rca,
            &custodian(),
            &factory,
            &officer(),
            "Token Production CA",
            Duration::days(365),
            start,
        )
        .unwrap();
        rca.issue_crl(&custodian(), start, Duration::days(90))
            .unwrap()
    };
    assert_eq!(fks.backend_name(), "pkcs11");
    let ikey = fks.info(INTERMEDIATE_KEY).unwrap();
    assert_eq!(ikey.active().unwrap().origin, Origin::Generated);
    std::fs::remove_dir_all(tmp.path().join("root")).unwrap();

    // The device: its identity key in a TPM.
    let swtpm = Swtpm::start(&tmp.path().join("swtpm")).expect("swtpm");
    let tpm = TpmBackend::open(TpmConfig::new(swtpm.tcti()), &tmp.path().join("tpm"))
        .expect("open tpm backend");
    let dks =
        Keystore::open_with_clock(tpm, &tmp.path().join("device.sqlite"), clock.clone()).unwrap();
    let ddb = PkiDb::open(&tmp.path().join("device-pki.sqlite")).unwrap();
    let device = Device::new(&dks, &ddb, DEVICE_KEY).unwrap();
    let prov = Provisioner::new(&factory, operator()).with_grace(Duration::days(2));
    let p = prov
        .provision(&device, &officer(), "TPM-UNIT-1", "line-7", start)
        .expect("provision into the TPM");
    assert_eq!(p.issued.record.device_backend.as_deref(), Some("tpm"));
    assert_eq!(
        dks.info(DEVICE_KEY).unwrap().active().unwrap().origin,
        Origin::Generated
    );

    // The chain validates (webpki here, OpenSSL below).
    let crl = factory
        .issue_crl(&operator(), start, Duration::days(7))
        .unwrap();
    let chain = vec![
        p.issued.certificate.der.clone(),
        p.issued.intermediate.der.clone(),
    ];
    let root_der = factory.root().unwrap().der;
    let v = |crl: &[u8]| {
        PeerVerifier::new(&root_der)
            .unwrap()
            .with_crl(crl)
            .unwrap()
            .with_crl(&root_crl)
            .unwrap()
    };
    v(&crl).check_peer(&chain, start).unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("root.pem"), p.issued.root.pem()).unwrap();
    std::fs::write(dir.join("inter.pem"), p.issued.intermediate.pem()).unwrap();
    std::fs::write(dir.join("dev.pem"), p.issued.certificate.pem()).unwrap();
    let out = Command::new("/usr/bin/openssl")
        .args([
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "inter.pem",
            "dev.pem",
        ])
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Renewal rotates the key inside the TPM.
    clock.advance(Duration::days(25));
    let renewed = prov
        .renew_if_due(
            &device,
            &officer(),
            start + Duration::days(25),
            Duration::days(7),
        )
        .unwrap()
        .expect("due");
    assert_eq!(renewed.installed.key_version, 2);

    // Revocation by the token-held intermediate.
    let now = start + Duration::days(25);
    let crl = factory
        .revoke(
            &officer(),
            &renewed.issued.certificate.serial,
            "key-compromise",
            now,
        )
        .unwrap();
    let chain2 = vec![
        renewed.issued.certificate.der.clone(),
        renewed.issued.intermediate.der.clone(),
    ];
    assert_eq!(
        v(&crl).check_peer(&chain2, now).unwrap_err().reason,
        RejectReason::Revoked
    );
    v(&crl).check_peer(&chain, now).unwrap();
    factory.verify_events().unwrap();
}
