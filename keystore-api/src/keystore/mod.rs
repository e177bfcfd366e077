//! `Keystore<B>`: named, versioned keys over any backend, with usage policy,
//! lifecycle states, roles and a tamper-evident audit trail.
//!
//! The operations are split by family: [`crypto`](self) (sign, verify, AEAD,
//! MAC, derive), `admin` (create, import, rotate, revoke, suspend, resume,
//! destroy, sweep, decommission, credentials, audit), `backup` and
//! `reconcile` (crash recovery at open).

mod admin;
mod backup;
mod crypto;
mod reconcile;

pub use admin::RotationDue;
pub use reconcile::{FaultPoint, ReconcileReport};

use crate::algorithm::{Algorithm, KeyClass, Usages};
use crate::audit::{self, Event};
use crate::backend::{Backend, KeyHandle};
use crate::clock::{rfc3339, Clock, SystemClock};
use crate::error::{Error, Result};
use crate::fsperm::PermissionReport;
use crate::generation::Generation;
use crate::metadata::{self as md, KeyRow, KeyState, Metadata, Origin, VersionRow};
use crate::public_key::PublicKey;
use crate::roles::{Actor, Duty};
use crate::write_lock::{WriteGuard, WriteLock, DEFAULT_LOCK_TIMEOUT};
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration as StdDuration;
use time::OffsetDateTime;

/// How [`Keystore::open_with`] opens a store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenOptions {
    /// How long a lifecycle operation waits for another process's write to
    /// finish before it fails with [`Error::Busy`]. Default 5 s.
    pub lock_timeout: StdDuration,
    /// Compare every version's material with the backend's objects at open
    /// (finds material removed behind the keystore's back, and a wrong
    /// token, TPM or directory). Costs a backend listing, so it grows with
    /// the store; processes that only use keys can turn it off. Recovery of
    /// interrupted operations runs either way. Default on.
    pub check_material: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            check_material: true,
        }
    }
}

impl OpenOptions {
    /// The defaults: 5 s lock wait, material checked at open.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how long writers wait for the store's write lock.
    pub fn lock_timeout(mut self, timeout: StdDuration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Turns the material check at open on or off.
    pub fn check_material(mut self, check: bool) -> Self {
        self.check_material = check;
        self
    }
}

/// Input limits. Larger inputs are [`Error::InvalidInput`].
pub mod limits {
    /// Longest key name, in bytes.
    pub const MAX_NAME_LEN: usize = 128;
    /// Largest message, plaintext or MAC input, in bytes (16 MiB).
    pub const MAX_DATA_LEN: usize = 16 * 1024 * 1024;
    /// Largest AAD, HKDF salt or HKDF info, in bytes (64 KiB).
    pub const MAX_AAD_LEN: usize = 64 * 1024;
    /// Largest HKDF-SHA256 output: 255 × 32 bytes (RFC 5869).
    pub const MAX_DERIVE_LEN: usize = 255 * 32;
    /// Longest free-text reason (revocation) in bytes.
    pub const MAX_REASON_LEN: usize = 512;
}

/// How to create a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The usages; a non-empty subset of the algorithm's permitted usages.
    pub usages: Usages,
    /// May this key be exported as a wrapped backup? Fixed at creation,
    /// irreversible, and allowed only for symmetric keys (REQ-KEY-BAK-01).
    pub backup_eligible: bool,
    /// Rotate after this long (scheduled rotation), if set.
    pub cryptoperiod: Option<time::Duration>,
}

impl KeySpec {
    /// A spec with the algorithm's default usages, not backup-eligible, no cryptoperiod.
    pub fn new(algorithm: Algorithm) -> Self {
        KeySpec {
            algorithm,
            usages: algorithm.default_usages(),
            backup_eligible: false,
            cryptoperiod: None,
        }
    }

    /// Restricts (or, for `wrap`, extends) the usages.
    pub fn with_usages(mut self, usages: Usages) -> Self {
        self.usages = usages;
        self
    }

