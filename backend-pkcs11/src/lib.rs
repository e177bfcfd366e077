//! # backend-pkcs11
//!
//! Keys in a PKCS#11 token (an HSM, a smart card, SoftHSM2) through
//! [`cryptoki`]. The token generates and holds every private and secret key
//! as a sensitive, non-extractable token object; this crate never sees key
//! material except a symmetric secret the caller imports, which goes
//! straight into `C_CreateObject` and is zeroized.
//!
//! - **Configuration** ([`Pkcs11Config`]): the module path (default: the
//!   platform's SoftHSM2, or `$KEYSTORE_PKCS11_MODULE`), the token by label
//!   or serial (never by slot number), the user PIN from an environment
//!   variable, a file or the caller, and a namespace that separates stores
//!   sharing a token. A PKCS#11 URI (RFC 7512) can fill it ([`uri`]).
//! - **Sessions**: one `C_Initialize` per
//!   process and module (a shared, counted registry that accepts
//!   `CKR_CRYPTOKI_ALREADY_INITIALIZED` and finalizes with its last user),
//!   one long-lived logged-in anchor session per backend, and a pool of
//!   sessions for concurrent operations. No operation logs in or opens a
//!   session in steady state.
//! - **Objects**: every private or secret
//!   object sets `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE=true`,
//!   `CKA_EXTRACTABLE=false`, `CKA_MODIFIABLE=false` and only the usage it
//!   serves. `CKA_ID` is the key handle (a magic prefix, a namespace tag and
//!   16 random bytes); `CKA_LABEL` is the key's name.
//! - **Algorithms**: ECDSA P-256 (SHA-256 on the host, then `CKM_ECDSA`,
//!   fixed `r‖s` out), RSA-2048/3072 with `CKM_SHA256_RSA_PKCS_PSS`
//!   (MGF1-SHA256, 32-byte salt) and `CKM_SHA256_RSA_PKCS`, AES-256-GCM
//!   (`CKM_AES_GCM`, random 96-bit nonce from the OS RNG, 128-bit tag) and
//!   HMAC-SHA256 (`CKM_SHA256_HMAC` over a 32-byte `CKK_GENERIC_SECRET`),
//!   which is also the extract step of the keystore's HKDF contract.
//! - **Defence in depth**: every signature the token makes is verified
//!   against the key's public key object before it is returned (a damaged or
//!   swapped private key, or a fault, yields [`Error::Integrity`] instead of
//!   a bad signature); a key whose object vanished while its companion
//!   object remains is [`Error::Integrity`], not `NotFound`.
//! - **Reconciliation**: [`Backend::list`] returns every key of this
//!   store's namespace that has any object left on the token (a key whose
//!   key object vanished is still listed: using it is `Integrity`), so the
//!   keystore's reconciliation at open removes orphans (a crash between the
//!   token write and the metadata commit) and marks versions whose objects
//!   are all gone. [`Pkcs11Backend::reconcile`] reports the same per handle,
//!   plus damaged keys (a key object missing, or its protection attributes
//!   changed), for operators.
//!
//! What survives a copy taken before [`Backend::wipe`]: wipe destroys the
//! store's objects on the token. A hardware token offers no way to copy them
//! beforehand. SoftHSM2 keeps objects as files encrypted under a key derived
//! from the user PIN, so a copy of its token directory taken before the wipe
//! stays usable by anyone who also knows the user PIN; to end that, change
//! the PIN or re-initialise the token with the SO PIN
//! ([`admin::reinitialize_token`]).
//!
//! SoftHSM 2.6.1 quirks handled here: AES-GCM with empty AAD (or a NULL IV)
//! crashes it, so an empty AAD is refused with [`Error::InvalidInput`] (the
//! keystore always passes a non-empty one: it starts with the envelope
//! header); its default key attributes enable wrap/unwrap/decrypt, so every
//! usage is set explicitly; closing the last session of a slot while other
//! threads work is unsafe, so the anchor session stays open; slot numbers
//! change after `C_InitToken`, so tokens are found by label or serial.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod config;
mod context;
mod error;
mod handle;
mod keys;
mod objects;
mod pubkey;
mod reconcile;
mod session;
mod token;
pub mod uri;

#[cfg(feature = "test-support")]
pub mod testing;

pub use config::{default_module_path, PinSource, Pkcs11Config, TokenSelector, MODULE_ENV};
pub use reconcile::ReconcileReport;

