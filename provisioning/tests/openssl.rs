//! Interop with the OpenSSL CLI (/usr/bin/openssl): OpenSSL verifies our
//! chains, CSRs and CRLs, and `check_peer` honours a CRL made by
//! `openssl ca -gencrl`. Real time: OpenSSL checks validity against the clock.

mod common;

use common::{custodian, operator, Pki};
use provisioning::{
    pem_decode_all, pem_encode, shared_key_name, Device, PeerVerifier, Provisioner, RejectReason,
    RootCa,
};
use std::path::Path;
use std::process::{Command, Output};
use time::{Duration, OffsetDateTime};

const OPENSSL: &str = "/usr/bin/openssl";

fn openssl(args: &[&str], cwd: &Path) -> Output {
    Command::new(OPENSSL)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {OPENSSL} ({e}); install it with `apt-get install openssl`")
        })
}

fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl failed: {text}");
    text
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[test]
fn openssl_verifies_our_chain_csr_and_crl() {
    let pki = Pki::at(now());
    let f = pki.factory();
    let dir = pki.tmp.path();
    let key = shared_key_name("DEV-OSSL").unwrap();
    let dev = Device::new(&pki.prod.ks, &pki.prod.db, &key).unwrap();
    let p = Provisioner::new(&f, operator())
        .provision(&dev, &operator(), "DEV-OSSL", "line-3", now())
        .unwrap();
    std::fs::write(dir.join("root.pem"), p.issued.root.pem()).unwrap();
    std::fs::write(dir.join("intermediate.pem"), p.issued.intermediate.pem()).unwrap();
    std::fs::write(dir.join("device.pem"), p.issued.certificate.pem()).unwrap();

    // The chain.
    let text = ok(&openssl(
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "device.pem",
        ],
        dir,
    ));
    assert!(text.contains("device.pem: OK"), "{text}");
    // ... with the purpose a device certificate is for.
    ok(&openssl(
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "device.pem",
        ],
        dir,
    ));
    // Without the intermediate the chain does not verify.
    assert!(
        !openssl(&["verify", "-CAfile", "root.pem", "device.pem"], dir)
            .status
            .success()
    );

    // The subject and extensions as OpenSSL reads them.
    let text = ok(&openssl(
        &[
            "x509",
            "-in",
            "device.pem",
            "-noout",
            "-subject",
            "-ext",
            "keyUsage,extendedKeyUsage,basicConstraints",
        ],
        dir,
    ));
    assert!(
        text.contains("CN=DEV-OSSL") || text.contains("CN = DEV-OSSL"),
        "{text}"
    );
    assert!(text.contains("serialNumber"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");

    // The CSR (from the device's keystore key) verifies.
    let (csr, _) = dev.csr("DEV-OSSL").unwrap();
    std::fs::write(
        dir.join("device.csr"),
        pem_encode("CERTIFICATE REQUEST", &csr.der),
    )
    .unwrap();
    let text = ok(&openssl(
        &["req", "-verify", "-in", "device.csr", "-noout"],
        dir,
    ));
    assert!(text.contains("verify OK"), "{text}");
    let text = ok(&openssl(
        &["req", "-in", "device.csr", "-noout", "-subject"],
        dir,
    ));
    assert!(text.contains("DEV-OSSL"), "{text}");
    // A corrupted CSR does not.
    let mut bad = csr.der.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x01;
    std::fs::write(dir.join("bad.csr"), pem_encode("CERTIFICATE REQUEST", &bad)).unwrap();
    // (OpenSSL 3.0 exits 0 here and reports the failure in its output.)
    let out = openssl(&["req", "-verify", "-in", "bad.csr", "-noout"], dir);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() || text.contains("verify failure"),
        "{text}"
    );
    assert!(!text.contains("verify OK"), "{text}");

    // Our CRL, read by OpenSSL: before and after revocation.
    let crl = f.issue_crl(&operator(), now(), Duration::days(7)).unwrap();
    std::fs::write(dir.join("crl.pem"), pem_encode("X509 CRL", &crl)).unwrap();
    let crl_check = [
        "verify",
        "-crl_check",
        "-CAfile",
        "root.pem",
        "-untrusted",
        "intermediate.pem",
        "-CRLfile",
        "crl.pem",
        "device.pem",
    ];
    ok(&openssl(&crl_check, dir));
    let text = ok(&openssl(&["crl", "-in", "crl.pem", "-noout", "-text"], dir));
    assert!(text.contains("CRL Number"), "{text}");
    let crl = f
        .revoke(
            &common::officer(),
            &p.issued.certificate.serial,
            "key-compromise",
            now(),
        )
        .unwrap();
    std::fs::write(dir.join("crl.pem"), pem_encode("X509 CRL", &crl)).unwrap();
    let out = openssl(&crl_check, dir);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("revoked"), "{text}");
    let text = ok(&openssl(&["crl", "-in", "crl.pem", "-noout", "-text"], dir));
    assert!(
        text.to_uppercase()
            .contains(&p.issued.certificate.serial.to_uppercase()),
        "{text}"
    );
    assert!(text.contains("Key Compromise"), "{text}");
}