    /// Marks the key backup-eligible.
    pub fn backup_eligible(mut self) -> Self {
        self.backup_eligible = true;
        self
    }

    /// Sets the cryptoperiod.
    pub fn with_cryptoperiod(mut self, period: time::Duration) -> Self {
        self.cryptoperiod = Some(period);
        self
    }
}

/// Public facts about one key version. Holds no secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version number, from 1.
    pub version: u32,
    /// Lifecycle state.
    pub state: KeyState,
    /// Generated, imported or restored.
    pub origin: Origin,
    /// The public key, for asymmetric keys.
    pub public_key: Option<PublicKey>,
    /// `sha256:` fingerprint of the public key, for asymmetric keys.
    pub fingerprint: Option<String>,
    /// RFC 3339 UTC creation time.
    pub created_at: String,
    /// RFC 3339 UTC time of the last state change.
    pub state_changed_at: String,
    /// End of the grace period, for deactivated versions.
    pub grace_end: Option<String>,
    /// Why the version was revoked or marked missing, if it was.
    pub reason: Option<String>,
}

/// Public facts about a key. Holds no secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// The key's algorithm.
    pub algorithm: Algorithm,
    /// The usages the key permits.
    pub usages: Usages,
    /// Whether a wrapped backup may be taken.
    pub backup_eligible: bool,
    /// The cryptoperiod, if scheduled rotation applies.
    pub cryptoperiod: Option<time::Duration>,
    /// RFC 3339 UTC creation time.
    pub created_at: String,
    /// Versions, oldest first.
    pub versions: Vec<VersionInfo>,
}

impl KeyInfo {
    /// The version that makes new signatures and ciphertexts.
    pub fn active(&self) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.state == KeyState::Active)
    }

    /// Version `n`.
    pub fn version(&self, n: u32) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.version == n)
    }
}

/// Named, versioned keys over one backend.
///
/// Metadata (names, versions, states, handles, public keys, audit trail)
/// lives in an SQLite database; key material lives only in the backend. All
/// methods take `&self` and are safe to call from several threads, and any
/// number of processes may open the same store at once:
/// - uses (sign, verify, MAC, derive, encrypt, decrypt, public key) never
///   wait for each other or for writers beyond one metadata read;
/// - lifecycle operations hold the store's cross-process write lock for
///   their whole duration, waiting at most the lock timeout (5 s by default,
///   [`OpenOptions::lock_timeout`]) and then failing with [`Error::Busy`];
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
    pub handle: KeyHandle,
    pub public_key: Option<Vec<u8>>,
}

/// What an audit event is about.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Subject<'a> {
    pub name: Option<&'a str>,
    pub version: Option<u32>,
    pub fingerprint: Option<&'a str>,
}

impl<'a> Subject<'a> {
    pub fn version(name: &'a str, version: u32, fingerprint: Option<&'a str>) -> Self {
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
    pub fn open(backend: B, metadata_path: &Path) -> Result<Self> {
        Self::open_with_clock(backend, metadata_path, Arc::new(SystemClock))
    }

    /// Opens the keystore with an injected clock.
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
    /// [`Error::NotFound`] when most or all of the versions the metadata
    /// references are missing from the backend (the wrong token, TPM or
    /// directory): nothing is changed. [`Error::InvalidInput`] when the
    /// metadata belongs to another kind of backend; [`Error::Backend`] when
    /// the database or the backend fails.
    pub fn open_with(
        backend: B,
        metadata_path: &Path,
        clock: Arc<dyn Clock>,
        options: OpenOptions,
    ) -> Result<Self> {
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
            #[cfg(feature = "fault-injection")]
            fault: Mutex::new(None),
        };
        ks.reconciled = ks.reconcile(options.check_material)?;
        ks.ensure_audit_key()?;
        Ok(ks)
    }

