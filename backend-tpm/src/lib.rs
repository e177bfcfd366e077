//! # backend-tpm
//!
//! A keystore [`Backend`] on a TPM 2.0, through the TSS2 ESAPI (`libtss2`,
//! via `tss-esapi` 7). Tested against swtpm.
//!
//! - **Storage primary**: an ECC NIST P-256 storage key under the owner
//!   hierarchy, *re-created from a fixed template* (the TCG provisioning
//!   guidance's SRK template) once per [`TpmBackend::open`] and kept loaded
//!   for the connection's lifetime. Not persisted with `EvictControl`: the
//!   TPM derives the same key from the owner seed every time, so nothing is
//!   written to the TPM's NV memory, no persistent handle can collide with
//!   another program's SRK at `0x81000001` (made with a different template),
//!   and the owner auth is checked at every open (a wrong one is
//!   [`keystore_api::Error::Auth`]). After an owner clear the seed, hence the
//!   primary, changes and every blob made before becomes unloadable.
//! - **Keys** are children of the primary with
//!   `fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | noDA`
//!   and `sign` (imported HMAC keys lack `sensitiveDataOrigin`), each with
//!   its own random 256-bit auth value. The [`KeyHandle`] is the key id plus
//!   the TPM's (public, private) blob pair; the keystore stores it in its
//!   metadata. The backend's registry directory (`DIR/keys/`) records each
//!   live key's auth value and public-area Name; destroying a key shreds its
//!   entry, after which the TPM refuses every use of any copy of the blob.
//! - **Algorithms**: ECDSA P-256 (SHA-256 on the host, `TPM2_Sign` with a
//!   NULL ticket, fixed `r‖s` out), RSA-2048/3072 PSS-SHA256 and PKCS#1
//!   v1.5-SHA256 where `TPM2_TestParms` accepts them, HMAC-SHA256
//!   keyed-hash objects (`TPM2_HMAC`, or an HMAC sequence for data larger
//!   than the TPM's input buffer). AES-GCM is
//!   [`keystore_api::Error::Unsupported`] (TPMs have no GCM; use a soft
//!   store sealed by [`TpmSealedKek`] instead).
//! - **One connection per backend**, behind one mutex. Loaded keys are
//!   cached in an LRU within the TPM's transient slots (three on swtpm, one
//!   of them the primary) and flushed on eviction and on drop; keys are
//!   authorised by password sessions, which hold no session slot. A
//!   connection lost to a TPM or simulator restart is re-opened once,
//!   transparently.
//! - **Many processes, one store.** Any number of backends, in any number
//!   of processes, may have one registry directory open at once: each
//!   holds a *shared* lock on `DIR/lock` for its lifetime, and crash
//!   cleanup (temporaries in `DIR/keys/`) runs only in a process whose
//!   exclusive try-lock succeeds, i.e. when no other has the store open.
//!   The registry is the directory: a key created by another process is
//!   read from disk at its first use here, a cached entry is `stat`ed before
//!   every use (gone: destroyed elsewhere, `NotFound`), and `list`/`wipe`
//!   re-read the directory. Several processes need a TCTI with a **resource
//!   manager**, which gives each connection its own virtual object handles
//!   and context-saves its objects and sessions between commands: on a
//!   device the kernel's, `device:/dev/tpmrm0` (the default); in tests
//!   `tpm2-abrmd` in front of swtpm (`tabrmd:bus_name=…,bus_type=session`,
//!   see `swtpm::Abrmd`, `test-support` feature). A direct TCTI
//!   (`swtpm:`, `device:/dev/tpm0`) has one set of slots for everyone and
//!   each new connection flushes what it finds there, so it serves one
//!   process (one backend) at a time. See `docs/design/tpm-multi-process.md`.
//! - **Parameter encryption on the bus.** Each connection holds one salted
//!   (ECDH with the storage primary), unbound HMAC session with AES-128-CFB,
//!   started at open and flushed at close, used only to encrypt command and
//!   response parameters: key auth values and imported key bytes going into
//!   `TPM2_Create`, the PRK of HKDF derivation (`TPM2_HMAC`,
//!   `TPM2_SequenceComplete` for [`Backend::hkdf_extract`], unless
//!   [`TpmConfig::with_prk_in_clear_on_the_bus`]), random bytes from
//!   `TPM2_GetRandom`, the KEK out of
//!   `TPM2_Unseal` ([`TpmSealedKek`]) and new hierarchy auths
//!   ([`admin`]). It takes one of the TPM's loaded-session slots (swtpm has
//!   three; a probe or an unseal adds one policy session at most), is not
//!   listed by [`TpmBackend::loaded_handles`], and is re-created with the
//!   connection after a TPM reset. *Not* encrypted: signing (the digest in
//!   and the signature out are public), MAC tags (public by use; each
//!   encrypted command costs ≈3.8 ms of host CPU in ESYS here), the data
//!   being MACed, and the
//!   password authorisations themselves: the owner auth (at every open) and
//!   each key's auth value (at every use) still cross the bus in clear, so
//!   a bus sniffer learns them, though not the key material or the MACs.
//! - **Per-use checks, cached.** A handle's registry check (blob parsed,
//!   public-area Name compared with the entry's) is done once per exact
//!   handle bytes and kept in a host-side LRU of
//!   [`RESOLVED_CACHE_CAPACITY`] entries, emptied by every registry change
//!   (create, destroy, wipe). Both caches match handles on their full
//!   bytes, so a steady-state operation is a lookup by handle bytes, the
//!   loaded object, and the TPM command.
//!
//! What survives a copy taken before [`Backend::wipe`]: a copy of the
//! registry directory plus the metadata database still works on the same
//! TPM until its owner hierarchy is cleared; [`TpmBackend::decommission`]
//! (`TPM2_Clear`) makes every blob unloadable, copy or not.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
mod blob;
mod config;
mod conn;
mod esys;
mod fsio;
pub mod probe;
mod pubkey;
#[cfg(feature = "test-support")]
mod raw;
mod rc;
mod registry;
mod resolved;
mod seal;
#[cfg(feature = "test-support")]
pub mod swtpm;
mod templates;

