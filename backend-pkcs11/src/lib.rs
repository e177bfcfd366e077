//! # backend-pkcs11
//!
//! Keys in a PKCS#11 token (an HSM, a smart card, SoftHSM2) through
//! [`cryptoki`]. The token generates and holds every private and secret key
//! as a sensitive, non-extractable, non-modifiable token object; this crate
//! never sees key material except a symmetric secret the caller imports,
//! which goes straight into `C_CreateObject` and is zeroized.
//!
//! - [`Pkcs11Config`] names the module (default: the platform's SoftHSM2,
//!   or `$KEYSTORE_PKCS11_MODULE`), the token by label or serial (never by
//!   slot number), where the user PIN comes from, and a namespace that
//!   separates stores sharing a token. A PKCS#11 URI (RFC 7512) can fill it
//!   ([`uri`]); [`admin`] initialises and erases tokens with the SO PIN.
//! - `CKA_ID` is the key handle and `CKA_LABEL` the key's name. Algorithms:
//!   ECDSA P-256 and P-384, Ed25519, RSA-2048/3072 PSS and PKCS#1 v1.5,
//!   AES-256-GCM, HMAC-SHA256 (also the extract step of the keystore's HKDF)
//!   and ECDH P-256 with the one-step KDF, both on the token (the shared
//!   secret never leaves it). ML-DSA-65 is not offered.
//! - A key object is used only while its `CKA_ID` and protection attributes
//!   are as this crate set them (re-checked after
//!   [`PROTECTION_RECHECK_INTERVAL`] and after any failure), and signatures
//!   are verified on the host as [`SignatureCheck`] says: a damaged or
//!   swapped key is [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity), never a bad signature.
//! - [`KeyManagement::list`] and [`Pkcs11Backend::reconcile`] report every key of
//!   the namespace with any object left, for the keystore's recovery at open.
//!
//! Sessions, object attributes, mechanisms, the protection re-check,
//! reconciliation, what a copy survives and the SoftHSM 2.6.1 quirks handled
//! here: `docs/design/pkcs11-backend.md`; many processes on one token:
//! `docs/design/pkcs11-concurrency.md`.
//!
//! # Example
//!
//! A keystore on a token (compiled, not run: it needs the token):
//!
//! ```no_run
//! use backend_pkcs11::{PinSource, Pkcs11Backend, Pkcs11Config, TokenSelector};
//! use keystore_api::{Actor, Algorithm, KeySpec, Keystore, Role, SignatureFormat};
//! use std::path::Path;
//!
//! # fn main() -> keystore_api::Result<()> {
//! let config = Pkcs11Config::new(
//!     TokenSelector::Label("gateway-hsm".into()), // or TokenSelector::Serial("…".into())
//!     PinSource::File("/run/secrets/hsm-user-pin".into()), // or PinSource::Env("HSM_USER_PIN".into())
//! )
//! .with_module("/usr/lib/softhsm/libsofthsm2.so")
//! .with_namespace("gateway-42"); // one namespace per keystore when several share a token
//! let ks = Keystore::open(Pkcs11Backend::open(&config)?, Path::new("/var/lib/gateway/metadata.sqlite"))?;
//!
//! let officer = Actor::new("provisioning-station-3", Role::SecurityOfficer)?;
//! ks.create(&officer, "device-identity", KeySpec::new(Algorithm::EcdsaP256Sha256))?;
//! let sig = ks.sign("device-identity", b"telemetry", SignatureFormat::Der)?;
//! # let _ = sig;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod config;
mod context;
mod error;
mod handle;
mod keys;
mod objects;
mod pubkey;
mod reconcile;
mod retry;
mod session;
mod token;
pub mod uri;

#[cfg(feature = "test-support")]
pub mod testing;

pub use config::{
    default_module_path, PinSource, Pkcs11Config, SignatureCheck, TokenSelector,
    DEFAULT_TOKEN_WAIT, MODULE_ENV,
};
pub use reconcile::ReconcileReport;

