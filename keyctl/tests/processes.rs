//! Many `keyctl` processes on one store, as on a gateway where a daemon and
//! an operator share it: signs and listings while another process rotates
//! never fail, never mark anything compromised; a writer that waits too long
//! is told who holds the store (exit 12); the wrong token fails the open
//! (exit 3) and changes nothing.

use backend_pkcs11::testing::{softhsm_or_skip, TestToken};
use std::path::PathBuf;
use std::process::{Command, Output};
use test_support::keyctl::{assert_ok, openssl_dgst_verify, s, set_role, text, Credential, Keyctl};

const SO: Credential = Credential::officer("officer credential for process tests");
const OPENSSL: &str = "/usr/bin/openssl";

/// Where the keys live: a soft store unlocked by a key file, or a token.
enum Keys {
    Soft(PathBuf),
    Token(TestToken),
}

struct Env {
    dir: tempfile::TempDir,
    keys: Keys,
}

impl Env {
    fn soft() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("store.key");
        let env = Env {
            keys: Keys::Soft(key_file.clone()),
            dir,
        };
        let out = env
            .bare()
            .env_remove("KEYCTL_KEY_FILE")
            .args(["init", "--new-key-file"])
            .arg(&key_file)
            .output()
            .expect("init");
        assert_ok(&out);
        env.bootstrap();
        env
    }

    fn pkcs11() -> Option<Env> {
        let token = softhsm_or_skip()?.new_token("procs").expect("token");
        let env = Env {
            dir: tempfile::tempdir().expect("tempdir"),
            keys: Keys::Token(token),
        };
        assert_ok(&env.bare().arg("init").output().expect("init"));
        env.bootstrap();
        Some(env)
    }

    fn bootstrap(&self) {
        set_role(&mut self.bare(), SO);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn bare(&self) -> Command {
        let mut c = Keyctl::new(env!("CARGO_BIN_EXE_keyctl")).command();
        c.env("KEYCTL_STORE", self.path("store"));
        match &self.keys {
            Keys::Soft(key_file) => {
                c.env("KEYCTL_KEY_FILE", key_file);
            }
            Keys::Token(t) => {
                c.env("KEYCTL_BACKEND", "pkcs11")
                    .env("KEYCTL_PKCS11_MODULE", &t.module)
                    .env("KEYCTL_TOKEN_LABEL", &t.label)
                    .env("KEYCTL_PKCS11_PIN", &t.user_pin);
            }
        }
        c
    }

    fn officer(&self) -> Command {
        let mut c = self.bare();
        SO.apply(&mut c);
        c
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.officer().args(args).output().expect("keyctl");
        assert_ok(&out);
        out
    }
}

/// `rotations` rotations in one thread of processes while `reads` runs
/// `reads` times in this one; every read must succeed.
fn read_while_rotating(env: &Env, rotations: usize, reads: usize, read: &dyn Fn(usize) -> Output) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut failures = Vec::new();
            for _ in 0..rotations {
                let out = env
                    .officer()
                    .args(["key", "rotate", "dev", "--grace", "1h"])
                    .output()
                    .expect("rotate");
                if !out.status.success() {
                    failures.push(text(&out.stderr));
                }
            }
            tx.send(failures).expect("report");
        });
        let mut failures = Vec::new();
        for i in 0..reads {
            let out = read(i);
            if !out.status.success() {
                failures.push(text(&out.stderr));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {reads} reads failed while another process rotated: {failures:?}",
            failures.len()
        );
    });
    let rotate_failures = rx.recv().expect("rotator");
    assert!(
        rotate_failures.is_empty(),
        "rotations failed: {rotate_failures:?}"
    );
}

/// After the load: nothing compromised, every version listed as it should
/// be, and the audit trail verifies.
fn assert_nothing_lost(env: &Env, rotations: usize) {
    let versions = text(&env.ok(&["key", "versions", "dev"]).stdout);
    assert!(
        !versions.contains("compromised"),
        "a version became compromised: {versions}"
    );
    assert_eq!(
        versions.matches("deactivated").count(),
        rotations,
        "{versions}"
    );
    let out = env
        .bare()
        .env("KEYCTL_ROLE", "auditor")
        .args(["audit", "verify"])
        .output()
        .expect("audit verify");
    // The auditor has no credential here; the officer verifies instead.
    let out = if out.status.success() {
        out
    } else {
        env.ok(&["audit", "verify"])
    };
    assert_ok(&out);
}