pub use blob::{layout as handle_layout, Layout as HandleLayout};
pub use config::{
    default_tcti, read_auth_file, TpmConfig, DEFAULT_TCTI, MAX_AUTH_LEN, OWNER_AUTH_ENV,
    OWNER_AUTH_FILE_ENV, TCTI_ENV,
};
#[cfg(feature = "test-support")]
pub use esys::set_parameter_encryption_disabled;
#[cfg(feature = "test-support")]
pub use raw::LoadedKey;
pub use rc::{code as rc_code, TpmRc};
pub use resolved::CAPACITY as RESOLVED_CACHE_CAPACITY;
pub use seal::{PcrBinding, TpmSealedKek, KIND as SEALED_KEK_KIND};
pub use templates::{primary_unique, PRIMARY_UNIQUE_LABEL};

use blob::{Blob, KeyId};
use conn::{Conn, OpenError};
use esys::Tr;
use keystore_api::{
    limits, AeadSealed, Algorithm, Backend, Capabilities, Error, GeneratedKey, KeyClass, KeyHandle,
    PublicKey, Result, SecretBytes,
};
use registry::{Entry, Lookup, Registry};
use resolved::{Resolved, ResolvedCache};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tss_esapi::structures::Public;
use tss_esapi::traits::Marshall;
use zeroize::Zeroizing;

const KEYS_DIR: &str = "keys";
const LOCK_FILE: &str = "lock";

/// A TPM 2.0 key store: one TPM connection and one registry directory.
pub struct TpmBackend {
    config: TpmConfig,
    dir: PathBuf,
    state: Mutex<State>,
    caps: Capabilities,
    /// Paths found reachable by other users at open (tightened).
    permissions: keystore_api::fsperm::PermissionReport,
    _lock: File,
}

