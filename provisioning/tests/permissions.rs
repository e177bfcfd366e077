//! `pki.sqlite` and SQLite's `-wal`/`-shm` beside it are 0600 under umask
//! 022, and an existing database other users can reach is tightened and
//! reported. (Unix only.)
#![cfg(unix)]

use keystore_api::fsperm::Tightening;
use provisioning::PkiDb;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn side(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

#[test]
fn pki_database_files_are_private_under_umask_022_and_loose_ones_are_fixed() {
    // SAFETY: umask(2) only swaps the process's file-creation mask.
    unsafe { libc::umask(0o022) };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pki.sqlite");
    let db = PkiDb::open(&path).unwrap();
    assert!(db.permission_report().is_clean());
    // The schema was written in WAL mode: SQLite keeps -wal and -shm open.
    for suffix in ["", "-wal", "-shm"] {
        let p = side(&path, suffix);
        assert!(p.exists(), "{} exists", p.display());
        assert_eq!(mode(&p), 0o600, "{} has mode {:04o}", p.display(), mode(&p));
    }
    drop(db);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let db = PkiDb::open(&path).unwrap();
    let report = db.permission_report();
    assert_eq!(report.loose.len(), 1, "{report}");
    assert_eq!(report.loose[0].path, path);
    assert_eq!(report.loose[0].found_mode, 0o644);
    assert_eq!(report.loose[0].outcome, Tightening::Tightened(0o600));
    assert_eq!(mode(&path), 0o600);
    for suffix in ["-wal", "-shm"] {
        assert_eq!(mode(&side(&path, suffix)), 0o600);
    }
}