use cryptoki::object::ObjectHandle;
use handle::{KeyId, Prefix};
use keystore_backend::{
    Aead, AeadSealed, Algorithm, BackendKey, Capabilities, Error, GeneratedKey, KeyAgreement,
    KeyHandle, KeyManagement, KeyWrap, Mac, NewKey, PeerPublicKey, PublicKey, Result, SecretBytes,
    Signing,
};
use pubkey::Verifier;
use session::Pool;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How long a cached key object handle that passed its protection check is
/// used without checking again (one `C_GetAttributeValue`, which on SoftHSM2
/// costs more than an HMAC). One second bounds how long damage to a key
/// object behind the backend's back (which a conforming token does not
/// allow: our objects are `CKA_MODIFIABLE=false`, and `CKA_SENSITIVE` /
/// `CKA_EXTRACTABLE` can only become stricter) goes unnoticed, at a cost of
/// one check per key per second in use.
pub const PROTECTION_RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A key's primary object handle, as last checked.
#[derive(Debug, Clone, Copy)]
struct Cached {
    handle: ObjectHandle,
    /// The algorithm it was checked for (`CKA_ALLOWED_MECHANISMS`).
    alg: Algorithm,
    /// When its `CKA_ID` and protection attributes were last found intact.
    checked_at: Instant,
    /// No signature made with it has been verified since that check.
    unverified: bool,
}

/// Fills `buf` from the OS random generator.
pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf)
        .map_err(|_| Error::backend_msg(error::COMPONENT, "the OS random generator failed"))
}

/// A keystore backend over one PKCS#11 token.
///
/// `Send + Sync`: operations from many threads run concurrently on pooled
/// sessions. Dropping it closes its sessions and, if it was the last user
/// of its module in the process, finalizes the library; [`Self::close`]
/// does the same and reports errors.
pub struct Pkcs11Backend {
    pool: Pool,
    prefix: Prefix,
    module: PathBuf,
    token_label: String,
    token_serial: String,
    namespace: String,
    caps: Capabilities,
    signature_check: SignatureCheck,
    /// How old a cached handle's check may be ([`PROTECTION_RECHECK_INTERVAL`]).
    recheck_interval: Duration,
    /// Primary object handles by key id, with when they were last checked.
    handles: Mutex<HashMap<KeyId, Cached>>,
    /// Public keys by key id, parsed for verification.
    public_keys: Mutex<HashMap<KeyId, Arc<Verifier>>>,
    /// Signatures verified on the host so far (diagnostics).
    verified: AtomicU64,
    /// Test hook: called with each agreement's shared-secret object.
    #[cfg(feature = "test-support")]
    agreement_probe: Option<AgreementProbe>,
}

/// A test hook run on each agreement's shared-secret object while it
/// exists (see [`Pkcs11Backend::set_agreement_probe`]).
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub type AgreementProbe =
    Box<dyn Fn(&cryptoki::session::Session, ObjectHandle) + Send + Sync + 'static>;

