//! EST interop with the OpenSSL and curl command-line tools: keys and CSRs
//! made by OpenSSL, enrolled with `curl -u` (simpleenroll) and re-enrolled
//! with `curl --cert/--key` (simplereenroll); answers read back with
//! `openssl pkcs7`. Then the refusals, each with its HTTP status and the
//! server answering afterwards, and every one of them in the PKI event log.

mod common;
mod est_common;

use base64::Engine;
use common::{officer, operator};
use est_common::*;
use keystore_api::{Role, SecretBytes};
use provisioning::{DeviceRequest, EstServerConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use time::Duration;

const OP_SECRET: &str = "operator secret for the EST tests";

fn run(dir: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An OpenSSL P-256 key in `name`.
fn key(dir: &Path, name: &str) {
    run(
        dir,
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ],
    );
}

/// An OpenSSL CSR for `key` and `subj`: DER in `NAME.der`, base64 in `NAME.b64`.
fn csr(dir: &Path, key: &str, subj: &str, name: &str) -> Vec<u8> {
    let der = format!("{name}.der");
    run(
        dir,
        "openssl",
        &[
            "req", "-new", "-key", key, "-subj", subj, "-outform", "DER", "-out", &der,
        ],
    );
    run(
        dir,
        "openssl",
        &["base64", "-in", &der, "-out", &format!("{name}.b64")],
    );
    std::fs::read(dir.join(der)).unwrap()
}

/// A curl call to the server; returns the HTTP status (0: no HTTP answer)
/// and the body.
struct Curl {
    dir: PathBuf,
    base: String,
}

impl Curl {
    fn call(&self, path: &str, extra: &[&str]) -> (u16, String) {
        let url = format!("{}/.well-known/est/{path}", self.base);
        let out = Command::new("curl")
            .args(["-s", "--max-time", "20", "--cacert", "root.pem"])
            .args(["-o", "answer.txt", "-w", "%{http_code}"])
            .args(extra)
            .arg(&url)
            .current_dir(&self.dir)
            .output()
            .expect("run curl");
        let code = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let body = std::fs::read_to_string(self.dir.join("answer.txt")).unwrap_or_default();
        let _ = std::fs::remove_file(self.dir.join("answer.txt"));
        (code, body)
    }

    fn post(&self, path: &str, body_file: &str, extra: &[&str]) -> (u16, String) {
        let data = format!("@{body_file}");
        let mut args = vec![
            "--data-binary",
            &data,
            "-H",
            "Content-Type: application/pkcs10",
        ];
        args.extend_from_slice(extra);
        self.call(path, &args)
    }

    /// The certificates of a certs-only answer, as `openssl pkcs7` prints them.
    fn certs(&self, body: &str, out: &str) -> String {
        let clean: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(clean)
            .expect("a base64 answer");
        std::fs::write(self.dir.join("answer.p7"), der).unwrap();
        run(
            &self.dir,
            "openssl",
            &[
                "pkcs7",
                "-inform",
                "DER",
                "-in",
                "answer.p7",
                "-print_certs",
                "-out",
                out,
            ],
        );
        std::fs::read_to_string(self.dir.join(out)).unwrap()
    }

    fn still_answers(&self) {
        let (code, _) = self.call("cacerts", &[]);
        assert_eq!(code, 200, "the server answers after the last request");
    }
}

#[test]
fn curl_and_openssl_enroll_reenroll_and_every_refusal_has_its_status() {
    let pki = pki();
    pki.prod
        .ks
        .set_role_credential(
            None,
            Role::SecurityOfficer,
            &SecretBytes::from_slice(b"so secret 123"),
        )
        .unwrap();
    pki.prod
        .ks
        .set_role_credential(
            Some(&officer()),
            Role::Operator,
            &SecretBytes::from_slice(OP_SECRET.as_bytes()),
        )
        .unwrap();
    let mut config = EstServerConfig::default();
    config.enroll = true;
    let server = serve_on(&pki, listener(), config);
    let dir = pki.path("interop");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("root.pem"), pki.factory().root().unwrap().pem()).unwrap();
    let c = Curl {
        dir: dir.clone(),
        base: url(&server),
    };

    // cacerts: the intermediate and the root, certs-only, no authentication.
    let (code, body) = c.call("cacerts", &[]);
    assert_eq!(code, 200, "{body}");
    let cas = c.certs(&body, "cas.pem");
    assert!(
        cas.contains("Keystore Test Production CA") && cas.contains("Keystore Test Root CA"),
        "{cas}"
    );

    // simpleenroll with the operator's credential; an OpenSSL key and CSR.
    key(&dir, "k1.pem");
    csr(&dir, "k1.pem", "/CN=OSSL-1/serialNumber=OSSL-1", "csr1");
    let auth = format!("station-3:{OP_SECRET}");
    assert_eq!(
        c.post("simpleenroll", "csr1.b64", &[]).0,
        401,
        "no credential"
    );
    assert_eq!(
        c.post("simpleenroll", "csr1.b64", &["-u", "station-3:wrong"])
            .0,
        401
    );
    let (code, body) = c.post("simpleenroll", "csr1.b64", &["-u", &auth]);
    assert_eq!(code, 200, "{body}");
    c.certs(&body, "dev1.pem");
    c.call("cacerts", &[]); // keep the intermediate for `openssl verify`
    std::fs::write(
        dir.join("inter.pem"),
        pki.factory().intermediate().unwrap().pem(),
    )
    .unwrap();
    run(
        &dir,
        "openssl",
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "inter.pem",
            "dev1.pem",
        ],
    );

    // simplereenroll, exactly as the issue has it: curl --cert/--key.
    key(&dir, "k2.pem");
    csr(&dir, "k2.pem", "/CN=OSSL-1/serialNumber=OSSL-1", "csr2");
    let id1 = ["--cert", "dev1.pem", "--key", "k1.pem"];
    let (code, body) = c.post("simplereenroll", "csr2.b64", &id1);
    assert_eq!(code, 200, "{body}");
    c.certs(&body, "dev2.pem");
    run(
        &dir,
        "openssl",
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "inter.pem",
            "dev2.pem",
        ],
    );
    let pubkey = |args: &[&str]| String::from_utf8(run(&dir, "openssl", args).stdout).unwrap();
    assert_eq!(
        pubkey(&["x509", "-in", "dev2.pem", "-noout", "-pubkey"]),
        pubkey(&["pkey", "-in", "k2.pem", "-pubout"]),
        "the new certificate certifies the new OpenSSL key"
    );
    let id2 = ["--cert", "dev2.pem", "--key", "k2.pem"];

    refusals(&pki, &c, &id2);
    let events = factory_events(&pki);
    let refused: Vec<&String> = events
        .iter()
        .filter(|(e, _)| e == "est-refused")
        .map(|(_, d)| d)
        .collect();
    for status in ["(400)", "(401)", "(403)", "(409)", "(413)", "(415)"] {
        assert!(
            refused.iter().any(|d| d.contains(status)),
            "{status} logged: {refused:#?}"
        );
    }
    assert!(events
        .iter()
        .any(|(e, d)| e == "provision" && d.contains("operator station-3")));
    assert!(events
        .iter()
        .any(|(e, d)| e == "renew" && d.contains("operator est")));
    server.shutdown().unwrap();
}

