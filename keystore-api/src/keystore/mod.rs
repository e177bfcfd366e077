//! `Keystore<B>`: named, versioned keys over any backend, with usage policy,
//! lifecycle states, roles and a tamper-evident audit trail.
//!
//! The operations are split by family: [`crypto`](self) (sign, verify, AEAD,
//! MAC, derive), `agreement` (ECDH with the one-step KDF), `admin` (create, import, rotate, revoke, suspend, resume,
//! destroy, sweep, decommission, credentials, audit), `backup` and
//! `reconcile` (crash recovery at open).

mod admin;
mod agreement;
mod attestation;
mod audit_duty;
mod audit_signer;
mod backup;
mod checks;
mod crypto;
mod encryption_limit;
mod evidence;
pub(crate) mod inventory;
mod lookup;
mod policy_facts;
mod reconcile;
mod rollback;
mod types;

pub use admin::{Decommissioned, DueReason, RotationDue};
pub use evidence::EVIDENCE_DOMAIN;
pub use reconcile::{FaultPoint, ReconcileReport};
pub use rollback::RollbackCounter;

use crate::backend::{Backend, KeyHandle};
use crate::clock::{rfc3339, Clock, SystemClock};
use crate::error::{ErrorKind, Result};
use crate::fsperm::PermissionReport;
use crate::generation::Generation;
use crate::metadata::{self as md, KeyRow, Metadata};
use crate::write_lock::{WriteGuard, WriteLock};
use crate::BackendKey;
pub use checks::check_name;
pub(crate) use checks::{check_len, check_usage};
pub(crate) use lookup::{live_key, may_verify_or_decrypt, public_of, resolved};

use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration as StdDuration;
use time::OffsetDateTime;
pub use types::{
    EncryptionUsage, KeyInfo, KeySpec, OpenOptions, VersionInfo, DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_ENCRYPTION_BLOCK, DEFAULT_USAGE_DUE_SHARE, MAX_ENCRYPTION_LIMIT,
};

pub use keystore_backend::limits;

/// Named, versioned keys over one backend.
///
/// Metadata (names, versions, states, handles, public keys, audit trail)
/// lives in an SQLite database; key material lives only in the backend. All
/// methods take `&self` and are safe to call from several threads, and any
/// number of processes may open the same store at once:
/// - uses (sign, verify, MAC, derive, encrypt, decrypt, public key) never
///   wait for each other or for writers beyond one metadata read (AES-GCM
///   encryption also makes one short write transaction per block of its
///   version's count it reserves: see [`OpenOptions::encryption_block`]);
/// - lifecycle operations hold the store's cross-process write lock for
///   their whole duration, waiting at most the lock timeout (5 s by default,
///   [`OpenOptions::lock_timeout`]) and then failing with [`ErrorKind::Busy`];
/// - a key created or rotated by one process is used by the others from
///   their next call.
pub struct Keystore<B: Backend> {
    backend: B,
    metadata: Mutex<Metadata>,
    write_lock: WriteLock,
    clock: Arc<dyn Clock>,
    reconciled: ReconcileReport,
    /// Store paths found accessible to other users at open (tightened).
    permissions: PermissionReport,
    active: RwLock<ActiveCache>,
    /// The metadata's commit generation, read without the metadata lock.
    generation: Arc<Generation>,
    /// This process's blocks of the AES-GCM encryption counts.
    encryptions: encryption_limit::Encryptions,
    /// Audit entries between signed checkpoints.
    checkpoint_interval: u64,
    #[cfg(feature = "fault-injection")]
    fault: Mutex<Option<FaultPoint>>,
}

impl<B: Backend> std::fmt::Debug for Keystore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

/// The store's write lock held by a lifecycle operation; see
/// [`Keystore::writing`].
pub(crate) struct Writing<'a, B: Backend> {
    ks: &'a Keystore<B>,
    guard: Option<WriteGuard<'a>>,
}

impl<B: Backend> Drop for Writing<'_, B> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            if guard.is_outermost() && !std::thread::panicking() {
                self.ks.checkpoint_if_due();
            }
            drop(guard);
        }
    }
}

