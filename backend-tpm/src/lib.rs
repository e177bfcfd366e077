//! # backend-tpm
//!
//! A keystore [`Backend`](keystore_backend::Backend) on a TPM 2.0, through the TSS2 ESAPI (`libtss2`,
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
//!   [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth)). After an owner clear the seed, hence the
//!   primary, changes and every blob made before becomes unloadable.
//! - **Keys** are children of the primary with
//!   `fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | noDA`
//!   and `sign`, or `decrypt` for ECDH keys (imported HMAC keys lack
//!   `sensitiveDataOrigin`), each with
//!   its own random 256-bit auth value. The [`KeyHandle`] is the key id plus
//!   the TPM's (public, private) blob pair; the keystore stores it in its
//!   metadata. The backend's registry directory (`DIR/keys/`) records each
//!   live key's auth value and public-area Name; destroying a key shreds its
//!   entry, after which the TPM refuses every use of any copy of the blob.
//! - **Algorithms**: ECDSA P-256 and P-384 (SHA-256 or SHA-384 on the
//!   host, `TPM2_Sign` with a NULL ticket, fixed `r‖s` out), RSA-2048/3072
//!   PSS-SHA256 and PKCS#1 v1.5-SHA256, and ECDH P-256 key agreement
//!   (`TPM2_ECDH_ZGen`, then the one-step KDF on the host), each where
//!   `TPM2_TestParms` accepts it; HMAC-SHA256 keyed-hash objects
//!   (`TPM2_HMAC`, or an HMAC sequence for data larger than the TPM's input
//!   buffer). AES-GCM, Ed25519 and ML-DSA-65 are
//!   [`ErrorKind::Unsupported`](keystore_backend::ErrorKind::Unsupported)
//!   (TPM 2.0 has none of them; for AEAD keys use a soft store sealed by
//!   [`TpmSealedKek`] instead).
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
//!   `TPM2_SequenceComplete` for [`Mac::hkdf_extract`](keystore_backend::Mac::hkdf_extract), unless
//!   [`TpmConfig::with_prk_in_clear_on_the_bus`]), the ECDH shared secret
//!   `Z` out of `TPM2_ECDH_ZGen` (always), random bytes from
//!   `TPM2_GetRandom`, the KEK out of
//!   `TPM2_Unseal` ([`TpmSealedKek`]) and new hierarchy auths
//!   ([`admin`]). It takes one of the TPM's loaded-session slots (swtpm has
//!   three; a probe or an unseal adds one policy session at most), is not
//!   listed by `TpmBackend::loaded_handles` (`test-support`), and is
//!   re-created with the connection after a TPM reset. *Not* encrypted:
//!   signing (the digest in
//!   and the signature out are public), MAC tags (public by use; each
//!   encrypted command costs ≈3.8 ms of host CPU in ESYS here), the data
//!   being MACed, and the
//!   password authorisations themselves: the owner auth (at every open) and
//!   each key's auth value (at every use) still cross the bus in clear, so
//!   a bus sniffer learns them, though not the key material or the MACs.
//! - **Per-use checks, cached.** A handle's registry check (blob parsed,
//!   public-area Name compared with the entry's) is done once per exact
//!   handle bytes and kept in a host-side LRU of
//!   `RESOLVED_CACHE_CAPACITY` entries, emptied by every registry change
//!   (create, destroy, wipe). Both caches match handles on their full
//!   bytes, so a steady-state operation is a lookup by handle bytes, the
//!   loaded object, and the TPM command.
//!
//! - **Attestation** (`attest`): the endorsement key re-created from the
//!   TCG default template that matches the EK certificate in NV, an
//!   attestation key (restricted ECDSA P-256) under it,
//!   `TPM2_ActivateCredential` and `TPM2_Certify` of the store's keys for a
//!   factory verifier ([`TpmBackend::ek_certificate`],
//!   [`TpmBackend::create_attestation_key`], [`TpmBackend::certify`]). See
//!   `docs/design/tpm-attestation.md`.
//!
//! What survives a copy taken before [`KeyManagement::wipe`]: a copy of the
//! registry directory plus the metadata database still works on the same
//! TPM until its owner hierarchy is cleared; [`TpmBackend::decommission`]
//! (`TPM2_Clear`) makes every blob unloadable, copy or not.
//!
//! [`KeyHandle`]: keystore_backend::KeyHandle

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![warn(unreachable_pub)]