    /// Sets how long lifecycle operations wait for another process's write
    /// to finish before failing with [`Error::Busy`].
    pub fn set_lock_timeout(&self, timeout: StdDuration) {
        self.write_lock.set_timeout(timeout);
    }

    /// Takes the store's cross-process write lock for `operation` (re-entrant
    /// on this thread).
    pub(crate) fn writing(&self, operation: &str) -> Result<WriteGuard<'_>> {
        self.write_lock.acquire(operation)
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
            let undone = handles
                .iter()
                .all(|h| matches!(self.backend.destroy(h), Ok(()) | Err(Error::NotFound(_))));
            if undone {
                abandon();
            }
            return Err(e);
        }
        Ok(value)
    }

    /// Creates the audit key (an HMAC key in the backend) on first open.
    fn ensure_audit_key(&self) -> Result<()> {
        let has_audit_key = || -> Result<bool> {
            let md = self.md();
            // A trail that has begun had a key: if its reference is gone on a
            // live store, a new key would hide that (verification reports it).
            Ok(md::decommissioned_at(md.conn())?.is_some()
                || md::audit_key(md.conn())?.is_some()
                || audit::trail_started(md.conn())?)
        };
        if has_audit_key()? {
            return Ok(());
        }
        let _w = self.writing("create the audit key")?;
        // Another process may have made it while this one waited.
        if has_audit_key()? {
            return Ok(());
        }
        self.create_in_backend(
            "keystore-audit",
            None,
            || {
                let g = self
                    .backend
                    .generate(Algorithm::HmacSha256, "keystore-audit")?;
                Ok((g.handle.clone(), vec![g.handle]))
            },
            |tx, handle| {
                md::set_audit_key(tx, Some(handle))?;
                let ev = Event {
                    actor: SYSTEM.0.into(),
                    role: SYSTEM.1.into(),
                    event: "audit-init".into(),
                    detail: format!("audit key created in the {} backend", self.backend.name()),
                    ..Event::default()
                };
                audit::append(tx, &self.backend, handle, &self.now(), &ev)
            },
        )?;
        Ok(())
    }

    /// Appends an event about `subject` inside `conn`'s transaction.
    pub(crate) fn audit(
        &self,
        conn: &Connection,
        actor: Option<&Actor>,
        event: &str,
        subject: Subject<'_>,
        detail: String,
    ) -> Result<()> {
        let Some(audit_key) = md::audit_key(conn)? else {
            if md::decommissioned_at(conn)?.is_some() {
                return Err(Error::KeyState(
                    "the store is decommissioned; its audit key was destroyed".into(),
                ));
            }
            return Err(Error::Integrity(
                "the audit key reference is missing from a live store (it is not decommissioned); \
                 nothing is changed until the metadata database is restored from a trusted copy"
                    .into(),
            ));
        };
        let (actor_id, role) = match actor {
            Some(a) => (a.id().to_string(), a.role().id().to_string()),
            None => (SYSTEM.0.to_string(), SYSTEM.1.to_string()),
        };
        let ev = Event {
            actor: actor_id,
            role,
            event: event.into(),
            key_name: subject.name.map(str::to_string),
            key_version: subject.version,
            fingerprint: subject.fingerprint.map(str::to_string),
            detail,
        };
        audit::append(conn, &self.backend, &audit_key, &self.now(), &ev)
    }

    /// Checks that `actor` may perform `what`; a refusal is audited and is
    /// [`Error::Policy`].
    pub(crate) fn require(
        &self,
        actor: &Actor,
        duty: Duty,
        what: &str,
        key: Option<&str>,
    ) -> Result<()> {
        if duty.allows(actor.role()) {
            return Ok(());
        }
        let mut md = self.md();
        let tx = md.tx()?;
        self.audit(
            &tx,
            Some(actor),
            "refused",
            Subject {
                name: key,
                ..Subject::default()
            },
            format!("{what} refused: needs {}", duty.describe()),
        )?;
        tx.commit()?;
        Err(Error::Policy(format!(
            "{what} needs {}; '{}' acts as {}",
            duty.describe(),
            actor.id(),
            actor.role()
        )))
    }

    /// Public facts about `name`.
    pub fn info(&self, name: &str) -> Result<KeyInfo> {
        check_name(name)?;
        let md = self.md();
        let key = live_key(md.conn(), name)?;
        let versions = md::versions(md.conn(), key.id)?;
        drop(md);
        to_info(key, versions)
    }

    /// Every live (not destroyed) key, by name.
    pub fn list(&self) -> Result<Vec<KeyInfo>> {
        let md = self.md();
        let mut out = Vec::new();
        for key in md::keys(md.conn())? {
            if key.destroyed_at.is_some() {
                continue;
            }
            let versions = md::versions(md.conn(), key.id)?;
            out.push(to_info(key, versions)?);
        }
        Ok(out)
    }

    /// The backend handle of `version` of `name` (not secret: a record id,
    /// `CKA_ID` or TPM blob), for operators and backend-level checks.
    pub fn backend_handle(&self, name: &str, version: u32) -> Result<KeyHandle> {
        check_name(name)?;
        let md = self.md();
        let key = live_key(md.conn(), name)?;
        md::versions(md.conn(), key.id)?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| Error::NotFound(format!("key '{name}' has no version {version}")))?
            .handle
            .ok_or_else(|| {
                Error::KeyState(format!("key '{name}' version {version} has no material"))
            })
    }

    /// The public key of the active version of `name`.
    pub fn public_key(&self, name: &str) -> Result<PublicKey> {
        let r = self.resolve_active(name, None)?;
        public_of(&r.key, r.public_key.as_deref())
    }

    /// The active version of `name`, checking `usage` if given.
    pub(crate) fn resolve_active(
        &self,
        name: &str,
        usage: Option<(Usages, &str)>,
    ) -> Result<Arc<Resolved>> {
        check_name(name)?;
        // Read before any data: what is cached under it is at least as new.
        let generation = self.generation.stable();
        if generation.is_some() {
            let cache = self.active.read().unwrap_or_else(|p| p.into_inner());
            if cache.generation == generation {
                if let Some(r) = cache.by_name.get(name).cloned() {
                    drop(cache);
                    if let Some((usage, what)) = usage {
                        check_usage(&r.key, usage, what)?;
                    }
                    return Ok(r);
                }
            }
        }
        let md = self.md();
        let stamp = md.change_stamp()?;
        let r = {
            let mut cache = self.active.write().unwrap_or_else(|p| p.into_inner());
            if cache.stamp != stamp || cache.generation != generation {
                cache.by_name.clear();
                cache.stamp = stamp;
                cache.generation = generation;
            }
            cache.by_name.get(name).cloned()
        };
        let r = match r {
            Some(r) => r,
            None => {
                let key = live_key(md.conn(), name)?;
                let versions = md::versions(md.conn(), key.id)?;
                let Some(v) = versions.into_iter().find(|v| v.state == KeyState::Active) else {
                    if let Some((usage, what)) = usage {
                        check_usage(&key, usage, what)?;
                    }
                    return Err(Error::KeyState(format!(
                        "key '{name}' has no active version (suspended, revoked or rotated away); rotate or resume it"
                    )));
                };
                let r = Arc::new(resolved(key, v)?);
                let mut cache = self.active.write().unwrap_or_else(|p| p.into_inner());
                if cache.by_name.len() >= ACTIVE_CACHE_CAPACITY {
                    cache.by_name.clear();
                }
                cache.by_name.insert(name.to_string(), Arc::clone(&r));
                r
            }
        };
        drop(md);
        if let Some((usage, what)) = usage {
            check_usage(&r.key, usage, what)?;
        }
        Ok(r)
    }
}