/// Active versions by key name. Keeps the sign/derive/encrypt hot path free
/// of SQL and of the metadata lock; any write, here or in another process,
/// invalidates it.
///
/// Entries are valid while the shared commit generation stays at
/// `generation` (two memory loads per use, see [`crate::generation`]).
/// Every write through this crate, in any process, moves it. A miss, and
/// every use while a write is in progress, revalidates under the metadata
/// lock with `stamp` (`PRAGMA data_version` and this connection's writes),
/// which also notices a writer that bypassed this crate (at that miss).
#[derive(Default)]
struct ActiveCache {
    generation: Option<u64>,
    stamp: (i64, u64),
    by_name: std::collections::HashMap<String, Arc<Resolved>>,
}

/// Entries kept at most; past it the cache starts over (cheap, rare).
const ACTIVE_CACHE_CAPACITY: usize = 4096;

/// A resolved key version, ready for a backend call.
pub(crate) struct Resolved {
    pub key: KeyRow,
    pub version: u32,
    pub backend_key: BackendKey,
    pub public_key: Option<Vec<u8>>,
    /// This process's block of the version's encryption count (AES-GCM),
    /// looked up at the first encryption through this resolution.
    pub encryptions: std::sync::OnceLock<Arc<encryption_limit::Counter>>,
}

/// What an audit event is about.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Subject<'a> {
    pub name: Option<&'a str>,
    pub version: Option<u32>,
    pub fingerprint: Option<&'a str>,
}

impl<'a> Subject<'a> {
    pub(crate) fn version(name: &'a str, version: u32, fingerprint: Option<&'a str>) -> Self {
        Subject {
            name: Some(name),
            version: Some(version),
            fingerprint,
        }
    }
}

/// The actor recorded for events the keystore performs by itself.
const SYSTEM: (&str, &str) = ("keystore", "system");

impl<B: Backend> Keystore<B> {
    /// Opens the keystore whose metadata lives at `metadata_path` (created if
    /// missing), over `backend`, with the system clock. Reconciles metadata
    /// with the backend first (see [`Keystore::reconcile_report`]).
    ///
    /// # Errors
    /// As [`Keystore::open_with`]
    pub fn open(backend: B, metadata_path: &Path) -> Result<Self> {
        Self::open_with_clock(backend, metadata_path, Arc::new(SystemClock))
    }

    /// Opens the keystore with an injected clock.
    ///
    /// # Errors
    /// As [`Keystore::open_with`]
    pub fn open_with_clock(
        backend: B,
        metadata_path: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        Self::open_with(backend, metadata_path, clock, OpenOptions::default())
    }

    /// Opens the keystore with an injected clock and `options`.
    ///
    /// Recovery at open completes or undoes only operations whose owner is
    /// provably gone (it held the write lock, which is now free), and never
    /// touches what a live process is doing.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when most or all of the versions the metadata references are missing
    /// from the backend (the wrong token, TPM or directory): nothing is changed.
    /// [`ErrorKind::InvalidInput`] when the metadata belongs to another kind of backend, or
    /// `options` hold an encryption block of 0 or a usage due share outside `(0, 1]`;
    /// [`ErrorKind::Backend`] when the database, its write lock or commit-generation file, or the
    /// backend fails;
    /// [`ErrorKind::Integrity`] when recovery must audit and the audit key reference is missing
    /// from a live store. A write lock held by another process is not an error for recovery,
    /// which is put off and said so in [`ReconcileReport::deferred`]; it is [`ErrorKind::Busy`]
    /// only at a store's first open, when the audit key must be created and another process
    /// holds the lock past the lock timeout.
    pub fn open_with(
        backend: B,
        metadata_path: &Path,
        clock: Arc<dyn Clock>,
        options: OpenOptions,
    ) -> Result<Self> {
        options.check()?;
        let now = rfc3339(clock.now());
        let write_lock = WriteLock::open(metadata_path)?;
        write_lock.set_timeout(options.lock_timeout);
        let metadata = Metadata::open(metadata_path, backend.name(), &now)?;
        let generation = metadata.generation();
        let mut permissions = backend.permission_report();
        permissions.extend(metadata.permission_report().clone());
        let mut ks = Keystore {
            backend,
            metadata: Mutex::new(metadata),
            write_lock,
            clock,
            reconciled: ReconcileReport::default(),
            permissions,
            active: RwLock::new(ActiveCache::default()),
            generation,
            encryptions: encryption_limit::Encryptions::new(&options),
            checkpoint_interval: options.checkpoint_interval,
            #[cfg(feature = "fault-injection")]
            fault: Mutex::new(None),
        };
        // A rolled-back database is refused before recovery acts on it.
        ks.check_rollback()?;
        ks.reconciled = ks.reconcile(options.check_material)?;
        ks.ensure_audit_key()?;
        ks.ensure_audit_signer()?;
        Ok(ks)
    }

