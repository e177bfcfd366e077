//! The device PKI with ECDSA P-384 and Ed25519 keys on soft keystores:
//! root, intermediate, OCSP signer, EST server and device keys of each
//! algorithm (ECDSA P-256 stays the default), chains verified by
//! rustls-webpki (the crate's own path validation, CRLs included) and by
//! `openssl verify -CAfile root.pem -untrusted intermediate.pem`; CRLs
//! checked by `openssl crl -verify`; OCSP responses signed with the new
//! algorithms, verified by the crate's checker and by `openssl ocsp`; CSRs
//! of each algorithm; algorithms the PKI does not take refused before any
//! key is made; an EST renewal over mTLS with the new keys on both ends.

mod common;
mod est_common;

use common::{custodian, officer, operator, Pki, Store};
use keystore_api::{Algorithm, ErrorKind, KeySpec};
use provisioning::{
    ceremony, ocsp_request, pem_decode_all, verify_csr, verify_ocsp_response, CertInfo, Device,
    EstServerConfig, Factory, OcspCertStatus, OcspResponder, PeerVerifier, Provisioned,
    Provisioner, RejectReason, RootCa, DEFAULT_OCSP_SIGNER_VALIDITY, DEFAULT_PKI_ALGORITHM,
    DEVICE_KEY, INTERMEDIATE_KEY, OCSP_SIGNER_KEY, PKI_ALGORITHMS, ROOT_KEY,
};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

const P256: Algorithm = Algorithm::EcdsaP256Sha256;
const P384: Algorithm = Algorithm::EcdsaP384Sha384;
const ED25519: Algorithm = Algorithm::Ed25519;

/// A root of `root_alg` and an intermediate of `factory_alg`, made at
/// `start` (the root's store closed afterwards, its CRL kept), as
/// `common::Pki` holds them.
fn pki_with(start: OffsetDateTime, root_alg: Algorithm, factory_alg: Algorithm) -> Pki {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(keystore_api::ManualClock::new(start));
    let root_dir = tmp.path().join("root");
    let prod = Store::open(&tmp.path().join("production"), clock.clone());
    let root_crl = {
        let root = Store::open(&root_dir, clock.clone());
        let ca = RootCa::new(&root.ks, &root.db).with_key_algorithm(root_alg);
        ca.init(
            &custodian(),
            "Algorithms Root CA",
            Duration::days(3650),
            start,
        )
        .expect("init root");
        assert_eq!(root.ks.info(ROOT_KEY).unwrap().algorithm, root_alg);
        let factory = Factory::new(&prod.ks, &prod.db).with_key_algorithm(factory_alg);
        ceremony(
            &ca,
            &custodian(),
            &factory,
            &officer(),
            "Algorithms Production CA",
            Duration::days(1095),
            start,
        )
        .expect("ceremony");
        ca.issue_crl(&custodian(), start, Duration::days(366))
            .expect("root crl")
    };
    assert_eq!(
        prod.ks.info(INTERMEDIATE_KEY).unwrap().algorithm,
        factory_alg
    );
    Pki {
        tmp,
        clock,
        prod,
        root_dir,
        root_crl,
    }
}

/// Provisions `id` with an identity key of `alg` in the production store.
fn provision(pki: &Pki, id: &str, alg: Algorithm) -> Provisioned {
    let f = pki.factory();
    let key = provisioning::shared_key_name(id).unwrap();
    let dev = Device::new(&pki.prod.ks, &pki.prod.db, &key)
        .unwrap()
        .with_key_algorithm(alg);
    assert_eq!(dev.key_algorithm(), alg);
    let p = Provisioner::new(&f, operator())
        .provision(&dev, &operator(), id, "line-3", pki.now())
        .expect("provision");
    assert_eq!(pki.prod.ks.info(&key).unwrap().algorithm, alg);
    p
}

