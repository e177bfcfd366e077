//! EST end to end in one process over real sockets and TLS: our client
//! renews against our server; the old pair stays current when the server
//! refuses or is down; a key the server has seen is never offered twice;
//! the background renewer retries on its schedule.

mod common;
mod est_common;

use common::{officer, operator};
use est_common::*;
use keystore_api::{AuditEvent, ErrorKind, KeyState, SignatureFormat};
use provisioning::{
    Backoff, Device, DeviceRequest, EstClient, EstServerConfig, Pacer, PeerVerifier, Renewer,
    RenewerConfig, StopFlag, DEVICE_KEY,
};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;
use time::{Duration, OffsetDateTime};

#[test]
fn our_client_renews_against_our_server_and_the_new_pair_becomes_current() {
    let pki = pki();
    let server = serve(&pki);
    let dev = soft_device(&pki, "device", "DEV-EST-1");
    let first = provision(&pki, &dev, now() - Duration::days(25), Duration::days(30));
    let renewal = renewal(&pki, &dev, &url(&server));

    // Not due: nothing happens.
    assert!(renewal.renew_if_due(Duration::days(2)).unwrap().is_none());
    assert!(dev.ks.info(DEVICE_KEY).unwrap().pre_active().is_none());

    let renewed = renewal.renew_if_due(Duration::days(10)).unwrap().unwrap();
    assert_eq!(renewed.key_version, 2);
    assert_eq!(renewed.device_id, "DEV-EST-1");
    assert!(renewed.not_after > now() + Duration::days(29));
    let info = dev.ks.info(DEVICE_KEY).unwrap();
    assert_eq!(info.active().unwrap().version, 2);
    assert_eq!(info.version(1).unwrap().state, KeyState::Deactivated);
    assert_eq!(renewal.current().unwrap().unwrap(), renewed);
    assert_ne!(renewed.serial, first.issued.certificate.serial);

    // The new chain passes the peer checks a gateway's peers make.
    let crl = pki
        .factory()
        .issue_crl(&officer(), now(), Duration::days(7))
        .unwrap();
    let chain = provisioning::pem_decode_all(&renewed.chain_pem, "CERTIFICATE").unwrap();
    assert_eq!(chain.len(), 2);
    PeerVerifier::new(&pki.factory().root().unwrap().der)
        .unwrap()
        .with_crl(&crl)
        .unwrap()
        .with_crl(&pki.root_crl)
        .unwrap()
        .check_peer(&chain, now())
        .expect("the renewed chain validates");
    // The new key signs; the registry moved the device to it.
    assert_eq!(
        dev.ks
            .sign(DEVICE_KEY, b"x", SignatureFormat::Der)
            .unwrap()
            .version,
        2
    );
    let certs = pki.factory().certificates("DEV-EST-1").unwrap();
    assert_eq!(certs.len(), 2);
    assert!(certs[0].superseded_at.is_some());
    assert_eq!(certs[1].serial, renewed.serial);
    assert_eq!(
        certs[1].key_version, 2,
        "the client reports its key version"
    );

    // Every step is in the device's audit trail and the factory's log.
    let trail: Vec<_> = dev
        .ks
        .export_audit(&officer())
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for e in ["stage", "proof-of-possession", "rotate", "est-renew"] {
        assert!(trail.iter().any(|t| t.as_str() == e), "{e} in {trail:?}");
    }
    assert!(factory_events(&pki)
        .iter()
        .any(|(e, d)| e == "renew" && d.contains("operator est")));

    // And again: the renewed pair renews in turn.
    let again = renewal.renew_at(now()).unwrap();
    assert_eq!(again.key_version, 3);
    server.shutdown().unwrap();
}