impl std::fmt::Debug for TpmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmBackend")
            .field("tcti", &self.config.tcti())
            .field("dir", &self.dir)
            .field("owner_auth", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

pub(crate) struct State {
    conn: Option<Conn>,
    registry: Registry,
    /// Handles already checked against the registry (see `resolved`).
    resolved: ResolvedCache,
}

/// The live connection in `slot`, opening one if the last was lost.
fn connect_slot<'a>(slot: &'a mut Option<Conn>, config: &TpmConfig) -> Result<&'a mut Conn> {
    if slot.is_none() {
        *slot = Some(Conn::open(config).map_err(|e| open_error(config, e))?);
    }
    match slot.as_mut() {
        Some(c) => Ok(c),
        None => Err(Error::backend_msg("tpm", "no TPM connection")),
    }
}

/// Forgets the broken connection in `slot` without talking to the TPM.
fn disconnect_slot(slot: &mut Option<Conn>) {
    if let Some(mut c) = slot.take() {
        c.mark_dead();
    }
}

/// Checks `handle` against `registry`: a live key of `alg` whose public
/// area is the one registered under its id. A handle whose exact bytes
/// passed this check since the registry last changed is answered from
/// `cache`; anything else is checked from scratch, and cached if it passes.
/// Either way the key's entry file is first checked on disk
/// ([`Registry::sync_id`]: one `stat` in the steady state).
fn resolve_in<'c>(
    registry: &mut Registry,
    cache: &'c mut ResolvedCache,
    handle: &KeyHandle,
    alg: Algorithm,
) -> Result<&'c Resolved> {
    let bytes = handle.as_bytes();
    // Another process may have destroyed the key (its entry file is gone:
    // the entry is dropped and the generation bumped, which empties the
    // cache) or created it (not known here yet: read from disk).
    let (id, _) = blob::peek(handle)?;
    registry.sync_id(&id)?;
    let generation = registry.generation();
    let i = match cache.find(bytes, generation) {
        Some(i) => i,
        None => {
            let (blob, auth) = resolve_uncached(registry, handle)?;
            cache.insert(bytes, generation, blob, auth)
        }
    };
    let r = cache
        .get(i)
        .ok_or_else(|| Error::backend_msg("tpm", "the resolved-handle cache lost an entry"))?;
    if r.blob.alg != alg {
        return Err(Error::Integrity(format!(
            "TPM key {} holds a {} key, not {alg}",
            hex::encode(r.blob.id),
            r.blob.alg
        )));
    }
    Ok(r)
}

/// The full check behind [`resolve_in`], with no cache: the registry entry
/// of the handle's id, the blob parsed, its Name compared with the entry's.
fn resolve_uncached(registry: &Registry, handle: &KeyHandle) -> Result<(Blob, SecretBytes)> {
    let (id, _) = blob::peek(handle)?;
    let entry = match registry.get(&id) {
        Lookup::Live(e) => e,
        Lookup::Damaged => return Err(registry::damaged_error(&id)),
        Lookup::Absent => {
            return Err(Error::NotFound(format!(
                "TPM key {} does not exist (never made here, or destroyed)",
                hex::encode(id)
            )))
        }
    };
    let blob = blob::parse(handle)?;
    if blob.alg.code() != entry.alg_code || blob::name(&blob.public_area) != entry.name {
        return Err(Error::Integrity(format!(
            "the stored blob of TPM key {} is not the key registered under this id (swapped or altered)",
            hex::encode(id)
        )));
    }
    Ok((blob, SecretBytes::from_slice(entry.auth.expose())))
}

impl State {
    /// The live connection, opening one if the last was lost.
    pub(crate) fn connect(&mut self, config: &TpmConfig) -> Result<&mut Conn> {
        connect_slot(&mut self.conn, config)
    }

    /// Forgets a broken connection without talking to the TPM.
    pub(crate) fn disconnect(&mut self) {
        disconnect_slot(&mut self.conn);
    }