const CA_CNF: &str = "
[ ca ]
default_ca = line_ca

[ line_ca ]
dir              = .
database         = $dir/index.txt
new_certs_dir    = $dir/newcerts
certificate      = $dir/ca.pem
private_key      = $dir/ca.key
serial           = $dir/serial
crlnumber        = $dir/crlnumber
default_md       = sha256
default_days     = 30
default_crl_days = 7
policy           = any
unique_subject   = no
copy_extensions  = none

[ any ]
commonName   = supplied
serialNumber = optional

[ dev_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
authorityKeyIdentifier = keyid
";

/// An OpenSSL CA whose certificate our offline root signed, issuing a
/// certificate for a keystore device's CSR; `check_peer` honours the CRLs
/// that `openssl ca -gencrl` makes for it.
#[test]
fn openssl_ca_gencrl_is_honoured_by_check_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(keystore_api::ManualClock::new(now()));
    let root_store = common::Store::open(&tmp.path().join("root"), clock.clone());
    let root = RootCa::new(&root_store.ks, &root_store.db);
    root.init(
        &custodian(),
        "Keystore Interop Root",
        Duration::days(365),
        now(),
    )
    .unwrap();
    let ca = tmp.path().join("openssl-ca");
    std::fs::create_dir_all(ca.join("newcerts")).unwrap();
    std::fs::write(ca.join("index.txt"), "").unwrap();
    std::fs::write(ca.join("serial"), "1000\n").unwrap();
    std::fs::write(ca.join("crlnumber"), "1000\n").unwrap();
    std::fs::write(ca.join("ca.cnf"), CA_CNF).unwrap();

    // OpenSSL makes the line CA's key and CSR; our root signs it.
    ok(&openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ca.key",
        ],
        &ca,
    ));
    ok(&openssl(
        &[
            "req",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=OpenSSL Line CA",
            "-out",
            "ca.csr",
        ],
        &ca,
    ));
    let csr_pem = std::fs::read_to_string(ca.join("ca.csr")).unwrap();
    let csr_der = pem_decode_all(&csr_pem, "CERTIFICATE REQUEST")
        .unwrap()
        .remove(0);
    let ca_cert = root
        .sign_intermediate(&custodian(), &csr_der, Duration::days(90), now())
        .unwrap();
    std::fs::write(ca.join("ca.pem"), ca_cert.pem()).unwrap();

    // A device identity in a keystore; OpenSSL's CA issues its certificate.
    let dev_store = common::Store::open(&tmp.path().join("device"), clock);
    let dev = Device::new(&dev_store.ks, &dev_store.db, provisioning::DEVICE_KEY).unwrap();
    let (csr, _) = dev.generate(&operator(), "DEV-LINE-CA").unwrap();
    std::fs::write(
        ca.join("dev.csr"),
        pem_encode("CERTIFICATE REQUEST", &csr.der),
    )
    .unwrap();
    ok(&openssl(
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-extensions",
            "dev_ext",
            "-notext",
            "-in",
            "dev.csr",
            "-out",
            "dev.pem",
        ],
        &ca,
    ));
    let dev_der = pem_decode_all(
        &std::fs::read_to_string(ca.join("dev.pem")).unwrap(),
        "CERTIFICATE",
    )
    .unwrap()
    .remove(0);
    let chain = vec![dev_der, ca_cert.der.clone()];
    let gencrl = |extra: &[&str]| -> Vec<u8> {
        let mut args = vec!["ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem"];
        args.extend_from_slice(extra);
        ok(&openssl(&args, &ca));
        pem_decode_all(
            &std::fs::read_to_string(ca.join("crl.pem")).unwrap(),
            "X509 CRL",
        )
        .unwrap()
        .remove(0)
    };
    let root_crl = root
        .issue_crl(&custodian(), now(), Duration::days(30))
        .unwrap();
    let verifier = |crl: &[u8]| {
        PeerVerifier::new(&root.certificate().unwrap().der)
            .unwrap()
            .with_crl(crl)
            .unwrap()
            .with_crl(&root_crl)
            .unwrap()
    };
    let t = now() + Duration::seconds(2);

    // An empty CRL from OpenSSL: the device is accepted.
    let crl = gencrl(&[]);
    let info = verifier(&crl).check_peer(&chain, t).expect("accepted");
    assert_eq!(info.common_name.as_deref(), Some("DEV-LINE-CA"));

    // A short-lived OpenSSL CRL past its nextUpdate: stale, rejected.
    let crl = gencrl(&["-crlhours", "1"]);
    verifier(&crl).check_peer(&chain, t).unwrap();
    let err = verifier(&crl)
        .check_peer(&chain, t + Duration::hours(2))
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::CrlExpired, "{err}");

    // OpenSSL revokes the device and issues a CRL: rejected as revoked. TEST-KEY-07
    ok(&openssl(
        &[
            "ca",
            "-config",
            "ca.cnf",
            "-revoke",
            "dev.pem",
            "-crl_reason",
            "keyCompromise",
        ],
        &ca,
    ));
    let crl = gencrl(&[]);
    let err = verifier(&crl).check_peer(&chain, t).unwrap_err();
    assert_eq!(err.reason, RejectReason::Revoked, "{err}");
}

