//! File modes of a soft store: every directory 0700 and every file 0600 under
//! umask 022, and a store whose paths other users can reach is tightened and
//! reported at open. (Unix only.)
#![cfg(unix)]

use backend_soft::{Kdf, SoftStore, Unlock};
use keystore_api::fsperm::{PathKind, Tightening};
use keystore_api::{Algorithm, SecretBytes};
use keystore_backend::BackendKey;
use keystore_backend::KeyManagement;
use keystore_backend::NewKey;
use keystore_backend::Signing;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const CHEAP_PBKDF2: Kdf = Kdf::Pbkdf2Sha256 {
    iterations: Kdf::MIN_PBKDF2_ITERATIONS,
};

fn pass() -> Unlock {
    Unlock::Passphrase(SecretBytes::from_slice(b"correct horse"))
}

/// The umask most systems run with: without the store's own care, files
/// would be 0644 and directories 0755.
fn umask_022() {
    // SAFETY: umask(2) only swaps the process's file-creation mask.
    unsafe { libc::umask(0o022) };
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every path under `dir` (and `dir` itself), with its mode.
fn walk(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = vec![(dir.to_path_buf(), true, mode(dir))];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push((p.clone(), false, mode(&p)));
        }
    }
    out
}

fn assert_private(dir: &Path) -> usize {
    let paths = walk(dir);
    for (p, is_dir, m) in &paths {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*m, want, "{} has mode {m:04o}", p.display());
    }
    paths.len()
}

#[test]
fn every_store_path_is_private_under_umask_022() {
    umask_022();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("store");
    let store = SoftStore::create(&d, &pass(), CHEAP_PBKDF2).unwrap();
    assert!(
        store.permission_report().is_clean(),
        "{}",
        store.permission_report()
    );
    let k = store
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "k"))
        .unwrap();
    let s = store
        .import(
            &NewKey::new(Algorithm::HmacSha256, "m"),
            &SecretBytes::from_slice(&[7; 32]),
        )
        .unwrap();
    store.destroy(&s).unwrap();
    store
        .generate(&NewKey::new(Algorithm::Aes256Gcm, "a"))
        .unwrap();
    // Rewrites the header through a temporary file.
    store.change_unlock(&pass(), CHEAP_PBKDF2).unwrap();
    drop(store);
    let store = SoftStore::open(&d, &pass()).unwrap();
    assert!(
        store.permission_report().is_clean(),
        "{}",
        store.permission_report()
    );
    store
        .sign(
            &BackendKey::new(k.handle.clone(), Algorithm::EcdsaP256Sha256),
            b"m",
        )
        .unwrap();
    // The directory, records/, the header, the lock file and two records.
    assert!(assert_private(&d) >= 6, "{:?}", walk(&d));
}

#[test]
fn a_loose_store_is_tightened_and_reported_at_open() {
    umask_022();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("store");
    let store = SoftStore::create(&d, &pass(), CHEAP_PBKDF2).unwrap();
    let k = store
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "k"))
        .unwrap();
    let record = store.record_path(&k.handle).unwrap();
    drop(store);
    // What an older release left behind under umask 022.
    let set =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    set(&d, 0o755);
    set(&d.join("records"), 0o755);
    set(&d.join("store.hdr"), 0o644);
    set(&record, 0o644);
    let store = SoftStore::open(&d, &pass()).unwrap();
    let report = store.permission_report();
    let mut found: Vec<_> = report
        .loose
        .iter()
        .map(|l| (l.path.clone(), l.kind, l.found_mode))
        .collect();
    found.sort();
    let mut want = vec![
        (d.clone(), PathKind::Directory, 0o755),
        (d.join("records"), PathKind::Directory, 0o755),
        (d.join("store.hdr"), PathKind::File, 0o644),
        (record.clone(), PathKind::File, 0o644),
    ];
    want.sort();
    assert_eq!(found, want, "{report}");
    assert!(report
        .loose
        .iter()
        .all(|l| matches!(l.outcome, Tightening::Tightened(_))));
    assert!(
        report.to_string().contains("store.hdr had mode 0644"),
        "{report}"
    );
    assert_private(&d);
    drop(store);
    // Fixed once: the next open finds nothing.
    let store = SoftStore::open(&d, &pass()).unwrap();
    assert!(store.permission_report().is_clean());

    // Only the records directory loose: it is walked on its own.
    drop(store);
    set(&d.join("records"), 0o750);
    set(&record, 0o640);
    let store = SoftStore::open(&d, &pass()).unwrap();
    let found: Vec<_> = store
        .permission_report()
        .loose
        .iter()
        .map(|l| l.path.clone())
        .collect();
    assert_eq!(found, vec![d.join("records"), record]);
    assert_private(&d);
}

#[test]
fn a_loose_directory_given_for_a_new_store_is_tightened_and_reported() {
    umask_022();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("given");
    std::fs::create_dir(&d).unwrap();
    assert_eq!(mode(&d), 0o755);
    let store = SoftStore::create(&d, &pass(), CHEAP_PBKDF2).unwrap();
    let report = store.permission_report();
    assert_eq!(report.loose.len(), 1, "{report}");
    assert_eq!(report.loose[0].path, d);
    assert_private(&d);
}
