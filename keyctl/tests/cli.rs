//! End-to-end tests of the `keyctl` binary: real processes, temporary
//! stores, key files (cheap to open) and, where a passphrase is the point,
//! `KEYCTL_PASSPHRASE` or a passphrase file with stdin set to null.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use test_support::keyctl::{
    assert_fails, assert_ok, openssl_dgst_verify, s, text, Credential, KeyFileStore, Keyctl,
};

const OPENSSL: &str = "/usr/bin/openssl";

/// The security officer's credential in test stores.
const SO_SECRET: &str = "officer credential for tests";

/// A `keyctl` command with a clean environment and no stdin.
fn keyctl() -> Command {
    Keyctl::new(env!("CARGO_BIN_EXE_keyctl")).command()
}

/// A store in a temporary directory, unlocked by a (32-byte) key file, the
/// security officer's credential bootstrapped; `so()` acts as the officer.
fn new_store() -> KeyFileStore {
    let st = KeyFileStore::create(
        Keyctl::new(env!("CARGO_BIN_EXE_keyctl")),
        "store",
        "store.key",
        Credential::officer(SO_SECRET),
    );
    assert_eq!(std::fs::read(&st.key_file).expect("key file").len(), 32);
    st
}

fn openssl_verify(pem: &Path, sig: &Path, msg: &Path, extra: &[&str]) -> bool {
    openssl_dgst_verify(OPENSSL, pem, sig, msg, extra)
        .status
        .success()
}