impl std::fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Nothing here is secret: the PIN is not kept after login.
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("token_serial", &self.token_serial)
            .field("namespace", &self.namespace)
            .field("signature_check", &self.signature_check)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Backend {
    /// Loads the module (once per process), finds the token, opens the
    /// anchor session and logs the user in. A wrong PIN is
    /// [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth); a missing module is [`ErrorKind::NotFound`](keystore_backend::ErrorKind::NotFound) at once.
    ///
    /// A token that is not found, or a transient failure while finding it
    /// or logging in, is tried again with growing sleeps for up to
    /// [`Pkcs11Config::token_wait`] before it is reported (`NotFound`, or
    /// the last error): SoftHSM hides a token from a process that
    /// initialises the library while another process rewrites the token's
    /// files. Between attempts the library is released, so when no other
    /// backend of this process uses the module it is finalized and
    /// initialised afresh (SoftHSM only looks for tokens at
    /// `C_Initialize`).
    pub fn open(config: &Pkcs11Config) -> Result<Pkcs11Backend> {
        config.check()?;
        let pin = config.user_pin.read()?;
        let mut backoff = retry::Backoff::new(config.token_wait);
        loop {
            match Self::open_once(config, &pin) {
                Ok(backend) => return Ok(backend),
                Err((e, retryable)) => {
                    if !retryable || !backoff.wait() {
                        return Err(backoff.annotate(e));
                    }
                }
            }
        }
    }

    /// One attempt of [`Self::open`]; the flag says whether another may
    /// succeed.
    fn open_once(
        config: &Pkcs11Config,
        pin: &SecretBytes,
    ) -> std::result::Result<Pkcs11Backend, (Error, bool)> {
        let transient = |e: Error| {
            let r = retry::is_transient(&e);
            (e, r)
        };
        let lib = context::Library::acquire(&config.module).map_err(|e| (e, false))?;
        let found = token::find(&lib, &config.token).map_err(|e| {
            let r = token::lookup_retryable(&e);
            (e, r)
        })?;
        let caps = token::capabilities(lib.pkcs11(), found.slot).map_err(transient)?;
        let module = lib.module().to_path_buf();
        // A login refused with CKR_USER_PIN_NOT_INITIALIZED can come from
        // SoftHSM having read the token while another process rewrote it
        // (the PIN record was missing then): worth an attempt with the
        // library initialised afresh. CKR_PIN_INCORRECT never is (retries
        // would use up the token's PIN attempts).
        let pool = Pool::open(lib, &found, pin, config.max_idle_sessions).map_err(|e| {
            let r = retry::is_transient(&e)
                || error::mapped_from(&e, cryptoki::error::RvError::UserPinNotInitialized);
            (e, r)
        })?;
        Ok(Pkcs11Backend {
            pool,
            prefix: Prefix::for_namespace(&config.namespace),
            module,
            token_label: found.label,
            token_serial: found.serial,
            namespace: config.namespace.clone(),
            caps,
            signature_check: config.signature_check,
            recheck_interval: PROTECTION_RECHECK_INTERVAL,
            handles: Mutex::new(HashMap::new()),
            public_keys: Mutex::new(HashMap::new()),
            verified: AtomicU64::new(0),
            #[cfg(feature = "test-support")]
            agreement_probe: None,
        })
    }

    /// Closes every session and releases the library (`C_Finalize` when
    /// this was its last user in the process), reporting the first error.
    pub fn close(mut self) -> Result<()> {
        self.pool.close()
    }

    /// The loaded module (canonical path).
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// The token's serial number.
    pub fn token_serial(&self) -> &str {
        &self.token_serial
    }

    /// The namespace of this store's key handles.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// How many PKCS#11 sessions this backend has opened so far, its
    /// logged-in anchor session included (diagnostics: in steady state it
    /// stops growing, as operations reuse pooled sessions).
    pub fn sessions_opened(&self) -> usize {
        self.pool.opened()
    }

    /// How many signatures this backend has verified on the host so far
    /// (diagnostics: with [`SignatureCheck::FirstUse`] it stops growing
    /// while the same keys sign, apart from one per key per
    /// [`PROTECTION_RECHECK_INTERVAL`]).
    pub fn signatures_verified(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// Test hook: re-check cached key object handles when older than
    /// `every` instead of [`PROTECTION_RECHECK_INTERVAL`] (`Duration::ZERO`:
    /// before every use, so damage made behind the backend's back shows on
    /// the next operation without waiting).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn set_protection_recheck_interval(&mut self, every: Duration) {
        self.recheck_interval = every;
    }

    /// Test hook: `probe` runs on the session and the shared-secret object
    /// of every agreement, after `C_DeriveKey` and before the KDF, so a
    /// test can try to read the secret.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn set_agreement_probe(&mut self, probe: AgreementProbe) {
        self.agreement_probe = Some(probe);
    }

    /// True if any object of the key `handle` names (its key object, public
    /// key or marker) is on the token: the per-handle re-check for deciding
    /// that a key's material is missing. `Ok(false)` only when two searches
    /// that succeeded, a moment apart, find no object with its `CKA_ID` (or
    /// the handle is not one of this store's); transient token errors are
    /// retried for up to a second and then returned as [`ErrorKind::Backend`](keystore_backend::ErrorKind::Backend),
    /// never as absence.
    pub fn contains(&self, handle: &KeyHandle) -> Result<bool> {
        self.contains_key(handle)
    }

    /// The `CKA_ID` of `handle` if it is one of this store's handles (the
    /// handle bytes themselves), for tools that address objects directly.
    pub fn cka_id(&self, handle: &KeyHandle) -> Result<Vec<u8>> {
        Ok(self.prefix.id_of(handle)?.as_bytes().to_vec())
    }

    // Both caches are held only for a map lookup or update (never across a
    // token call); a panic cannot leave an entry half-written.
    fn handles(&self) -> MutexGuard<'_, HashMap<KeyId, Cached>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn public_keys(&self) -> MutexGuard<'_, HashMap<KeyId, Arc<Verifier>>> {
        self.public_keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, id: &KeyId) {
        self.handles().remove(id);
        self.public_keys().remove(id);
    }

    fn require(&self, alg: Algorithm, op: keystore_backend::Operation) -> Result<()> {
        if self.caps.supports(alg, op) {
            Ok(())
        } else {
            Err(Error::unsupported(format!(
                "token '{}' does not offer {alg} {op:?}",
                self.token_label
            )))
        }
    }
}