/// The signature algorithm OID of a certificate, and its SPKI's algorithm
/// OID and curve (if any), as dotted strings.
fn algorithms_of(der: &[u8]) -> (String, String, Option<String>) {
    let (_, cert) = X509Certificate::from_der(der).expect("certificate");
    let spki = &cert.tbs_certificate.subject_pki.algorithm;
    (
        cert.signature_algorithm.algorithm.to_id_string(),
        spki.algorithm.to_id_string(),
        spki.parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string()),
    )
}

/// The X.509 signature algorithm OID a key of `alg` signs with.
fn signature_oid(alg: Algorithm) -> &'static str {
    match alg {
        P256 => "1.2.840.10045.4.3.2",
        P384 => "1.2.840.10045.4.3.3",
        ED25519 => "1.3.101.112",
        other => panic!("unexpected {other}"),
    }
}

/// The SPKI algorithm and curve of a key of `alg`.
fn key_oids(alg: Algorithm) -> (&'static str, Option<&'static str>) {
    match alg {
        P256 => ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")),
        P384 => ("1.2.840.10045.2.1", Some("1.3.132.0.34")),
        ED25519 => ("1.3.101.112", None),
        other => panic!("unexpected {other}"),
    }
}

/// Checks that `der` carries a key of `key_alg` and was signed by a key of
/// `signer_alg`.
fn assert_algorithms(der: &[u8], key_alg: Algorithm, signer_alg: Algorithm) {
    let (sig, key, curve) = algorithms_of(der);
    assert_eq!(
        sig,
        signature_oid(signer_alg),
        "signature of a {key_alg} certificate"
    );
    let (want_key, want_curve) = key_oids(key_alg);
    assert_eq!(key, want_key);
    assert_eq!(curve.as_deref(), want_curve);
}

