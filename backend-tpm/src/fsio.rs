//! Crash-safe file writes for the registry: temp file, fsync, rename, fsync
//! the directory. Files are created with mode 0600.

use keystore_api::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Prefix of temporary files; never a valid entry name.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

pub(crate) fn io_err(what: impl Into<String>, e: std::io::Error) -> Error {
    Error::backend("tpm", what, e)
}

fn create_new(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Writes `bytes` to `path` atomically and durably. `nonce` makes the
/// temporary name unique.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], nonce: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::backend_msg("tpm", "registry path has no parent directory"))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::backend_msg("tpm", "registry path has no file name"))?;
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

/// Overwrites `path` with zeros in place, flushes, then removes it durably.
/// A missing file is `Ok(false)`.
pub(crate) fn shred(path: &Path) -> Result<bool> {
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
    fs::remove_file(path).map_err(|e| io_err(format!("cannot remove {}", path.display()), e))?;
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
