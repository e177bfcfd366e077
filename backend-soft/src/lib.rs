//! # backend-soft
//!
//! The embedded default backend: a pure-software sealed key store in a
//! directory. Each key is one record file sealed with AES-256-GCM under a
//! random store key; the store key is wrapped by a KEK from a passphrase
//! ([`Kdf`]), a 32-byte key file, or a [`KekProvider`] that keeps the KEK
//! sealed in a device (a TPM). The KDF or the unseal runs once, in
//! [`SoftStore::open`]. Key operations run in aws-lc-rs, or in RustCrypto on
//! targets without a C toolchain ([`CryptoProvider`]).
//!
//! A copy of the directory taken before
//! [`KeyManagement::wipe`](keystore_backend::KeyManagement::wipe) stays readable with the
//! KEK: protect the passphrase or key file accordingly.
//!
//! Record format, KEK choices, atomic writes, the key cache and what a copy
//! survives: `docs/design/soft-store.md`.
//!
//! # Example
//!
//! A key-file store, reopened, under a `keystore_api::Keystore`:
//!
//! ```
//! use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
//! use keystore_api::{Actor, Algorithm, KeySpec, Keystore, Role};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # let dir = tmp.path();
//! let key_file = dir.join("store.key");
//! create_key_file(&key_file)?; // 32 random bytes, mode 0600
//! let unlock = Unlock::KeyFile(key_file);
//! drop(SoftStore::create(&dir.join("soft"), &unlock, Kdf::KeyFile)?);
//!
//! let store = SoftStore::open(&dir.join("soft"), &unlock)?; // a wrong key file is `Error::Auth`
//! let ks = Keystore::open(store, &dir.join("metadata.sqlite"))?;
//! let operator = Actor::new("line-3", Role::Operator)?;
//! ks.create(&operator, "telemetry-mac", KeySpec::new(Algorithm::HmacSha256))?;
//! let tag = ks.mac("telemetry-mac", b"frame 7")?;
//! ks.verify_mac("telemetry-mac", b"frame 7", &tag)?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(not(any(feature = "aws-lc", feature = "rustcrypto")))]
compile_error!("backend-soft needs a crypto provider: enable `aws-lc` or `rustcrypto`");

mod backend;
mod counter;
mod fsio;
mod header;
mod kek;
mod material;
mod prim;
mod record;

pub use kek::{create_key_file, Kdf, KekProvider, Unlock, MAX_SEALED_LEN};
pub use material::CryptoProvider;

use header::Header;
use keystore_backend::{
    fsperm::{self, PermissionReport},
    store_lock, Algorithm, Error, KeyHandle, Result, SecretBytes,
};
use material::Material;
use record::{Sealer, ID_LEN};
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

const HEADER_FILE: &str = "store.hdr";
const RECORDS_DIR: &str = "records";
const LOCK_FILE: &str = "lock";
const RECORD_EXT: &str = "rec";
/// How many decrypted keys are kept ready for use.
const CACHE_CAPACITY: usize = 256;

/// Fills `buf` from the OS random generator.
pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    prim::random(buf)
}

/// A software sealed key store rooted at one directory.
pub struct SoftStore {
    dir: PathBuf,
    records: PathBuf,
    header: Mutex<Header>,
    store_key: SecretBytes,
    sealer: Sealer,
    cache: RwLock<Cache>,
    provider: CryptoProvider,
    /// Store paths found accessible to other users at open (tightened).
    permissions: PermissionReport,
    /// The KEK provider whose KEK wraps the store key (set by create, open
    /// and change_unlock), if any: it serves the store's monotonic counter.
    kek_provider: RwLock<Option<Arc<dyn KekProvider>>>,
    _lock: File,
}