#[test]
fn the_old_pair_stays_current_while_the_server_is_down_and_the_staged_key_is_reused() {
    let pki = pki();
    let dev = soft_device(&pki, "device", "DEV-EST-2");
    let first = provision(&pki, &dev, now() - Duration::days(25), Duration::days(30));
    // A listener nobody serves yet: the TLS handshake never completes.
    let listener = listener();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let root = pki.factory().root().unwrap().der;
    let client = EstClient::new(&url, &root)
        .unwrap()
        .with_timeout(StdDuration::from_millis(500));
    let quick = provisioning::EstRenewal::new(
        Arc::clone(&dev.ks),
        Arc::clone(&dev.db),
        DEVICE_KEY,
        officer(),
        client,
    )
    .unwrap();
    let e = quick.renew_if_due(Duration::days(10)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    let current = quick.current().unwrap().unwrap();
    assert_eq!(
        current.serial, first.installed.serial,
        "the old pair is current"
    );
    let info = dev.ks.info(DEVICE_KEY).unwrap();
    assert_eq!(info.active().unwrap().version, 1);
    assert_eq!(info.pre_active().unwrap().version, 2, "staged, not active");
    assert_eq!(
        dev.ks
            .sign(DEVICE_KEY, b"x", SignatureFormat::Der)
            .unwrap()
            .version,
        1
    );
    let failed = dev
        .ks
        .export_audit(&officer())
        .unwrap()
        .into_iter()
        .filter(|e| e.event.as_str() == "est-renew-failed")
        .count();
    assert_eq!(failed, 1);

    // The server comes up on that socket: the retry reuses version 2.
    let server = serve_on(&pki, listener, EstServerConfig::default());
    let renewed = renewal(&pki, &dev, &url)
        .renew_if_due(Duration::days(10))
        .unwrap()
        .unwrap();
    assert_eq!(renewed.key_version, 2);
    server.shutdown().unwrap();
}

#[test]
fn a_refusal_leaves_the_old_pair_current() {
    let pki = pki();
    let server = serve(&pki);
    let dev = soft_device(&pki, "device", "DEV-EST-3");
    let first = provision(&pki, &dev, now() - Duration::days(25), Duration::days(30));
    pki.factory()
        .revoke(
            &officer(),
            &first.issued.certificate.serial,
            "key-compromise",
            now(),
        )
        .unwrap();
    let renewal = renewal(&pki, &dev, &url(&server));
    let e = renewal.renew_if_due(Duration::days(10)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Policy, "{e}");
    assert!(
        e.to_string().contains("403") && e.to_string().contains("revoked"),
        "{e}"
    );
    assert_eq!(
        renewal.current().unwrap().unwrap().serial,
        first.installed.serial
    );
    assert_eq!(
        dev.ks.info(DEVICE_KEY).unwrap().active().unwrap().version,
        1
    );
    assert!(factory_events(&pki)
        .iter()
        .any(|(e, d)| e == "est-refused" && d.contains("simplereenroll refused (403)")));
    // An expired certificate is refused on the device, before any network.
    let old = soft_device(&pki, "old-device", "DEV-EST-4");
    provision(&pki, &old, now() - Duration::days(40), Duration::days(30));
    let e = renewal_for(&pki, &old, &url(&server))
        .renew_if_due(Duration::days(10))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyState, "{e}");
    server.shutdown().unwrap();
}

fn renewal_for<B: keystore_api::Backend + 'static>(
    pki: &common::Pki,
    dev: &Dev<B>,
    url: &str,
) -> provisioning::EstRenewal<B> {
    renewal(pki, dev, url)
}

/// rcgen's signing key over a staged version (the test plays a device
/// whose answer was lost after the server issued).
struct Staged<'a> {
    ks: &'a keystore_api::Keystore<backend_soft::SoftStore>,
    version: u32,
    raw: Vec<u8>,
}

impl rcgen::PublicKeyData for Staged<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for Staged<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.ks
            .sign_pre_active(
                &officer(),
                DEVICE_KEY,
                self.version,
                msg,
                SignatureFormat::Der,
            )
            .map(|s| s.bytes)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

#[test]
fn a_key_the_server_already_issued_is_discarded_and_a_fresh_one_staged() {
    let pki = pki();
    let server = serve(&pki);
    let dev = soft_device(&pki, "device", "DEV-EST-5");
    provision(&pki, &dev, now() - Duration::days(25), Duration::days(30));
    // The server issues for staged version 2, and the answer is lost.
    let info = dev.ks.rotate_staged(&officer(), DEVICE_KEY).unwrap();
    let spki = info.pre_active().unwrap().public_key.clone().unwrap();
    let raw = spki.spki_der()[spki.spki_der().len() - 65..].to_vec();
    let signer = Staged {
        ks: &dev.ks,
        version: 2,
        raw,
    };
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "DEV-EST-5");
    params.distinguished_name.push(
        rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]),
        rcgen::DnValue::PrintableString("DEV-EST-5".try_into().unwrap()),
    );
    let csr = params.serialize_request(&signer).unwrap();
    pki.factory()
        .renew(
            &operator(),
            &DeviceRequest {
                device_id: "DEV-EST-5",
                operator: "est",
                csr_der: csr.der(),
                key_version: 2,
                validity: Duration::days(30),
                device_backend: None,
            },
            Duration::days(7),
            now(),
        )
        .unwrap();

    let renewal = renewal(&pki, &dev, &url(&server));
    let e = renewal.renew_if_due(Duration::days(10)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    let info = dev.ks.info(DEVICE_KEY).unwrap();
    assert_eq!(
        info.version(2).unwrap().state,
        KeyState::Destroyed,
        "discarded"
    );
    assert_eq!(info.active().unwrap().version, 1);
    let renewed = renewal.renew_if_due(Duration::days(10)).unwrap().unwrap();
    assert_eq!(renewed.key_version, 3, "a fresh key");
    server.shutdown().unwrap();
}

/// A pacer on a manual timeline: sleeping advances it; the test ends the
/// run after `limit` sleeps.
#[derive(Clone)]
struct FakePacer {
    now: Arc<Mutex<OffsetDateTime>>,
    sleeps: Arc<Mutex<Vec<StdDuration>>>,
    limit: usize,
}

impl Pacer for FakePacer {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap()
    }
    fn sleep(&self, d: StdDuration, stop: &StopFlag) -> bool {
        let mut sleeps = self.sleeps.lock().unwrap();
        sleeps.push(d);
        *self.now.lock().unwrap() += d;
        // Real time passes too, a little, so that a server can come up.
        std::thread::sleep(StdDuration::from_millis(20));
        sleeps.len() < self.limit && !stop.is_stopped()
    }
    fn random(&self) -> f64 {
        0.25
    }
}

