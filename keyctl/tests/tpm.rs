//! `keyctl --backend tpm` end to end on a swtpm of its own (cargo feature
//! `tpm`: `cargo test -p keyctl --features tpm --test tpm`): init, roles,
//! create, sign (verified by OpenSSL against `keyctl pubkey`), HMAC, AES-GCM
//! refused as Unsupported, the owner auth from a file, and a wrong owner auth.

#![cfg(feature = "tpm")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use test_support::keyctl::{assert_ok, openssl_dgst_verify, s, set_role, text, Credential, Keyctl};
use test_support::skip::skip_or_fail;

const SO: Credential = Credential::officer("officer credential for tpm tests");

/// A swtpm on a free loopback port pair below the ephemeral range, killed on drop.
struct Swtpm {
    child: Child,
    port: u16,
}

impl Swtpm {
    fn start(state: &Path) -> Option<Swtpm> {
        if Command::new("swtpm").arg("--version").output().is_err() {
            return skip_or_fail(
                "tpm",
                "swtpm is not installed: apt-get install swtpm swtpm-tools",
            );
        }
        std::fs::create_dir_all(state).expect("state dir");
        let base = 12_000 + (std::process::id() % 8_000) as u16 * 2;
        for attempt in 0..50u16 {
            let port = base + attempt * 2;
            let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
            if !(free(port) && free(port + 1)) {
                continue;
            }
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", state.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run swtpm");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                    return Some(Swtpm { child, port });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start");
    }

    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Env {
    dir: tempfile::TempDir,
    swtpm: Swtpm,
}

impl Env {
    fn new() -> Option<Env> {
        let dir = tempfile::tempdir().expect("tempdir");
        let swtpm = Swtpm::start(&dir.path().join("swtpm"))?;
        // A provisioned device: set the owner auth with tpm2-tools if present,
        // else keep the factory-empty one.
        let owner = dir.path().join("owner.auth");
        std::fs::write(&owner, "owner secret\n").expect("write");
        let set = Command::new("tpm2_changeauth")
            .args(["-c", "owner", "owner secret"])
            .env("TPM2TOOLS_TCTI", swtpm.tcti())
            .output();
        if !matches!(set, Ok(ref o) if o.status.success()) {
            std::fs::write(&owner, "").expect("write");
        }
        let env = Env { dir, swtpm };
        assert_ok(&env.bare().arg("init").output().expect("init"));
        set_role(&mut env.bare(), SO);
        Some(env)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn bare(&self) -> Command {
        let mut c = Keyctl::new(env!("CARGO_BIN_EXE_keyctl")).command();
        c.env("KEYCTL_STORE", self.path("store"))
            .env("KEYCTL_BACKEND", "tpm")
            .env("KEYCTL_TPM_TCTI", self.swtpm.tcti())
            .env("KEYSTORE_TPM_OWNER_AUTH_FILE", self.path("owner.auth"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        SO.apply(&mut self.bare())
            .args(args)
            .output()
            .expect("run keyctl")
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_ok(&out);
        out
    }
}

#[test]
fn keyctl_keeps_keys_in_the_tpm_and_openssl_verifies() {
    let Some(env) = Env::new() else { return };
    assert!(env.path("store").join("tpm").is_dir());
    assert!(!env.path("store").join("soft").exists());
    env.ok(&["key", "create", "dev-id", "--alg", "ecdsa-p256-sha256"]);
    env.ok(&["key", "create", "mac", "--alg", "hmac-sha256"]);
    let out = env.run(&["key", "create", "data", "--alg", "aes-256-gcm"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "Unsupported: {}",
        text(&out.stderr)
    );
    let msg = env.path("msg");
    std::fs::write(&msg, b"telemetry frame 7\n").expect("write");
    let (sig, pem) = (env.path("sig.der"), env.path("pub.pem"));
    env.ok(&["sign", "dev-id", "--in", s(&msg), "--out", s(&sig)]);
    env.ok(&["pubkey", "dev-id", "--out", s(&pem)]);
    let out = openssl_dgst_verify("openssl", &pem, &sig, &msg, &[]);
    assert_ok(&out);
    let listing = text(&env.ok(&["key", "list"]).stdout);
    assert!(
        listing.contains("dev-id") && listing.contains("mac"),
        "{listing}"
    );

    // A wrong owner auth (the flag overrides the environment) is Auth (exit 8).
    std::fs::write(env.path("wrong.auth"), "not the owner secret").expect("write");
    let out = env
        .bare()
        .arg("--tpm-owner-auth-file")
        .arg(env.path("wrong.auth"))
        .args(["key", "list"])
        .output()
        .expect("run");
    if std::fs::read(env.path("owner.auth"))
        .map(|b| !b.is_empty())
        .unwrap_or(false)
    {
        assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    }
    // init twice is AlreadyExists (exit 4).
    let out = env.bare().arg("init").output().expect("init");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
}
