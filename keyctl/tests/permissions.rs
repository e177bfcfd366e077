//! File modes end to end: every `keyctl` process runs under `umask 022`
//! (through `sh -c 'umask 022; exec keyctl …'`), and afterwards every path
//! under the stores is a 0700 directory or a 0600 file; backups, exports and
//! secret outputs are 0600, public outputs keep the umask's 0644. A store
//! whose paths other users can reach is tightened at open, with one stderr
//! warning per path. (Unix only.)
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use test_support::keyctl::{run_ok as run, s, Credential, KeyFileStore, Keyctl};

const SO: Credential = Credential::officer("officer credential for tests");
const OP: Credential = Credential::operator("operator credential for tests").by("station-3");
const ROOT_SECRET: &str = "root custodian credential for tests";

/// `keyctl` started by a shell that first sets umask 022, with a clean
/// environment and no stdin.
fn harness() -> Keyctl {
    Keyctl::new(env!("CARGO_BIN_EXE_keyctl")).with_umask("022")
}

fn keyctl() -> Command {
    harness().command()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// Every path under `dir`, `dir` included.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).expect("list") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Asserts that every path under `dir` is a 0700 directory or 0600 file;
/// returns how many paths it checked.
fn assert_private_tree(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    for p in &paths {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(p), want, "{} has mode {:04o}", p.display(), mode(p));
    }
    paths
}

#[test]
fn every_store_path_backup_and_export_is_private_under_umask_022() {
    let env = KeyFileStore::new(harness(), "store", "keys/store.key", SO);
    std::fs::create_dir(env.path("keys")).expect("mkdir");
    env.init();
    env.set_role(OP);
    run(env
        .so()
        .args(["key", "create", "sig", "--alg", "ecdsa-p256-sha256"]));
    run(env.so().args([
        "key",
        "create",
        "data",
        "--alg",
        "aes-256-gcm",
        "--backup-eligible",
    ]));
    run(env.so().args([
        "key",
        "create",
        "kek",
        "--alg",
        "aes-256-gcm",
        "--usages",
        "wrap",
    ]));
    run(env.so().args([
        "key",
        "create",
        "h",
        "--alg",
        "hmac-sha256",
        "--usages",
        "derive",
    ]));
    run(env.so().args(["key", "rotate", "sig", "--grace", "1d"]));

    // Outputs: secret ones and every backup or export 0600 ...
    let msg = env.path("msg");
    std::fs::write(&msg, b"firmware image").expect("write");
    let (sig, pem, ct) = (env.path("sig.der"), env.path("pub.pem"), env.path("ct"));
    let (plain, derived) = (env.path("plain"), env.path("derived"));
    let (backup, audit) = (env.path("data.backup"), env.path("audit.jsonl"));
    run(env
        .bare()
        .args(["sign", "sig", "--in", s(&msg), "--out", s(&sig)]));
    run(env.bare().args(["pubkey", "sig", "--out", s(&pem)]));
    run(env
        .bare()
        .args(["encrypt", "data", "--in", s(&msg), "--out", s(&ct)]));
    run(env
        .bare()
        .args(["decrypt", "data", "--in", s(&ct), "--out", s(&plain)]));
    run(env.bare().args([
        "derive",
        "h",
        "--len",
        "32",
        "--salt-hex",
        "00",
        "--out",
        s(&derived),
    ]));
    run(env
        .so()
        .args(["key", "backup", "data", "--kek", "kek", "--out", s(&backup)]));
    run(env.so().args(["audit", "export", "--out", s(&audit)]));
    for p in [&plain, &derived, &backup, &audit, &env.key_file] {
        assert_eq!(mode(p), 0o600, "{} has mode {:04o}", p.display(), mode(p));
    }
    assert_eq!(
        mode(&env.path("keys")),
        0o755,
        "a directory keyctl did not create is left alone"
    );
    // ... public ones (signature, public-key PEM, ciphertext) the umask's 0644.
    for p in [&sig, &pem, &ct] {
        assert_eq!(mode(p), 0o644, "{} has mode {:04o}", p.display(), mode(p));
    }

    // The device PKI: an offline root store, pki.sqlite, pki/, provisioned/.
    let root = env.path("root-ca");
    let root_key = env.path("root-keys").join("root.key");
    run(keyctl()
        .args(["ca", "init-root", "--root-store", s(&root)])
        .args(["--new-root-key-file", s(&root_key), "--cn", "Test Root CA"])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET));
    run(env
        .so()
        .args(["ca", "sign-intermediate", "--root-store", s(&root)])
        .args([
            "--root-key-file",
            s(&root_key),
            "--cn",
            "Test Production CA",
        ])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET));
    run(env.with(OP).args([
        "provision",
        "--device-id",
        "DEV12345",
        "--operator",
        "line-3",
    ]));

    // Every path under both stores is owner-only, and the root key's new
    // directory too.
    let paths = assert_private_tree(&env.store);
    for must in [
        "metadata.sqlite",
        "metadata.sqlite-gen",
        "soft/store.hdr",
        "soft/records",
        "pki.sqlite",
        "pki/root.pem",
        "provisioned/DEV12345/cert.pem",
    ] {
        assert!(paths.contains(&env.store.join(must)), "{must} was checked");
    }
    let records = std::fs::read_dir(env.store.join("soft/records"))
        .expect("records")
        .count();
    assert!(records >= 5, "{records} records checked");
    assert_private_tree(&root);
    assert_eq!(mode(&root_key), 0o600);
    assert_eq!(mode(root_key.parent().expect("parent")), 0o700);
}

#[test]
fn a_loose_store_is_tightened_with_one_warning_per_path() {
    let env = KeyFileStore::create(harness(), "store", "store.key", SO);
    let listed = run(env.bare().args(["key", "list"]));
    assert!(
        listed.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // What an older release left under umask 022.
    let loose = [
        (env.store.clone(), 0o755),
        (env.store.join("metadata.sqlite"), 0o644),
        (env.store.join("soft"), 0o755),
        (env.store.join("soft/store.hdr"), 0o644),
    ];
    for (p, m) in &loose {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(*m)).expect("chmod");
    }
    let out = run(env.bare().args(["key", "list"]));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), loose.len(), "{stderr}");
    for (p, m) in &loose {
        let line = format!("{} had mode {m:04o}", p.display());
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("keyctl: warning: ") && w.contains(&line)),
            "no warning '{line}' in:\n{stderr}"
        );
    }
    assert_private_tree(&env.store);
    // Fixed once: no warning the next time.
    let out = run(env.bare().args(["key", "list"]));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
