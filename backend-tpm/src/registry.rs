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
//! Entry file, `<id hex>.key`:
//! ```text
//! "KTREG" | format = 1 | algorithm code | name len u8 | name | auth len u8 | auth
//! | handle len u32 BE | handle | SHA-256 of everything before (32)
//! ```

use crate::blob::{KeyId, ID_LEN};
use crate::fsio;
use keystore_api::{Error, KeyHandle, Result, SecretBytes};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 5] = b"KTREG";
const FORMAT: u8 = 1;
const EXT: &str = "key";

/// What the registry knows of one key.
pub struct Entry {
    /// The algorithm code the key was made for.
    pub alg_code: u8,
    /// The TPM Name of the key's public area.
    pub name: Vec<u8>,
    /// The key's auth value.
    pub auth: SecretBytes,
    /// The full handle, as returned to the keystore.
    pub handle: KeyHandle,
}

/// The registry directory and its entries, loaded at open.
pub struct Registry {
    dir: PathBuf,
    entries: BTreeMap<KeyId, Entry>,
    /// Ids whose entry file exists but is damaged: their use is `Integrity`.
    damaged: BTreeSet<KeyId>,
    /// Bumped by every mutation, so that what was checked against the
    /// registry (the resolved-handle cache) knows when to check again.
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
pub enum Lookup<'a> {
    /// A live key.
    Live(&'a Entry),
    /// The entry file is damaged.
    Damaged,
    /// No such key (never made, or destroyed).
    Absent,
}

impl Registry {
    /// Loads every entry under `dir` (created if missing) and removes
    /// temporaries left by a crash.
    pub fn open(dir: &Path) -> Result<Registry> {
        std::fs::create_dir_all(dir)
            .map_err(|e| fsio::io_err(format!("cannot create {}", dir.display()), e))?;
        let mut reg = Registry {
            dir: dir.to_path_buf(),
            entries: BTreeMap::new(),
            damaged: BTreeSet::new(),
            generation: 0,
        };
        let listing = std::fs::read_dir(dir)
            .map_err(|e| fsio::io_err(format!("cannot list {}", dir.display()), e))?;
        for item in listing {
            let item =
                item.map_err(|e| fsio::io_err(format!("cannot list {}", dir.display()), e))?;
            let file_name = item.file_name();
            let file_name = file_name.to_string_lossy();
            if file_name.starts_with(fsio::TMP_PREFIX) {
                let _ = std::fs::remove_file(item.path());
                continue;
            }
            let Some(id) = file_name
                .strip_suffix(&format!(".{EXT}"))
                .and_then(|stem| hex::decode(stem).ok())
                .and_then(|v| KeyId::try_from(v.as_slice()).ok())
            else {
                continue;
            };
            let bytes = std::fs::read(item.path())
                .map_err(|e| fsio::io_err(format!("cannot read {}", item.path().display()), e))?;
            match decode(&bytes) {
                Some(entry) if entry.handle.as_bytes().get(4..4 + ID_LEN) == Some(&id[..]) => {
                    reg.entries.insert(id, entry);
                }
                _ => {
                    reg.damaged.insert(id);
                }
            }
        }
        Ok(reg)
    }

    fn path_of(&self, id: &KeyId) -> PathBuf {
        self.dir.join(format!("{}.{EXT}", hex::encode(id)))
    }

    /// Changes with every mutation of the registry.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The entry for `id`.
    pub fn get(&self, id: &KeyId) -> Lookup<'_> {
        match self.entries.get(id) {
            Some(e) => Lookup::Live(e),
            None if self.damaged.contains(id) => Lookup::Damaged,
            None => Lookup::Absent,
        }
    }

    /// Records a new key durably. `nonce` names the temporary file.
    pub fn insert(&mut self, id: KeyId, entry: Entry, nonce: &[u8]) -> Result<()> {
        let bytes = encode(&entry);
        self.generation = self.generation.wrapping_add(1);
        fsio::write_atomic(&self.path_of(&id), &bytes, nonce)?;
        self.damaged.remove(&id);
        self.entries.insert(id, entry);
        Ok(())
    }

    /// Replaces the listing copy of the handle of `id` (test support).
    #[cfg(feature = "test-support")]
    pub fn replace_handle(&mut self, id: &KeyId, handle: KeyHandle, nonce: &[u8]) -> Result<()> {
        let entry = self.entries.get_mut(id).ok_or_else(|| {
            Error::NotFound(format!("TPM key {} does not exist", hex::encode(id)))
        })?;
        entry.handle = handle;
        let bytes = encode(entry);
        self.generation = self.generation.wrapping_add(1);
        fsio::write_atomic(&self.path_of(id), &bytes, nonce)
    }

    /// Shreds the entry of `id` (overwrite, then remove). Returns whether
    /// there was one.
    pub fn remove(&mut self, id: &KeyId) -> Result<bool> {
        self.generation = self.generation.wrapping_add(1);
        let known = self.entries.remove(id).is_some() | self.damaged.remove(id);
        let on_disk = fsio::shred(&self.path_of(id))?;
        Ok(known || on_disk)
    }

    /// Every live key's handle, sorted.
    pub fn handles(&self) -> Vec<KeyHandle> {
        let mut v: Vec<KeyHandle> = self.entries.values().map(|e| e.handle.clone()).collect();
        v.sort();
        v
    }

    /// Every id with an entry file, live or damaged.
    pub fn ids(&self) -> Vec<KeyId> {
        self.entries
            .keys()
            .chain(self.damaged.iter())
            .copied()
            .collect()
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
pub fn damaged_error(id: &KeyId) -> Error {
    Error::Integrity(format!(
        "the TPM backend's registry entry for key {} is damaged",
        hex::encode(id)
    ))
}
