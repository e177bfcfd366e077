//! The device identity in the field: the identity key lives in the backend
//! under test while a soft production factory (offline root, ceremony,
//! intermediate, registry) certifies it. Revocation of its certificate (CRL,
//! OCSP, pins; part of TEST-KEY-07), a real mutual-TLS 1.3 handshake signed
//! in the backend (TEST-KEY-57) and EST renewal (TEST-KEY-58).
//!
//! Everything here uses the public API of `provisioning` and
//! `keystore-signer`; every network wait is bounded and on 127.0.0.1 with a
//! port the OS picks.

use crate::support::{create_or_prove_unsupported, operator, so, unsupported};
use crate::{Fixture, Outcome};
use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
use keystore_api::{
    Algorithm, Backend, ErrorKind, KeyState, Keystore, ManualClock, Operation, Origin,
    SignatureFormat,
};
use provisioning::{
    ceremony, ocsp_request, CertInfo, Device, EstClient, EstRenewal, EstServer, EstServerConfig,
    Factory, OcspResponder, PeerVerifier, PinSet, PkiDb, Provisioner, RejectReason,
    RevocationPolicy, RootCa, DEFAULT_OCSP_SIGNER_VALIDITY, DEVICE_KEY,
};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use tempfile::TempDir;
use time::{Duration, OffsetDateTime};

/// How long any one network wait may take.
pub(super) const IO_TIMEOUT: StdDuration = StdDuration::from_secs(20);

/// A soft keystore unlocked by a key file, and its PKI database, in `dir`
/// (created the first time, opened again after).
fn soft_store(dir: &Path, clock: Arc<ManualClock>) -> (Keystore<SoftStore>, PkiDb) {
    std::fs::create_dir_all(dir).expect("store dir");
    let key = dir.join("kek.key");
    let unlock = Unlock::KeyFile(key.clone());
    let backend = if key.exists() {
        SoftStore::open(&dir.join("soft"), &unlock).expect("open soft store")
    } else {
        create_key_file(&key).expect("key file");
        SoftStore::create(&dir.join("soft"), &unlock, Kdf::KeyFile).expect("create soft store")
    };
    let ks = Keystore::open_with_clock(backend, &dir.join("metadata.sqlite"), clock)
        .expect("open keystore");
    let db = PkiDb::open(&dir.join("pki.sqlite")).expect("open pki db");
    (ks, db)
}

/// A soft production factory in a temporary directory: an offline root
/// (closed after the ceremony) signed its intermediate at `start`. Field
/// order is drop order: the stores before their directory.
pub(crate) struct FactoryPki {
    prod_ks: Keystore<SoftStore>,
    prod_db: PkiDb,
    clock: Arc<ManualClock>,
    /// The root's CRL from the ceremony (it covers the intermediate).
    root_crl: Vec<u8>,
    tmp: TempDir,
}

impl FactoryPki {
    pub(crate) fn new(start: OffsetDateTime) -> FactoryPki {
        let tmp = tempfile::Builder::new()
            .prefix("conformance-factory-")
            .tempdir()
            .expect("tempdir");
        let clock = Arc::new(ManualClock::new(start));
        let (prod_ks, prod_db) = soft_store(&tmp.path().join("production"), clock.clone());
        let root_crl = {
            let (root_ks, root_db) = soft_store(&tmp.path().join("root"), clock.clone());
            let root = RootCa::new(&root_ks, &root_db);
            root.init(&so(), "Conformance Root CA", Duration::days(3650), start)
                .expect("init root");
            let factory = Factory::new(&prod_ks, &prod_db);
            ceremony(
                &root,
                &so(),
                &factory,
                &so(),
                "Conformance Production CA",
                Duration::days(1095),
                start,
            )
            .expect("ceremony");
            root.issue_crl(&so(), start, Duration::days(366))
                .expect("root CRL")
        };
        FactoryPki {
            prod_ks,
            prod_db,
            clock,
            root_crl,
            tmp,
        }
    }

    pub(crate) fn factory(&self) -> Factory<'_, SoftStore> {
        Factory::new(&self.prod_ks, &self.prod_db)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The production store opened again, shared as a server process holds it.
    fn production(&self) -> (Arc<Keystore<SoftStore>>, Arc<PkiDb>) {
        let (ks, db) = soft_store(&self.path("production"), self.clock.clone());
        (Arc::new(ks), Arc::new(db))
    }

    fn root_der(&self) -> Vec<u8> {
        self.factory().root().expect("root certificate").der
    }
}

/// Whether the backend generates ECDSA P-256 keys (every backend should).
fn generates_p256<B: Backend>(ks: &Keystore<B>) -> bool {
    ks.backend()
        .capabilities()
        .supports(Algorithm::EcdsaP256Sha256, Operation::Generate)
}

