//! Reading and writing the user's files. Failures are [`CliError::Io`]
//! (exit 11); oversized inputs are `InvalidInput`.

use crate::error::{CliError, CliResult};
use keystore_api::SecretBytes;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use zeroize::Zeroizing;

/// True if `path` is `-` (stdin or stdout).
fn is_std(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Reads a whole input file (`-` for stdin), refusing more than `limit` bytes.
pub fn read_input(path: &Path, limit: usize, what: &str) -> CliResult<Vec<u8>> {
    let mut buf = Vec::new();
    let cap = (limit as u64).saturating_add(1);
    let res = if is_std(path) {
        std::io::stdin().lock().take(cap).read_to_end(&mut buf)
    } else {
        File::open(path).and_then(|f| f.take(cap).read_to_end(&mut buf))
    };
    res.map_err(|e| CliError::io(&format!("read {what}"), path, e))?;
    if buf.len() > limit {
        return Err(CliError::invalid(format!(
            "{what} {} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

/// Reads a small secret file into zeroizing memory, refusing more than `limit` bytes.
pub fn read_secret(path: &Path, limit: u64, what: &str) -> CliResult<SecretBytes> {
    let cap = limit.saturating_add(1);
    // Sized up front so that reading never reallocates and leaves copies behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(usize::try_from(cap).unwrap_or(4096)));
    File::open(path)
        .and_then(|f| f.take(cap).read_to_end(&mut buf))
        .map_err(|e| CliError::io(&format!("read {what}"), path, e))?;
    if buf.len() as u64 > limit {
        return Err(CliError::invalid(format!(
            "{what} {} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(SecretBytes::new(std::mem::take(&mut *buf)))
}

/// Writes public data (`-` for stdout): signatures, public-key PEM and
/// ciphertext envelopes, to a path the operator chose; the file gets the
/// process's default mode (0644 under umask 022). Anything secret, and every
/// backup or export, goes through [`write_secret`].
pub fn write_public(path: &Path, bytes: &[u8]) -> CliResult<()> {
    if is_std(path) {
        return write_stdout(bytes);
    }
    std::fs::write(path, bytes).map_err(|e| CliError::io("write", path, e))
}

/// Writes secret or private data (`-` for stdout): plaintexts, derived
/// keys, wrapped backups, audit exports and every file inside a store. To a
/// new file of mode 0600 (whatever the umask: created so, never chmod'ed
/// after the write) in the target directory, then renamed over `path`, so
/// that no other user can read it and no partial file is left on failure.
pub fn write_secret(path: &Path, bytes: &[u8]) -> CliResult<()> {
    if is_std(path) {
        return write_stdout(bytes);
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| CliError::io("write", path, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| CliError::io("write", path, e))?;
    tmp.persist(path)
        .map_err(|e| CliError::io("write", path, e.error))?;
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| CliError::io("write", Path::new("stdout"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, [7u8; 10]).expect("write");
        assert_eq!(read_input(&p, 10, "input").expect("fits").len(), 10);
        assert_eq!(read_input(&p, 9, "input").unwrap_err().exit_code(), 2);
        assert_eq!(read_secret(&p, 10, "secret").expect("fits").len(), 10);
        assert_eq!(read_secret(&p, 9, "secret").unwrap_err().exit_code(), 2);
        let missing = dir.path().join("missing");
        assert_eq!(
            read_input(&missing, 9, "input").unwrap_err().exit_code(),
            11
        );
    }

    #[cfg(unix)]
    #[test]
    fn secret_outputs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out");
        std::fs::write(&p, b"old").expect("write");
        write_secret(&p, b"new").expect("write secret");
        assert_eq!(std::fs::read(&p).expect("read"), b"new");
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