    /// Checks `handle` against the registry: a live key of `alg` whose
    /// public area is the one registered under its id. Returns copies of
    /// the parsed blob and the auth value (for the probes and test support;
    /// the operation path borrows them from the cache instead).
    pub(crate) fn resolve(
        &mut self,
        handle: &KeyHandle,
        alg: Algorithm,
    ) -> Result<(Blob, SecretBytes)> {
        let r = resolve_in(&mut self.registry, &mut self.resolved, handle, alg)?;
        Ok((r.blob.clone(), SecretBytes::from_slice(r.auth.expose())))
    }
}

fn open_error(config: &TpmConfig, e: OpenError) -> Error {
    match e {
        OpenError::Connect(rc) => Error::backend(
            "tpm",
            format!(
                "cannot connect to the TPM through TCTI '{}' (is the TPM present, or the simulator running?)",
                config.tcti()
            ),
            rc,
        ),
        OpenError::OwnerAuth(rc) => Error::Auth(format!(
            "the TPM owner hierarchy refused its auth value ({rc}); check {OWNER_AUTH_ENV} or {OWNER_AUTH_FILE_ENV}"
        )),
        OpenError::Tpm(what, rc) => rc::to_error(what, rc),
    }
}

/// A `TPM2_Load` failure on a stored blob.
fn load_error(blob: &Blob, rc: TpmRc) -> Error {
    if rc::is_blob_rejection(rc) {
        Error::Integrity(format!(
            "the TPM rejected the stored blob of key {} ({rc}): corrupted, truncated, or made before an owner clear",
            hex::encode(blob.id)
        ))
    } else {
        rc::to_error("load a key", rc)
    }
}

impl TpmBackend {
    /// HMAC-SHA256 of `data` (named `what` in errors) with the key
    /// `handle`; a `secret` result is encrypted on the bus.
    fn hmac(
        &self,
        handle: &KeyHandle,
        what: &str,
        data: &[u8],
        secret: bool,
    ) -> Result<Zeroizing<[u8; 32]>> {
        if data.len() > limits::MAX_DATA_LEN {
            return Err(Error::InvalidInput(format!(
                "{what} is {} bytes; the limit is {}",
                data.len(),
                limits::MAX_DATA_LEN
            )));
        }
        self.run(
            handle,
            Algorithm::HmacSha256,
            "compute an HMAC",
            |conn, key| conn.hmac(key, data, secret),
        )
    }

