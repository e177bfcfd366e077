//! `keyctl ca ocsp-signer` and `keyctl ocsp serve` as real processes, the
//! responder queried by the OpenSSL CLI (/usr/bin/openssl) on 127.0.0.1
//! (REQ-KEY-REV-03, REQ-KEY-CERT-01; TEST-KEY-07).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use test_support::keyctl::{all_text as text, assert_ok, s, Credential, KeyFileStore, Keyctl};

const OPENSSL: &str = "/usr/bin/openssl";
const SO_SECRET: &str = "officer credential for tests";
const ROOT_SECRET: &str = "root custodian credential for tests";
const SO: Credential = Credential::officer(SO_SECRET).by("officer-1");
const OP: Credential = Credential::operator("operator credential for tests").by("station-3");

fn keyctl() -> Command {
    Keyctl::new(env!("CARGO_BIN_EXE_keyctl")).command()
}

/// A production store with an intermediate signed by an offline root.
fn factory() -> KeyFileStore {
    let st = KeyFileStore::create(
        Keyctl::new(env!("CARGO_BIN_EXE_keyctl")),
        "production",
        "production.key",
        SO,
    );
    st.set_role(OP);
    let (root, root_key) = (st.path("root-ca"), st.path("root.key"));
    assert_ok(
        &keyctl()
            .args(["ca", "init-root", "--root-store", s(&root)])
            .args(["--new-root-key-file", s(&root_key), "--cn", "Test Root CA"])
            .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
            .output()
            .unwrap(),
    );
    assert_ok(
        &st.so()
            .args(["ca", "sign-intermediate", "--root-store", s(&root)])
            .args([
                "--root-key-file",
                s(&root_key),
                "--cn",
                "Test Production CA",
            ])
            .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
            .output()
            .unwrap(),
    );
    st
}

/// `keyctl ocsp serve` as a child process: killed and reaped when dropped.
struct Server {
    child: Option<Child>,
    addr: String,
    stdout: mpsc::Receiver<String>,
}

impl Server {
    fn start(st: &KeyFileStore, extra: &[&str]) -> Server {
        let mut child = st
            .bare()
            .args(["ocsp", "serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
            stdout,
        };
        let first = server
            .stdout
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no address from `ocsp serve`: {}", server.stderr()));
        let addr = first
            .split("listening on http://")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("{first}"));
        assert!(addr.starts_with("127.0.0.1:"), "{first}");
        assert!(first.contains("'CN=Test Production CA'"), "{first}");
        server.addr = addr.to_string();
        server
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the child wrote to stderr (after it exited or was killed).
    fn stderr(&mut self) -> String {
        let Some(mut c) = self.child.take() else {
            return String::new();
        };
        let _ = c.kill();
        let out = c.wait_with_output().unwrap();
        text(&out)
    }

    /// SIGTERM, then the exit status within 20 seconds.
    fn terminate(mut self) -> (bool, Vec<String>) {
        let mut c = self.child.take().unwrap();
        let killed = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                break c.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest = self.stdout.try_iter().collect();
        (status.success(), rest)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `openssl ocsp` against `url` for the device certificate `cert`, bounded.
fn query(pki: &Path, cert: &Path, url: &str) -> String {
    let mut child = Command::new(OPENSSL)
        .args([
            "ocsp",
            "-issuer",
            s(&pki.join("intermediate.pem")),
            "-cert",
            s(cert),
        ])
        .args([
            "-url",
            url,
            "-CAfile",
            s(&pki.join("root.pem")),
            "-resp_text",
        ])
        .args(["-timeout", "10"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out: Output = child.wait_with_output().unwrap();
    text(&out)
}

fn cert_of(st: &KeyFileStore, id: &str) -> PathBuf {
    st.store.join("provisioned").join(id).join("cert.pem")
}

#[test]
fn ocsp_signer_then_serve_answers_openssl_good_then_revoked() {
    let st = factory();
    // Only the security officer issues the delegated signer.
    let out = st.with(OP).args(["ca", "ocsp-signer"]).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let out = st
        .so()
        .args(["ca", "ocsp-signer", "--validity-days", "91"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = assert_ok(&st.so().args(["ca", "ocsp-signer"]).output().unwrap());
    assert!(
        out.contains("OCSP signer 'CN=Keystore OCSP Responder'"),
        "{out}"
    );
    let pki = st.store.join("pki");
    let signer = pki.join("ocsp-signer.pem");
    let t = text(
        &Command::new(OPENSSL)
            .args([
                "x509",
                "-in",
                s(&signer),
                "-noout",
                "-ext",
                "extendedKeyUsage,noCheck",
            ])
            .output()
            .unwrap(),
    );
    assert!(t.contains("OCSP Signing") && t.contains("No Check"), "{t}");
    let t = assert_ok(
        &st.so()
            .args(["key", "show", "pki.ocsp-signer"])
            .output()
            .unwrap(),
    );
    assert!(t.contains("ecdsa-p256-sha256"), "{t}");

    // The responder, then a device whose certificate names it (AIA).
    let server = Server::start(&st, &["--next-update", "30m"]);
    let out = st
        .with(OP)
        .args([
            "provision",
            "--device-id",
            "DEV-OCSP",
            "--operator",
            "line-3",
        ])
        .args(["--ocsp-url", &server.url()])
        .output()
        .unwrap();
    assert_ok(&out);
    let cert = cert_of(&st, "DEV-OCSP");
    let t = text(
        &Command::new(OPENSSL)
            .args(["x509", "-in", s(&cert), "-noout", "-ocsp_uri"])
            .output()
            .unwrap(),
    );
    assert!(t.contains(&server.url()), "{t}");

    let out = query(&pki, &cert, &server.url());
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(out.contains(&format!("{}: good", cert.display())), "{out}");
    assert!(out.contains("OCSP Nonce"), "{out}");

    // Revoked by another process while the responder runs.
    assert_ok(
        &st.so()
            .args([
                "ca",
                "revoke",
                "--device-id",
                "DEV-OCSP",
                "--reason",
                "key-compromise",
            ])
            .output()
            .unwrap(),
    );
    let out = query(&pki, &cert, &server.url());
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(
        out.contains(&format!("{}: revoked", cert.display())),
        "{out}"
    );

    // SIGTERM: a graceful stop.
    let (ok, rest) = server.terminate();
    assert!(ok, "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("OCSP responder stopped")),
        "{rest:?}"
    );
}

#[test]
fn ocsp_serve_without_a_signer_fails_clearly() {
    let st = factory();
    let out = st
        .bare()
        .args(["ocsp", "serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("ca ocsp-signer"), "{}", text(&out));
}