fn openssl(args: &[&str], cwd: &Path) -> Output {
    Command::new("/usr/bin/openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run /usr/bin/openssl ({e}): `apt-get install openssl`"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn pem(label: &str, der: &[u8]) -> String {
    provisioning::pem_encode(label, der)
}

/// Writes root.pem, intermediate.pem and device.pem into `dir`.
fn write_chain(dir: &Path, p: &Provisioned) {
    std::fs::write(dir.join("root.pem"), p.issued.root.pem()).unwrap();
    std::fs::write(dir.join("intermediate.pem"), p.issued.intermediate.pem()).unwrap();
    std::fs::write(dir.join("device.pem"), p.issued.certificate.pem()).unwrap();
}

/// A webpki verifier trusting the root, with the root's CRL and the
/// intermediate's current one.
fn verifier(pki: &Pki) -> PeerVerifier {
    let f = pki.factory();
    let crl = f
        .issue_crl(&operator(), pki.now(), Duration::days(7))
        .expect("crl");
    PeerVerifier::new(&f.root().unwrap().der)
        .unwrap()
        .with_crl(&pki.root_crl)
        .unwrap()
        .with_crl(&crl)
        .unwrap()
}

fn chain(p: &Provisioned) -> Vec<Vec<u8>> {
    vec![
        p.issued.certificate.der.clone(),
        p.issued.intermediate.der.clone(),
    ]
}

/// A root of `root`, an intermediate of `inter` and devices of each of
/// `devices`: every chain validates with webpki (CRLs for the whole path)
/// and with `openssl verify`, and each certificate carries the expected
/// algorithms.
fn chain_verifies(root: Algorithm, inter: Algorithm, devices: &[Algorithm]) {
    let pki = pki_with(common::t0(), root, inter);
    let dir = pki.tmp.path().join("openssl");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, &alg) in devices.iter().enumerate() {
        let p = provision(&pki, &format!("DEV-{}-{i}", alg.id().to_uppercase()), alg);
        assert_algorithms(&p.issued.root.der, root, root);
        assert_algorithms(&p.issued.intermediate.der, inter, root);
        assert_algorithms(&p.issued.certificate.der, alg, inter);
        let info = verifier(&pki)
            .check_peer(&chain(&p), pki.now())
            .unwrap_or_else(|r| panic!("{root}/{inter}/{alg}: webpki rejects: {r:?}"));
        assert_eq!(
            info.common_name.as_deref(),
            Some(p.installed.device_id.as_str())
        );
        assert_eq!(info.serial, p.issued.certificate.serial);

        write_chain(&dir, &p);
        // OpenSSL checks validity against the wall clock by default; the
        // certificates were made at the test's clock, so check at that time.
        let at = pki.now().unix_timestamp().to_string();
        let out = openssl(
            &[
                "verify",
                "-attime",
                &at,
                "-CAfile",
                "root.pem",
                "-untrusted",
                "intermediate.pem",
                "device.pem",
            ],
            &dir,
        );
        assert!(
            out.status.success() && text(&out).contains("device.pem: OK"),
            "{root}/{inter}/{alg}: {}",
            text(&out)
        );
    }
}

#[test]
fn a_p384_chain_verifies_with_webpki_and_openssl() {
    chain_verifies(P384, P384, &[P384]);
}

#[test]
fn an_ed25519_chain_verifies_with_webpki_and_openssl() {
    chain_verifies(ED25519, ED25519, &[ED25519]);
}

#[test]
fn mixed_chains_verify_with_webpki_and_openssl() {
    chain_verifies(ED25519, P384, &[P256, P384, ED25519]);
    chain_verifies(P256, ED25519, &[P384]);
}

#[test]
fn the_default_is_still_ecdsa_p256() {
    assert_eq!(DEFAULT_PKI_ALGORITHM, P256);
    assert_eq!(EstServerConfig::default().server_key_algorithm, P256);
    let pki = Pki::new();
    let f = pki.factory();
    assert_eq!(f.key_algorithm(), P256);
    assert_eq!(pki.prod.ks.info(INTERMEDIATE_KEY).unwrap().algorithm, P256);
    let root = pki.root_store();
    assert_eq!(RootCa::new(&root.ks, &root.db).key_algorithm(), P256);
    assert_eq!(root.ks.info(ROOT_KEY).unwrap().algorithm, P256);
    let dev = Device::new(&pki.prod.ks, &pki.prod.db, "device.d.identity").unwrap();
    assert_eq!(dev.key_algorithm(), P256);
    let p = Provisioner::new(&f, operator())
        .provision(&dev, &operator(), "D", "line-1", pki.now())
        .unwrap();
    assert_algorithms(&p.issued.certificate.der, P256, P256);
    f.issue_ocsp_signer(&officer(), "OCSP", DEFAULT_OCSP_SIGNER_VALIDITY, pki.now())
        .unwrap();
    assert_eq!(pki.prod.ks.info(OCSP_SIGNER_KEY).unwrap().algorithm, P256);
}

#[test]
fn crls_signed_by_p384_and_ed25519_cas_verify_with_openssl_and_webpki() {
    for alg in [P384, ED25519] {
        let pki = pki_with(common::t0(), alg, alg);
        let f = pki.factory();
        let good = provision(&pki, "DEV-GOOD", alg);
        let bad = provision(&pki, "DEV-BAD", alg);
        let crl = f
            .revoke(
                &officer(),
                &bad.issued.certificate.serial,
                "key-compromise",
                pki.now(),
            )
            .expect("revoke");
        let dir = pki.tmp.path().join("crl");
        std::fs::create_dir_all(&dir).unwrap();
        write_chain(&dir, &bad);
        std::fs::write(dir.join("inter-crl.pem"), pem("X509 CRL", &crl)).unwrap();
        std::fs::write(dir.join("root-crl.pem"), pem("X509 CRL", &pki.root_crl)).unwrap();
        for (file, ca) in [
            ("inter-crl.pem", "intermediate.pem"),
            ("root-crl.pem", "root.pem"),
        ] {
            let out = openssl(
                &[
                    "crl", "-in", file, "-CAfile", ca, "-noout", "-verify", "-text",
                ],
                &dir,
            );
            let t = text(&out);
            assert!(
                out.status.success() && t.contains("verify OK"),
                "{alg} {file}: {t}"
            );
            let want = if alg == P384 {
                "ecdsa-with-SHA384"
            } else {
                "ED25519"
            };
            assert!(t.contains(want), "{alg} {file}: want {want} in {t}");
        }
        let inter_crl = openssl(&["crl", "-in", "inter-crl.pem", "-noout", "-text"], &dir);
        assert!(
            text(&inter_crl)
                .to_lowercase()
                .contains(&bad.issued.certificate.serial),
            "{}",
            text(&inter_crl)
        );
        // OpenSSL, checking CRLs for the whole path, rejects the revoked
        // device and accepts the other.
        let at = pki.now().unix_timestamp().to_string();
        let verify = |dev: &str| {
            openssl(
                &[
                    "verify",
                    "-attime",
                    &at,
                    "-crl_check_all",
                    "-CAfile",
                    "root.pem",
                    "-untrusted",
                    "intermediate.pem",
                    "-CRLfile",
                    "inter-crl.pem",
                    "-CRLfile",
                    "root-crl.pem",
                    dev,
                ],
                &dir,
            )
        };
        let out = verify("device.pem");
        assert!(!out.status.success(), "{alg}: revoked yet {}", text(&out));
        assert!(text(&out).contains("certificate revoked"), "{}", text(&out));
        std::fs::write(dir.join("good.pem"), good.issued.certificate.pem()).unwrap();
        let out = verify("good.pem");
        assert!(out.status.success(), "{alg}: {}", text(&out));
        // webpki checks the CRL's signature and finds the revocation.
        let v = PeerVerifier::new(&f.root().unwrap().der)
            .unwrap()
            .with_crl(&pki.root_crl)
            .unwrap()
            .with_crl(&crl)
            .unwrap();
        let r = v.check_peer(&chain(&bad), pki.now()).unwrap_err();
        assert_eq!(r.reason, RejectReason::Revoked, "{alg}: {r:?}");
        v.check_peer(&chain(&good), pki.now())
            .unwrap_or_else(|r| panic!("{alg}: {r:?}"));
    }
}

#[test]
fn ocsp_responses_signed_with_p384_and_ed25519_verify_here_and_with_openssl() {
    use der::{Decode, Encode};
    for alg in [P384, ED25519] {
        // Real time: OpenSSL checks the response's times against the clock.
        let pki = pki_with(OffsetDateTime::now_utc(), P256, alg);
        let f = pki.factory().with_key_algorithm(alg);
        let signer = f
            .issue_ocsp_signer(
                &officer(),
                "OCSP Responder",
                DEFAULT_OCSP_SIGNER_VALIDITY,
                pki.now(),
            )
            .expect("OCSP signer");
        assert_eq!(pki.prod.ks.info(OCSP_SIGNER_KEY).unwrap().algorithm, alg);
        assert_algorithms(&signer.der, alg, alg);
        let dev = provision(&pki, "DEV-OCSP", P256);
        let cert = &dev.issued.certificate.der;
        let issuer = &dev.issued.intermediate.der;
        let nonce = [9u8; 16];
        let req = ocsp_request(cert, issuer, Some(&nonce)).unwrap();
        let now = pki.now();
        let resp = OcspResponder::new(pki.factory()).respond(&req, now);
        let a = verify_ocsp_response(&resp, cert, issuer, now, Some(&nonce))
            .unwrap_or_else(|r| panic!("{alg}: {r:?}"));
        assert_eq!(a.status, OcspCertStatus::Good);
        assert!(a.delegated);

        // The AlgorithmIdentifier: ecdsa-with-SHA384 or id-Ed25519, no parameters.
        let outer = x509_ocsp::OcspResponse::from_der(&resp).unwrap();
        let bytes = outer.response_bytes.expect("a successful response");
        let basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
        assert_eq!(
            basic.signature_algorithm.oid.to_string(),
            signature_oid(alg)
        );
        assert!(basic.signature_algorithm.parameters.is_none(), "{alg}");
        if alg == ED25519 {
            assert_eq!(basic.signature.raw_bytes().len(), 64);
        }
        // A flipped bit in the signature: the checker refuses.
        let mut tampered = basic.clone();
        let mut sig = basic.signature.raw_bytes().to_vec();
        sig[10] ^= 1;
        tampered.signature = der::asn1::BitString::from_bytes(&sig).unwrap();
        let tampered = x509_ocsp::OcspResponse::successful(tampered)
            .unwrap()
            .to_der()
            .unwrap();
        let r = verify_ocsp_response(&tampered, cert, issuer, now, Some(&nonce)).unwrap_err();
        assert_eq!(r.reason, RejectReason::BadSignature, "{alg}: {r:?}");

        // OpenSSL verifies the delegated signature, its path and the status.
        let dir = pki.tmp.path().join("ocsp");
        std::fs::create_dir_all(&dir).unwrap();
        write_chain(&dir, &dev);
        std::fs::write(dir.join("resp.der"), &resp).unwrap();
        let out = openssl(
            &[
                "ocsp",
                "-respin",
                "resp.der",
                "-issuer",
                "intermediate.pem",
                "-cert",
                "device.pem",
                "-CAfile",
                "root.pem",
                "-resp_text",
                // The request was ours (its nonce checked above), not OpenSSL's.
                "-no_nonce",
            ],
            &dir,
        );
        let t = text(&out);
        assert!(t.contains("Response verify OK"), "{alg}: {t}");
        assert!(t.contains("device.pem: good"), "{alg}: {t}");
        let want = if alg == P384 {
            "ecdsa-with-SHA384"
        } else {
            "ED25519"
        };
        assert!(t.contains(want), "{alg}: want {want} in {t}");
    }
}

#[test]
fn csrs_of_each_pki_algorithm_are_verified_and_others_refused() {
    for (alg, rcgen_alg) in [
        (P256, &rcgen::PKCS_ECDSA_P256_SHA256),
        (P384, &rcgen::PKCS_ECDSA_P384_SHA384),
        (ED25519, &rcgen::PKCS_ED25519),
    ] {
        let key = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "DEV-CSR");
        let csr = params.serialize_request(&key).unwrap();
        let v = verify_csr(csr.der()).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(v.public_key.algorithm(), alg);
        assert_eq!(
            v.public_key.spki_der(),
            rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        );
        // A flipped bit in the signature: Integrity.
        let mut bad = csr.der().to_vec();
        let n = bad.len();
        bad[n - 3] ^= 1;
        let e = verify_csr(&bad).unwrap_err();
        assert!(
            e.is(ErrorKind::Integrity) || e.is(ErrorKind::InvalidInput),
            "{alg}: {e}"
        );
    }
    // P-521 is no PKI algorithm.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let e = verify_csr(csr.der()).unwrap_err();
    assert!(e.is(ErrorKind::Unsupported), "{e}");
}

