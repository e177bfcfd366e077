//! The metadata database's commit generation, shared by every process that
//! opens the database through this crate.
//!
//! A small file beside the database (`<db>-gen`) is mapped into memory and
//! holds two counters, `begun` and `finished`. A writer, holding SQLite's
//! write lock, raises `begun` before it changes anything and raises
//! `finished` to match once its transaction has committed or rolled back.
//! A reader that sees both equal knows that no write is in progress and
//! that the data it reads next is current until the counters move again.
//! This lets the sign/derive hot path validate its cache with two memory
//! loads instead of a SQLite read transaction (`PRAGMA data_version` takes
//! two file locks per call and serialises threads on the connection).
//!
//! Failure behaviour:
//! - a writer that dies between the two raises leaves the counters unequal;
//!   readers then take the slow path (still correct) until the next write
//!   heals them;
//! - the file is required: a process that could write the database without
//!   raising the counters would leave other processes' caches stale, so
//!   [`Generation::open`] failing fails the keystore's open. Like the
//!   database and SQLite's `-wal` and `-shm` files it is created with mode
//!   0600 whatever the umask ([`crate::fsperm`]), so only the store's owner
//!   may map it;
//! - the file holds no secrets. Truncating it while mapped would fault the
//!   process, exactly as truncating SQLite's own `-shm` file would: both
//!   live in the store directory, which only the keystore's users may write.

// The one place this crate uses `unsafe`: mapping the file and viewing
// two aligned words of the mapping as atomics.
#![allow(unsafe_code)]

use crate::error::{Component, Error, Result};
use memmap2::MmapRaw;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes in the file (one page; only the first 16 are used).
const FILE_LEN: u64 = 4096;

/// The mapped counters.
pub(crate) struct Generation {
    map: MmapRaw,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("begun", &self.begun().load(Ordering::SeqCst))
            .field("finished", &self.finished().load(Ordering::SeqCst))
            .finish()
    }
}

/// The path of the generation file of the database at `db`.
pub(crate) fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-gen");
    PathBuf::from(name)
}

impl Generation {
    /// Opens (creating if needed, with mode 0600) and maps the generation
    /// file of the database at `db`.
    pub(crate) fn open(db: &Path) -> Result<Generation> {
        let path = path_for(db);
        let fail = |what: &str, e: std::io::Error| {
            Error::backend(
                Component::Metadata,
                format!(
                    "cannot {what} {} (the metadata's commit generation, required \
                     beside the database; check its permissions)",
                    path.display()
                ),
                e,
            )
        };
        let file = crate::fsperm::open_private_file(&path).map_err(|e| fail("open", e))?;
        // Only ever grown, never shrunk: another process may have it mapped.
        let len = file.metadata().map_err(|e| fail("inspect", e))?.len();
        if len < FILE_LEN {
            file.set_len(FILE_LEN).map_err(|e| fail("size", e))?;
        }
        let map = MmapRaw::map_raw(&file).map_err(|e| fail("map", e))?;
        if map.len() < 16 || map.as_ptr().align_offset(std::mem::align_of::<AtomicU64>()) != 0 {
            return Err(Error::backend_msg(
                Component::Metadata,
                format!("{} is mapped too short or misaligned", path.display()),
            ));
        }
        Ok(Generation { map })
    }

    fn counter(&self, index: usize) -> &AtomicU64 {
        // SAFETY: the mapping is at least 16 bytes long and page-aligned
        // (checked in `open`), so words 0 and 1 are in bounds and aligned
        // for `AtomicU64`; it lives as long as `self`, which the returned
        // reference borrows. Other processes touch these words only
        // through atomic operations of this module, and `AtomicU64` allows
        // shared mutation.
        unsafe { &*(self.map.as_mut_ptr().cast::<AtomicU64>().add(index)) }
    }

    fn begun(&self) -> &AtomicU64 {
        self.counter(0)
    }

    fn finished(&self) -> &AtomicU64 {
        self.counter(1)
    }

    /// The generation if no write is in progress, else `None`. Data read
    /// after this call reflects every commit up to the returned value.
    pub(crate) fn stable(&self) -> Option<u64> {
        let finished = self.finished().load(Ordering::SeqCst);
        let begun = self.begun().load(Ordering::SeqCst);
        (begun == finished).then_some(begun)
    }

    /// Marks a write as begun. Call while holding the database's write lock
    /// (after `BEGIN IMMEDIATE`), before the first change; pass the result
    /// to [`Generation::finish`] after commit or rollback. Heals a gap left
    /// by a writer that died: under the write lock, every earlier begun
    /// write has committed or rolled back.
    pub(crate) fn begin(&self) -> u64 {
        let previous = self.begun().load(Ordering::SeqCst);
        self.finished().fetch_max(previous, Ordering::SeqCst);
        self.begun().fetch_add(1, Ordering::SeqCst).wrapping_add(1)
    }

    /// Marks the write numbered `generation` as finished.
    pub(crate) fn finish(&self, generation: u64) {
        self.finished().fetch_max(generation, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_shared_between_mappings_and_track_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.sqlite");
        let a = Generation::open(&db).unwrap();
        let b = Generation::open(&db).unwrap();
        let g0 = a.stable().unwrap();
        let g = a.begin();
        assert_eq!(b.stable(), None, "a write in progress is visible elsewhere");
        a.finish(g);
        assert_eq!(b.stable(), Some(g));
        assert_ne!(g, g0);
    }

    #[test]
    fn a_writer_that_died_is_healed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.sqlite");
        let a = Generation::open(&db).unwrap();
        let _lost = a.begin(); // never finished
        assert_eq!(a.stable(), None);
        let g = a.begin();
        assert_eq!(a.stable(), None);
        a.finish(g);
        assert_eq!(a.stable(), Some(g));
    }

    #[test]
    fn an_unusable_location_is_an_error_naming_the_file() {
        let e = Generation::open(Path::new("/nonexistent-dir/m.sqlite")).unwrap_err();
        assert!(e.to_string().contains("m.sqlite-gen"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_whatever_the_database_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.sqlite");
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _g = Generation::open(&db).unwrap();
        let mode = std::fs::metadata(path_for(&db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