/// TEST-KEY-07, device certificate part: the identity key in the backend
/// under test (`ks`, with the system clock) is certified by a soft
/// production factory; the peer check accepts it under the CRL, OCSP and
/// its own pin, rejects a pin set without its key, and after
/// `Factory::revoke` rejects it by CRL and by a stapled OCSP answer.
pub(crate) fn device_certificate_revoked<F: Fixture>(ks: &Keystore<F::Backend>) -> Outcome {
    if !generates_p256(ks) {
        create_or_prove_unsupported::<F>(ks, DEVICE_KEY, Algorithm::EcdsaP256Sha256);
        return unsupported(Algorithm::EcdsaP256Sha256, "device identity");
    }
    let now = OffsetDateTime::now_utc();
    let pki = FactoryPki::new(now - Duration::hours(1));
    let factory = pki.factory();
    let ocsp_signer = factory
        .issue_ocsp_signer(
            &so(),
            "Conformance OCSP Responder",
            DEFAULT_OCSP_SIGNER_VALIDITY,
            now,
        )
        .expect("OCSP signer");
    let dev_db = PkiDb::open(&pki.path("device-pki.sqlite")).expect("device pki db");
    let device = Device::new(ks, &dev_db, DEVICE_KEY).expect("device");
    let unit = Provisioner::new(&factory, operator())
        .provision(&device, &so(), "CONF-REV-1", "line-1", now)
        .expect("provision");
    // The identity key was generated in the backend under test and is the
    // key the certificate names.
    let info = ks.info(DEVICE_KEY).expect("identity key");
    assert_eq!(info.algorithm, Algorithm::EcdsaP256Sha256);
    let active = info.active().expect("active identity");
    assert_eq!(active.origin, Origin::Generated);
    let cert = &unit.issued.certificate;
    assert_eq!(
        active.fingerprint.as_deref(),
        Some(cert.spki_fingerprint.as_str()),
        "the certificate names the identity key in {}",
        F::NAME
    );
    let chain = vec![cert.der.clone(), unit.issued.intermediate.der.clone()];
    let root = &unit.issued.root.der;
    let crl = match factory.current_crl().expect("current CRL") {
        Some(c) => c,
        None => factory
            .issue_crl(&operator(), now, Duration::days(7))
            .expect("issue CRL"),
    };
    let with_crls = |crl: &[u8]| {
        PeerVerifier::new(root)
            .expect("anchor")
            .with_crl(&pki.root_crl)
            .expect("root CRL")
            .with_crl(crl)
            .expect("CRL")
    };
    let by_ocsp = PeerVerifier::new(root)
        .expect("anchor")
        .with_crl(&pki.root_crl)
        .expect("root CRL")
        .with_revocation_policy(RevocationPolicy::RequireOcsp);
    let ask = || {
        let req = ocsp_request(&cert.der, &unit.issued.intermediate.der, None).expect("request");
        OcspResponder::new(pki.factory()).respond(&req, now)
    };
    let own_pin = PinSet::new().with(&cert.spki_fingerprint).expect("pin");
    // A pin set without the device's key (nor its CAs'): the OCSP signer's.
    let other_pin = PinSet::new()
        .with(&ocsp_signer.spki_fingerprint)
        .expect("pin");

    // Good: CRL, OCSP and its own pin accept it; another pin set does not.
    let peer = with_crls(&crl)
        .check_peer(&chain, now)
        .unwrap_or_else(|r| panic!("CRL check refuses a good certificate: {r}"));
    assert_eq!(peer.common_name.as_deref(), Some("CONF-REV-1"));
    by_ocsp
        .check_peer_with_ocsp(&chain, Some(&ask()), now)
        .unwrap_or_else(|r| panic!("OCSP check refuses a good certificate: {r}"));
    with_crls(&crl)
        .with_pins(own_pin)
        .check_peer(&chain, now)
        .unwrap_or_else(|r| panic!("its own pin refuses it: {r}"));
    let r = with_crls(&crl)
        .with_pins(other_pin.clone())
        .check_peer(&chain, now)
        .expect_err("a pin set without its key accepts it");
    assert_eq!(r.reason, RejectReason::PinMismatch, "{r}");

    // Revoked: the new CRL and the responder reject it; a pin set without
    // its key still does, whatever the CRL.
    let revoked_crl = factory
        .revoke(&so(), &cert.serial, "key-compromise", now)
        .expect("revoke");
    let r = with_crls(&revoked_crl)
        .check_peer(&chain, now)
        .expect_err("CRL check accepts a revoked certificate");
    assert_eq!(r.reason, RejectReason::Revoked, "{r}");
    let r = by_ocsp
        .check_peer_with_ocsp(&chain, Some(&ask()), now)
        .expect_err("OCSP check accepts a revoked certificate");
    assert_eq!(r.reason, RejectReason::Revoked, "{r}");
    for crl in [&crl, &revoked_crl] {
        let r = with_crls(crl)
            .with_pins(other_pin.clone())
            .check_peer(&chain, now)
            .expect_err("a pin set without its key accepts it");
        assert!(
            matches!(r.reason, RejectReason::PinMismatch | RejectReason::Revoked),
            "{r}"
        );
    }
    // Revoking the certificate left the key itself alone.
    ks.sign(DEVICE_KEY, b"still mine", SignatureFormat::Der)
        .expect("the identity key still signs");
    Outcome::Passed
}