#[test]
fn algorithms_the_pki_does_not_take_are_refused_before_any_key_is_made() {
    let refused = [
        Algorithm::Rsa2048PssSha256,
        Algorithm::MlDsa65,
        Algorithm::EcdhP256,
        Algorithm::HmacSha256,
        Algorithm::Aes256Gcm,
    ];
    for alg in refused {
        assert!(!PKI_ALGORITHMS.contains(&alg));
    }
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(keystore_api::ManualClock::new(common::t0()));
    let root = Store::open(&tmp.path().join("root"), clock.clone());
    for alg in refused {
        let e = RootCa::new(&root.ks, &root.db)
            .with_key_algorithm(alg)
            .init(&custodian(), "Root", Duration::days(365), common::t0())
            .unwrap_err();
        assert!(e.is(ErrorKind::Unsupported), "{alg}: {e}");
        assert!(e.to_string().contains(alg.id()), "{e}");
        assert!(root.ks.info(ROOT_KEY).unwrap_err().is(ErrorKind::NotFound));
    }
    let prod = Store::open(&tmp.path().join("production"), clock.clone());
    for alg in refused {
        let f = Factory::new(&prod.ks, &prod.db).with_key_algorithm(alg);
        let e = f.request_intermediate(&officer(), "Inter").unwrap_err();
        assert!(e.is(ErrorKind::Unsupported), "{alg}: {e}");
        assert!(prod
            .ks
            .info(INTERMEDIATE_KEY)
            .unwrap_err()
            .is(ErrorKind::NotFound));
        let dev = Device::new(&prod.ks, &prod.db, "device.x.identity")
            .unwrap()
            .with_key_algorithm(alg);
        let e = dev.generate(&operator(), "X").unwrap_err();
        assert!(e.is(ErrorKind::Unsupported), "{alg}: {e}");
        assert!(prod
            .ks
            .info("device.x.identity")
            .unwrap_err()
            .is(ErrorKind::NotFound));
    }
    // An ML-DSA key made outside the PKI cannot sign for it either.
    prod.ks
        .create(
            &officer(),
            "device.m.identity",
            KeySpec::new(Algorithm::MlDsa65),
        )
        .expect("ml-dsa-65 on soft");
    let dev = Device::new(&prod.ks, &prod.db, "device.m.identity").unwrap();
    let e = dev.csr("M").unwrap_err();
    assert!(e.is(ErrorKind::Unsupported), "{e}");
}