/// Creates a key of `alg`, signs with keyctl, and checks the signature with
/// the OpenSSL CLI against `keyctl pubkey`; a tampered message must fail.
fn openssl_round_trip(alg: &str, extra: &[&str]) {
    let st = new_store();
    st.ok(&["key", "create", "k", "--alg", alg]);
    let msg = st.write("msg", b"firmware image 1.4.2\n");
    let tampered = st.write("tampered", b"firmware image 1.4.3\n");
    let sig = st.path("sig.der");
    let pem = st.path("pub.pem");
    let out = st.ok(&["sign", "k", "--in", s(&msg), "--out", s(&sig)]);
    assert!(
        text(&out.stderr).contains("version 1"),
        "sign reports version"
    );
    st.ok(&["pubkey", "k", "--out", s(&pem)]);
    assert!(std::fs::read_to_string(&pem)
        .expect("pem")
        .starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert!(
        openssl_verify(&pem, &sig, &msg, extra),
        "openssl rejects a {alg} signature made by keyctl"
    );
    assert!(
        !openssl_verify(&pem, &sig, &tampered, extra),
        "openssl accepts a {alg} signature over a tampered message"
    );
}

#[test]
fn openssl_verifies_ecdsa_p256_signature() {
    openssl_round_trip("ecdsa-p256-sha256", &[]);
}

#[test]
fn openssl_verifies_rsa_2048_pkcs1_signature() {
    openssl_round_trip("rsa-2048-pkcs1-sha256", &[]);
}

#[test]
fn openssl_verifies_rsa_2048_pss_signature() {
    openssl_round_trip(
        "rsa-2048-pss-sha256",
        &[
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
        ],
    );
}

#[test]
fn keyctl_verify_accepts_own_signature_and_rejects_tampering() {
    let st = new_store();
    st.ok(&["key", "create", "k", "--alg", "ecdsa-p256-sha256"]);
    let msg = st.write("msg", b"hello");
    let tampered = st.write("tampered", b"hellO");
    for format in ["der", "fixed"] {
        let sig = st.path(&format!("sig.{format}"));
        st.ok(&[
            "sign",
            "k",
            "--in",
            s(&msg),
            "--out",
            s(&sig),
            "--format",
            format,
        ]);
        if format == "fixed" {
            assert_eq!(std::fs::read(&sig).expect("sig").len(), 64);
        }
        let out = st.ok(&["verify", "k", "--in", s(&msg), "--sig", s(&sig)]);
        assert_eq!(text(&out.stdout).trim(), "OK (version 1)");
        let out = st.ok(&[
            "verify",
            "k",
            "--in",
            s(&msg),
            "--sig",
            s(&sig),
            "--version",
            "1",
        ]);
        assert_eq!(text(&out.stdout).trim(), "OK (version 1)");

        let out = st.run(&["verify", "k", "--in", s(&tampered), "--sig", s(&sig)]);
        assert_fails(&out, 9, "Integrity");
        assert!(out.stdout.is_empty());
    }
    // A corrupted signature fails the same way.
    let sig = st.path("sig.der");
    let mut bytes = std::fs::read(&sig).expect("sig");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let bad = st.write("bad.sig", &bytes);
    assert_fails(
        &st.run(&["verify", "k", "--in", s(&msg), "--sig", s(&bad)]),
        9,
        "Integrity",
    );
    // An unknown version is NotFound.
    assert_fails(
        &st.run(&[
            "verify",
            "k",
            "--in",
            s(&msg),
            "--sig",
            s(&sig),
            "--version",
            "7",
        ]),
        3,
        "NotFound",
    );
}

#[test]
fn encrypt_decrypt_round_trip_and_wrong_aad_fails() {
    let st = new_store();
    st.ok(&["key", "create", "aes", "--alg", "aes-256-gcm"]);
    let plain = st.write("plain", b"patient-id=12345; dose=2.5ml");
    let env = st.path("env");
    let back = st.path("back");
    st.ok(&[
        "encrypt",
        "aes",
        "--in",
        s(&plain),
        "--out",
        s(&env),
        "--aad",
        "device=7",
    ]);
    let envelope = std::fs::read(&env).expect("envelope");
    assert!(!envelope.windows(b"patient".len()).any(|w| w == b"patient"));
    st.ok(&[
        "decrypt",
        "aes",
        "--in",
        s(&env),
        "--out",
        s(&back),
        "--aad",
        "device=7",
    ]);
    assert_eq!(
        std::fs::read(&back).expect("back"),
        std::fs::read(&plain).expect("plain")
    );

    let wrong = st.path("wrong");
    for aad in [&["--aad", "device=8"][..], &[][..]] {
        let mut args = vec!["decrypt", "aes", "--in", s(&env), "--out", s(&wrong)];
        args.extend_from_slice(aad);
        let out = st.run(&args);
        assert_fails(&out, 9, "Integrity");
        assert!(!wrong.exists(), "no plaintext file on failure");
    }
    // A signing key may not encrypt.
    st.ok(&["key", "create", "sig", "--alg", "ecdsa-p256-sha256"]);
    assert_fails(
        &st.run(&["encrypt", "sig", "--in", s(&plain), "--out", s(&wrong)]),
        7,
        "Policy",
    );
}

/// TEST-KEY-04 through the CLI: `derive` equals an independent HKDF-SHA256
/// with the imported key as the salt and `--salt-hex` as the IKM.
#[test]
fn derive_matches_independent_hkdf() {
    let st = new_store();
    let k: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(7).wrapping_add(3))
        .collect();
    let secret = st.write("k.hex", format!("{}\n", hex::encode(&k)).as_bytes());
    let out = st.ok(&[
        "key",
        "import",
        "h",
        "--alg",
        "hmac-sha256",
        "--usages",
        "derive",
        "--secret-file",
        s(&secret),
    ]);
    assert!(text(&out.stdout).contains("imported"));
    let show = st.ok(&["key", "show", "h"]);
    assert!(text(&show.stdout).contains("imported"));

    let salt = b"session-nonce-0001";
    let info = "link key v1";
    for len in [1usize, 32, 42, 100] {
        let mut expected = vec![0u8; len];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(&k), salt)
            .expand(info.as_bytes(), &mut expected)
            .expect("hkdf expand");
        let out = st.ok(&[
            "derive",
            "h",
            "--len",
            &len.to_string(),
            "--salt-hex",
            &hex::encode(salt),
            "--info",
            info,
        ]);
        assert_eq!(
            text(&out.stdout).trim(),
            hex::encode(&expected),
            "len {len}"
        );
        assert!(text(&out.stderr).contains("secret"));
    }

    // --out writes the raw bytes.
    let okm = st.path("okm");
    st.ok(&[
        "derive",
        "h",
        "--len",
        "32",
        "--salt-hex",
        &hex::encode(salt),
        "--info",
        info,
        "--out",
        s(&okm),
    ]);
    let mut expected = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&k), salt)
        .expand(info.as_bytes(), &mut expected)
        .expect("hkdf expand");
    assert_eq!(std::fs::read(&okm).expect("okm"), expected);

    // The same key imported as raw bytes derives the same output.
    let raw = st.write("k.raw", &k);
    st.ok(&[
        "key",
        "import",
        "h2",
        "--alg",
        "hmac-sha256",
        "--usages",
        "derive",
        "--secret-file",
        s(&raw),
    ]);
    let out = st.ok(&[
        "derive",
        "h2",
        "--len",
        "32",
        "--salt-hex",
        &hex::encode(salt),
        "--info",
        info,
    ]);
    assert_eq!(text(&out.stdout).trim(), hex::encode(expected));

    for bad_len in ["0", "8161"] {
        assert_fails(
            &st.run(&["derive", "h", "--len", bad_len]),
            2,
            "InvalidInput",
        );
    }
    assert_fails(
        &st.run(&["derive", "h", "--len", "32", "--salt-hex", "zz"]),
        2,
        "InvalidInput",
    );
}