use cryptoki::object::ObjectHandle;
use handle::{KeyId, Prefix};
use keystore_api::{
    AeadSealed, Algorithm, Backend, Capabilities, Error, GeneratedKey, KeyHandle, PublicKey,
    Result, SecretBytes,
};
use session::Pool;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use zeroize::Zeroizing;

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
    /// Primary object handles by key id (validated by `CKA_ID` on use).
    handles: Mutex<HashMap<KeyId, ObjectHandle>>,
    /// Public keys by key id, for verifying every signature.
    public_keys: Mutex<HashMap<KeyId, PublicKey>>,
}

impl std::fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Nothing here is secret: the PIN is not kept after login.
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("token_serial", &self.token_serial)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Backend {
    /// Loads the module (once per process), finds the token, opens the
    /// anchor session and logs the user in. A wrong PIN is
    /// [`Error::Auth`]; a missing module or token is [`Error::NotFound`].
    pub fn open(config: &Pkcs11Config) -> Result<Pkcs11Backend> {
        config.check()?;
        let pin = config.user_pin.read()?;
        let lib = context::Library::acquire(&config.module)?;
        let found = token::find(lib.pkcs11(), &config.token)?;
        let caps = token::capabilities(lib.pkcs11(), found.slot)?;
        let module = lib.module().to_path_buf();
        let pool = Pool::open(
            lib,
            found.slot,
            &found.serial,
            &pin,
            config.max_idle_sessions,
        )?;
        drop(pin);
        Ok(Pkcs11Backend {
            pool,
            prefix: Prefix::for_namespace(&config.namespace),
            module,
            token_label: found.label,
            token_serial: found.serial,
            namespace: config.namespace.clone(),
            caps,
            handles: Mutex::new(HashMap::new()),
            public_keys: Mutex::new(HashMap::new()),
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

    /// The `CKA_ID` of `handle` if it is one of this store's handles (the
    /// handle bytes themselves), for tools that address objects directly.
    pub fn cka_id(&self, handle: &KeyHandle) -> Result<Vec<u8>> {
        Ok(self.prefix.id_of(handle)?.as_bytes().to_vec())
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<KeyId, ObjectHandle>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn public_keys(&self) -> MutexGuard<'_, HashMap<KeyId, PublicKey>> {
        self.public_keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, id: &KeyId) {
        self.handles().remove(id);
        self.public_keys().remove(id);
    }

    fn require(&self, alg: Algorithm, op: keystore_api::Operation) -> Result<()> {
        if self.caps.supports(alg, op) {
            Ok(())
        } else {
            Err(Error::Unsupported(format!(
                "token '{}' does not offer {alg} {op:?}",
                self.token_label
            )))
        }
    }
}

impl Backend for Pkcs11Backend {
    fn name(&self) -> &'static str {
        "pkcs11"
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    fn generate(&self, algorithm: Algorithm, label: &str) -> Result<GeneratedKey> {
        self.require(algorithm, keystore_api::Operation::Generate)?;
        self.generate_key(algorithm, label)
    }

    fn import(&self, algorithm: Algorithm, secret: &SecretBytes, label: &str) -> Result<KeyHandle> {
        match algorithm.secret_len() {
            None => Err(Error::Policy(format!(
                "{algorithm} keys cannot be imported; generate them inside the token"
            ))),
            Some(n) if n != secret.len() => Err(Error::InvalidInput(format!(
                "{algorithm} needs a {n}-byte secret, got {} bytes",
                secret.len()
            ))),
            Some(_) => {
                self.require(algorithm, keystore_api::Operation::Import)?;
                self.import_key(algorithm, secret, label)
            }
        }
    }

    fn public_key(&self, handle: &KeyHandle, algorithm: Algorithm) -> Result<PublicKey> {
        self.public_key_of(handle, algorithm)
    }

    fn sign(&self, handle: &KeyHandle, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>> {
        self.sign_message(handle, algorithm, message)
    }

    fn hmac_sha256(&self, handle: &KeyHandle, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.hmac(handle, data)
    }

    /// AES-256-GCM under a fresh random 96-bit nonce. An empty `aad` is
    /// [`Error::InvalidInput`]: SoftHSM 2.6.1 crashes on it, and the
    /// keystore never passes one (its AAD starts with the envelope header).
    fn encrypt(&self, handle: &KeyHandle, aad: &[u8], plaintext: &[u8]) -> Result<AeadSealed> {
        self.aead_encrypt(handle, aad, plaintext)
    }

    fn decrypt(
        &self,
        handle: &KeyHandle,
        aad: &[u8],
        nonce: &[u8; 12],
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        self.aead_decrypt(handle, aad, nonce, ciphertext)
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
}