    /// Opens the store whose registry lives in `dir` (created if missing)
    /// on the TPM that `config` names: connects, re-creates the storage
    /// primary (a wrong owner auth is [`Error::Auth`]) and asks the TPM
    /// which algorithms it supports.
    ///
    /// Any number of backends, in this process or others, may have `dir`
    /// open at once: each holds a shared lock on `DIR/lock` for its
    /// lifetime, and the one that finds no other holder (its exclusive
    /// try-lock succeeds) first removes temporaries left by a crash. Several
    /// processes need a TCTI with a resource manager (`device:/dev/tpmrm0`,
    /// `tabrmd:`); see the crate documentation.
    pub fn open(config: TpmConfig, dir: &Path) -> Result<TpmBackend> {
        fsio::ensure_private_dir(dir)?;
        let permissions = fsio::secure_store(dir, KEYS_DIR, &[LOCK_FILE]);
        let keys = dir.join(KEYS_DIR);
        let lock = lock_dir(dir, || registry::remove_temporaries(&keys))?;
        let registry = Registry::open(&keys)?;
        let mut conn = Conn::open(&config).map_err(|e| open_error(&config, e))?;
        let caps = probe_capabilities(&mut conn);
        Ok(TpmBackend {
            config,
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                conn: Some(conn),
                registry,
                resolved: ResolvedCache::new(),
            }),
            caps,
            permissions,
            _lock: lock,
        })
    }

    /// The registry directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The TCTI this backend talks through.
    pub fn tcti(&self) -> &str {
        self.config.tcti()
    }

    /// The TPM Name of the storage primary (`0x000B ‖ SHA-256(public area)`),
    /// to compare with a primary re-created elsewhere (tpm2-tools).
    pub fn storage_primary_name(&self) -> Result<Vec<u8>> {
        let mut st = self.lock();
        let conn = st.connect(&self.config)?;
        let area = conn
            .primary_public
            .marshall()
            .map_err(|e| Error::backend("tpm", "marshalling a public area failed", e))?;
        Ok(blob::name(&area))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every registry write is atomic on disk and the connection is
        // re-opened on failure, so a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` on the loaded key of `handle`, re-opening the connection
    /// once if it was lost (a TPM or simulator restart).
    fn run<T>(
        &self,
        handle: &KeyHandle,
        alg: Algorithm,
        what: &str,
        mut op: impl FnMut(&mut Conn, Tr) -> std::result::Result<T, TpmRc>,
    ) -> Result<T> {
        let mut guard = self.lock();
        // Borrow the fields apart: the resolved entry stays borrowed from
        // the cache while the connection is used.
        let State {
            conn: slot,
            registry,
            resolved,
        } = &mut *guard;
        let r = match resolve_in(registry, resolved, handle, alg) {
            Ok(r) => r,
            Err(e) => {
                // A key destroyed by another process may still be loaded
                // here: free its slot.
                if let (Error::NotFound(_), Ok((id, _)), Some(conn)) =
                    (&e, blob::peek(handle), slot.as_mut())
                {
                    conn.evict(&id);
                }
                return Err(e);
            }
        };
        let mut rejected = None;
        for attempt in 1..=2 {
            let conn = connect_slot(slot, &self.config)?;
            let res = match conn.key(handle.as_bytes(), &r.blob, r.auth.expose()) {
                Err(rc) => Err((rc, true)),
                Ok(key) => op(conn, key).map_err(|rc| (rc, false)),
            };
            match res {
                Ok(v) => return Ok(v),
                Err((rc, _)) if attempt == 1 && conn::is_connection_lost(rc) => {
                    disconnect_slot(slot)
                }
                Err((rc, true)) => {
                    rejected = Some((load_error(&r.blob, rc), rc::is_blob_rejection(rc)));
                    break;
                }
                Err((rc, false)) => return Err(rc::to_error(what, rc)),
            }
        }
        match rejected {
            Some((e, drop_entry)) => {
                // A blob the TPM refuses is not worth keeping parsed.
                if drop_entry {
                    resolved.remove(handle.as_bytes());
                }
                Err(e)
            }
            None => Err(Error::backend_msg(
                "tpm",
                "the TPM connection was lost twice",
            )),
        }
    }

    /// Creates a key from `template` (with `data` as its secret when
    /// imported) and records it in the registry.
    fn create_key(
        &self,
        alg: Algorithm,
        template: &Public,
        data: &[u8],
    ) -> Result<(KeyHandle, Public)> {
        let mut st = self.lock();
        let mut made = None;
        for attempt in 1..=2 {
            let conn = st.connect(&self.config)?;
            let res = conn.esys.get_random(48).and_then(|rnd| {
                let (auth, id) = rnd.split_at(32);
                let (public, private) = conn.create(template, auth, data)?;
                Ok((SecretBytes::from_slice(auth), id.to_vec(), public, private))
            });
            match res {
                Ok(v) => {
                    made = Some(v);
                    break;
                }
                Err(rc) if attempt == 1 && conn::is_connection_lost(rc) => st.disconnect(),
                Err(rc) => return Err(rc::to_error(&format!("create a {alg} key"), rc)),
            }
        }
        let (auth, id, public, private) =
            made.ok_or_else(|| Error::backend_msg("tpm", "the TPM connection was lost twice"))?;
        let id: KeyId = id
            .as_slice()
            .try_into()
            .map_err(|_| Error::backend_msg("tpm", "the TPM returned too few random bytes"))?;
        let handle = blob::encode(&id, alg, &public, &private)?;
        let area = public
            .marshall()
            .map_err(|e| Error::backend("tpm", "marshalling a public area failed", e))?;
        let entry = Entry {
            alg_code: alg.code(),
            name: blob::name(&area),
            auth,
            handle: handle.clone(),
        };
        st.registry.insert(id, entry, &id)?;
        Ok((handle, public))
    }

    /// Decommissions the TPM: wipes this store, closes the connection and
    /// clears the owner hierarchy with `TPM2_Clear` authorised by the
    /// lockout auth. Every blob made under the old owner seed, including
    /// copies of this store, becomes unloadable; the owner auth is reset to
    /// empty. Other programs' owner-hierarchy keys on this TPM are erased too.
    pub fn decommission(self, lockout_auth: &SecretBytes) -> Result<()> {
        self.wipe()?;
        let TpmBackend { config, state, .. } = self;
        drop(state);
        admin::clear(config.tcti(), lockout_auth)
    }
}