#[test]
fn the_renewer_backs_off_while_the_server_is_down_then_renews() {
    let pki = pki();
    let dev = soft_device(&pki, "device", "DEV-EST-6");
    provision(&pki, &dev, now() - Duration::days(25), Duration::days(30));
    let listener = listener();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let root = pki.factory().root().unwrap().der;
    let client = EstClient::new(&url, &root)
        .unwrap()
        .with_timeout(StdDuration::from_millis(300));
    let task = provisioning::EstRenewal::new(
        Arc::clone(&dev.ks),
        Arc::clone(&dev.db),
        DEVICE_KEY,
        officer(),
        client,
    )
    .unwrap();
    let config = RenewerConfig {
        threshold: Duration::days(10),
        check_interval: StdDuration::from_secs(3600),
        backoff: Backoff {
            initial: StdDuration::from_secs(10),
            max: StdDuration::from_secs(60),
            jitter: 0.5,
        },
    };
    let pacer = FakePacer {
        now: Arc::new(Mutex::new(now())),
        sleeps: Arc::new(Mutex::new(Vec::new())),
        limit: 1000,
    };
    let renewed = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&renewed);
    let renewer = Renewer::spawn_with(
        task,
        config,
        pacer.clone(),
        Some(Box::new(move |c| {
            seen.lock().unwrap().push(c.serial.clone())
        })),
    )
    .unwrap();
    // Let it fail a few times against the silent socket.
    let deadline = std::time::Instant::now() + StdDuration::from_secs(60);
    while renewer.status().failures < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            renewer.status()
        );
        std::thread::sleep(StdDuration::from_millis(20));
    }
    assert_eq!(
        dev.ks.info(DEVICE_KEY).unwrap().active().unwrap().version,
        1
    );
    let server = serve_on(&pki, listener, EstServerConfig::default());
    while renewer.status().renewals < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            renewer.status()
        );
        std::thread::sleep(StdDuration::from_millis(20));
    }
    let status = renewer.status();
    renewer.stop();
    let sleeps = pacer.sleeps.lock().unwrap().clone();
    // 10 s doubling to 60 s, less a quarter of half (random 0.25, jitter 0.5).
    let expect = |s: u64| StdDuration::from_secs(s).mul_f64(0.875);
    assert_eq!(
        &sleeps[..4],
        &[expect(10), expect(20), expect(40), expect(60)]
    );
    assert_eq!(
        *sleeps.last().unwrap(),
        expect(3600),
        "back to the check interval"
    );
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(renewed.lock().unwrap().len(), 1);
    let device = Device::new(&dev.ks, &dev.db, DEVICE_KEY).unwrap();
    assert_eq!(device.current().unwrap().unwrap().key_version, 2);
    // Only one staged key was ever made.
    let staged = dev
        .ks
        .export_audit(&officer())
        .unwrap()
        .into_iter()
        .filter(|e| e.event == AuditEvent::Stage)
        .count();
    assert_eq!(staged, 1);
    server.shutdown().unwrap();
}

#[test]
fn a_certificate_installed_before_a_failed_activation_is_activated_offline() {
    let pki = pki();
    let server = serve(&pki);
    let dev = soft_device(&pki, "device", "DEV-EST-7");
    provision(&pki, &dev, now() - Duration::days(25), Duration::days(30));
    // Steps 1 to 5 by hand: staged, re-enrolled, installed; not activated.
    let device = Device::new(&dev.ks, &dev.db, DEVICE_KEY).unwrap();
    let current = device.current().unwrap().unwrap();
    let (csr, version) = device.stage(&officer(), "DEV-EST-7").unwrap();
    let root = pki.factory().root().unwrap().der;
    let key =
        keystore_signer::KeystoreSigningKey::pinned_to(Arc::clone(&dev.ks), DEVICE_KEY, 1).unwrap();
    let chain = keystore_signer::certificate_chain(current.chain_pem.as_bytes()).unwrap();
    let identity = Arc::new(keystore_signer::certified_key(chain, &key).unwrap());
    let der = EstClient::new(&url(&server), &root)
        .unwrap()
        .simplereenroll(identity, &csr.der, Some(version))
        .unwrap();
    let inter = pki.factory().intermediate().unwrap().pem();
    let pem = format!("{}{inter}", provisioning::pem_encode("CERTIFICATE", &der));
    device
        .install("DEV-EST-7", version, &der, &pem, now())
        .unwrap();
    assert_eq!(
        device.current().unwrap().unwrap().key_version,
        1,
        "still the old pair"
    );
    let url = url(&server);
    server.shutdown().unwrap();
    // The next attempt needs no server: it activates what is installed.
    let renewed = renewal(&pki, &dev, &url)
        .renew_if_due(Duration::days(10))
        .unwrap()
        .unwrap();
    assert_eq!(renewed.key_version, 2);
    assert_eq!(device.current().unwrap().unwrap().der, der);
}