/// Active versions, and deactivated versions before their grace end, verify
/// and decrypt; no other state does.
pub(crate) fn may_verify_or_decrypt(v: &VersionRow, now: OffsetDateTime) -> bool {
    match v.state {
        KeyState::Active => true,
        KeyState::Deactivated => v.grace_end_time().is_some_and(|end| now < end),
        _ => false,
    }
}

pub(crate) fn resolved(key: KeyRow, v: VersionRow) -> Result<Resolved> {
    let handle = v.handle.ok_or_else(|| {
        Error::KeyState(format!(
            "key '{}' version {} has no material ({})",
            key.name, v.version, v.state
        ))
    })?;
    Ok(Resolved {
        key,
        version: v.version,
        handle,
        public_key: v.public_key,
    })
}

pub(crate) fn live_key(conn: &Connection, name: &str) -> Result<KeyRow> {
    match md::key(conn, name)? {
        Some(k) if k.destroyed_at.is_none() => Ok(k),
        Some(_) => Err(Error::NotFound(format!("key '{name}' was destroyed"))),
        None => Err(Error::NotFound(format!("no key named '{name}'"))),
    }
}

pub(crate) fn public_of(key: &KeyRow, spki: Option<&[u8]>) -> Result<PublicKey> {
    match (key.algorithm.class(), spki) {
        (KeyClass::Symmetric, _) => Err(Error::Policy(format!(
            "key '{}' is a {} secret key and has no public key",
            key.name, key.algorithm
        ))),
        (KeyClass::Asymmetric, Some(der)) => PublicKey::from_spki_der(key.algorithm, der.to_vec())
            .map_err(|_| {
                Error::Integrity(format!(
                    "metadata holds a malformed public key for '{}'",
                    key.name
                ))
            }),
        (KeyClass::Asymmetric, None) => Err(Error::Integrity(format!(
            "metadata holds no public key for '{}'",
            key.name
        ))),
    }
}

