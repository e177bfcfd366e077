//! Crash-safe, owner-only file writes.
//!
//! A file is written to a temporary name in the same directory, flushed to
//! disk, renamed over its final name and the directory is flushed. A crash at
//! any point leaves either the old file or the new one, plus at worst a
//! temporary file that [`remove_temporaries`] deletes at the next open.
//!
//! Every file and directory of a store is private, whatever the umask
//! ([`keystore_backend::fsperm`]): directories 0700, and files (temporaries
//! included) created 0600 before their first byte is written.

use keystore_backend::fsperm::{self, PermissionReport};
use keystore_backend::{Component, Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Prefix of temporary files; never a valid record or header name.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

pub(crate) fn io_err(what: impl Into<String>, e: std::io::Error) -> Error {
    Error::backend(Component::Soft, what, e)
}

/// Writes `bytes` to `path` atomically and durably.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or_else(|| {
        Error::backend_msg(Component::Soft, "record path has no parent directory")
    })?;
    write_atomic_via(path, dir, bytes)
}

/// Writes `bytes` to `path` atomically and durably, through a temporary file
/// in `tmp_dir` (same file system). Record writes keep their temporaries out
/// of the records directory, so that clearing crash leftovers at open never
/// has to list every record.
pub(crate) fn write_atomic_via(path: &Path, tmp_dir: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or_else(|| {
        Error::backend_msg(Component::Soft, "record path has no parent directory")
    })?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::backend_msg(Component::Soft, "record path has no file name"))?;
    let mut rnd = [0u8; 8];
    crate::prim::random(&mut rnd)?;
    let tmp = tmp_dir.join(format!("{TMP_PREFIX}{file_name}-{}", hex::encode(rnd)));
    let result = (|| {
        let mut f = fsperm::create_private_file(&tmp)
            .map_err(|e| io_err(format!("cannot create {}", tmp.display()), e))?;
        f.write_all(bytes)
            .map_err(|e| io_err(format!("cannot write {}", tmp.display()), e))?;
        f.sync_all()
            .map_err(|e| io_err(format!("cannot flush {}", tmp.display()), e))?;
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

/// Creates `dir` (and missing parents) with mode 0700; an existing
/// directory is left to [`secure_store`].
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    fsperm::ensure_private_dir(dir)
        .map_err(|e| io_err(format!("cannot create {}", dir.display()), e))
}

/// The open-time permission check of the store in `dir`: the directory, the
/// records directory and the store's fixed files (`files`, relative to
/// `dir`). Any of them that other users can reach is set to 0700/0600 and
/// reported; a loose directory has everything below it checked too.
pub(crate) fn secure_store(dir: &Path, records: &str, files: &[&str]) -> PermissionReport {
    let mut report = PermissionReport::new();
    if report.check_dir_tree(dir) {
        // Everything below was checked with it.
        return report;
    }
    report.check_dir_tree(&dir.join(records));
    for f in files {
        report.check_path(&dir.join(f));
    }
    report
}

/// Removes `path` durably. A missing file is `NotFound`.
pub(crate) fn remove_durably(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found(format!(
                "no soft record at {}",
                path.display()
            )))
        }
        Err(e) => return Err(io_err(format!("cannot remove {}", path.display()), e)),
    }
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Flushes a directory's entries to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(format!("cannot flush directory {}", dir.display()), e))
}

/// Deletes temporary files left by a crash during [`write_atomic`].
pub(crate) fn remove_temporaries(dir: &Path) -> Result<()> {
    let entries =
        fs::read_dir(dir).map_err(|e| io_err(format!("cannot list {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(format!("cannot list {}", dir.display()), e))?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Overwrites the file's bytes with zeros in place and flushes them, so the
/// old content does not survive in the same blocks (best effort on flash).
pub(crate) fn overwrite_in_place(path: &Path) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err(format!("cannot open {}", path.display()), e))?;
    let len = f
        .metadata()
        .map_err(|e| io_err(format!("cannot stat {}", path.display()), e))?
        .len() as usize;
    f.write_all(&vec![0u8; len])
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(format!("cannot overwrite {}", path.display()), e))
}
