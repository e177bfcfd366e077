//! The store's write lock: one writer at a time across every process that
//! opens the store, with a bounded wait.
//!
//! Every lifecycle operation (create, import, rotate, revoke, destroy, sweep,
//! backup, restore, role changes, application events, recovery at open) holds
//! it for its whole duration, backend calls included. Uses (sign, verify,
//! MAC, derive, encrypt, decrypt, public key) never take it.
//!
//! The lock is an `flock` on `<metadata>-lock`, so the kernel releases it when
//! its holder dies, however it dies. That is what lets recovery at open tell
//! an interrupted operation from one in progress: whoever holds the lock and
//! finds a pending creation or an intent knows that its owner is gone.
//!
//! While it holds the lock, a holder writes one line naming itself (pid,
//! program, operation, since) into the file, so that a writer that gives up
//! waiting can say what held the store.

use crate::error::{Component, Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a writer waits for the store's write lock by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The lock file beside the metadata database `db`.
pub(crate) fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-lock");
    PathBuf::from(name)
}

/// The store's cross-process write lock, shared by the threads of one
/// `Keystore`. Re-entrant on the thread that holds it.
pub(crate) struct WriteLock {
    path: PathBuf,
    file: Mutex<File>,
    /// The thread that holds the lock (0: none), for re-entrance.
    holder: AtomicU64,
    timeout_ms: AtomicU64,
}

/// Proof that this thread holds the store's write lock; releases it on drop
/// (unless it is a re-entrant guard inside an outer one).
pub(crate) struct WriteGuard<'a> {
    lock: &'a WriteLock,
    file: Option<MutexGuard<'a, File>>,
}

impl WriteGuard<'_> {
    /// True for the guard that took the lock (not a re-entrant one inside it).
    pub(crate) fn is_outermost(&self) -> bool {
        self.file.is_some()
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            self.lock.holder.store(0, Ordering::Release);
            // A waiter must never name a holder that has left.
            let _ = file.set_len(0);
            // Closing the descriptor would also release it; unlocking keeps
            // the file open for the next writer of this keystore.
            let _ = file.unlock();
        }
    }
}

fn thread_tag() -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish() | 1
}

impl WriteLock {
    /// Opens (creating, 0600) the lock file beside `db`.
    pub(crate) fn open(db: &Path) -> Result<WriteLock> {
        let path = path_for(db);
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(&path).map_err(|e| {
            Error::backend(
                Component::Metadata,
                format!(
                    "cannot open the store's write lock {} (check the directory's permissions)",
                    path.display()
                ),
                e,
            )
        })?;
        Ok(WriteLock {
            path,
            file: Mutex::new(file),
            holder: AtomicU64::new(0),
            timeout_ms: AtomicU64::new(DEFAULT_LOCK_TIMEOUT.as_millis() as u64),
        })
    }

    /// How long [`WriteLock::acquire`] waits.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms.store(
            timeout.as_millis().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// Takes the lock for `operation`, waiting at most the timeout. A thread
    /// that already holds it gets a re-entrant guard at once.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) naming the holder when the wait runs out;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) if the lock file cannot be locked at all.
    pub(crate) fn acquire(&self, operation: &str) -> Result<WriteGuard<'_>> {
        self.acquire_within(operation, self.timeout())
    }

    /// As [`WriteLock::acquire`], waiting at most `timeout`.
    pub(crate) fn acquire_within(
        &self,
        operation: &str,
        timeout: Duration,
    ) -> Result<WriteGuard<'_>> {
        let me = thread_tag();
        if self.holder.load(Ordering::Acquire) == me {
            return Ok(WriteGuard {
                lock: self,
                file: None,
            });
        }
        let deadline = Instant::now() + timeout;
        // Threads of this process queue on the mutex, processes on the flock;
        // both waits share one deadline.
        let mut file = loop {
            match self.file.try_lock() {
                Ok(f) => break f,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(self.busy(
                            operation,
                            timeout,
                            "another thread of this process",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let now = Instant::now();
                    if now >= deadline {
                        let holder = read_holder(&mut file);
                        return Err(self.busy(operation, timeout, &holder));
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::backend(
                        Component::Metadata,
                        format!("cannot lock {}", self.path.display()),
                        e,
                    ))
                }
            }
        }
        write_holder(&mut file, operation);
        self.holder.store(me, Ordering::Release);
        Ok(WriteGuard {
            lock: self,
            file: Some(file),
        })
    }

    fn busy(&self, operation: &str, waited: Duration, holder: &str) -> Error {
        Error::busy(format!(
            "{operation}: the store is being written by {holder}; gave up after {:.1} s \
             (retry, or wait longer with --lock-timeout / Keystore::set_lock_timeout)",
            waited.as_secs_f64()
        ))
    }
}

/// Best effort: a holder that cannot write its name only makes a waiter's
/// message vaguer.
fn write_holder(file: &mut File, operation: &str) {
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "?".into());
    let since = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let line = format!(
        "pid {} ({program}, {operation}, since {since})\n",
        std::process::id()
    );
    let _ = file
        .set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(line.as_bytes()));
}

fn read_holder(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.take(256).read_to_string(&mut s));
    let s = s.trim();
    if s.is_empty() {
        "another process".into()
    } else {
        s.chars().filter(|c| !c.is_control()).collect::<String>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn a_second_holder_waits_then_is_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.sqlite");
        let a = WriteLock::open(&db).unwrap();
        let b = WriteLock::open(&db).unwrap();
        let held = a.acquire("rotate").unwrap();
        let again = a.acquire("nested").expect("re-entrant on the same thread");
        drop(again);
        let err = b
            .acquire_within("create", Duration::from_millis(50))
            .err()
            .expect("busy");
        assert_eq!(err.kind(), ErrorKind::Busy);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("rotate"), "{msg}");
        drop(held);
        b.acquire_within("create", Duration::from_millis(50))
            .expect("free again");
    }

    #[test]
    fn threads_of_one_keystore_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let lock = std::sync::Arc::new(WriteLock::open(&dir.path().join("m")).unwrap());
        let inside = std::sync::Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (lock, inside) = (lock.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _g = lock.acquire("t").unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