#[test]
fn est_renews_a_p384_device_against_an_ed25519_server_key() {
    use est_common::*;
    let pki = pki_with(now() - Duration::days(60), P384, P384);
    // An algorithm outside the PKI's is refused before the server starts.
    let mut config = EstServerConfig::default();
    config.server_key_algorithm = Algorithm::MlDsa65;
    let (ks, db) = production(&pki);
    let Err(e) = provisioning::EstServer::start(ks, db, operator(), listener(), config) else {
        panic!("an ml-dsa-65 server key is refused");
    };
    assert!(e.is(ErrorKind::Unsupported), "{e}");
    let mut config = EstServerConfig::default();
    config.server_key_algorithm = ED25519;
    let server = serve_on(&pki, listener(), config);
    assert_eq!(
        production(&pki)
            .0
            .info(provisioning::EST_SERVER_KEY)
            .unwrap()
            .algorithm,
        ED25519
    );
    let dev = soft_device(&pki, "device", "DEV-EST-384");
    let device = Device::new(&dev.ks, &dev.db, DEVICE_KEY)
        .unwrap()
        .with_key_algorithm(P384);
    let at = now() - Duration::days(25);
    Provisioner::new(&pki.factory(), operator())
        .with_validity(Duration::days(30))
        .provision(&device, &officer(), &dev.id, "line-1", at)
        .expect("provision");
    let renewed = renewal(&pki, &dev, &url(&server))
        .renew_if_due(Duration::days(10))
        .expect("renewal over EST")
        .expect("due");
    assert_eq!(renewed.key_version, 2);
    assert_eq!(dev.ks.info(DEVICE_KEY).unwrap().algorithm, P384);
    assert_algorithms(&renewed.der, P384, P384);
    let chain = pem_decode_all(&renewed.chain_pem, "CERTIFICATE").unwrap();
    let crl = pki
        .factory()
        .issue_crl(&officer(), now(), Duration::days(7))
        .unwrap();
    PeerVerifier::new(&pki.factory().root().unwrap().der)
        .unwrap()
        .with_crl(&crl)
        .unwrap()
        .with_crl(&pki.root_crl)
        .unwrap()
        .check_peer(&chain, now())
        .expect("the renewed chain validates");
    let _ = CertInfo::parse(&renewed.der).unwrap();
}
