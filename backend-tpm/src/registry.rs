//! The backend's record of the keys it holds for one store: one file per key
//! in `DIR/keys/`, holding the key's handle, the Name of its public area and
//! its 256-bit auth value.
//!
//! Why a registry beside the handles in the metadata database:
//! - `list` and `wipe` need to know which keys belong to this store.
//! - The auth value makes `destroy` a real erasure: the TPM refuses every
//!   use of the key without it, so once its entry is shredded a copy of the
//!   blob (a stale metadata page, a backup) is useless even on the same TPM.
//! - The Name binds the key id to its public area: a blob swapped in from
//!   another key under this id is detected before the TPM is asked.
//!
//! **Several processes.** Every process that has the store open keeps its
//! own copy of the entries it has seen, and the directory is the truth:
//! - An entry file is written once, atomically (temporary file, rename), and
//!   never rewritten (its id is random); destroying a key renames its file
//!   to a temporary name first, then overwrites and removes it. So a path
//!   `<id>.key` either holds a complete entry or does not exist.
//! - Before a cached entry is used, its file is `stat`ed
//!   ([`Registry::sync_id`]): gone means destroyed (by this process or
//!   another), and the entry is dropped; a changed stamp (inode, size,
//!   modification time) means the file was replaced, and it is read again
//!   (still valid, or now damaged). (An edit in place that keeps the size
//!   within one tick of the file system's clock is not seen until the
//!   process re-opens the store; this backend never edits in place.) An id not in memory is looked up on disk,
//!   so a key created by another process is usable at this process's next
//!   call.
//! - [`Registry::scan`] (behind `list` and `wipe`) re-reads the directory:
//!   entries that appeared are loaded, entries that vanished are dropped,
//!   temporaries are ignored (another process may be writing one).
//! - Temporaries left by a crash are removed only by a process that holds
//!   the store's lock exclusively (no other process has the store open), see
//!   [`remove_temporaries`].
//!
//! Entry file, `<id hex>.key`:
//! ```text
//! "KTREG" | format = 1 | algorithm code | name len u8 | name | auth len u8 | auth
//! | handle len u32 BE | handle | SHA-256 of everything before (32)
//! ```

use crate::blob::{KeyId, ID_LEN};
use crate::fsio;
use keystore_backend::{Error, KeyHandle, Result, SecretBytes};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 5] = b"KTREG";
const FORMAT: u8 = 1;
const EXT: &str = "key";

/// What the registry knows of one key.
pub(crate) struct Entry {
    /// The algorithm code the key was made for.
    pub alg_code: u8,
    /// The TPM Name of the key's public area.
    pub name: Vec<u8>,
    /// The key's auth value.
    pub auth: SecretBytes,
    /// The full handle, as returned to the keystore.
    pub handle: KeyHandle,
}

/// Identifies one version of an entry file: a file replaced by a rename,
/// rewritten or truncated shows a different stamp.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Stamp {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime: m.mtime(),
                mtime_nsec: m.mtime_nsec(),
            }
        }
        #[cfg(not(unix))]
        {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .unwrap_or_default();
            Stamp {
                dev: 0,
                ino: 0,
                len: m.len(),
                mtime: t.as_secs() as i64,
                mtime_nsec: i64::from(t.subsec_nanos()),
            }
        }
    }
}

/// What is known of one id's entry file.
enum Known {
    Live(Entry, Stamp),
    Damaged(Stamp),
}

/// The registry directory and the entries this process has seen.
pub(crate) struct Registry {
    dir: PathBuf,
    entries: BTreeMap<KeyId, Known>,
    /// Bumped by every change this process makes or observes, so that what
    /// was checked against the registry (the resolved-handle cache) knows
    /// when to check again.
    generation: u64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("dir", &self.dir)
            .field("keys", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// The result of looking a key id up.
pub(crate) enum Lookup<'a> {
    /// A live key.
    Live(&'a Entry),
    /// The entry file is damaged.
    Damaged,
    /// No such key (never made, or destroyed).
    Absent,
}

/// What one read of an entry file found.
enum OnDisk {
    Live(Entry, Stamp),
    Damaged(Stamp),
    Absent,
}

/// The id an entry file name stands for (`<32 hex digits>.key`).
fn id_of_file_name(file_name: &str) -> Option<KeyId> {
    file_name
        .strip_suffix(&format!(".{EXT}"))
        .and_then(|stem| hex::decode(stem).ok())
        .and_then(|v| KeyId::try_from(v.as_slice()).ok())
}

/// Removes (overwrites, then unlinks) temporaries that a crashed process
/// left in `dir`: entry files being written or being shredded. Only call this
/// while no other process has the store open (the store's lock held
/// exclusively): a live process's temporary is an operation in flight.
pub(crate) fn remove_temporaries(dir: &Path) -> Result<()> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fsio::io_err(format!("cannot list {}", dir.display()), e)),
    };
    for item in listing.flatten() {
        if item
            .file_name()
            .to_string_lossy()
            .starts_with(fsio::TMP_PREFIX)
        {
            fsio::shred_in_place(&item.path())?;
        }
    }
    Ok(())
}