/// Every refusal, with the server still answering after each.
fn refusals(pki: &common::Pki, c: &Curl, id2: &[&str]) {
    let dir = &c.dir;
    // The request itself.
    std::fs::write(dir.join("garbage.b64"), "this is not base64 !!!").unwrap();
    assert_eq!(
        c.post("simplereenroll", "garbage.b64", id2).0,
        400,
        "garbage"
    );
    std::fs::write(dir.join("notcsr.b64"), "AAECAwQFBgcICQ==").unwrap();
    assert_eq!(
        c.post("simplereenroll", "notcsr.b64", id2).0,
        400,
        "not a CSR"
    );
    key(dir, "k3.pem");
    let der = csr(dir, "k3.pem", "/CN=OSSL-1/serialNumber=OSSL-1", "csr3");
    let mut bad = der.clone();
    *bad.last_mut().unwrap() ^= 0x01; // inside the signature
    std::fs::write(
        dir.join("badpop.b64"),
        base64::engine::general_purpose::STANDARD.encode(&bad),
    )
    .unwrap();
    let (code, body) = c.post("simplereenroll", "badpop.b64", id2);
    assert_eq!(
        (code, body.contains("proof of possession")),
        (400, true),
        "{body}"
    );
    let typed = [
        "--data-binary",
        "@csr3.b64",
        "-H",
        "Content-Type: text/plain",
    ];
    assert_eq!(c.call("simplereenroll", &[&typed[..], id2].concat()).0, 415);
    std::fs::write(dir.join("big.b64"), "A".repeat(70 * 1024)).unwrap();
    assert_eq!(c.post("simplereenroll", "big.b64", id2).0, 413, "too large");
    assert_eq!(c.call("simplereenroll", id2).0, 405, "GET");
    assert_eq!(c.call("nothing-here", &[]).0, 404);
    c.still_answers();

    // Who asks.
    assert_eq!(
        c.post("simplereenroll", "csr3.b64", &[]).0,
        401,
        "no certificate"
    );
    key(dir, "k4.pem");
    csr(dir, "k4.pem", "/CN=OTHER-9/serialNumber=OTHER-9", "csr4");
    let (code, body) = c.post("simplereenroll", "csr4.b64", id2);
    assert_eq!((code, body.contains("differs")), (403, true), "{body}");
    csr(dir, "k2.pem", "/CN=OSSL-1/serialNumber=OSSL-1", "same-key");
    assert_eq!(
        c.post("simplereenroll", "same-key.b64", id2).0,
        409,
        "the current key"
    );
    csr(dir, "k1.pem", "/CN=OSSL-1/serialNumber=OSSL-1", "old-key");
    assert_eq!(
        c.post("simplereenroll", "old-key.b64", id2).0,
        409,
        "an issued key"
    );
    c.still_answers();

    // Another CA's certificate, with the device's very subject.
    run(
        dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "evil.key",
            "-out",
            "evil.pem",
            "-days",
            "30",
            "-subj",
            "/CN=OSSL-1/serialNumber=OSSL-1",
        ],
    );
    let evil = ["--cert", "evil.pem", "--key", "evil.key"];
    let (code, body) = c.post("simplereenroll", "csr3.b64", &evil);
    assert_eq!(
        (code, body.contains("not issued by this CA")),
        (403, true),
        "{body}"
    );

    // An expired certificate (issued 40 days ago for 30 days).
    key(dir, "k5.pem");
    let der5 = csr(dir, "k5.pem", "/CN=OSSL-5/serialNumber=OSSL-5", "csr5");
    let old = pki
        .factory()
        .provision(
            &operator(),
            &DeviceRequest {
                device_id: "OSSL-5",
                operator: "line-1",
                csr_der: &der5,
                key_version: 1,
                validity: Duration::days(30),
                device_backend: None,
            },
            now() - Duration::days(40),
        )
        .unwrap();
    std::fs::write(dir.join("dev5.pem"), old.certificate.pem()).unwrap();
    key(dir, "k6.pem");
    csr(dir, "k6.pem", "/CN=OSSL-5/serialNumber=OSSL-5", "csr6");
    let (code, body) = c.post(
        "simplereenroll",
        "csr6.b64",
        &["--cert", "dev5.pem", "--key", "k5.pem"],
    );
    assert_eq!((code, body.contains("expired")), (403, true), "{body}");

    // A revoked certificate.
    let serial = pki
        .factory()
        .certificates("OSSL-1")
        .unwrap()
        .last()
        .unwrap()
        .serial
        .clone();
    pki.factory()
        .revoke(&officer(), &serial, "key-compromise", now())
        .unwrap();
    let (code, body) = c.post("simplereenroll", "csr3.b64", id2);
    assert_eq!((code, body.contains("revoked")), (403, true), "{body}");

    // Not TLS at all.
    let addr = c.base.trim_start_matches("https://");
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut raw, b"GET / HTTP/1.1\r\n\r\n\x00\xff garbage").unwrap();
    drop(raw);
    c.still_answers();
}