impl std::fmt::Debug for SoftStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftStore")
            .field("dir", &self.dir)
            .field("store_key", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// Parsed key material by record id, least recently used evicted first.
/// Uses take only a read lock and write nothing else shared unless the
/// entry's use mark is stale, so threads using keys at once barely contend.
#[derive(Default)]
struct Cache {
    /// Advanced by each insertion; an entry used since the last insertion
    /// carries its value (LRU at insertion granularity).
    tick: AtomicU64,
    entries: HashMap<[u8; ID_LEN], (AtomicU64, Arc<Material>)>,
}

impl Cache {
    /// The material of `id`, marked as used.
    fn get(&self, id: &[u8; ID_LEN]) -> Option<&Material> {
        self.entries.get(id).map(|(used, m)| {
            let now = self.tick.load(Ordering::Relaxed);
            if used.load(Ordering::Relaxed) != now {
                used.store(now, Ordering::Relaxed);
            }
            &**m
        })
    }

    fn insert(&mut self, id: [u8; ID_LEN], m: Arc<Material>) {
        if self.entries.len() >= CACHE_CAPACITY && !self.entries.contains_key(&id) {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (used, _))| used.load(Ordering::Relaxed))
                .map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
            }
        }
        let now = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        self.entries.insert(id, (AtomicU64::new(now), m));
    }
}

impl SoftStore {
    /// Creates a new store in `dir` (created if missing), unlocked by
    /// `unlock`. Passphrase stores use `kdf` (see [`Kdf::default_passphrase`]);
    /// key-file and provider stores ignore it. An existing store is
    /// [`ErrorKind::AlreadyExists`](keystore_backend::ErrorKind::AlreadyExists).
    pub fn create(dir: &Path, unlock: &Unlock, kdf: Kdf) -> Result<SoftStore> {
        fsio::ensure_private_dir(&dir.join(RECORDS_DIR))?;
        // A directory that existed before (given by the caller) may be loose.
        let permissions = fsio::secure_store(dir, RECORDS_DIR, &[HEADER_FILE, LOCK_FILE]);
        let lock = fsperm::open_private_file(&dir.join(LOCK_FILE)).map_err(|e| {
            fsio::io_err(format!("cannot open {}", dir.join(LOCK_FILE).display()), e)
        })?;
        // Creation alone is exclusive: two processes creating one store at
        // once would otherwise each write a header with its own store key.
        lock_for_creation(&lock, dir)?;
        if dir.join(HEADER_FILE).exists() {
            return Err(Error::already_exists(format!(
                "a soft store already exists in {}",
                dir.display()
            )));
        }
        let kdf = kdf_for(unlock, kdf);
        kdf.check()?;
        let mut store_key = SecretBytes::zeroed(32);
        random(store_key.expose_mut())?;
        let mut store_id = [0u8; 16];
        random(&mut store_id)?;
        let salt = new_salt(kdf)?;
        let (kek, sealed) = kek::Kek::for_new_header(unlock, kdf, &salt)?;
        let header = Header::seal(kdf, salt, sealed, store_id, &kek, &store_key)?;
        fsio::write_atomic(&dir.join(HEADER_FILE), &header.encode())?;
        // From now on shared, as every open holds it (`store_lock`).
        lock.lock_shared().map_err(|e| {
            fsio::io_err(format!("cannot lock {}", dir.join(LOCK_FILE).display()), e)
        })?;
        let mut store = Self::assemble(dir, header, store_key, lock)?;
        store.permissions = permissions;
        store.kek_provider = RwLock::new(kek_provider_of(unlock));
        Ok(store)
    }

    /// Opens the store in `dir`. The passphrase KDF (or the provider's
    /// unseal) runs here, once. A wrong passphrase, key file or provider is
    /// [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth); a damaged header is [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity); no store is
    /// [`ErrorKind::NotFound`](keystore_backend::ErrorKind::NotFound).
    pub fn open(dir: &Path, unlock: &Unlock) -> Result<SoftStore> {
        let header_path = dir.join(HEADER_FILE);
        if !header_path.exists() {
            return Err(Error::not_found(format!(
                "no soft store in {} (create one with `keyctl init`)",
                dir.display()
            )));
        }
        // Before anything is read: the header allows offline guessing of a
        // passphrase, so a loose store is tightened (and reported) first.
        let permissions = fsio::secure_store(dir, RECORDS_DIR, &[HEADER_FILE, LOCK_FILE]);
        let bytes = fs::read(&header_path)
            .map_err(|e| fsio::io_err(format!("cannot read {}", header_path.display()), e))?;
        let header = Header::decode(&bytes)?;
        let kek = kek::Kek::for_header(unlock, &header)?;
        let store_key = header.unwrap_store_key(&kek)?;
        fsio::ensure_private_dir(&dir.join(RECORDS_DIR))?;
        // Temporaries are another process's writes in flight unless no other
        // process has the store open.
        let lock = store_lock::lock_shared_for_life(
            &dir.join(LOCK_FILE),
            keystore_backend::Component::Soft,
            || fsio::remove_temporaries(dir),
        )?;
        let mut store = Self::assemble(dir, header, store_key, lock)?;
        store.permissions = permissions;
        store.kek_provider = RwLock::new(kek_provider_of(unlock));
        Ok(store)
    }

