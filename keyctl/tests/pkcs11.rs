//! `keyctl --backend pkcs11` end to end on a SoftHSM2 token: init, roles,
//! create, sign (verified by OpenSSL against `keyctl pubkey`), HMAC and AEAD,
//! the PIN from a file or an environment variable, a PKCS#11 URI, and the
//! errors for a wrong PIN and a wrong backend.

use backend_pkcs11::testing::{softhsm_or_skip, TestToken};
use std::path::PathBuf;
use std::process::{Command, Output};
use test_support::keyctl::{
    assert_fails_with as assert_exit, assert_ok, openssl_dgst_verify, s, set_role, text,
    Credential, Keyctl,
};

const SO: Credential = Credential::officer("officer credential for pkcs11 tests");

/// A store in a temporary directory whose keys live on a fresh token.
/// `SOFTHSM2_CONF` (set by `softhsm()` in this process) is inherited by
/// every `keyctl` process.
struct Env {
    token: TestToken,
    dir: tempfile::TempDir,
}

impl Env {
    /// `None` when SoftHSM2 is missing and `KEYSTORE_TEST_SKIP` names pkcs11
    /// (missing otherwise fails with an install hint).
    fn new() -> Option<Env> {
        let token = softhsm_or_skip()?.new_token("keyctl").expect("token");
        let env = Env {
            token,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        assert_ok(&env.bare().arg("init").output().expect("init"));
        set_role(&mut env.bare(), SO);
        Some(env)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `keyctl` on this store and token, the PIN from KEYCTL_PKCS11_PIN.
    fn bare(&self) -> Command {
        let mut c = Keyctl::new(env!("CARGO_BIN_EXE_keyctl")).command();
        c.env("KEYCTL_STORE", self.path("store"))
            .env("KEYCTL_BACKEND", "pkcs11")
            .env("KEYCTL_PKCS11_MODULE", &self.token.module)
            .env("KEYCTL_TOKEN_LABEL", &self.token.label)
            .env("KEYCTL_PKCS11_PIN", &self.token.user_pin);
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
fn keyctl_keeps_keys_on_the_token_and_openssl_verifies() {
    let Some(env) = Env::new() else { return };
    assert!(
        !env.path("store").join("soft").exists(),
        "no soft store is created for a PKCS#11 keystore"
    );
    env.ok(&["key", "create", "dev-id", "--alg", "ecdsa-p256-sha256"]);
    // A derivation key: a key holds mac or derive, never both.
    env.ok(&[
        "key",
        "create",
        "mac",
        "--alg",
        "hmac-sha256",
        "--usages",
        "derive",
    ]);
    env.ok(&["key", "create", "data", "--alg", "aes-256-gcm"]);
    let listing = text(&env.ok(&["key", "list"]).stdout);
    for n in ["dev-id", "mac", "data"] {
        assert!(listing.contains(n), "{listing}");
    }
    let msg = env.path("msg");
    std::fs::write(&msg, b"telemetry frame 7\n").expect("write");
    let (sig, pem) = (env.path("sig.der"), env.path("pub.pem"));
    env.ok(&["sign", "dev-id", "--in", s(&msg), "--out", s(&sig)]);
    env.ok(&["pubkey", "dev-id", "--out", s(&pem)]);
    let out = openssl_dgst_verify("openssl", &pem, &sig, &msg, &[]);
    assert!(out.status.success(), "openssl: {}", text(&out.stderr));
    env.ok(&["verify", "dev-id", "--in", s(&msg), "--sig", s(&sig)]);
    // Every signature verified on the host, by flag; an unknown policy is
    // a usage error naming the choices.
    env.ok(&[
        "--pkcs11-verify",
        "always",
        "sign",
        "dev-id",
        "--in",
        s(&msg),
        "--out",
        s(&sig),
    ]);
    env.ok(&["verify", "dev-id", "--in", s(&msg), "--sig", s(&sig)]);
    let out = env.run(&["--pkcs11-verify", "never", "key", "list"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("first-use"),
        "{}",
        text(&out.stderr)
    );
    // AEAD and derivation round trips on the token.
    let (ct, back) = (env.path("ct"), env.path("back"));
    env.ok(&[
        "encrypt",
        "data",
        "--in",
        s(&msg),
        "--out",
        s(&ct),
        "--aad",
        "ctx",
    ]);
    env.ok(&[
        "decrypt",
        "data",
        "--in",
        s(&ct),
        "--out",
        s(&back),
        "--aad",
        "ctx",
    ]);
    assert_eq!(std::fs::read(&back).expect("read"), b"telemetry frame 7\n");
    let a = text(
        &env.ok(&["derive", "mac", "--len", "32", "--info", "x"])
            .stdout,
    );
    let b = text(
        &env.ok(&["derive", "mac", "--len", "32", "--info", "x"])
            .stdout,
    );
    assert_eq!(a, b);
    assert_eq!(a.trim().len(), 64, "{a}");
}

#[test]
fn keyctl_pin_sources_uri_and_errors() {
    let Some(env) = Env::new() else { return };
    env.ok(&["key", "create", "k", "--alg", "hmac-sha256"]);
    // The PIN from a file, the token by serial.
    let pin_file = env.path("pin");
    std::fs::write(&pin_file, format!("{}\n", env.token.user_pin)).expect("write pin");
    let out = env
        .bare()
        .env_remove("KEYCTL_PKCS11_PIN")
        .env_remove("KEYCTL_TOKEN_LABEL")
        .args([
            "--token-serial",
            &env.token.serial,
            "--pin-file",
            s(&pin_file),
        ])
        .args(["key", "list"])
        .output()
        .expect("run");
    assert_ok(&out);
    // A PKCS#11 URI naming the token and the PIN file.
    let uri = format!(
        "pkcs11:token={}?pin-source=file:{}",
        env.token.label,
        s(&pin_file)
    );
    let out = env
        .bare()
        .env_remove("KEYCTL_PKCS11_PIN")
        .env_remove("KEYCTL_TOKEN_LABEL")
        .args(["--pkcs11-uri", &uri, "key", "list"])
        .output()
        .expect("run");
    assert_ok(&out);
    assert!(text(&out.stdout).contains('k'));
    // A wrong PIN is Auth (exit 8); no PIN at all is InvalidInput (exit 2).
    let out = env
        .bare()
        .env("KEYCTL_PKCS11_PIN", "000000")
        .args(["key", "list"])
        .output()
        .expect("run");
    assert_exit(&out, 8, "Auth");
    assert!(
        !text(&out.stderr).contains("000000"),
        "the PIN is never printed"
    );
    let out = env
        .bare()
        .env_remove("KEYCTL_PKCS11_PIN")
        .args(["key", "list"])
        .output()
        .expect("run");
    assert_exit(&out, 2, "InvalidInput");
    // No token option at all.
    let out = env
        .bare()
        .env_remove("KEYCTL_TOKEN_LABEL")
        .args(["key", "list"])
        .output()
        .expect("run");
    assert_exit(&out, 2, "InvalidInput");
    // The soft backend does not open a PKCS#11 store, and init refuses twice.
    let out = env
        .bare()
        .args(["--backend", "soft", "key", "list"])
        .output()
        .expect("run");
    assert_exit(&out, 3, "NotFound");
    let out = env.bare().arg("init").output().expect("run");
    assert_exit(&out, 4, "AlreadyExists");
}

#[test]
fn a_rotation_and_revocation_by_keyctl_reach_a_running_gateway_at_once() {
    // Two processes on one store and token: this test process is the
    // gateway (the library, its active-version cache warm), `keyctl` the
    // operator's console. The console's commits must reach the gateway's
    // very next call, through the shared commit generation.
    use keystore_api::{Keystore, SignatureFormat};
    let Some(env) = Env::new() else { return };
    env.ok(&["key", "create", "dev-id", "--alg", "ecdsa-p256-sha256"]);
    let backend = env.token.open().expect("gateway backend");
    let gateway = Keystore::open(backend, &env.path("store").join("metadata.sqlite"))
        .expect("gateway keystore");
    let sign = || gateway.sign("dev-id", b"frame", SignatureFormat::Der);
    assert_eq!(sign().expect("sign").version, 1);
    assert_eq!(sign().expect("sign from the cache").version, 1);
    env.ok(&["key", "rotate", "dev-id", "--grace", "1d"]);
    assert_eq!(sign().expect("sign after rotation").version, 2);
    env.ok(&[
        "key",
        "revoke",
        "dev-id",
        "--version",
        "2",
        "--reason",
        "unit stolen",
    ]);
    assert_eq!(
        sign().expect_err("revoked").kind(),
        keystore_api::ErrorKind::KeyState
    );
}
