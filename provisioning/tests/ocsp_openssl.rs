//! OCSP interop with the OpenSSL CLI (/usr/bin/openssl):
//!
//! - `openssl ocsp -issuer intermediate.pem -cert device.pem -url … -CAfile
//!   root.pem -resp_text` against our responder on 127.0.0.1: it verifies
//!   our delegated signature and reads good, then revoked;
//! - our checker against OpenSSL's responder (`openssl ocsp -index index.txt
//!   -rsigner … -rkey … -CA …`) over a test PKI OpenSSL made. OpenSSL 3.0's
//!   `-port` takes a bare number and listens on every interface, so its
//!   responder is run per request (`-reqin`/`-respout`) behind a relay that
//!   listens on 127.0.0.1 only: the answers (status lookup in the index,
//!   signature, nonce echo, times) are OpenSSL's, the HTTP transport the
//!   relay's.
//!
//! Real time throughout (OpenSSL checks validity against the clock); every
//! child process is waited for with a deadline and killed on drop.

mod common;

use common::{officer, operator, Pki};
use provisioning::{
    pem_decode_all, serve_ocsp, shared_key_name, Device, OcspResponder, OcspServerConfig,
    OcspShutdown, PeerVerifier, Provisioner, RejectReason, RevocationPolicy,
    DEFAULT_OCSP_SIGNER_VALIDITY,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

const OPENSSL: &str = "/usr/bin/openssl";

/// A child process, killed and reaped when dropped.
struct Reaped(Option<Child>);

impl Reaped {
    /// Waits at most `limit` for the output; kills the child after that.
    fn output(mut self, limit: Duration) -> Output {
        let mut child = self.0.take().expect("child");
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `openssl ARGS` in `cwd`, bounded to 30 seconds.
fn openssl(args: &[&str], cwd: &Path) -> Output {
    let child = Command::new(OPENSSL)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {OPENSSL} ({e}): `apt-get install openssl`"));
    Reaped(Some(child)).output(Duration::from_secs(30))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: &Output) -> String {
    let t = text(out);
    assert!(out.status.success(), "openssl failed: {t}");
    t
}

#[test]
fn openssl_ocsp_client_verifies_our_responder() {
    let pki = Pki::at(OffsetDateTime::now_utc());
    let f = pki.factory();
    f.issue_ocsp_signer(
        &officer(),
        "Test OCSP Responder",
        DEFAULT_OCSP_SIGNER_VALIDITY,
        pki.now(),
    )
    .unwrap();
    let key = shared_key_name("DEV-OSSL").unwrap();
    let dev = Device::new(&pki.prod.ks, &pki.prod.db, &key).unwrap();
    let issued = Provisioner::new(&f, operator())
        .provision(&dev, &operator(), "DEV-OSSL", "line-3", pki.now())
        .unwrap()
        .issued;
    let dir = pki.tmp.path().to_path_buf();
    std::fs::write(dir.join("root.pem"), issued.root.pem()).unwrap();
    std::fs::write(dir.join("intermediate.pem"), issued.intermediate.pem()).unwrap();
    std::fs::write(dir.join("device.pem"), issued.certificate.pem()).unwrap();

    let query = |addr: SocketAddr| {
        let url = format!("http://{addr}");
        text(&openssl(
            &[
                "ocsp",
                "-issuer",
                "intermediate.pem",
                "-cert",
                "device.pem",
                "-url",
                &url,
                "-CAfile",
                "root.pem",
                "-resp_text",
                "-timeout",
                "10",
            ],
            &dir,
        ))
    };
    let responder = OcspResponder::new(pki.factory());
    serve(&responder, |addr| {
        let out = query(addr);
        assert!(out.contains("Response verify OK"), "{out}");
        assert!(out.contains("device.pem: good"), "{out}");
        assert!(
            out.contains("This Update:") && out.contains("Next Update:"),
            "{out}"
        );
        // OpenSSL sends a nonce and checks that it comes back.
        assert!(out.contains("OCSP Nonce"), "{out}");
        assert!(!out.contains("WARNING"), "{out}");
        assert!(
            out.contains("OCSP Signing") || out.contains("Test OCSP Responder"),
            "{out}"
        );
    });
    f.revoke(
        &officer(),
        &issued.certificate.serial,
        "key-compromise",
        pki.now(),
    )
    .unwrap();
    serve(&responder, |addr| {
        let out = query(addr);
        assert!(out.contains("Response verify OK"), "{out}");
        assert!(out.contains("device.pem: revoked"), "{out}");
        assert!(out.contains("Reason: keyCompromise"), "{out}");
    });
}

/// Serves `responder` on 127.0.0.1 while `client` runs on another thread.
fn serve<B: keystore_api::Backend>(
    responder: &OcspResponder<'_, B>,
    client: impl FnOnce(SocketAddr) + Send,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = OcspShutdown::new();
    let outcome = std::thread::scope(|s| {
        let stop2 = stop.clone();
        let c = s.spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| client(addr)));
            stop2.shutdown();
            r
        });
        serve_ocsp(responder, listener, &OcspServerConfig::default(), &stop).unwrap();
        c.join().unwrap()
    });
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// A test PKI made by OpenSSL in `dir`: a root (the issuer), devices with
/// the relay's URL in their AIA, a delegated OCSP signer (OCSPSigning,
/// noCheck) and a rogue signer the root never certified.
struct OpensslPki {
    dir: PathBuf,
}