    /// The store around its `lock`, already held shared.
    fn assemble(
        dir: &Path,
        header: Header,
        store_key: SecretBytes,
        lock: File,
    ) -> Result<SoftStore> {
        let sealer = Sealer::new(&store_key, header.store_id)?;
        Ok(SoftStore {
            dir: dir.to_path_buf(),
            records: dir.join(RECORDS_DIR),
            header: Mutex::new(header),
            store_key,
            sealer,
            cache: RwLock::new(Cache::default()),
            provider: CryptoProvider::default_for_build(),
            permissions: PermissionReport::default(),
            kek_provider: RwLock::new(None),
            _lock: lock,
        })
    }

    /// Runs key operations with `provider` from now on (the default is
    /// aws-lc-rs when compiled in). Records are provider-neutral, so this
    /// can change between opens. `Unsupported` if this build lacks it.
    pub fn with_provider(mut self, provider: CryptoProvider) -> Result<SoftStore> {
        provider.check_available()?;
        self.cache().entries.clear();
        self.provider = provider;
        Ok(self)
    }

    /// The crypto provider in use.
    pub fn provider(&self) -> CryptoProvider {
        self.provider
    }

    /// Re-wraps the store key under a new passphrase, key file, provider or
    /// KDF cost, atomically. Records are untouched. The old KEK stops working.
    /// The store's monotonic counter follows: from now on it is the new
    /// provider's, or none without one (see [`SoftStore`]'s `MonotonicCounter`).
    pub fn change_unlock(&self, unlock: &Unlock, kdf: Kdf) -> Result<()> {
        let kdf = match unlock {
            Unlock::Passphrase(_) => kdf,
            _ => kdf_for(unlock, kdf),
        };
        kdf.check()?;
        let mut header = self.header.lock().unwrap_or_else(|p| p.into_inner());
        let salt = new_salt(kdf)?;
        let (kek, sealed) = kek::Kek::for_new_header(unlock, kdf, &salt)?;
        let new = Header::seal(kdf, salt, sealed, header.store_id, &kek, &self.store_key)?;
        fsio::write_atomic(&self.dir.join(HEADER_FILE), &new.encode())?;
        *header = new;
        *self.kek_provider.write().unwrap_or_else(|p| p.into_inner()) = kek_provider_of(unlock);
        Ok(())
    }