pub(crate) fn to_info(key: KeyRow, versions: Vec<VersionRow>) -> Result<KeyInfo> {
    let versions = versions
        .into_iter()
        .map(|v| {
            let public_key = match &v.public_key {
                Some(_) => Some(public_of(&key, v.public_key.as_deref())?),
                None => None,
            };
            Ok(VersionInfo {
                version: v.version,
                state: v.state,
                origin: v.origin,
                public_key,
                fingerprint: v.fingerprint,
                created_at: v.created_at,
                state_changed_at: v.state_changed_at,
                grace_end: v.grace_end,
                reason: v.reason,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(KeyInfo {
        name: key.name,
        algorithm: key.algorithm,
        usages: key.usages,
        backup_eligible: key.backup_eligible,
        cryptoperiod: key.cryptoperiod_secs.map(time::Duration::seconds),
        created_at: key.created_at,
        versions,
    })
}

/// Key names are 1..=128 bytes of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > limits::MAX_NAME_LEN {
        return Err(Error::InvalidInput(format!(
            "a key name is 1 to {} characters, got {}",
            limits::MAX_NAME_LEN,
            name.len()
        )));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(ok_char) || name.starts_with(['.', '-']) {
        return Err(Error::InvalidInput(
            "a key name uses only A-Z, a-z, 0-9, '.', '_' and '-', and does not start with '.' or '-'"
                .into(),
        ));
    }
    Ok(())
}

pub(crate) fn check_usage(key: &KeyRow, usage: Usages, what: &str) -> Result<()> {
    if key.usages.contains(usage) {
        Ok(())
    } else {
        Err(Error::Policy(format!(
            "key '{}' ({}, usages {{{}}}) may not {what}",
            key.name, key.algorithm, key.usages
        )))
    }
}

pub(crate) fn check_len(what: &str, data: &[u8], max: usize) -> Result<()> {
    if data.len() > max {
        return Err(Error::InvalidInput(format!(
            "{what} is {} bytes; the limit is {max}",
            data.len()
        )));
    }
    Ok(())
}