fn sign_while_rotating(env: &Env, rotations: usize, signs: usize) {
    env.ok(&["key", "create", "dev", "--alg", "ecdsa-p256-sha256"]);
    let msg = env.path("msg");
    std::fs::write(&msg, b"firmware image").expect("msg");
    read_while_rotating(env, rotations, signs, &|i| {
        let sig = env.path(&format!("sig-{i}"));
        env.bare()
            .args(["sign", "dev", "--in"])
            .arg(&msg)
            .arg("--out")
            .arg(&sig)
            .output()
            .expect("sign")
    });
    // The last signature verifies with OpenSSL under the active public key.
    let (sig, pem) = (env.path("last.sig"), env.path("pub.pem"));
    env.ok(&["sign", "dev", "--in", s(&msg), "--out", s(&sig)]);
    env.ok(&["pubkey", "dev", "--out", s(&pem)]);
    let out = openssl_dgst_verify(OPENSSL, &pem, &sig, &msg, &[]);
    assert_ok(&out);
    assert_nothing_lost(env, rotations);
}

#[test]
fn soft_signs_never_fail_while_another_process_rotates() {
    sign_while_rotating(&Env::soft(), 20, 80);
}

#[test]
fn pkcs11_signs_never_fail_while_another_process_rotates() {
    let Some(env) = Env::pkcs11() else { return };
    sign_while_rotating(&env, 12, 40);
}

#[test]
fn pkcs11_listings_never_fail_or_compromise_while_another_process_rotates() {
    let Some(env) = Env::pkcs11() else { return };
    env.ok(&["key", "create", "dev", "--alg", "ecdsa-p256-sha256"]);
    let rotations = 20;
    read_while_rotating(&env, rotations, 40, &|_| {
        env.officer().args(["key", "list"]).output().expect("list")
    });
    assert_nothing_lost(&env, rotations);
}

#[test]
fn a_writer_waits_a_bounded_time_and_names_the_holder_while_uses_go_on() {
    let env = Env::soft();
    env.ok(&["key", "create", "dev", "--alg", "ecdsa-p256-sha256"]);
    let lock = env.path("store").join("metadata.sqlite-lock");
    // Another program holds the store's write lock (flock(2), as keyctl does).
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1) from util-linux");
    // Wait until the lock is really held.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let probe = Command::new("flock")
            .args(["-n"])
            .arg(&lock)
            .arg("true")
            .status()
            .expect("flock -n");
        if !probe.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let msg = env.path("msg");
    std::fs::write(&msg, b"m").expect("msg");
    // Uses never wait for a writer.
    let out = env
        .bare()
        .args(["sign", "dev", "--in", s(&msg), "--out", s(&env.path("sig"))])
        .output()
        .expect("sign");
    assert_ok(&out);
    let started = std::time::Instant::now();
    let out = env
        .officer()
        .args([
            "--lock-timeout",
            "0.5",
            "key",
            "rotate",
            "dev",
            "--grace",
            "1h",
        ])
        .output()
        .expect("rotate");
    let waited = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(12), "{stderr}");
    assert!(stderr.starts_with("keyctl: Busy: "), "{stderr}");
    assert!(stderr.contains("gave up after 0.5 s"), "{stderr}");
    assert!(
        waited >= std::time::Duration::from_millis(450),
        "{waited:?}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    env.ok(&["key", "rotate", "dev", "--grace", "1h"]);
    let versions = text(&env.ok(&["key", "versions", "dev"]).stdout);
    assert!(versions.contains("deactivated"), "{versions}");
}

#[test]
fn the_wrong_token_fails_the_open_and_changes_nothing() {
    let Some(env) = Env::pkcs11() else { return };
    for n in ["a", "b", "c"] {
        env.ok(&["key", "create", n, "--alg", "ecdsa-p256-sha256"]);
    }
    let before = text(&env.ok(&["key", "list"]).stdout);
    let other = softhsm_or_skip()
        .expect("softhsm")
        .new_token("other")
        .expect("token");
    let out = env
        .officer()
        .env("KEYCTL_TOKEN_LABEL", &other.label)
        .env("KEYCTL_PKCS11_PIN", &other.user_pin)
        .args(["key", "list"])
        .output()
        .expect("list on the wrong token");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("Nothing was changed"), "{stderr}");
    assert_eq!(text(&env.ok(&["key", "list"]).stdout), before);
    let versions = text(&env.ok(&["key", "versions", "a"]).stdout);
    assert!(!versions.contains("compromised"), "{versions}");
}