impl Registry {
    /// Loads every entry under `dir` (created if missing). Temporaries are
    /// left alone (see [`remove_temporaries`]).
    pub(crate) fn open(dir: &Path) -> Result<Registry> {
        fsio::ensure_private_dir(dir)?;
        let mut reg = Registry {
            dir: dir.to_path_buf(),
            entries: BTreeMap::new(),
            generation: 0,
        };
        reg.scan()?;
        reg.generation = 0;
        Ok(reg)
    }

    fn path_of(&self, id: &KeyId) -> PathBuf {
        self.dir.join(format!("{}.{EXT}", hex::encode(id)))
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Reads the entry file of `id` as it is now.
    fn read(&self, id: &KeyId) -> Result<OnDisk> {
        let path = self.path_of(id);
        // Open first and stat the open file: the stamp is then the stamp of
        // the bytes read, whatever is renamed over the path meanwhile.
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(OnDisk::Absent),
            Err(e) => return Err(fsio::io_err(format!("cannot open {}", path.display()), e)),
        };
        let read = f.metadata().and_then(|m| {
            use std::io::Read;
            let mut bytes = Vec::with_capacity(m.len().min(1 << 16) as usize);
            f.read_to_end(&mut bytes).map(|_| (Stamp::of(&m), bytes))
        });
        let (stamp, bytes) =
            read.map_err(|e| fsio::io_err(format!("cannot read {}", path.display()), e))?;
        let bytes = zeroize::Zeroizing::new(bytes);
        match decode(&bytes) {
            Some(entry) if entry.handle.as_bytes().get(4..4 + ID_LEN) == Some(&id[..]) => {
                Ok(OnDisk::Live(entry, stamp))
            }
            _ => {
                // A file that does not decode while it is being shredded by
                // another process (renamed away first, then overwritten) is a
                // destroyed key, not a damaged one.
                match std::fs::symlink_metadata(&path) {
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(OnDisk::Absent),
                    _ => Ok(OnDisk::Damaged(stamp)),
                }
            }
        }
    }

    /// Records what `read` found for `id`, bumping the generation if that
    /// changes what this process knows.
    fn learn(&mut self, id: KeyId, found: OnDisk) {
        let changed = match (&found, self.entries.get(&id)) {
            (OnDisk::Absent, None) => false,
            (OnDisk::Live(_, s), Some(Known::Live(_, k))) => s != k,
            (OnDisk::Damaged(s), Some(Known::Damaged(k))) => s != k,
            _ => true,
        };
        if !changed {
            return;
        }
        self.bump();
        match found {
            OnDisk::Absent => {
                self.entries.remove(&id);
            }
            OnDisk::Live(e, s) => {
                self.entries.insert(id, Known::Live(e, s));
            }
            OnDisk::Damaged(s) => {
                self.entries.insert(id, Known::Damaged(s));
            }
        }
    }

