//! `keyctl --connect unix:PATH`: the key commands through a real keystored
//! (test_support's daemon on a soft store in a temporary directory). The
//! tests run as root, which the policy makes the security officer; key use
//! runs as another uid, which the policy makes an application limited to
//! the keys `gw-*`. Where output must match the local command's, the same
//! command also runs locally on the daemon's store (`--store`, its key
//! file: the store is multi-process safe) and the two are compared.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use tempfile::TempDir;
use test_support::daemon::{Daemon, CALLER_GID};
use test_support::keyctl::{assert_fails, assert_ok, openssl_dgst_verify, s, text, Keyctl};

const OPENSSL: &str = "/usr/bin/openssl";

/// The application's uid (the tests themselves run as root, uid 0).
const APP_UID: u32 = 64_001;

const POLICY: &str = "\
[[caller]]
uid = 0
role = \"security-officer\"

[[caller]]
uid = 64001
role = \"application\"
keys = [\"gw-*\"]
";

/// A security-officer credential set on the daemon's store for the local
/// comparisons that need one (the daemon itself never asks for it).
const SO_SECRET: &str = "officer credential for the local side";

/// A `keyctl` command with a clean environment (KEYCTL_CONNECT included).
fn keyctl() -> Command {
    let mut c = Keyctl::new(env!("CARGO_BIN_EXE_keyctl")).command();
    c.env_remove("KEYCTL_CONNECT");
    c
}

/// Runs `c` with `args`.
fn run(mut c: Command, args: &[&str]) -> Output {
    c.args(args).output().expect("run keyctl")
}

/// Runs `c` with `args`, asserts success; returns stdout.
#[track_caller]
fn ok(c: Command, args: &[&str]) -> String {
    assert_ok(&run(c, args))
}

/// A running daemon, and a work directory the application uid owns.
struct Fixture {
    daemon: Daemon,
    work: TempDir,
}

impl Fixture {
    fn start() -> Fixture {
        let mut daemon = Daemon::soft(POLICY, "");
        daemon.start();
        let work = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::chown(work.path(), Some(APP_UID), Some(CALLER_GID))
            .expect("chown the work directory");
        Fixture { daemon, work }
    }

    fn address(&self) -> String {
        format!("unix:{}", self.daemon.socket().display())
    }

    /// `keyctl --connect …` as root: the security officer by the policy.
    fn officer(&self) -> Command {
        let mut c = keyctl();
        c.arg("--connect").arg(self.address());
        c
    }

    /// `keyctl --connect …` as the application uid.
    fn app(&self) -> Command {
        let mut c = self.officer();
        c.uid(APP_UID).gid(CALLER_GID).current_dir(self.work.path());
        c
    }

    /// `keyctl` on the daemon's store, opened by the command itself.
    fn local(&self) -> Command {
        let mut c = keyctl();
        c.arg("--store")
            .arg(self.daemon.store_dir())
            .arg("--key-file")
            .arg(self.daemon.key_file());
        c
    }

    /// [`Fixture::local`] acting as the security officer (credential set
    /// by [`Fixture::bootstrap_local_officer`]).
    fn local_so(&self) -> Command {
        let mut c = self.local();
        c.env("KEYCTL_ROLE", "security-officer")
            .env("KEYCTL_ROLE_SECRET", SO_SECRET);
        c
    }

    fn bootstrap_local_officer(&self) {
        let mut c = self.local();
        c.env("KEYCTL_NEW_ROLE_SECRET", SO_SECRET);
        ok(c, &["role", "set", "security-officer"]);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write test file");
        p
    }

    /// Runs `args` over --connect and locally; asserts both succeed with
    /// the same stdout; returns it.
    #[track_caller]
    fn same_as_local(&self, remote: Command, args: &[&str]) -> String {
        let over = ok(remote, args);
        let here = ok(self.local(), args);
        assert_eq!(
            over,
            here,
            "`keyctl {}` differs over --connect",
            args.join(" ")
        );
        over
    }
}

#[test]
fn lifecycle_as_the_security_officer_prints_what_the_local_commands_print() {
    let f = Fixture::start();
    // --as and role secrets are not read over --connect: a role and a
    // secret file that does not exist change nothing.
    let mut create = f.officer();
    create
        .env("KEYCTL_ROLE", "operator")
        .env("KEYCTL_ROLE_SECRET_FILE", "/nonexistent/secret");
    let created = ok(
        create,
        &["key", "create", "gw-sign", "--alg", "ecdsa-p256-sha256"],
    );
    let list = f.same_as_local(f.officer(), &["key", "list"]);
    let row = list
        .lines()
        .find(|l| l.starts_with("gw-sign "))
        .unwrap_or_else(|| panic!("no gw-sign row in:\n{list}"));
    let fingerprint = row.split_whitespace().last().expect("fingerprint");
    assert!(fingerprint.starts_with("sha256:"), "{row}");
    assert_eq!(
        created,
        format!(
            "created key 'gw-sign' (ecdsa-p256-sha256, usages sign,verify), version 1, {fingerprint}\n"
        )
    );
    let show = f.same_as_local(f.officer(), &["key", "show", "gw-sign"]);
    assert!(show.starts_with("name:       gw-sign\n"), "{show}");
    assert!(show.contains("active:     version 1\n"), "{show}");

    let rotated = ok(f.officer(), &["key", "rotate", "gw-sign", "--grace", "1d"]);
    assert_eq!(
        rotated,
        "rotated 'gw-sign': version 2 is active; the old version verifies and decrypts for 86400 s\n"
    );
    let versions = f.same_as_local(f.officer(), &["key", "versions", "gw-sign"]);
    assert_eq!(versions.lines().count(), 3, "{versions}");
    assert!(versions.starts_with("VERSION "), "{versions}");

    let revoked = ok(
        f.officer(),
        &[
            "key",
            "revoke",
            "gw-sign",
            "--version",
            "1",
            "--reason",
            "laptop stolen",
        ],
    );
    assert_eq!(
        revoked,
        "revoked 'gw-sign' version 1: compromised, material destroyed\n"
    );
    let versions = f.same_as_local(f.officer(), &["key", "versions", "gw-sign"]);
    let v1 = versions.lines().nth(1).expect("version 1 row");
    assert!(
        v1.starts_with("1 ") && v1.contains("compromised") && v1.ends_with("laptop stolen"),
        "{versions}"
    );

    let suspend = ["key", "suspend", "gw-sign", "--version", "2"];
    assert_eq!(ok(f.officer(), &suspend), "suspended 'gw-sign' version 2\n");
    let resume = ["key", "resume", "gw-sign", "--version", "2"];
    assert_eq!(ok(f.officer(), &resume), "resumed 'gw-sign' version 2\n");
    assert_eq!(
        f.same_as_local(f.officer(), &["key", "due"]),
        "no key is due for rotation\n"
    );
    let due_rotate = ["key", "due", "--rotate"];
    assert_eq!(ok(f.officer(), &due_rotate), "");

    // Import, rotate with no grace, sweep, destroy.
    let secret = f.write("secret.hex", format!("{}\n", "ab".repeat(32)).as_bytes());
    let imported = ok(
        f.officer(),
        &[
            "key",
            "import",
            "gw-mac",
            "--alg",
            "hmac-sha256",
            "--secret-file",
            s(&secret),
        ],
    );
    assert_eq!(
        imported,
        "imported key 'gw-mac' (hmac-sha256, usages mac), version 1\n"
    );
    ok(f.officer(), &["key", "rotate", "gw-mac", "--grace", "0s"]);
    assert_eq!(
        ok(f.officer(), &["sweep"]),
        "destroyed gw-mac version 1 (grace ended)\n"
    );
    assert_eq!(ok(f.officer(), &["sweep"]), "nothing to sweep\n");
    assert_eq!(
        ok(f.officer(), &["key", "destroy", "gw-mac", "--yes"]),
        "destroyed key 'gw-mac' (every version; the name stays reserved)\n"
    );

    // Backup and restore under a new name.
    let kek = ["key", "create", "gw-kek", "--alg", "aes-256-gcm"];
    ok(f.officer(), &[&kek[..], &["--usages", "wrap"]].concat());
    let data = ["key", "create", "gw-data", "--alg", "aes-256-gcm"];
    ok(f.officer(), &[&data[..], &["--backup-eligible"]].concat());
    let backup = f.path("data.backup");
    let backup_args = [
        "key",
        "backup",
        "gw-data",
        "--kek",
        "gw-kek",
        "--out",
        s(&backup),
    ];
    assert_eq!(
        ok(f.officer(), &backup_args),
        format!("wrote a wrapped backup of 'gw-data' to {}\n", s(&backup))
    );
    let restore_args = [
        "key",
        "restore",
        "--in",
        s(&backup),
        "--kek",
        "gw-kek",
        "--name",
        "gw-data2",
    ];
    assert_eq!(
        ok(f.officer(), &restore_args),
        "restored 'gw-data2' with 1 version(s)\n"
    );
    f.same_as_local(f.officer(), &["key", "show", "gw-data2"]);

    // The audit trail: verified by the daemon, and exported; the local
    // export, made later, starts with exactly the same lines.
    let verified = ok(f.officer(), &["audit", "verify"]);
    let entries: u64 = verified
        .strip_prefix("audit trail intact: ")
        .and_then(|r| r.strip_suffix(" entries, chain, MACs and head verify\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected audit verify output: {verified}"));
    assert!(entries >= 10, "{verified}");
    let remote_export = f.path("remote.jsonl");
    let export = ["audit", "export", "--out", s(&remote_export)];
    assert_eq!(ok(f.officer(), &export), "");
    f.bootstrap_local_officer();
    let local_export = f.path("local.jsonl");
    ok(
        f.local_so(),
        &["audit", "export", "--out", s(&local_export)],
    );
    let remote_lines = std::fs::read_to_string(&remote_export).expect("remote export");
    let local_lines = std::fs::read_to_string(&local_export).expect("local export");
    assert!(remote_lines.lines().count() as u64 >= entries);
    assert!(remote_lines.contains("\"key_name\":\"gw-sign\""));
    assert!(
        local_lines.starts_with(&remote_lines),
        "the export over --connect is not the local export's prefix:\n{remote_lines}\n---\n{local_lines}"
    );
    let local_verified = ok(f.local_so(), &["audit", "verify"]);
    assert!(
        local_verified.starts_with("audit trail intact: ")
            && local_verified.ends_with(" entries, chain, MACs and head verify\n"),
        "{local_verified}"
    );
}

#[test]
fn an_application_signs_over_connect_and_openssl_verifies_the_signature() {
    let f = Fixture::start();
    ok(
        f.officer(),
        &["key", "create", "gw-sign", "--alg", "ecdsa-p256-sha256"],
    );
    let msg = f.write("msg", b"gateway telemetry 2026-12-02\n");
    let tampered = f.write("tampered", b"gateway telemetry 2026-12-03\n");
    let sig = f.path("sig.der");
    let pem = f.path("pub.pem");
    let out = run(
        f.app(),
        &["sign", "gw-sign", "--in", s(&msg), "--out", s(&sig)],
    );
    assert_eq!(text(&out.stdout), "");
    let len = std::fs::read(&sig).expect("signature").len();
    assert_eq!(
        text(&out.stderr),
        format!("signed with key 'gw-sign' version 1 ({len} bytes)\n")
    );
    assert!(out.status.success());
    let out = run(f.app(), &["pubkey", "gw-sign", "--out", s(&pem)]);
    assert_ok(&out);
    let written = std::fs::read_to_string(&pem).expect("pem");
    assert!(written.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(
        written,
        ok(f.local(), &["pubkey", "gw-sign"]),
        "the daemon's public key is not the store's"
    );
    let verified = openssl_dgst_verify(OPENSSL, &pem, &sig, &msg, &[]);
    assert!(
        verified.status.success(),
        "openssl rejects a signature made over --connect: {}",
        text(&verified.stderr)
    );
    let forged = openssl_dgst_verify(OPENSSL, &pem, &sig, &tampered, &[]);
    assert!(
        !forged.status.success(),
        "openssl accepts a tampered message"
    );
    let verify = ["verify", "gw-sign", "--in", s(&msg), "--sig", s(&sig)];
    assert_eq!(ok(f.app(), &verify), "OK (version 1)\n");
    let verify_tampered = ["verify", "gw-sign", "--in", s(&tampered), "--sig", s(&sig)];
    assert_fails(&run(f.app(), &verify_tampered), 9, "Integrity");
    // Key use is the application's: the security officer may not sign.
    let out = run(
        f.officer(),
        &["sign", "gw-sign", "--in", s(&msg), "--out", s(&f.path("x"))],
    );
    assert_fails(&out, 7, "Policy");
    assert!(
        text(&out.stderr).contains("needs the application role"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_application_encrypts_decrypts_and_derives_over_connect() {
    let f = Fixture::start();
    ok(
        f.officer(),
        &["key", "create", "gw-aes", "--alg", "aes-256-gcm"],
    );
    let plain = f.write("plain", b"meter reading 42 kWh");
    let envelope = f.path("envelope");
    let back = f.path("back");
    let encrypt = [
        "encrypt",
        "gw-aes",
        "--in",
        s(&plain),
        "--out",
        s(&envelope),
        "--aad",
        "meter-7",
    ];
    assert_eq!(ok(f.app(), &encrypt), "");
    let sealed = std::fs::read(&envelope).expect("envelope");
    assert!(!sealed.windows(5).any(|w| w == b"meter"), "plaintext leaks");
    let decrypt = [
        "decrypt",
        "gw-aes",
        "--in",
        s(&envelope),
        "--out",
        s(&back),
        "--aad",
        "meter-7",
    ];
    assert_eq!(ok(f.app(), &decrypt), "");
    assert_eq!(
        std::fs::read(&back).expect("plaintext"),
        b"meter reading 42 kWh"
    );
    // The daemon's key is the store's: the envelope opens locally too.
    let local_back = f.path("local-back");
    let local_decrypt = [
        "decrypt",
        "gw-aes",
        "--in",
        s(&envelope),
        "--out",
        s(&local_back),
        "--aad",
        "meter-7",
    ];
    ok(f.local(), &local_decrypt);
    assert_eq!(
        std::fs::read(&local_back).expect("plaintext"),
        b"meter reading 42 kWh"
    );
    let nowhere = f.path("no");
    let wrong_aad = [
        "decrypt",
        "gw-aes",
        "--in",
        s(&envelope),
        "--out",
        s(&nowhere),
        "--aad",
        "meter-8",
    ];
    assert_fails(&run(f.app(), &wrong_aad), 9, "Integrity");

    ok(
        f.officer(),
        &[
            "key",
            "create",
            "gw-kdf",
            "--alg",
            "hmac-sha256",
            "--usages",
            "derive",
        ],
    );
    let derive = [
        "derive",
        "gw-kdf",
        "--len",
        "32",
        "--salt-hex",
        "00ff",
        "--info",
        "session",
    ];
    let out = run(f.app(), &derive);
    let derived = assert_ok(&out);
    assert_eq!(derived.trim_end().len(), 64, "{derived}");
    assert_eq!(
        derived,
        ok(f.local(), &derive),
        "derive differs over --connect"
    );
    assert!(text(&out.stderr).contains("derived key material is secret"));
}

#[test]
fn an_application_agrees_over_connect_with_the_local_result() {
    let f = Fixture::start();
    ok(
        f.officer(),
        &["key", "create", "gw-dh", "--alg", "ecdh-p256"],
    );
    ok(
        f.officer(),
        &["key", "create", "gw-peer", "--alg", "ecdh-p256"],
    );
    let peer = f.path("peer.pem");
    ok(f.app(), &["pubkey", "gw-peer", "--out", s(&peer)]);
    let agree = [
        "agree",
        "gw-dh",
        "--peer",
        s(&peer),
        "--info-hex",
        "a1b2",
        "--len",
        "40",
    ];
    let out = run(f.app(), &agree);
    let agreed = assert_ok(&out);
    assert_eq!(agreed.trim_end().len(), 80, "{agreed}");
    assert_eq!(
        agreed,
        ok(f.local(), &agree),
        "agree differs over --connect"
    );
    // Both sides of one ECDH agree on the same bytes.
    let ours = f.path("ours.pem");
    ok(f.app(), &["pubkey", "gw-dh", "--out", s(&ours)]);
    let other_side = [
        "agree",
        "gw-peer",
        "--peer",
        s(&ours),
        "--info-hex",
        "a1b2",
        "--len",
        "40",
    ];
    assert_eq!(ok(f.app(), &other_side), agreed);
    // The operator role may not use keys.
    assert_fails(&run(f.officer(), &agree), 7, "Policy");
}

#[test]
fn an_application_may_not_create_keys() {
    let f = Fixture::start();
    let out = run(
        f.app(),
        &["key", "create", "gw-new", "--alg", "ecdsa-p256-sha256"],
    );
    assert_fails(&out, 7, "Policy");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("create needs ") && stderr.contains("acts as application"),
        "{stderr}"
    );
    assert_eq!(ok(f.local(), &["key", "list"]), "no keys\n");
}

#[test]
fn keys_outside_the_applications_globs_are_not_found() {
    let f = Fixture::start();
    for name in ["gw-sign", "other-sign"] {
        ok(
            f.officer(),
            &["key", "create", name, "--alg", "ecdsa-p256-sha256"],
        );
    }
    let msg = f.write("msg", b"hello");
    let sig = f.path("sig");
    let sign = ["sign", "other-sign", "--in", s(&msg), "--out", s(&sig)];
    let out = run(f.app(), &sign);
    assert_fails(&out, 3, "NotFound");
    assert!(
        text(&out.stderr).contains("other-sign"),
        "{}",
        text(&out.stderr)
    );
    assert_fails(&run(f.app(), &["key", "show", "other-sign"]), 3, "NotFound");
    assert_fails(&run(f.app(), &["pubkey", "other-sign"]), 3, "NotFound");
    let listed = ok(f.app(), &["key", "list"]);
    assert!(listed.contains("gw-sign "), "{listed}");
    assert!(!listed.contains("other-sign"), "{listed}");
    // The same key inside the globs signs.
    let sign = ["sign", "gw-sign", "--in", s(&msg), "--out", s(&sig)];
    assert_ok(&run(f.app(), &sign));
}

#[test]
fn a_daemon_that_cannot_be_reached_exits_13() {
    let mut daemon = Daemon::soft(POLICY, "");
    daemon.start();
    let address = format!("unix:{}", daemon.socket().display());
    assert_ok(&run(keyctl(), &["--connect", &address, "key", "list"]));
    daemon.terminate();
    let out = run(keyctl(), &["--connect", &address, "key", "list"]);
    assert_fails(&out, 13, "Unavailable");
    assert!(
        text(&out.stderr).contains(s(&daemon.socket())),
        "{}",
        text(&out.stderr)
    );
    // A socket file nobody listens on, named by KEYCTL_CONNECT.
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).expect("bind"));
    assert!(dead.exists());
    let mut c = keyctl();
    c.env("KEYCTL_CONNECT", format!("unix:{}", s(&dead)));
    let msg = dir.path().join("msg");
    std::fs::write(&msg, b"m").expect("msg");
    let out = run(c, &["sign", "gw-sign", "--in", s(&msg), "--out", "-"]);
    assert_fails(&out, 13, "Unavailable");
}

#[test]
fn store_and_pki_commands_refuse_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("new-store");
    let audit = dir.path().join("audit.jsonl");
    // No daemon is needed: the refusal comes before any connection.
    let address = format!("unix:{}", s(&dir.path().join("keystore.sock")));
    let cases: [(&str, Vec<&str>); 9] = [
        ("init", vec!["init"]),
        ("role", vec!["role", "set", "operator"]),
        (
            "decommission",
            vec!["decommission", "--audit-out", s(&audit), "--yes"],
        ),
        ("tour", vec!["tour"]),
        ("ca", vec!["ca", "show"]),
        ("provision", vec!["provision", "--device-id", "dev-1"]),
        ("renew", vec!["renew", "--device-id", "dev-1"]),
        ("est", vec!["est", "serve", "--listen", "127.0.0.1:0"]),
        ("ocsp", vec!["ocsp", "serve", "--listen", "127.0.0.1:0"]),
    ];
    for (what, args) in cases {
        let mut c = keyctl();
        c.arg("--connect").arg(&address).arg("--store").arg(&store);
        let out = run(c, &args);
        assert_fails(&out, 2, "InvalidInput");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("`keyctl {what}`"))
                && stderr.contains("daemon's host")
                && stderr.contains("not over --connect"),
            "{what}: {stderr}"
        );
    }
    assert!(!store.exists(), "init over --connect created a store");
    assert!(!audit.exists());
}