impl OpensslPki {
    fn new(dir: &Path, url: &str) -> OpensslPki {
        let p = OpensslPki {
            dir: dir.to_path_buf(),
        };
        for k in ["ca", "d1", "d2", "d3", "ocsp", "rogue"] {
            p.run(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &format!("{k}.key"),
            ]);
        }
        p.run(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=OpenSSL Test CA",
            "-days",
            "30",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        let dev_ext = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n\
             authorityInfoAccess=OCSP;URI:{url}\n"
        );
        let ocsp_ext = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
                        extendedKeyUsage=OCSPSigning\nnoCheck=ignored\n";
        std::fs::write(dir.join("dev.ext"), dev_ext).unwrap();
        std::fs::write(dir.join("ocsp.ext"), ocsp_ext).unwrap();
        for (k, serial) in [("d1", "0x1001"), ("d2", "0x1002"), ("d3", "0x1003")] {
            p.issue(k, serial, "dev.ext", "ca");
        }
        p.issue("ocsp", "0x2001", "ocsp.ext", "ca");
        p.issue("rogue", "0x3001", "ocsp.ext", "rogue-self");
        // d1 good, d2 revoked; d3 missing from the index (unknown).
        let exp = "301231000000Z";
        let index = format!(
            "V\t{exp}\t\t1001\tunknown\t/CN=d1\nR\t{exp}\t251201000000Z,keyCompromise\t1002\tunknown\t/CN=d2\n"
        );
        std::fs::write(dir.join("index.txt"), index).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> String {
        ok(&openssl(args, &self.dir))
    }

    /// `k.pem`: a certificate for `k.key`, signed by the CA (or, for
    /// `rogue-self`, by itself).
    fn issue(&self, k: &str, serial: &str, ext: &str, by: &str) {
        let csr = format!("{k}.csr");
        self.run(&[
            "req",
            "-new",
            "-key",
            &format!("{k}.key"),
            "-subj",
            &format!("/CN={k}"),
            "-out",
            &csr,
        ]);
        let out = format!("{k}.pem");
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-set_serial",
            serial,
            "-days",
            "5",
        ];
        args.extend(["-extfile", ext, "-out", &out]);
        let signer = format!("{k}.key");
        if by == "rogue-self" {
            args.extend(["-signkey", &signer]);
        } else {
            args.extend(["-CA", "ca.pem", "-CAkey", "ca.key"]);
        }
        self.run(&args);
    }

    fn der(&self, name: &str) -> Vec<u8> {
        let pem = std::fs::read_to_string(self.dir.join(name)).unwrap();
        pem_decode_all(&pem, "CERTIFICATE").unwrap().remove(0)
    }
}

/// A loopback-only HTTP relay: each POSTed OCSP request is answered by
/// `openssl ocsp -index … -rsigner SIGNER -rkey KEY -CA ca.pem -reqin
/// -respout`, until `requests` have been served.
fn relay(listener: TcpListener, dir: PathBuf, signer: &'static str, requests: usize) {
    listener.set_nonblocking(true).unwrap();
    for n in 0..requests {
        // Bounded: a client that never comes ends the relay, not the test run.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("no client within 30 s: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = read_post(&mut s);
        let (req, resp) = (format!("req{n}.der"), format!("resp{n}.der"));
        std::fs::write(dir.join(&req), body).unwrap();
        ok(&openssl(
            &[
                "ocsp",
                "-index",
                "index.txt",
                "-rsigner",
                &format!("{signer}.pem"),
                "-rkey",
                &format!("{signer}.key"),
                "-CA",
                "ca.pem",
                "-ndays",
                "1",
                "-reqin",
                &req,
                "-respout",
                &resp,
            ],
            &dir,
        ));
        let der = std::fs::read(dir.join(&resp)).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            der.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&der).unwrap();
    }
}

/// The body of one HTTP POST with a Content-Length.
fn read_post(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the client closed early");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("content-length");
        while buf.len() < end + 4 + len {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "the client closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
        return buf[end + 4..end + 4 + len].to_vec();
    }
}

#[test]
fn our_checker_against_the_openssl_responder() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let pki = OpensslPki::new(tmp.path(), &url);
    let text = pki.run(&["x509", "-in", "d1.pem", "-noout", "-ocsp_uri"]);
    assert!(text.contains(&url), "{text}");
    let v = PeerVerifier::new(&pki.der("ca.pem"))
        .unwrap()
        .with_revocation_policy(RevocationPolicy::RequireOcsp)
        .with_ocsp_fetch(Duration::from_secs(10));
    let dir = tmp.path().to_path_buf();

    // OpenSSL's delegated signer: good, revoked, unknown.
    let l = listener.try_clone().unwrap();
    let d = dir.clone();
    let server = std::thread::spawn(move || relay(l, d, "ocsp", 3));
    let now = OffsetDateTime::now_utc();
    let info = v.check_peer(&[pki.der("d1.pem")], now).unwrap();
    assert_eq!(info.serial, "1001");
    let r = v.check_peer(&[pki.der("d2.pem")], now).unwrap_err();
    assert_eq!(r.reason, RejectReason::Revoked, "{r}");
    assert!(r.detail.contains("reason 1"), "{r}");
    let r = v.check_peer(&[pki.der("d3.pem")], now).unwrap_err();
    assert_eq!(r.reason, RejectReason::OcspUnknown, "{r}");
    server.join().unwrap();

    // Signed by the CA itself: accepted too.
    let l = listener.try_clone().unwrap();
    let d = dir.clone();
    let server = std::thread::spawn(move || relay(l, d, "ca", 1));
    v.check_peer(&[pki.der("d1.pem")], OffsetDateTime::now_utc())
        .unwrap();
    server.join().unwrap();

    // Signed by a signer the CA never certified: rejected.
    let server = std::thread::spawn(move || relay(listener, dir, "rogue", 1));
    let r = v
        .check_peer(&[pki.der("d1.pem")], OffsetDateTime::now_utc())
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::BadSignature, "{r}");
    server.join().unwrap();
}