pub mod admin;
mod agreement;
mod attest;
#[cfg(feature = "test-support")]
mod attest_support;
mod backend;
mod blob;
mod config;
mod conn;
mod counter;
mod dirlock;
mod esys;
mod fsio;
#[cfg(feature = "test-support")]
mod manufacture;
mod ops;
#[cfg(feature = "test-support")]
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

pub use attest::{
    AttestationKey, EkAlgorithm, EK_CERT_NV_ECC_P256, EK_CERT_NV_RSA2048, MAX_QUALIFYING_LEN,
};
#[cfg(feature = "test-support")]
pub use blob::{layout as handle_layout, Layout as HandleLayout};
pub use config::{
    default_tcti, read_auth_file, TpmConfig, DEFAULT_TCTI, MAX_AUTH_LEN, OWNER_AUTH_ENV,
    OWNER_AUTH_FILE_ENV, TCTI_ENV,
};
#[cfg(feature = "test-support")]
pub use esys::set_parameter_encryption_disabled;
#[cfg(feature = "test-support")]
pub use raw::LoadedKey;
#[cfg(feature = "test-support")]
pub use rc::{code as rc_code, TpmRc};
#[cfg(feature = "test-support")]
pub use resolved::CAPACITY as RESOLVED_CACHE_CAPACITY;
pub use seal::{PcrBinding, TpmSealedKek, KIND as SEALED_KEK_KIND};
#[cfg(feature = "test-support")]
pub use templates::{primary_unique, PRIMARY_UNIQUE_LABEL};

#[cfg(feature = "test-support")]
use blob::Blob;
use conn::Conn;
use dirlock::lock_dir;
#[cfg(feature = "test-support")]
use keystore_backend::KeyHandle;
use keystore_backend::{
    Algorithm, Capabilities, Component, Error, KeyManagement, Result, SecretBytes,
};
#[cfg(feature = "test-support")]
use ops::resolve_in;
use ops::{connect_slot, disconnect_slot, open_error};
use registry::Registry;
use resolved::ResolvedCache;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use tss_esapi::traits::Marshall;

const KEYS_DIR: &str = "keys";
const LOCK_FILE: &str = "lock";

/// A TPM 2.0 key store: one TPM connection and one registry directory.
pub struct TpmBackend {
    config: TpmConfig,
    dir: PathBuf,
    state: Mutex<State>,
    caps: Capabilities,
    /// Paths found reachable by other users at open (tightened).
    permissions: keystore_backend::fsperm::PermissionReport,
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
    #[cfg(feature = "test-support")]
    pub(crate) fn resolve(
        &mut self,
        handle: &KeyHandle,
        alg: Algorithm,
    ) -> Result<(Blob, SecretBytes)> {
        let r = resolve_in(&mut self.registry, &mut self.resolved, handle, alg)?;
        Ok((r.blob.clone(), SecretBytes::from_slice(r.auth.expose())))
    }
}

impl TpmBackend {
    /// Opens the store whose registry lives in `dir` (created if missing)
    /// on the TPM that `config` names: connects, re-creates the storage
    /// primary (a wrong owner auth is [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth)) and asks the TPM
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
            .map_err(|e| Error::backend(Component::Tpm, "marshalling a public area failed", e))?;
        Ok(blob::name(&area))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every registry write is atomic on disk and the connection is
        // re-opened on failure, so a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
