//! A store directory's lock file, held shared by every process that has the
//! store open, so that one process can tell whether it is alone.

use crate::error::{Component, Error, Result};
use crate::fsperm;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long an open waits while another process holds the lock exclusively
/// (its crash clean-up, or a store being created).
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens `path` (created 0600) and holds a shared lock on it for the life of
/// the returned file, so any number of processes open the store at once. If
/// an exclusive try-lock succeeds first, no other process has the store open
/// and nothing of theirs is in flight: `when_alone` runs under that lock
/// (crash clean-up), which is then downgraded to shared.
///
/// # Errors
/// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process holds the lock exclusively for longer
/// than [`LOCK_WAIT`]; [`ErrorKind::Backend`](crate::ErrorKind::Backend) (as `component`) when the file cannot
/// be opened or locked; whatever `when_alone` returns.
pub fn lock_shared_for_life(
    path: &Path,
    component: Component,
    when_alone: impl FnOnce() -> Result<()>,
) -> Result<File> {
    let io =
        |what: &str, e| Error::backend(component, format!("cannot {what} {}", path.display()), e);
    let f = fsperm::open_private_file(path).map_err(|e| io("open", e))?;
    match f.try_lock() {
        Ok(()) => {
            let cleaned = when_alone();
            // flock(2) converts in place; on failure the file closes and the
            // lock goes with it.
            f.lock_shared().map_err(|e| io("lock", e))?;
            cleaned?;
            return Ok(f);
        }
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", e)),
    }
    // Another process has the store open (shared: joined at once) or holds
    // it exclusively for a moment (clean-up or creation: a short wait).
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match f.try_lock_shared() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::busy(format!(
                    "{} stayed locked exclusively by another process for {} s (a store being created, or crash clean-up at its open)",
                    path.display(),
                    LOCK_WAIT.as_secs()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn only_a_lone_opener_cleans_up_and_everyone_shares() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let mut ran = false;
        let first = lock_shared_for_life(&path, Component::Keystore, || {
            ran = true;
            Ok(())
        })
        .unwrap();
        assert!(ran, "the first opener is alone");
        let second =
            lock_shared_for_life(&path, Component::Keystore, || panic!("not alone")).unwrap();
        drop((first, second));
        let exclusive = fsperm::open_private_file(&path).unwrap();
        exclusive.lock().unwrap();
        let started = Instant::now();
        let err = lock_shared_for_life(&path, Component::Keystore, || Ok(())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy);
        assert!(started.elapsed() >= LOCK_WAIT);
    }
}
