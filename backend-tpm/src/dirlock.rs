//! The store's lock file (`DIR/lock`): shared for the life of each backend,
//! exclusive only for crash cleanup when no other process has the store open.

use crate::{fsio, LOCK_FILE};
use keystore_backend::{Error, Result};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long [`TpmBackend::open`] waits for its shared lock while another
/// process cleans up after a crash (holding the lock exclusively).
///
/// [`TpmBackend::open`]: crate::TpmBackend::open
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Takes the store's lock (`DIR/lock`) for the life of the backend: shared,
/// so that any number of backends and processes open the store at once. If
/// an exclusive try-lock succeeds first (no other holder: no other process
/// has the store open, so nothing of theirs is in flight), `exclusive` runs
/// under it (crash cleanup), and the lock is then downgraded to shared.
pub(crate) fn lock_dir(dir: &Path, exclusive: impl FnOnce() -> Result<()>) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let f = fsio::open_private(&path)?;
    let lock_err = |e| fsio::io_err(format!("cannot lock {}", path.display()), e);
    match f.try_lock() {
        Ok(()) => {
            let cleaned = exclusive();
            // flock(2) converts in place; on failure the file closes and the
            // lock goes with it.
            f.lock_shared().map_err(lock_err)?;
            cleaned?;
            return Ok(f);
        }
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    // Another backend has the store open (shared: we join it at once) or is
    // cleaning up after a crash (exclusive: a short wait).
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match f.try_lock_shared() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::backend_msg(
                    "tpm",
                    format!(
                        "the TPM store in {} stayed locked exclusively by another process for {} s (crash recovery at its open?)",
                        dir.display(),
                        LOCK_WAIT.as_secs()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
    }
}
