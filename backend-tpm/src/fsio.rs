//! Crash-safe file writes for the registry: temp file, fsync, rename, fsync
//! the directory; shredding renames away first. Files are created with mode
//! 0600 and directories with mode 0700, whatever the umask
//! ([`keystore_backend::fsperm`]).

use keystore_backend::fsperm::{self, PermissionReport};
use keystore_backend::{Component, Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Prefix of temporary files; never a valid entry name.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

pub(crate) fn io_err(what: impl Into<String>, e: std::io::Error) -> Error {
    Error::backend(Component::Tpm, what, e)
}

fn create_new(path: &Path) -> std::io::Result<File> {
    fsperm::create_private_file(path)
}

/// Creates `dir` (and missing parents) with mode 0700; an existing
/// directory is left to [`secure_store`]. For the store directory
/// (`TpmBackend::open`) and the registry's `keys/` (`Registry::open`).
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    fsperm::ensure_private_dir(dir)
        .map_err(|e| io_err(format!("cannot create {}", dir.display()), e))
}

/// The open-time permission check of the TPM store in `dir`: the directory,
/// the registry directory `keys` (relative to `dir`) and the fixed files
/// `files`. Any that other users can reach is set to 0700/0600 and
/// reported; a loose directory has everything below it checked too, so a
/// store from an older release is fixed once.
pub(crate) fn secure_store(dir: &Path, keys: &str, files: &[&str]) -> PermissionReport {
    let mut report = PermissionReport::new();
    if report.check_dir_tree(dir) {
        return report;
    }
    report.check_dir_tree(&dir.join(keys));
    for f in files {
        report.check_path(&dir.join(f));
    }
    report
}

/// Writes `bytes` to `path` atomically and durably. `nonce` makes the
/// temporary name unique.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], nonce: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or_else(|| {
        Error::backend_msg(Component::Tpm, "registry path has no parent directory")
    })?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::backend_msg(Component::Tpm, "registry path has no file name"))?;
    let tmp = dir.join(format!("{TMP_PREFIX}{file_name}-{}", hex::encode(nonce)));
    let result = (|| {
        let mut f =
            create_new(&tmp).map_err(|e| io_err(format!("cannot create {}", tmp.display()), e))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err(format!("cannot write {}", tmp.display()), e))?;
        drop(f);
        fs::rename(&tmp, path)
            .map_err(|e| io_err(format!("cannot rename into {}", path.display()), e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Shreds the entry file `path`: renames it to a temporary name first (so
/// that the entry vanishes atomically for every other process: a reader
/// never sees it half overwritten under its own name), then overwrites it
/// with zeros, flushes and removes it durably. `nonce` makes the temporary
/// name unique. A missing file is `Ok(false)` (another process may have
/// shredded it first).
pub(crate) fn shred(path: &Path, nonce: &[u8]) -> Result<bool> {
    let dir = path.parent().ok_or_else(|| {
        Error::backend_msg(Component::Tpm, "registry path has no parent directory")
    })?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::backend_msg(Component::Tpm, "registry path has no file name"))?;
    let doomed = dir.join(format!(
        "{TMP_PREFIX}{file_name}-shred-{}-{}",
        std::process::id(),
        hex::encode(nonce)
    ));
    match fs::rename(path, &doomed) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(format!("cannot remove {}", path.display()), e)),
    }
    shred_in_place(&doomed)?;
    Ok(true)
}

/// Overwrites `path` with zeros in place, flushes, then removes it durably.
/// A missing file is `Ok(false)`.
pub(crate) fn shred_in_place(path: &Path) -> Result<bool> {
    match OpenOptions::new().write(true).open(path) {
        Ok(mut f) => {
            let len = f
                .metadata()
                .map_err(|e| io_err(format!("cannot stat {}", path.display()), e))?
                .len() as usize;
            f.write_all(&vec![0u8; len])
                .and_then(|_| f.sync_all())
                .map_err(|e| io_err(format!("cannot overwrite {}", path.display()), e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(format!("cannot open {}", path.display()), e)),
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(format!("cannot remove {}", path.display()), e)),
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(true)
}

/// Flushes a directory's entries to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(format!("cannot flush directory {}", dir.display()), e))
}

#[cfg(all(test, unix))]
mod permission_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// With umask 022 (what most systems use), the registry's directories
    /// and entries, temporaries included, are still owner-only.
    #[test]
    #[allow(unsafe_code)]
    fn registry_paths_are_private_under_umask_022() {
        // SAFETY: umask only swaps the process's file-creation mask.
        unsafe { libc::umask(0o022) };
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("tpm");
        ensure_private_dir(&store.join("keys")).unwrap();
        drop(keystore_backend::fsperm::open_private_file(&store.join("lock")).unwrap());
        let entry = store.join("keys").join("00.key");
        write_atomic(&entry, b"entry", b"n1").unwrap();
        write_atomic(&entry, b"entry 2", b"n2").unwrap();
        assert_eq!(mode(&store), 0o700);
        assert_eq!(mode(&store.join("keys")), 0o700);
        assert_eq!(mode(&store.join("lock")), 0o600);
        assert_eq!(mode(&entry), 0o600);
        assert!(secure_store(&store, "keys", &["lock"]).is_clean());

        // An older store's loose paths are tightened and reported.
        for (p, m) in [(&store.join("keys"), 0o755), (&entry, 0o644)] {
            fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
        }
        let report = secure_store(&store, "keys", &["lock"]);
        let found: Vec<_> = report.loose.iter().map(|l| l.path.clone()).collect();
        assert_eq!(found, vec![store.join("keys"), entry.clone()], "{report}");
        assert_eq!(mode(&store.join("keys")), 0o700);
        assert_eq!(mode(&entry), 0o600);
    }
}