    /// True if `dir` holds a soft store (its header exists).
    pub fn exists(dir: &Path) -> bool {
        dir.join(HEADER_FILE).is_file()
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The KDF and parameters recorded in the header.
    pub fn kdf(&self) -> Kdf {
        self.header.lock().unwrap_or_else(|p| p.into_inner()).kdf
    }

    /// The record file that holds `handle` (for tests and operators).
    pub fn record_path(&self, handle: &KeyHandle) -> Result<PathBuf> {
        Ok(self.path_of(&record_id(handle)?))
    }

    fn path_of(&self, id: &[u8; ID_LEN]) -> PathBuf {
        self.records
            .join(format!("{}.{RECORD_EXT}", hex::encode(id)))
    }

    fn cache(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Seals and writes a new record, returning its id and parsed material.
    fn store(
        &self,
        alg: Algorithm,
        material: &SecretBytes,
    ) -> Result<([u8; ID_LEN], Arc<Material>)> {
        let parsed = Arc::new(material::parse(self.provider, alg, material)?);
        let mut id = [0u8; ID_LEN];
        random(&mut id)?;
        let sealed = self.sealer.seal(alg, &id, material)?;
        fsio::write_atomic_via(&self.path_of(&id), &self.dir, &sealed)?;
        self.cache().insert(id, Arc::clone(&parsed));
        Ok((id, parsed))
    }

    /// Loads the material for `handle`, checking it is a key of `alg`.
    fn load(&self, handle: &KeyHandle, alg: Algorithm) -> Result<Arc<Material>> {
        let id = record_id(handle)?;
        if let Some((_, m)) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .get(&id)
        {
            return Ok(Arc::clone(m));
        }
        self.load_uncached(&id, alg)
    }

    /// Runs `op` with the material for `handle` (checked to be a key of
    /// `alg`). A cached key is used under the cache's read lock, without
    /// touching its reference count or a shared use counter: besides the
    /// lock word, threads using cached keys write no memory in common.
    fn with_material<T>(
        &self,
        handle: &KeyHandle,
        alg: Algorithm,
        op: impl FnOnce(&Material) -> Result<T>,
    ) -> Result<T> {
        let id = record_id(handle)?;
        {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if let Some(m) = cache.get(&id) {
                return op(m);
            }
        }
        op(self.load_uncached(&id, alg)?.as_ref())
    }

    /// Reads, opens and parses record `id`, and caches it.
    fn load_uncached(&self, id: &[u8; ID_LEN], alg: Algorithm) -> Result<Arc<Material>> {
        let secret = self.read_record(id, alg)?;
        let m = Arc::new(material::parse(self.provider, alg, &secret)?);
        self.cache().insert(*id, Arc::clone(&m));
        Ok(m)
    }

    /// Reads and opens record `id`, checking it holds a key of `alg`.
    fn read_record(&self, id: &[u8; ID_LEN], alg: Algorithm) -> Result<SecretBytes> {
        let path = self.path_of(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "soft record {} does not exist",
                    hex::encode(id)
                )))
            }
            Err(e) => return Err(fsio::io_err(format!("cannot read {}", path.display()), e)),
        };
        let (stored_alg, secret) = self.sealer.open(id, &bytes)?;
        if stored_alg != alg {
            return Err(Error::integrity(format!(
                "soft record {} holds a {stored_alg} key, not {alg}",
                hex::encode(id)
            )));
        }
        Ok(secret)
    }
}

/// The KEK kind a new header gets for `unlock`: passphrases use the
/// requested KDF (the default one if a non-passphrase kind was asked for).
fn kdf_for(unlock: &Unlock, kdf: Kdf) -> Kdf {
    match unlock {
        Unlock::KeyFile(_) => Kdf::KeyFile,
        Unlock::Provider(_) => Kdf::Provider,
        Unlock::Passphrase(_) if matches!(kdf, Kdf::KeyFile | Kdf::Provider) => {
            Kdf::default_passphrase()
        }
        Unlock::Passphrase(_) => kdf,
    }
}

/// The provider of a [`Unlock::Provider`].
fn kek_provider_of(unlock: &Unlock) -> Option<Arc<dyn KekProvider>> {
    match unlock {
        Unlock::Provider(p) => Some(Arc::clone(p)),
        _ => None,
    }
}

fn new_salt(kdf: Kdf) -> Result<Vec<u8>> {
    if matches!(kdf, Kdf::KeyFile | Kdf::Provider) {
        return Ok(Vec::new());
    }
    let mut salt = vec![0u8; 32];
    random(&mut salt)?;
    Ok(salt)
}

/// Waits (bounded) for exclusive use of `lock` while a store is created;
/// a store that exists meanwhile is [`ErrorKind::AlreadyExists`](keystore_backend::ErrorKind::AlreadyExists).
fn lock_for_creation(lock: &File, dir: &Path) -> Result<()> {
    let exists =
        || Error::already_exists(format!("a soft store already exists in {}", dir.display()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if dir.join(HEADER_FILE).exists() {
            return Err(exists());
        }
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::busy(format!(
                    "another process is creating the soft store in {}",
                    dir.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(fsio::io_err(
                    format!("cannot lock {}", dir.join(LOCK_FILE).display()),
                    e,
                ))
            }
        }
    }
}

/// Associated data of a wrapped key.
fn wrap_aad(algorithm: Algorithm, context: &[u8]) -> Vec<u8> {
    let mut aad = b"keystore-soft-wrap-v1".to_vec();
    aad.push(algorithm.code());
    aad.extend_from_slice(context);
    aad
}

fn record_id(handle: &KeyHandle) -> Result<[u8; ID_LEN]> {
    handle
        .as_bytes()
        .try_into()
        .map_err(|_| Error::not_found("not a soft key handle"))
}