    /// Brings this process's view of `id` up to date with the directory:
    /// one `stat` when the entry is known and unchanged, a read when it is
    /// new, replaced or unknown here. Call before every use of the entry.
    pub(crate) fn sync_id(&mut self, id: &KeyId) -> Result<()> {
        let path = self.path_of(id);
        let known = match self.entries.get(id) {
            Some(Known::Live(_, s)) => Some(*s),
            _ => None,
        };
        if let Some(stamp) = known {
            match std::fs::metadata(&path) {
                Ok(m) if Stamp::of(&m) == stamp => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.learn(*id, OnDisk::Absent);
                    return Ok(());
                }
                Err(e) => return Err(fsio::io_err(format!("cannot stat {}", path.display()), e)),
            }
        }
        let found = self.read(id)?;
        self.learn(*id, found);
        Ok(())
    }

    /// Brings the whole view up to date with the directory: entries that
    /// appeared are loaded, vanished ones dropped, changed ones re-read.
    /// Temporaries (another process's write in flight) are ignored, and so
    /// is a file that vanishes between the listing and its read.
    pub(crate) fn scan(&mut self) -> Result<()> {
        let listing = std::fs::read_dir(&self.dir)
            .map_err(|e| fsio::io_err(format!("cannot list {}", self.dir.display()), e))?;
        let mut seen = BTreeSet::new();
        for item in listing {
            let item =
                item.map_err(|e| fsio::io_err(format!("cannot list {}", self.dir.display()), e))?;
            let file_name = item.file_name();
            let Some(id) = id_of_file_name(&file_name.to_string_lossy()) else {
                continue;
            };
            self.sync_id(&id)?;
            if self.entries.contains_key(&id) {
                seen.insert(id);
            }
        }
        let gone: Vec<KeyId> = self
            .entries
            .keys()
            .filter(|id| !seen.contains(*id))
            .copied()
            .collect();
        for id in gone {
            // Listed before it vanished, or created since the listing: ask
            // the directory once more rather than trust the listing.
            self.sync_id(&id)?;
        }
        Ok(())
    }

    /// Changes with every change of the registry this process makes or sees.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The entry for `id`, as last synchronised (see [`Registry::sync_id`]).
    pub(crate) fn get(&self, id: &KeyId) -> Lookup<'_> {
        match self.entries.get(id) {
            Some(Known::Live(e, _)) => Lookup::Live(e),
            Some(Known::Damaged(_)) => Lookup::Damaged,
            None => Lookup::Absent,
        }
    }

    /// Records a new key durably. `nonce` names the temporary file.
    pub(crate) fn insert(&mut self, id: KeyId, entry: Entry, nonce: &[u8]) -> Result<()> {
        let bytes = zeroize::Zeroizing::new(encode(&entry));
        self.bump();
        let path = self.path_of(&id);
        fsio::write_atomic(&path, &bytes, nonce)?;
        match std::fs::metadata(&path) {
            Ok(m) => {
                self.entries.insert(id, Known::Live(entry, Stamp::of(&m)));
            }
            // Destroyed by another process already: nothing to remember.
            Err(_) => {
                self.entries.remove(&id);
            }
        }
        Ok(())
    }

    /// Replaces the listing copy of the handle of `id` (test support).
    #[cfg(feature = "test-support")]
    pub(crate) fn replace_handle(
        &mut self,
        id: &KeyId,
        handle: KeyHandle,
        nonce: &[u8],
    ) -> Result<()> {
        self.sync_id(id)?;
        let Some(Known::Live(entry, _)) = self.entries.remove(id) else {
            return Err(Error::not_found(format!(
                "TPM key {} does not exist",
                hex::encode(id)
            )));
        };
        let entry = Entry { handle, ..entry };
        self.insert(*id, entry, nonce)
    }

    /// Shreds the entry of `id` (renamed away, overwritten, removed).
    /// Returns whether there was one on disk (a key another process already
    /// destroyed is `false`).
    pub(crate) fn remove(&mut self, id: &KeyId) -> Result<bool> {
        self.bump();
        self.entries.remove(id);
        fsio::shred(&self.path_of(id), id)
    }

    /// Every live key's handle, sorted, as of the last [`Registry::scan`].
    pub(crate) fn handles(&self) -> Vec<KeyHandle> {
        let mut v: Vec<KeyHandle> = self
            .entries
            .values()
            .filter_map(|k| match k {
                Known::Live(e, _) => Some(e.handle.clone()),
                Known::Damaged(_) => None,
            })
            .collect();
        v.sort();
        v
    }

    /// Every id with an entry file, live or damaged, as of the last
    /// [`Registry::scan`].
    pub(crate) fn ids(&self) -> Vec<KeyId> {
        self.entries.keys().copied().collect()
    }
}

