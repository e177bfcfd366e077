//! EST renewal with the device's identity key on each backend: a SoftHSM2
//! token and a swtpm (the soft store is in `est.rs`). The current key signs
//! the mTLS handshake and the staged key its CSR inside the device; the
//! server runs on a soft production store. A missing simulator fails with
//! an install hint unless `KEYSTORE_TEST_SKIP` names its backend.

mod common;
mod est_common;

use backend_tpm::swtpm::Swtpm;
use backend_tpm::{TpmBackend, TpmConfig};
use common::officer;
use est_common::*;
use keystore_api::{AuditEvent, Backend, KeyState, Keystore, Origin};
use provisioning::DEVICE_KEY;
use time::Duration;

/// Provisions `dev`, renews it over EST twice, and checks the states.
fn renew_twice<B: Backend + 'static>(pki: &common::Pki, dev: Dev<B>) {
    let server = serve(pki);
    provision(pki, &dev, now() - Duration::days(25), Duration::days(30));
    let renewal = renewal(pki, &dev, &url(&server));
    let renewed = renewal.renew_if_due(Duration::days(10)).unwrap().unwrap();
    assert_eq!(renewed.key_version, 2);
    let again = renewal.renew_at(now()).unwrap();
    assert_eq!(again.key_version, 3);
    let info = dev.ks.info(DEVICE_KEY).unwrap();
    assert_eq!(info.active().unwrap().version, 3);
    assert_eq!(info.active().unwrap().origin, Origin::Generated);
    assert_eq!(info.version(2).unwrap().state, KeyState::Deactivated);
    let pops = dev
        .ks
        .export_audit(&officer())
        .unwrap()
        .into_iter()
        .filter(|e| e.event == AuditEvent::ProofOfPossession)
        .count();
    assert_eq!(
        pops,
        2,
        "each CSR signed inside the {}",
        dev.ks.backend_name()
    );
    server.shutdown().unwrap();
}

#[test]
fn est_renewal_with_the_device_key_on_a_pkcs11_token() {
    let Some(hsm) = backend_pkcs11::testing::softhsm_or_skip() else {
        return;
    };
    let pki = pki();
    let token = hsm.new_token("est-device").expect("a SoftHSM2 token");
    let dir = pki.path("p11-device");
    std::fs::create_dir_all(&dir).unwrap();
    let ks = Keystore::open(token.open().expect("open the token"), &dir.join("m.sqlite")).unwrap();
    assert_eq!(ks.backend_name(), "pkcs11");
    renew_twice(&pki, device(ks, &dir, "P11-EST-1"));
    drop(token);
}

#[test]
fn est_renewal_with_the_device_key_in_a_tpm() {
    if !backend_tpm::swtpm::available() {
        test_support::skip::skip_or_fail::<()>("tpm", backend_tpm::swtpm::INSTALL_HINT);
        return;
    }
    let pki = pki();
    let dir = pki.path("tpm-device");
    std::fs::create_dir_all(&dir).unwrap();
    let swtpm = Swtpm::start(&dir.join("swtpm")).expect("start swtpm");
    let tpm = TpmBackend::open(TpmConfig::new(swtpm.tcti()), &dir.join("tpm")).expect("open tpm");
    let ks = Keystore::open(tpm, &dir.join("m.sqlite")).unwrap();
    renew_twice(&pki, device(ks, &dir, "TPM-EST-1"));
    drop(swtpm);
}
