//! File modes of the metadata: `metadata.sqlite`, SQLite's `-wal`/`-shm`,
//! the `-gen` and `-lock` files are 0600 under umask 022, and an existing
//! database whose files other users can reach is tightened and reported in
//! `Keystore::permission_report`. (Unix only.)
#![cfg(unix)]

use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
use keystore_api::fsperm::{PathKind, Tightening};
use keystore_api::{Actor, Algorithm, KeySpec, Keystore, Role, SignatureFormat};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn umask_022() {
    // SAFETY: umask(2) only swaps the process's file-creation mask.
    unsafe { libc::umask(0o022) };
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn side(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

struct Env {
    _tmp: tempfile::TempDir,
    soft: PathBuf,
    key: PathBuf,
    db: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("kek.key");
        create_key_file(&key).unwrap();
        Env {
            soft: tmp.path().join("soft"),
            db: tmp.path().join("metadata.sqlite"),
            key,
            _tmp: tmp,
        }
    }

    fn open(&self) -> Keystore<SoftStore> {
        let unlock = Unlock::KeyFile(self.key.clone());
        let store = if SoftStore::exists(&self.soft) {
            SoftStore::open(&self.soft, &unlock)
        } else {
            SoftStore::create(&self.soft, &unlock, Kdf::KeyFile)
        }
        .unwrap();
        Keystore::open(store, &self.db).unwrap()
    }
}

#[test]
fn metadata_files_are_private_under_umask_022() {
    umask_022();
    let env = Env::new();
    let ks = env.open();
    assert!(
        ks.permission_report().is_clean(),
        "{}",
        ks.permission_report()
    );
    let so = Actor::new("test", Role::SecurityOfficer).unwrap();
    ks.create(&so, "id", KeySpec::new(Algorithm::EcdsaP256Sha256))
        .unwrap();
    ks.rotate(&so, "id", time::Duration::hours(1)).unwrap();
    ks.sign("id", b"m", SignatureFormat::Der).unwrap();
    // While the keystore is open SQLite keeps its -wal and -shm files.
    let mut checked = 0;
    for suffix in ["", "-wal", "-shm", "-journal", "-gen", "-lock"] {
        let p = side(&env.db, suffix);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{} has mode {:04o}", p.display(), mode(&p));
            checked += 1;
        }
    }
    for must in ["", "-wal", "-shm", "-gen"] {
        assert!(side(&env.db, must).exists(), "metadata.sqlite{must} exists");
    }
    assert!(checked >= 4);
    drop(ks);
    let ks = env.open();
    assert!(
        ks.permission_report().is_clean(),
        "{}",
        ks.permission_report()
    );
}

#[test]
fn loose_metadata_files_are_tightened_and_reported_with_the_backends() {
    umask_022();
    let env = Env::new();
    let ks = env.open();
    drop(ks);
    // What an older release left behind under umask 022.
    for (p, m) in [
        (env.db.clone(), 0o644),
        (side(&env.db, "-gen"), 0o644),
        (env.soft.clone(), 0o755),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let ks = env.open();
    let report = ks.permission_report();
    let found: Vec<_> = report
        .loose
        .iter()
        .map(|l| (l.path.clone(), l.kind))
        .collect();
    // The backend's findings first, then the metadata's.
    assert_eq!(
        found,
        vec![
            (env.soft.clone(), PathKind::Directory),
            (env.db.clone(), PathKind::File),
            (side(&env.db, "-gen"), PathKind::File),
        ],
        "{report}"
    );
    assert!(report
        .loose
        .iter()
        .all(|l| l.outcome == Tightening::Tightened(l.kind.private_mode())));
    assert_eq!(mode(&env.db), 0o600);
    assert_eq!(mode(&side(&env.db, "-gen")), 0o600);
    assert_eq!(mode(&env.soft), 0o700);
    // SQLite's files made after the fix inherit the main file's 0600.
    let so = Actor::new("test", Role::SecurityOfficer).unwrap();
    ks.create(&so, "k", KeySpec::new(Algorithm::HmacSha256))
        .unwrap();
    assert_eq!(mode(&side(&env.db, "-wal")), 0o600);
    assert_eq!(mode(&side(&env.db, "-shm")), 0o600);
}