    /// Sets how long lifecycle operations wait for another process's write
    /// to finish before failing with [`ErrorKind::Busy`].
    pub fn set_lock_timeout(&self, timeout: StdDuration) {
        self.write_lock.set_timeout(timeout);
    }

    /// Takes the store's cross-process write lock for `operation` (re-entrant
    /// on this thread).
    /// When the outermost guard ends, a checkpoint is signed if one is due
    /// (see [`OpenOptions::checkpoint_interval`]).
    pub(crate) fn writing(&self, operation: &str) -> Result<Writing<'_, B>> {
        Ok(Writing {
            ks: self,
            guard: Some(self.write_lock.acquire(operation)?),
        })
    }

    /// The raw backend. **Test-only**: available only with the `test-support`
    /// feature, for the conformance suite, backend tests and benchmarks.
    ///
    /// Calls through it bypass everything `Keystore` enforces: key states
    /// (a suspended or revoked version still signs), usage policy, and the
    /// audit trail (on soft, `wrap` exports any symmetric key, the audit key
    /// included). Never enable `test-support` in a shipped build.
    #[cfg(feature = "test-support")]
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend's short stable name (`soft`, `pkcs11`, `tpm`, ...), as
    /// recorded in the metadata and in provisioning records.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// What reconciliation at open found and did.
    pub fn reconcile_report(&self) -> &ReconcileReport {
        &self.reconciled
    }

    /// Store paths (the backend's directories and files, the metadata
    /// database and the files beside it) that other local users could reach
    /// when the store was opened. Each was tightened to 0700/0600, or is
    /// reported as not tightenable; see [`crate::fsperm`]. Empty for a store
    /// whose files are all private. Applications should log each entry.
    pub fn permission_report(&self) -> &PermissionReport {
        &self.permissions
    }

    pub(crate) fn md(&self) -> MutexGuard<'_, Metadata> {
        // Every write is a transaction, so a panic while holding the lock
        // cannot leave SQLite half-written: a poisoned lock is safe to reuse.
        self.metadata.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn now_time(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub(crate) fn now(&self) -> String {
        rfc3339(self.clock.now())
    }

    /// Runs a backend creation bracketed so that a crash between the backend
    /// call and the metadata commit is recognisable at the next open: a
    /// pending-create record is committed before `make` runs, and removed in
    /// the transaction in which `commit` records the new objects. `make`
    /// returns its value and the handles it created (cleaning up after itself
    /// if it fails half-way). If `commit` fails, the handles are destroyed.
    pub(crate) fn create_in_backend<T>(
        &self,
        name: &str,
        fault: Option<FaultPoint>,
        make: impl FnOnce() -> Result<(T, Vec<KeyHandle>)>,
        commit: impl FnOnce(&Connection, &T) -> Result<()>,
    ) -> Result<T> {
        let pending = {
            let now = self.now();
            let mut md = self.md();
            let tx = md.tx()?;
            let id = md::add_pending_create(&tx, name, &now)?;
            tx.commit()?;
            id
        };
        let abandon = || {
            // Best effort: a record left behind only makes the next open
            // look for orphans, which it would find none of.
            let mut md = self.md();
            let removed = md
                .tx()
                .and_then(|tx| md::remove_pending_create(&tx, pending).and_then(|_| tx.commit()));
            drop(removed);
        };
        let (value, handles) = match make() {
            Ok(v) => v,
            Err(e) => {
                abandon();
                return Err(e);
            }
        };
        if let Some(point) = fault {
            self.fault_at(point)?;
        }
        let res = (|| -> Result<()> {
            let mut md = self.md();
            let tx = md.tx()?;
            commit(&tx, &value)?;
            md::remove_pending_create(&tx, pending)?;
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = res {
            // Undo in the backend; if that fails too, the pending record stays
            // and reconciliation at the next open removes the orphans.
            let undone = handles.iter().all(|h| match self.backend.destroy(h) {
                Ok(()) => true,
                Err(e) => e.is(ErrorKind::NotFound),
            });
            if undone {
                abandon();
            }
            return Err(e);
        }
        Ok(value)
    }
}
