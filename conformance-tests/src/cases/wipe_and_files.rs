//! Wipe and store files: a backend wipe removes everything, and the store's
//! files and directories are private.

use crate::support::so;
use crate::support::{create_or_prove_unsupported, random_key, scan_files};
use crate::{Fixture, Outcome};
use keystore_api::KeyManagement;
use keystore_api::{Algorithm, KeySpec, SecretBytes, SignatureFormat, Usages};

/// TEST-KEY-32
pub fn backend_wipe_removes_everything<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let k = random_key();
    ks.import(
        &so(),
        "w-mac",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&k),
    )
    .expect("import");
    // A key holds mac or derive, never both: the same K as a derive key.
    ks.import(
        &so(),
        "w-kdf",
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
        &SecretBytes::from_slice(&k),
    )
    .expect("import");
    ks.mac("w-mac", b"m").expect("mac before the wipe");
    ks.derive_hkdf_sha256("w-kdf", b"s", b"i", 32)
        .expect("derive before the wipe");
    let ec = create_or_prove_unsupported::<F>(&ks, "w-ec", Algorithm::EcdsaP256Sha256).is_some();
    let mut handles = vec![
        ks.backend_handle("w-mac", 1).expect("handle"),
        ks.backend_handle("w-kdf", 1).expect("handle"),
    ];
    if ec {
        handles.push(ks.backend_handle("w-ec", 1).expect("handle"));
    }
    ks.backend().wipe().expect("wipe");
    assert!(
        ks.backend().list().map(|l| l.is_empty()).unwrap_or(true),
        "no key survives a wipe"
    );
    assert!(
        ks.mac("w-mac", b"m").is_err(),
        "a wiped HMAC key still works"
    );
    assert!(
        ks.derive_hkdf_sha256("w-kdf", b"s", b"i", 32).is_err(),
        "a wiped key still derives"
    );
    if ec {
        assert!(
            ks.sign("w-ec", b"m", SignatureFormat::Der).is_err(),
            "a wiped signing key still signs"
        );
    }
    for h in &handles {
        fx.assert_material_gone(&ks, h)
            .unwrap_or_else(|e| panic!("material not gone after wipe: {e}"));
    }
    assert!(scan_files(fx, &k).is_empty());
    Outcome::Passed
}

/// TEST-KEY-56: under umask 022, every directory the store made (backend
/// store directory, records or registry) is 0700 and every file it wrote
/// (records, header, lock, `metadata.sqlite` with its `-wal`, `-shm`,
/// `-gen`, `-lock`) is 0600; loosened modes are tightened and reported at
/// the next open. Files a device keeps in its own storage (a PKCS#11
/// token's) are outside the fixture's directory and not ours to check.
pub fn store_files_are_private<F: Fixture>(fx: &mut F) -> Outcome {
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
    }
    // The umask most systems run with: without the store's own care its
    // files would be 0644 and its directories 0755.
    // SAFETY: umask(2) only swaps the process's file-creation mask.
    unsafe { libc::umask(0o022) };

    let ks = fx.open();
    assert!(
        ks.permission_report().is_clean(),
        "a new store reports loose paths: {}",
        ks.permission_report()
    );
    let signer =
        create_or_prove_unsupported::<F>(&ks, "perm-sig", Algorithm::EcdsaP256Sha256).is_some();
    ks.create(&so(), "perm-mac", KeySpec::new(Algorithm::HmacSha256))
        .expect("create hmac");
    ks.rotate(&so(), "perm-mac", time::Duration::hours(1))
        .expect("rotate");
    ks.mac("perm-mac", b"m").expect("mac");
    if signer {
        ks.sign("perm-sig", b"m", SignatureFormat::Der)
            .expect("sign");
    }

    // Checked while the keystore is open, so SQLite's -wal/-shm exist.
    let metadata = fx.metadata_path();
    let root = metadata
        .parent()
        .expect("the metadata has a directory")
        .to_path_buf();
    let mut files: BTreeSet<PathBuf> = fx.files().into_iter().collect();
    for suffix in ["", "-wal", "-shm", "-journal", "-gen", "-lock"] {
        let p = PathBuf::from(format!("{}{suffix}", metadata.display()));
        if p.exists() {
            files.insert(p);
        }
    }
    for must in ["", "-wal", "-shm", "-gen"] {
        let p = PathBuf::from(format!("{}{must}", metadata.display()));
        assert!(files.contains(&p), "{} was not checked", p.display());
    }
    // The backend's directories: every directory between the fixture's
    // directory and a file the store wrote, walked whole.
    let mut dirs = BTreeSet::new();
    for f in files.iter().filter(|f| f.starts_with(&root)) {
        let mut d = f.parent();
        while let Some(dir) = d.filter(|d| *d != root.as_path()) {
            dirs.insert(dir.to_path_buf());
            d = dir.parent();
        }
    }
    for d in &dirs {
        for e in std::fs::read_dir(d).expect("list").flatten() {
            if !e.path().is_dir() {
                files.insert(e.path());
            }
        }
    }
    let ours: Vec<&PathBuf> = files.iter().filter(|f| f.starts_with(&root)).collect();
    for f in &ours {
        assert_eq!(
            mode(f),
            0o600,
            "{} on {}: mode {:04o}",
            f.display(),
            F::NAME,
            mode(f)
        );
    }
    for d in &dirs {
        assert_eq!(
            mode(d),
            0o700,
            "{} on {}: mode {:04o}",
            d.display(),
            F::NAME,
            mode(d)
        );
    }

    // Loosened (as an older release left them): tightened and reported.
    let mut loosened = vec![metadata.clone()];
    loosened.extend(dirs.iter().cloned());
    for p in &loosened {
        let m = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    }
    let ks = fx.restart(ks);
    let reported: BTreeSet<PathBuf> = ks
        .permission_report()
        .loose
        .iter()
        .map(|l| l.path.clone())
        .collect();
    for p in &loosened {
        assert!(
            reported.contains(p),
            "{} loosened but not reported on {}: {}",
            p.display(),
            F::NAME,
            ks.permission_report()
        );
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(p), want, "{} not tightened", p.display());
    }
    ks.mac("perm-mac", b"m").expect("the store still works");
    let ks = fx.restart(ks);
    assert!(
        ks.permission_report().is_clean(),
        "{}",
        ks.permission_report()
    );
    Outcome::Passed
}