fn encode(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + e.handle.as_bytes().len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(e.alg_code);
    out.push(e.name.len() as u8);
    out.extend_from_slice(&e.name);
    out.push(e.auth.len() as u8);
    out.extend_from_slice(e.auth.expose());
    out.extend_from_slice(&(e.handle.as_bytes().len() as u32).to_be_bytes());
    out.extend_from_slice(e.handle.as_bytes());
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

fn decode(bytes: &[u8]) -> Option<Entry> {
    if bytes.len() < 32 {
        return None;
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body)[..] != *digest {
        return None;
    }
    let mut r = body;
    let mut take = |n: usize| -> Option<&[u8]> {
        if r.len() < n {
            return None;
        }
        let (h, t) = r.split_at(n);
        r = t;
        Some(h)
    };
    if take(5)? != MAGIC || take(1)?[0] != FORMAT {
        return None;
    }
    let alg_code = take(1)?[0];
    let name_len = take(1)?[0] as usize;
    let name = take(name_len)?.to_vec();
    let auth_len = take(1)?[0] as usize;
    let auth = SecretBytes::from_slice(take(auth_len)?);
    let hl = take(4)?;
    let handle_len = u32::from_be_bytes([hl[0], hl[1], hl[2], hl[3]]) as usize;
    let handle = KeyHandle::new(take(handle_len)?.to_vec());
    if !r.is_empty() {
        return None;
    }
    Some(Entry {
        alg_code,
        name,
        auth,
        handle,
    })
}

/// A registry file that does not decode is reported as damaged, never as a
/// panic; this is the error its keys get.
pub(crate) fn damaged_error(id: &KeyId) -> Error {
    Error::integrity(format!(
        "the TPM backend's registry entry for key {} is damaged",
        hex::encode(id)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &KeyId) -> Entry {
        let mut h = b"KT\x01\x07".to_vec();
        h.extend_from_slice(id);
        h.extend_from_slice(b"blob");
        Entry {
            alg_code: 7,
            name: vec![0, 11, 1, 2, 3],
            auth: SecretBytes::from_slice(&[9; 32]),
            handle: KeyHandle::new(h),
        }
    }

    fn live(r: &Registry, id: &KeyId) -> bool {
        matches!(r.get(id), Lookup::Live(_))
    }

    /// Two registries on one directory stand for two processes.
    #[test]
    fn two_views_of_one_directory_stay_coherent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let mut a = Registry::open(&keys).expect("a");
        let mut b = Registry::open(&keys).expect("b");
        let (x, y) = ([1u8; ID_LEN], [2u8; ID_LEN]);

        // Created in a: b finds it at its next lookup, and lists it.
        a.insert(x, entry(&x), &x).expect("insert");
        assert!(matches!(b.get(&x), Lookup::Absent));
        let g = b.generation();
        b.sync_id(&x).expect("sync");
        assert!(live(&b, &x));
        assert_ne!(
            b.generation(),
            g,
            "a new entry invalidates what was checked"
        );
        a.insert(y, entry(&y), &y).expect("insert");
        b.scan().expect("scan");
        assert_eq!(b.handles().len(), 2);

        // An unchanged entry costs a stat and changes nothing.
        let g = b.generation();
        b.sync_id(&x).expect("sync");
        assert_eq!(b.generation(), g);

        // Destroyed in a: gone in b at its next use, and from its listing.
        assert!(a.remove(&x).expect("remove"));
        b.sync_id(&x).expect("sync");
        assert!(matches!(b.get(&x), Lookup::Absent));
        assert_ne!(b.generation(), g);
        assert!(
            !b.remove(&x).expect("remove"),
            "already destroyed elsewhere"
        );
        a.remove(&y).expect("remove");
        b.scan().expect("scan");
        assert!(b.handles().is_empty() && b.ids().is_empty());

        // Another process's temporary in flight: ignored by scans and opens,
        // never an error, never removed by them.
        let z = [3u8; ID_LEN];
        a.insert(z, entry(&z), &z).expect("insert");
        let tmp = keys.join(format!(
            "{}{}.key-inflight",
            fsio::TMP_PREFIX,
            hex::encode(z)
        ));
        std::fs::write(&tmp, b"half written").expect("tmp");
        b.scan().expect("scan");
        assert_eq!(b.handles().len(), 1);
        Registry::open(&keys).expect("open");
        assert!(tmp.exists());
        remove_temporaries(&keys).expect("cleanup");
        assert!(!tmp.exists());
        assert!(live(&b, &z));

        // A damaged file is Integrity, even for an entry known live before;
        // a repaired (replaced) one is live again.
        let path = keys.join(format!("{}.key", hex::encode(z)));
        let replace = |bytes: &[u8]| {
            let t = keys.join("replacement");
            std::fs::write(&t, bytes).expect("write");
            std::fs::rename(&t, &path).expect("rename");
        };
        let good = std::fs::read(&path).expect("read");
        let mut bad = good.clone();
        bad[10] ^= 1;
        replace(&bad);
        b.sync_id(&z).expect("sync");
        assert!(matches!(b.get(&z), Lookup::Damaged));
        b.scan().expect("scan");
        assert!(b.handles().is_empty());
        assert_eq!(b.ids(), vec![z]);
        replace(&good);
        b.sync_id(&z).expect("sync");
        assert!(live(&b, &z));
    }
}