#[test]
fn import_rejects_private_keys_and_bad_secret_files() {
    let st = new_store();
    let secret = st.write("k.raw", &[9u8; 32]);
    assert_fails(
        &st.run(&[
            "key",
            "import",
            "e",
            "--alg",
            "ecdsa-p256-sha256",
            "--secret-file",
            s(&secret),
        ]),
        7,
        "Policy",
    );
    let short = st.write("short", &[9u8; 31]);
    assert_fails(
        &st.run(&[
            "key",
            "import",
            "a",
            "--alg",
            "aes-256-gcm",
            "--secret-file",
            s(&short),
        ]),
        2,
        "InvalidInput",
    );
    let missing = st.path("missing");
    assert_fails(
        &st.run(&[
            "key",
            "import",
            "a",
            "--alg",
            "aes-256-gcm",
            "--secret-file",
            s(&missing),
        ]),
        11,
        "Io",
    );
}

/// With no key file, no passphrase source and stdin not a terminal, keyctl
/// fails at once rather than prompting.
#[test]
fn no_passphrase_source_without_terminal_fails_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let out = keyctl()
        .args(["--store", s(&store), "init", "--kdf", "argon2id"])
        .env("KEYCTL_PASSPHRASE", "correct horse")
        .output()
        .expect("init");
    assert_ok(&out);

    for args in [
        &["key", "list"][..],
        &["init"][..], // on a fresh directory: init needs a passphrase too
    ] {
        let target = if args == ["init"] {
            dir.path().join("other")
        } else {
            store.clone()
        };
        let mut child = keyctl()
            .arg("--store")
            .arg(&target)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyctl");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait().expect("try_wait") {
                Some(_) => break,
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    panic!("keyctl {args:?} waited for a passphrase instead of failing");
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let out = child.wait_with_output().expect("output");
        assert_fails(&out, 2, "InvalidInput");
        assert!(text(&out.stderr).contains("not a terminal"));
    }
}

#[test]
fn wrong_passphrase_is_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let run = |pw: &str, args: &[&str]| {
        keyctl()
            .arg("--store")
            .arg(&store)
            .args(args)
            .env("KEYCTL_PASSPHRASE", pw)
            .env("KEYCTL_NEW_ROLE_SECRET", SO_SECRET)
            .env("KEYCTL_ROLE_SECRET", SO_SECRET)
            .output()
            .expect("run keyctl")
    };
    assert_ok(&run("correct horse", &["init", "--kdf", "argon2id"]));
    assert_ok(&run("correct horse", &["role", "set", "so"]));
    assert_ok(&run(
        "correct horse",
        &["--as", "so", "key", "create", "k", "--alg", "hmac-sha256"],
    ));
    let out = run("wrong horse", &["key", "list"]);
    assert_fails(&out, 8, "Auth");
    assert!(
        !text(&out.stderr).contains("wrong horse"),
        "the passphrase must never be printed"
    );
    // A key file for a passphrase store is also an Auth failure.
    let key_file = dir.path().join("k.key");
    std::fs::write(&key_file, [1u8; 32]).expect("key file");
    let out = keyctl()
        .arg("--store")
        .arg(&store)
        .arg("--key-file")
        .arg(&key_file)
        .args(["key", "list"])
        .output()
        .expect("run keyctl");
    assert_fails(&out, 8, "Auth");
    // The right passphrase still works.
    let out = run("correct horse", &["key", "list"]);
    assert_ok(&out);
    assert!(text(&out.stdout).contains("hmac-sha256"));
}

/// The default KDF (PBKDF2, 600k iterations) with a passphrase file whose
/// trailing newline is stripped, opened again through `--passphrase-env`.
#[test]
fn passphrase_file_and_env_open_the_same_pbkdf2_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, b"s3cret passphrase\n").expect("pw file");
    let out = keyctl()
        .arg("--store")
        .arg(&store)
        .arg("--passphrase-file")
        .arg(&pw_file)
        .arg("init")
        .output()
        .expect("init");
    assert_ok(&out);
    assert!(text(&out.stdout).contains("PBKDF2"));
    let out = keyctl()
        .arg("--store")
        .arg(&store)
        .args(["--passphrase-env", "MY_STORE_PW", "key", "list"])
        .env("MY_STORE_PW", "s3cret passphrase")
        .output()
        .expect("list");
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "no keys");
}