/// Item 5 of the security review (REQ-KEY-REV-03, TEST-KEY-07): OpenSSL,
/// checking the CRL of every certificate on the path, agrees with
/// `check_peer` that a device under an intermediate the root revoked is
/// revoked, and accepts it before the revocation.
#[test]
fn openssl_crl_check_all_rejects_a_device_under_a_revoked_intermediate() {
    let pki = Pki::at(now());
    let f = pki.factory();
    let dir = pki.tmp.path();
    let key = shared_key_name("DEV-CHAIN").unwrap();
    let dev = Device::new(&pki.prod.ks, &pki.prod.db, &key).unwrap();
    let p = Provisioner::new(&f, operator())
        .provision(&dev, &operator(), "DEV-CHAIN", "line-3", now())
        .unwrap();
    let inter = p.issued.intermediate.clone();
    std::fs::write(dir.join("root.pem"), p.issued.root.pem()).unwrap();
    std::fs::write(dir.join("intermediate.pem"), inter.pem()).unwrap();
    std::fs::write(dir.join("device.pem"), p.issued.certificate.pem()).unwrap();
    let inter_crl = f.issue_crl(&operator(), now(), Duration::days(7)).unwrap();
    std::fs::write(
        dir.join("intermediate.crl"),
        pem_encode("X509 CRL", &inter_crl),
    )
    .unwrap();
    std::fs::write(dir.join("root.crl"), pem_encode("X509 CRL", &pki.root_crl)).unwrap();
    let check_all = [
        "verify",
        "-crl_check_all",
        "-CAfile",
        "root.pem",
        "-untrusted",
        "intermediate.pem",
        "-CRLfile",
        "root.crl",
        "-CRLfile",
        "intermediate.crl",
        "device.pem",
    ];
    let output = |out: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let chain = vec![p.issued.certificate.der.clone(), inter.der.clone()];
    let ours = |root_crl: &[u8]| {
        PeerVerifier::new(&p.issued.root.der)
            .unwrap()
            .with_crl(root_crl)
            .unwrap()
            .with_crl(&inter_crl)
            .unwrap()
            .check_peer(&chain, now())
    };

    // Before the revocation both accept the device.
    let text = ok(&openssl(&check_all, dir));
    assert!(text.contains("device.pem: OK"), "{text}");
    ours(&pki.root_crl).expect("accepted before the revocation");
    // The whole-path check needs the root's CRL: without it OpenSSL fails too.
    let out = openssl(
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "-CRLfile",
            "intermediate.crl",
            "device.pem",
        ],
        dir,
    );
    assert!(!out.status.success(), "{}", output(&out));
    assert!(
        output(&out).contains("unable to get certificate CRL"),
        "{}",
        output(&out)
    );

    // The custodian revokes the intermediate at a ceremony (the root's store,
    // reopened) and publishes the root's new CRL.
    let root_crl = {
        let root = pki.root_store();
        RootCa::new(&root.ks, &root.db)
            .revoke_intermediate(
                &custodian(),
                &inter.serial,
                "ca-compromise",
                now(),
                Duration::days(30),
            )
            .unwrap()
    };
    std::fs::write(dir.join("root.crl"), pem_encode("X509 CRL", &root_crl)).unwrap();
    let text = ok(&openssl(
        &["crl", "-in", "root.crl", "-noout", "-text"],
        dir,
    ));
    assert!(
        text.to_uppercase().contains(&inter.serial.to_uppercase()),
        "{text}"
    );
    assert!(text.contains("CA Compromise"), "{text}");

    // OpenSSL: the intermediate (depth 1) is revoked, so the device fails.
    let out = openssl(&check_all, dir);
    let text = output(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("error 23 at 1 depth lookup: certificate revoked"),
        "{text}"
    );
    // The device's own certificate is not on any CRL: the leaf-only check
    // (what `check_peer` used to do) would have accepted it.
    let text = ok(&openssl(
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "-CRLfile",
            "intermediate.crl",
            "device.pem",
        ],
        dir,
    ));
    assert!(text.contains("device.pem: OK"), "{text}");
    // And our checker agrees with OpenSSL, naming the intermediate.
    let err = ours(&root_crl).unwrap_err();
    assert_eq!(err.reason, RejectReason::Revoked, "{err}");
    assert_eq!(err.serial.as_deref(), Some(inter.serial.as_str()));
}