impl KeyManagement for Pkcs11Backend {
    fn name(&self) -> &'static str {
        "pkcs11"
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    /// The key's objects carry `new.name` as their `CKA_LABEL`.
    /// ML-DSA-65 is [`ErrorKind::Unsupported`](keystore_backend::ErrorKind::Unsupported):
    /// this crate maps it to no mechanism.
    fn generate(&self, new: &NewKey<'_>) -> Result<GeneratedKey> {
        objects::Kind::of(new.algorithm)?;
        self.require(new.algorithm, keystore_backend::Operation::Generate)?;
        self.generate_key(new.algorithm, new.name)
    }

    fn import(&self, new: &NewKey<'_>, secret: &SecretBytes) -> Result<KeyHandle> {
        let algorithm = new.algorithm;
        match algorithm.secret_len() {
            None => Err(Error::policy(format!(
                "{algorithm} keys cannot be imported; generate them inside the token"
            ))),
            Some(n) if n != secret.len() => Err(Error::invalid_input(format!(
                "{algorithm} needs a {n}-byte secret, got {} bytes",
                secret.len()
            ))),
            Some(_) => {
                self.require(algorithm, keystore_backend::Operation::Import)?;
                self.import_key(algorithm, secret, new.name)
            }
        }
    }

    fn destroy(&self, handle: &KeyHandle) -> Result<()> {
        self.destroy_key(handle)
    }

    fn list(&self) -> Result<Vec<KeyHandle>> {
        self.list_keys()
    }

    /// Destroys every object of this store's namespace on the token (keys,
    /// public keys and markers). The token itself, its PINs and other
    /// namespaces' objects stay.
    fn wipe(&self) -> Result<()> {
        self.wipe_namespace()
    }

    fn erasure_method(&self) -> String {
        "token objects destroyed: C_DestroyObject on every private, secret and public key object \
         of this store's namespace on the token (the token's own erasure applies)"
            .to_string()
    }
}

impl Signing for Pkcs11Backend {
    fn public_key(&self, key: &BackendKey) -> Result<PublicKey> {
        self.public_key_of(key.handle(), key.algorithm())
    }

    fn sign(&self, key: &BackendKey, message: &[u8]) -> Result<Vec<u8>> {
        self.sign_message(key.handle(), key.algorithm(), message)
    }
}

impl Mac for Pkcs11Backend {
    fn hmac_sha256(&self, key: &BackendKey, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.hmac(key.handle(), data)
    }
}

impl Aead for Pkcs11Backend {
    /// AES-256-GCM under a fresh random 96-bit nonce. An empty `aad` is
    /// [`ErrorKind::InvalidInput`](keystore_backend::ErrorKind::InvalidInput): SoftHSM 2.6.1 crashes on it, and the
    /// keystore never passes one (its AAD starts with the envelope header).
    fn encrypt(&self, key: &BackendKey, aad: &[u8], plaintext: &[u8]) -> Result<AeadSealed> {
        self.aead_encrypt(key.handle(), aad, plaintext)
    }

    fn decrypt(
        &self,
        key: &BackendKey,
        aad: &[u8],
        nonce: &[u8; 12],
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        self.aead_decrypt(key.handle(), aad, nonce, ciphertext)
    }
}

/// Key export is not offered on tokens: wrap and unwrap are
/// [`ErrorKind::Unsupported`](keystore_backend::ErrorKind::Unsupported).
impl KeyWrap for Pkcs11Backend {}

/// ECDH P-256 on the token (`CKM_ECDH1_DERIVE` into a sensitive,
/// non-extractable session object, destroyed afterwards) and the one-step
/// KDF on the token (`C_DigestKey` under `CKM_SHA256`): the shared secret
/// never leaves the token.
/// A PKCS#11 token has no TPM-style endorsement key: attestation is
/// `Unsupported` (the default).
impl keystore_backend::KeyAttestation for Pkcs11Backend {}
impl keystore_backend::MonotonicCounter for Pkcs11Backend {}

impl KeyAgreement for Pkcs11Backend {
    fn agree_sha256_kdf(
        &self,
        key: &BackendKey,
        peer: &PeerPublicKey,
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        self.agree(key.handle(), key.algorithm(), peer, fixed_info, len)
    }
}