#[cfg(feature = "test-support")]
impl TpmBackend {
    /// Test support (`test-support` feature): replaces this backend's own
    /// copy of the handle `old` (its registry entry's listing copy) by
    /// `new`, as an attacker with write access to the registry directory
    /// would. The entry's auth value and the public-area Name it binds to
    /// the key id are kept. Used with the same change to the metadata
    /// database, so the keystore's reconciliation still finds the key and
    /// the damage reaches the checks at use time.
    pub fn tamper_registry_copy(&self, old: &KeyHandle, new: &KeyHandle) -> Result<()> {
        let (id, _) = blob::peek(old)?;
        let mut st = self.lock();
        st.registry.replace_handle(&id, new.clone(), &id)
    }
}

fn probe_capabilities(conn: &mut Conn) -> Capabilities {
    let mut caps = Capabilities::none();
    for alg in Algorithm::ALL {
        if alg == Algorithm::Aes256Gcm {
            continue;
        }
        let Ok(template) = templates::key(alg, true, Default::default()) else {
            continue;
        };
        if conn.esys.test_parms(&template).is_ok() {
            caps = caps.with_algorithm(alg);
        }
    }
    caps
}

/// How long [`TpmBackend::open`] waits for its shared lock while another
/// process cleans up after a crash (holding the lock exclusively).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Takes the store's lock (`DIR/lock`) for the life of the backend: shared,
/// so that any number of backends and processes open the store at once. If
/// an exclusive try-lock succeeds first (no other holder: no other process
/// has the store open, so nothing of theirs is in flight), `exclusive` runs
/// under it (crash cleanup), and the lock is then downgraded to shared.
fn lock_dir(dir: &Path, exclusive: impl FnOnce() -> Result<()>) -> Result<File> {
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

fn unsupported_aead() -> Error {
    Error::Unsupported(
        "aes-256-gcm: TPM 2.0 has no AES-GCM; use a TPM-sealed soft store for AEAD keys".into(),
    )
}

impl Backend for TpmBackend {
    fn permission_report(&self) -> keystore_api::fsperm::PermissionReport {
        self.permissions.clone()
    }

    fn name(&self) -> &'static str {
        "tpm"
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    fn generate(&self, algorithm: Algorithm, _label: &str) -> Result<GeneratedKey> {
        if algorithm == Algorithm::Aes256Gcm {
            return Err(unsupported_aead());
        }
        if !self
            .caps
            .supports(algorithm, keystore_api::Operation::Generate)
        {
            return Err(Error::Unsupported(format!(
                "{algorithm}: this TPM does not support it (TPM2_TestParms refused)"
            )));
        }
        let template = templates::key(algorithm, true, Default::default())?;
        let (handle, public) = self.create_key(algorithm, &template, &[])?;
        let public_key = match algorithm.class() {
            KeyClass::Asymmetric => Some(pubkey::spki(algorithm, &public)?),
            KeyClass::Symmetric => None,
        };
        Ok(GeneratedKey { handle, public_key })
    }

    fn import(
        &self,
        algorithm: Algorithm,
        secret: &SecretBytes,
        _label: &str,
    ) -> Result<KeyHandle> {
        match algorithm {
            Algorithm::HmacSha256 => {}
            Algorithm::Aes256Gcm => return Err(unsupported_aead()),
            a => {
                return Err(Error::Policy(format!(
                    "{a} keys cannot be imported; generate them inside the backend"
                )))
            }
        }
        if secret.len() != 32 {
            return Err(Error::InvalidInput(format!(
                "{algorithm} needs a 32-byte secret, got {} bytes",
                secret.len()
            )));
        }
        let template = templates::key(algorithm, false, Default::default())?;
        Ok(self.create_key(algorithm, &template, secret.expose())?.0)
    }

    fn public_key(&self, handle: &KeyHandle, algorithm: Algorithm) -> Result<PublicKey> {
        if algorithm.class() != KeyClass::Asymmetric {
            return Err(Error::Policy(format!(
                "{algorithm} keys have no public key"
            )));
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        let r = resolve_in(&mut st.registry, &mut st.resolved, handle, algorithm)?;
        pubkey::spki(algorithm, &r.blob.public)
    }

    fn sign(&self, handle: &KeyHandle, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>> {
        if algorithm.class() != KeyClass::Asymmetric {
            return Err(Error::Policy(format!("{algorithm} keys do not sign")));
        }
        let digest = Sha256::digest(message);
        let scheme = templates::signature_scheme(algorithm);
        let sig = self.run(handle, algorithm, "sign", |conn, key| {
            conn.esys.sign(key, &digest, scheme)
        })?;
        pubkey::signature_bytes(algorithm, sig)
    }

    fn hmac_sha256(&self, handle: &KeyHandle, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.hmac(handle, "MAC input", data, false)
    }

    /// As [`Backend::hmac_sha256`], with the result (a secret PRK)
    /// encrypted on the bus unless the configuration says otherwise
    /// ([`TpmConfig::with_prk_in_clear_on_the_bus`]).
    fn hkdf_extract(&self, handle: &KeyHandle, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.hmac(handle, "HKDF salt", salt, !self.config.prk_in_clear())
    }

    fn encrypt(&self, _handle: &KeyHandle, _aad: &[u8], _plaintext: &[u8]) -> Result<AeadSealed> {
        Err(unsupported_aead())
    }

    fn decrypt(
        &self,
        _handle: &KeyHandle,
        _aad: &[u8],
        _nonce: &[u8; 12],
        _ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        Err(unsupported_aead())
    }

    /// Shreds the key's registry entry (its auth value) and flushes any
    /// loaded copy; the TPM then refuses every use of the blob.
    fn destroy(&self, handle: &KeyHandle) -> Result<()> {
        let (id, _) = blob::peek(handle)?;
        let mut st = self.lock();
        // Flushed even if another process destroyed the key first.
        if let Some(conn) = st.conn.as_mut() {
            conn.evict(&id);
        }
        if !st.registry.remove(&id)? {
            return Err(Error::NotFound(format!(
                "TPM key {} does not exist",
                hex::encode(id)
            )));
        }
        Ok(())
    }

    /// The keys whose entry files are in the registry directory now,
    /// whichever process created them.
    fn list(&self) -> Result<Vec<KeyHandle>> {
        let mut st = self.lock();
        st.registry.scan()?;
        Ok(st.registry.handles())
    }

    /// Shreds every registry entry and flushes every loaded key. Blobs of
    /// this store become unusable; an owner clear
    /// ([`TpmBackend::decommission`]) also makes them unloadable.
    fn wipe(&self) -> Result<()> {
        let mut st = self.lock();
        if let Some(conn) = st.conn.as_mut() {
            conn.evict_all();
        }
        st.registry.scan()?;
        for id in st.registry.ids() {
            st.registry.remove(&id)?;
        }
        Ok(())
    }
}