// ---------------------------------------------------------------------------
// TEST-KEY-58: EST renewal with the identity key in the backend.

fn est_client(pki: &FactoryPki, url: &str, timeout: StdDuration) -> EstClient {
    EstClient::new(url, &pki.root_der())
        .expect("EST client")
        .with_timeout(timeout)
}

/// TEST-KEY-58
pub fn device_renews_over_est<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    if !generates_p256(&ks) {
        create_or_prove_unsupported::<F>(&ks, DEVICE_KEY, Algorithm::EcdsaP256Sha256);
        return unsupported(Algorithm::EcdsaP256Sha256, "device identity");
    }
    let now = OffsetDateTime::now_utc();
    let pki = FactoryPki::new(now - Duration::days(60));
    let dev_ks = Arc::new(ks);
    let dev_db = Arc::new(PkiDb::open(&pki.path("device-pki.sqlite")).expect("device pki db"));
    // Provisioned 25 days ago for 30 days: due within a 10-day threshold.
    let first = {
        let factory = pki.factory();
        let device = Device::new(&dev_ks, &dev_db, DEVICE_KEY).expect("device");
        Provisioner::new(&factory, operator())
            .with_validity(Duration::days(30))
            .provision(
                &device,
                &so(),
                "CONF-EST-1",
                "line-1",
                now - Duration::days(25),
            )
            .expect("provision")
    };
    assert_eq!(first.installed.key_version, 1);

    let (prod_ks, prod_db) = pki.production();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    let server = EstServer::start(
        prod_ks,
        prod_db,
        operator(),
        listener,
        EstServerConfig::default(),
    )
    .expect("start the EST server");
    let url = format!("https://{}", server.local_addr());
    let renewal = EstRenewal::new(
        Arc::clone(&dev_ks),
        Arc::clone(&dev_db),
        DEVICE_KEY,
        so(),
        est_client(&pki, &url, IO_TIMEOUT),
    )
    .expect("EST renewal");
    // Until the renewal, the old pair is current.
    let current = renewal.current().expect("current").expect("a current pair");
    assert_eq!(current.serial, first.installed.serial);
    assert_eq!(current.key_version, 1);
    assert_eq!(
        dev_ks
            .info(DEVICE_KEY)
            .expect("info")
            .active()
            .map(|v| v.version),
        Some(1)
    );

    let renewed = renewal
        .renew_if_due(Duration::days(10))
        .unwrap_or_else(|e| panic!("EST renewal on {}: {e}", F::NAME))
        .expect("due, so renewed");
    assert_eq!(renewed.key_version, 2);
    assert_ne!(renewed.serial, first.installed.serial);
    assert_eq!(renewal.current().expect("current"), Some(renewed.clone()));
    let info = dev_ks.info(DEVICE_KEY).expect("info");
    let active = info.active().expect("active");
    assert_eq!(active.version, 2);
    assert_eq!(active.origin, Origin::Generated, "generated in {}", F::NAME);
    assert_eq!(
        info.version(1).map(|v| v.state),
        Some(KeyState::Deactivated)
    );
    let new_cert = CertInfo::parse(&renewed.der).expect("renewed certificate");
    assert_eq!(
        active.fingerprint.as_deref(),
        Some(new_cert.spki_fingerprint.as_str()),
        "the new certificate names the new key version"
    );
    assert_eq!(
        dev_ks
            .sign(DEVICE_KEY, b"x", SignatureFormat::Der)
            .expect("sign")
            .version,
        2
    );
    // Nothing left to do while the new certificate is fresh.
    assert_eq!(
        renewal.renew_if_due(Duration::days(10)).expect("not due"),
        None
    );

    // The server goes away: a renewal fails and the current pair stays.
    server.shutdown().expect("EST server shutdown");
    let offline = EstRenewal::new(
        Arc::clone(&dev_ks),
        Arc::clone(&dev_db),
        DEVICE_KEY,
        so(),
        est_client(&pki, &url, StdDuration::from_secs(2)),
    )
    .expect("EST renewal");
    let e = offline
        .renew_at(OffsetDateTime::now_utc())
        .expect_err("a renewal with the server stopped succeeded");
    assert_ne!(e.kind(), ErrorKind::Policy, "{e}");
    assert_eq!(offline.current().expect("current"), Some(renewed.clone()));
    let info = dev_ks.info(DEVICE_KEY).expect("info");
    assert_eq!(info.active().map(|v| v.version), Some(2));
    assert_eq!(
        dev_ks
            .sign(DEVICE_KEY, b"y", SignatureFormat::Der)
            .expect("sign")
            .version,
        2
    );
    Outcome::Passed
}