#[test]
fn key_lifecycle_commands() {
    let st = new_store();
    let out = st.ok(&["key", "list"]);
    assert_eq!(text(&out.stdout).trim(), "no keys");
    st.ok(&[
        "key",
        "create",
        "sig",
        "--alg",
        "ecdsa-p256-sha256",
        "--usages",
        "verify,sign",
    ]);
    st.ok(&[
        "key",
        "create",
        "mac",
        "--alg",
        "hmac-sha256",
        "--usages",
        "mac",
    ]);
    assert_fails(
        &st.run(&["key", "create", "sig", "--alg", "ecdsa-p256-sha256"]),
        4,
        "AlreadyExists",
    );
    assert_fails(
        &st.run(&[
            "key",
            "create",
            "x",
            "--alg",
            "aes-256-gcm",
            "--usages",
            "sign",
        ]),
        7,
        "Policy",
    );
    assert_fails(
        &st.run(&[
            "key",
            "create",
            "x",
            "--alg",
            "aes-256-gcm",
            "--usages",
            "fly",
        ]),
        2,
        "InvalidInput",
    );
    assert_fails(
        &st.run(&["key", "create", "bad/name", "--alg", "aes-256-gcm"]),
        2,
        "InvalidInput",
    );
    // derive is not among the usages of 'mac'.
    assert_fails(&st.run(&["derive", "mac", "--len", "32"]), 7, "Policy");

    let list = text(&st.ok(&["key", "list"]).stdout);
    let header = list.lines().next().expect("header");
    for col in [
        "NAME",
        "ALGORITHM",
        "USAGES",
        "ACTIVE",
        "ORIGIN",
        "FINGERPRINT",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(list.contains("ecdsa-p256-sha256") && list.contains("sha256:"));

    let show = text(&st.ok(&["key", "show", "sig"]).stdout);
    for field in [
        "name:",
        "algorithm:",
        "usages:",
        "state:",
        "origin:",
        "fingerprint:",
    ] {
        assert!(show.contains(field), "{show}");
    }
    assert!(show.contains("active") && show.contains("generated"));

    // The PEM on stdout is the PEM written with --out.
    let pem = st.path("p.pem");
    st.ok(&["pubkey", "sig", "--out", s(&pem)]);
    let stdout_pem = st.ok(&["pubkey", "sig"]).stdout;
    assert_eq!(stdout_pem, std::fs::read(&pem).expect("pem"));
    assert_fails(&st.run(&["pubkey", "mac"]), 7, "Policy");

    assert_fails(&st.run(&["key", "destroy", "sig"]), 2, "InvalidInput");
    st.ok(&["key", "show", "sig"]);
    st.ok(&["key", "destroy", "sig", "--yes"]);
    let msg = st.write("msg", b"m");
    let out = st.run(&["sign", "sig", "--in", s(&msg), "--out", s(&st.path("x"))]);
    assert_fails(&out, 3, "NotFound");
    assert_fails(&st.run(&["key", "show", "sig"]), 3, "NotFound");
    assert!(!text(&st.ok(&["key", "list"]).stdout).contains("sig "));
}

/// Hardening item 1 through the CLI: `mac` and `derive` on one key are
/// refused at create and import; a key from before the rule (made here by
/// editing the database) keeps working, and `key show` and `audit verify`
/// warn about it.
#[test]
fn mac_and_derive_on_one_key_are_refused_and_old_keys_warn() {
    let st = new_store();
    let secret = st.write("k.hex", format!("{}\n", "ab".repeat(32)).as_bytes());
    for args in [
        &[
            "key",
            "create",
            "both",
            "--alg",
            "hmac-sha256",
            "--usages",
            "mac,derive",
        ][..],
        &[
            "key",
            "import",
            "both",
            "--alg",
            "hmac-sha256",
            "--usages",
            "derive,mac",
            "--secret-file",
            s(&secret),
        ][..],
    ] {
        let out = st.run(args);
        assert_fails(&out, 7, "Policy");
        let err = text(&out.stderr);
        assert!(
            err.contains("never both") && err.contains("usage derive"),
            "{err}"
        );
    }
    assert_fails(&st.run(&["key", "show", "both"]), 3, "NotFound");
    // The default hmac-sha256 key is a MAC key and does not derive.
    let created = text(
        &st.ok(&["key", "create", "m", "--alg", "hmac-sha256"])
            .stdout,
    );
    assert!(created.contains("usages mac)"), "{created}");
    assert_fails(&st.run(&["derive", "m", "--len", "32"]), 7, "Policy");
    let show = text(&st.ok(&["key", "show", "m"]).stdout);
    assert!(!show.contains("warning"), "{show}");
    let out = text(&st.ok(&["audit", "verify"]).stdout);
    assert!(
        out.contains("chain, MACs and head verify") && !out.contains("warning"),
        "{out}"
    );

    // A key created before the rule: both usages in the metadata.
    st.ok(&[
        "key",
        "import",
        "old",
        "--alg",
        "hmac-sha256",
        "--usages",
        "derive",
        "--secret-file",
        s(&secret),
    ]);
    let conn = rusqlite::Connection::open(st.store.join("metadata.sqlite")).expect("db");
    conn.execute_batch("UPDATE keys SET usages = 'mac,derive' WHERE name = 'old';")
        .expect("make an old-style key");
    drop(conn);
    let show = text(&st.ok(&["key", "show", "old"]).stdout);
    let warning = show
        .lines()
        .find(|l| l.starts_with("warning:"))
        .unwrap_or_else(|| panic!("no warning line in: {show}"));
    assert!(
        warning.contains("both mac and derive") && warning.contains("derived keys"),
        "{warning}"
    );
    assert!(show.contains("usages:     mac,derive"), "{show}");
    // It keeps working.
    let okm = text(
        &st.ok(&["derive", "old", "--len", "16", "--info", "x"])
            .stdout,
    );
    assert_eq!(okm.trim().len(), 32, "{okm}");
    let out = text(&st.ok(&["audit", "verify"]).stdout);
    assert!(out.contains("chain, MACs and head verify"), "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].contains("key 'old'") && warnings[0].contains("both mac and derive"),
        "{out}"
    );
}

/// Hardening item 3 through the CLI: with the audit key reference removed
/// from the database, `audit verify` never prints "MACs ... verify". A live
/// store is an Integrity failure, also when it is made to look
/// decommissioned; a trail whose key is really gone says that only the
/// chain was checked.
#[test]
fn audit_verify_never_claims_unchecked_macs() {
    let st = new_store();
    st.ok(&["key", "create", "m", "--alg", "hmac-sha256"]);
    let db = st.store.join("metadata.sqlite");
    let sql = |q: &str| {
        let conn = rusqlite::Connection::open(&db).expect("db");
        conn.execute_batch(q).expect("tamper");
    };
    let handle: Vec<u8> = rusqlite::Connection::open(&db)
        .expect("db")
        .query_row("SELECT audit_key FROM store", [], |r| r.get(0))
        .expect("audit key handle");
    let restore = format!(
        "UPDATE store SET audit_key = x'{}', decommissioned_at = NULL;",
        hex::encode(&handle)
    );
    assert!(text(&st.ok(&["audit", "verify"]).stdout).contains("MACs and head verify"));

    // A live store without its reference.
    sql("UPDATE store SET audit_key = NULL;");
    let out = st.run(&["audit", "verify"]);
    assert_fails(&out, 9, "Integrity");
    assert!(
        text(&out.stderr).contains("missing from a live store"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("verify"));
    // Writers refuse too, rather than appending unMAC'd entries.
    assert_fails(
        &st.run(&["key", "create", "n", "--alg", "hmac-sha256"]),
        9,
        "Integrity",
    );
    // The same, made to look decommissioned while it still holds keys.
    sql("UPDATE store SET decommissioned_at = '2020-01-01T00:00:00Z';");
    let out = st.run(&["audit", "verify"]);
    assert_fails(&out, 9, "Integrity");
    assert!(
        text(&out.stderr).contains("marked decommissioned"),
        "{}",
        text(&out.stderr)
    );
    // Putting the reference back restores full verification.
    sql(&restore);
    assert!(text(&st.ok(&["audit", "verify"]).stdout).contains("MACs and head verify"));

    // A store whose keys and audit key are really gone: chain only, said so.
    st.ok(&["key", "destroy", "m", "--yes"]);
    let record = st
        .store
        .join("soft")
        .join("records")
        .join(format!("{}.rec", hex::encode(&handle)));
    assert!(record.exists(), "audit key record {}", record.display());
    std::fs::remove_file(&record).expect("remove the audit key record");
    let signer: Vec<u8> = rusqlite::Connection::open(&db)
        .expect("db")
        .query_row(
            "SELECT handle FROM audit_signers WHERE handle IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .expect("audit signing key handle");
    let signer_record = st
        .store
        .join("soft")
        .join("records")
        .join(format!("{}.rec", hex::encode(&signer)));
    std::fs::remove_file(&signer_record).expect("remove the audit signing key record");
    sql("DELETE FROM key_versions; DELETE FROM keys; UPDATE audit_signers SET handle = NULL, retired_at = '2020-01-01T00:00:00Z'; UPDATE store SET audit_key = NULL, decommissioned_at = '2020-01-01T00:00:00Z';");
    let out = st.ok(&["audit", "verify"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("chain verifies") && stdout.contains("MACs NOT checked"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("MACs and head verify") && !stdout.contains("intact"),
        "{stdout}"
    );
    // An edit that breaks the chain is still caught.
    sql("UPDATE audit SET actor = 'someone-else' WHERE seq = 2;");
    let out = st.run(&["audit", "verify"]);
    assert_fails(&out, 9, "Integrity");
    assert!(text(&out.stderr).contains("#2"), "{}", text(&out.stderr));
}

#[test]
fn store_and_file_errors_have_their_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing_store = dir.path().join("nothing-here");
    let out = keyctl()
        .arg("--store")
        .arg(&missing_store)
        .args(["key", "list"])
        .output()
        .expect("run");
    assert_fails(&out, 3, "NotFound");

    let st = new_store();
    // A second init on the same store is refused, and creates no key file.
    let again = st.path("again.key");
    let out = keyctl()
        .arg("--store")
        .arg(&st.store)
        .args(["init", "--new-key-file", s(&again)])
        .output()
        .expect("run");
    assert_fails(&out, 4, "AlreadyExists");
    assert!(!again.exists());

    st.ok(&["key", "create", "k", "--alg", "ecdsa-p256-sha256"]);
    let missing = st.path("missing");
    assert_fails(
        &st.run(&["sign", "k", "--in", s(&missing), "--out", s(&st.path("o"))]),
        11,
        "Io",
    );
    let msg = st.write("msg", b"m");
    let unwritable = st.path("no-such-dir/sig");
    assert_fails(
        &st.run(&["sign", "k", "--in", s(&msg), "--out", s(&unwritable)]),
        11,
        "Io",
    );
    let out = keyctl()
        .arg("--store")
        .arg(&st.store)
        .args(["--key-file", s(&st.path("no-key-file")), "key", "list"])
        .output()
        .expect("run");
    assert_fails(&out, 11, "Io");

    // clap's own usage errors keep clap's exit code 2.
    let out = st.run(&["key", "create", "k2", "--alg", "des"]);
    assert_eq!(out.status.code(), Some(2));
    let out = st.run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_documents_exit_codes() {
    let out = keyctl().arg("--help").output().expect("run");
    assert_ok(&out);
    let help = text(&out.stdout);
    for line in ["Exit codes:", "8  Auth", "9  Integrity", "11  Io"] {
        assert!(help.contains(line), "missing '{line}' in --help");
    }
}

#[test]
fn tour_exits_zero_and_completes() {
    let out = keyctl().arg("tour").output().expect("run tour");
    assert_ok(&out);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().last(), Some("tour complete"));
    for expected in [
        "OK (version 1)",
        "-----BEGIN PUBLIC KEY-----",
        "wrong AAD rejected: Integrity",
        "NotFound",
        "usages mac; 32-byte tag",
        "usages derive; 32 bytes",
        "the mac key does not derive: Policy",
        "a key holds mac or derive, never both: Policy",
        "hash chain and MACs intact",
    ] {
        assert!(stdout.contains(expected), "tour output lacks '{expected}'");
    }
}

#[test]
fn lifecycle_commands_roles_and_audit() {
    let st = new_store();
    st.ok(&["key", "create", "fw", "--alg", "ecdsa-p256-sha256"]);
    st.ok(&[
        "key",
        "create",
        "data",
        "--alg",
        "aes-256-gcm",
        "--backup-eligible",
        "--cryptoperiod",
        "90d",
    ]);
    st.ok(&[
        "key",
        "create",
        "kek",
        "--alg",
        "aes-256-gcm",
        "--usages",
        "wrap",
    ]);
    // Without --as, lifecycle commands refuse at once.
    assert_fails(
        &st.bare()
            .args(["key", "rotate", "fw", "--grace", "1d"])
            .output()
            .expect("run"),
        2,
        "InvalidInput",
    );
    // A wrong officer credential is Auth.
    let out = st
        .bare()
        .args(["--as", "so", "key", "rotate", "fw", "--grace", "1d"])
        .env("KEYCTL_ROLE_SECRET", "not the credential")
        .output()
        .expect("run");
    assert_fails(&out, 8, "Auth");
    // Rotation keeps the old version verifying during the grace period.
    let msg = st.write("m", b"firmware");
    let sig1 = st.path("sig1");
    st.ok(&["sign", "fw", "--in", s(&msg), "--out", s(&sig1)]);
    st.ok(&["key", "rotate", "fw", "--grace", "7d"]);
    let out = text(
        &st.ok(&["verify", "fw", "--in", s(&msg), "--sig", s(&sig1)])
            .stdout,
    );
    assert!(out.contains("version 1"), "{out}");
    let versions = text(&st.ok(&["key", "versions", "fw"]).stdout);
    assert!(
        versions.contains("deactivated") && versions.contains("active"),
        "{versions}"
    );
    st.ok(&[
        "key",
        "revoke",
        "fw",
        "--version",
        "1",
        "--reason",
        "lost unit",
    ]);
    assert_fails(
        &st.run(&[
            "verify",
            "fw",
            "--in",
            s(&msg),
            "--sig",
            s(&sig1),
            "--version",
            "1",
        ]),
        6,
        "KeyState",
    );
    st.ok(&["key", "suspend", "fw", "--version", "2"]);
    assert_fails(
        &st.run(&["sign", "fw", "--in", s(&msg), "--out", s(&st.path("x"))]),
        6,
        "KeyState",
    );
    st.ok(&["key", "resume", "fw", "--version", "2"]);
    st.ok(&["sweep"]);
    let due = text(&st.ok(&["key", "due"]).stdout);
    assert!(due.contains("no key is due"), "{due}");
    // Operators get their own credential and cannot do officer work.
    st.so()
        .args(["role", "set", "operator"])
        .env("KEYCTL_NEW_ROLE_SECRET", "operator credential")
        .output()
        .map(|o| assert_ok(&o))
        .expect("run");
    let as_operator = |args: &[&str]| {
        st.bare()
            .args(["--as", "operator", "--actor", "op-7"])
            .args(args)
            .env("KEYCTL_ROLE_SECRET", "operator credential")
            .output()
            .expect("run")
    };
    assert_ok(&as_operator(&[
        "key",
        "create",
        "op-key",
        "--alg",
        "hmac-sha256",
    ]));
    assert_fails(
        &as_operator(&["key", "rotate", "op-key", "--grace", "0s"]),
        7,
        "Policy",
    );
    // Backup and restore of the eligible key; signing keys are refused.
    let backup = st.path("data.backup");
    st.ok(&["key", "backup", "data", "--kek", "kek", "--out", s(&backup)]);
    assert_fails(
        &st.run(&[
            "key",
            "backup",
            "fw",
            "--kek",
            "kek",
            "--out",
            s(&st.path("fw.b")),
        ]),
        7,
        "Policy",
    );
    st.ok(&[
        "key",
        "restore",
        "--in",
        s(&backup),
        "--kek",
        "kek",
        "--name",
        "data-copy",
    ]);
    let pt = st.write("pt", b"record");
    let ct = st.path("ct");
    st.ok(&["encrypt", "data", "--in", s(&pt), "--out", s(&ct)]);
    // The restored copy holds the same key material: it opens the original's envelope.
    let back = st.path("back");
    st.ok(&["decrypt", "data-copy", "--in", s(&ct), "--out", s(&back)]);
    assert_eq!(std::fs::read(&back).expect("plaintext"), b"record");
    // Audit: intact, exported as JSON lines, and tampering is named.
    let out = text(&st.ok(&["audit", "verify"]).stdout);
    assert!(out.contains("intact"), "{out}");
    // Auditors have their own credential and verify too.
    st.so()
        .args(["role", "set", "auditor"])
        .env("KEYCTL_NEW_ROLE_SECRET", "auditor credential")
        .output()
        .map(|o| assert_ok(&o))
        .expect("run");
    let out = st
        .bare()
        .args(["--as", "auditor", "audit", "verify"])
        .env("KEYCTL_ROLE_SECRET", "auditor credential")
        .output()
        .expect("run");
    assert_ok(&out);
    let export = text(&st.ok(&["audit", "export"]).stdout);
    let lines: Vec<&str> = export.lines().collect();
    assert!(lines.len() >= 10, "{export}");
    assert!(export.contains("\"event\":\"refused\"") && export.contains("op-7"));
    let db = st.store.join("metadata.sqlite");
    let conn = rusqlite::Connection::open(&db).expect("db");
    conn.execute_batch("UPDATE audit SET actor = 'someone-else' WHERE seq = 3;")
        .expect("tamper");
    drop(conn);
    let out = st.run(&["audit", "verify"]);
    assert_fails(&out, 9, "Integrity");
    assert!(text(&out.stderr).contains("#3"), "{}", text(&out.stderr));
    // Decommission needs --yes, then wipes everything and writes the trail.
    let final_trail = st.path("final.jsonl");
    assert_fails(
        &st.run(&["decommission", "--audit-out", s(&final_trail)]),
        2,
        "InvalidInput",
    );
    st.ok(&["decommission", "--audit-out", s(&final_trail), "--yes"]);
    let trail = std::fs::read_to_string(&final_trail).expect("final trail");
    assert!(
        trail
            .lines()
            .rfind(|l| l.starts_with("{\"seq\""))
            .is_some_and(|l| l.contains("\"event\":\"decommission\"")),
        "{trail}"
    );
    // Nothing is usable afterwards: the sealed store itself is gone.
    assert_fails(&st.run(&["key", "list"]), 3, "NotFound");
}

/// `key create --encryption-limit`: each keyctl process reserves from the
/// shared count and gives back what it did not use, so separate runs make
/// exactly the limit; then `encrypt` is KeyState naming the limit, decrypt
/// works, and `key show` and `key due` say why.
#[test]
fn aes_encryption_limit_across_keyctl_runs() {
    let st = new_store();
    assert_fails(
        &st.run(&[
            "key",
            "create",
            "h",
            "--alg",
            "hmac-sha256",
            "--encryption-limit",
            "5",
        ]),
        2,
        "InvalidInput",
    );
    assert_fails(
        &st.run(&[
            "key",
            "create",
            "z",
            "--alg",
            "aes-256-gcm",
            "--encryption-limit",
            "0",
        ]),
        2,
        "InvalidInput",
    );
    assert_fails(
        &st.run(&[
            "key",
            "create",
            "big",
            "--alg",
            "aes-256-gcm",
            "--encryption-limit",
            "4294967297",
        ]),
        2,
        "InvalidInput",
    );
    st.ok(&[
        "key",
        "create",
        "e",
        "--alg",
        "aes-256-gcm",
        "--encryption-limit",
        "3",
    ]);
    let msg = st.write("msg", b"telemetry\n");
    for i in 0..3 {
        let out = st.path(&format!("ct{i}"));
        st.ok(&["encrypt", "e", "--in", s(&msg), "--out", s(&out)]);
    }
    let refused = st.run(&["encrypt", "e", "--in", s(&msg), "--out", s(&st.path("ct3"))]);
    assert_fails(&refused, 6, "KeyState");
    let report = text(&refused.stderr);
    assert!(
        report.contains("version 1 of 'e' has used its AES-GCM limit of 3 encryptions"),
        "{report}"
    );
    let plain = st.path("plain");
    st.ok(&[
        "decrypt",
        "e",
        "--in",
        s(&st.path("ct0")),
        "--out",
        s(&plain),
    ]);
    assert_eq!(std::fs::read(&plain).expect("plain"), b"telemetry\n");
    let show = text(&st.ok(&["key", "show", "e"]).stdout);
    assert!(
        show.contains("limit:      3 encryptions per version"),
        "{show}"
    );
    assert!(show.contains("encryptions: 3/3"), "{show}");
    let due = text(&st.ok(&["key", "due"]).stdout);
    assert!(
        due.contains("e version 1 due since") && due.contains("(usage: 3/3 encryptions)"),
        "{due}"
    );
    let rotated = text(&st.ok(&["key", "due", "--rotate"]).stdout);
    assert!(rotated.contains("rotated e"), "{rotated}");
    st.ok(&["encrypt", "e", "--in", s(&msg), "--out", s(&st.path("ct4"))]);
    let show = text(&st.ok(&["key", "show", "e"]).stdout);
    assert!(show.contains("encryptions: 1/3"), "{show}");
}
