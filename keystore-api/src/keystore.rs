//! `Keystore<B>`: named keys over any backend, with usage policy enforced.

use crate::algorithm::{Algorithm, KeyClass, Usages};
use crate::backend::{Backend, KeyHandle};
use crate::clock::{rfc3339, Clock, SystemClock};
use crate::envelope;
use crate::error::{Error, Result};
use crate::metadata::{KeyRow, KeyState, Metadata, NewVersion, Origin, VersionRow};
use crate::public_key::PublicKey;
use crate::secret::SecretBytes;
use crate::signature::{self, Signature, SignatureFormat};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

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
}

/// How to create a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The usages; must be a non-empty subset of the algorithm's permitted usages.
    pub usages: Usages,
}

impl KeySpec {
    /// A spec with every usage the algorithm permits.
    pub fn new(algorithm: Algorithm) -> Self {
        KeySpec {
            algorithm,
            usages: algorithm.permitted_usages(),
        }
    }

    /// Restricts the usages.
    pub fn with_usages(mut self, usages: Usages) -> Self {
        self.usages = usages;
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
}

/// Named, versioned keys over one backend.
///
/// Metadata (names, versions, handles, public keys) lives in an SQLite
/// database; key material lives only in the backend. All methods take
/// `&self` and are safe to call from several threads; the metadata lock is
/// held only for lookups and commits, never across a backend operation.
pub struct Keystore<B: Backend> {
    backend: B,
    metadata: Mutex<Metadata>,
    clock: Arc<dyn Clock>,
}

impl<B: Backend> std::fmt::Debug for Keystore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

/// A resolved key version, ready for a backend call.
struct Resolved {
    key: KeyRow,
    version: u32,
    handle: KeyHandle,
    public_key: Option<Vec<u8>>,
}

impl<B: Backend> Keystore<B> {
    /// Opens the keystore whose metadata lives at `metadata_path` (created if
    /// missing), over `backend`, with the system clock.
    pub fn open(backend: B, metadata_path: &Path) -> Result<Self> {
        Self::open_with_clock(backend, metadata_path, Arc::new(SystemClock))
    }

    /// Opens the keystore with an injected clock.
    pub fn open_with_clock(
        backend: B,
        metadata_path: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let now = rfc3339(clock.now());
        let metadata = Metadata::open(metadata_path, backend.name(), &now)?;
        Ok(Keystore {
            backend,
            metadata: Mutex::new(metadata),
            clock,
        })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn md(&self) -> MutexGuard<'_, Metadata> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (every write is a transaction), so a poisoned lock is safe to reuse.
        self.metadata.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> String {
        rfc3339(self.clock.now())
    }

    /// Generates a key named `name` inside the backend. The name must be new.
    pub fn create(&self, name: &str, spec: KeySpec) -> Result<KeyInfo> {
        check_name(name)?;
        check_usages(spec)?;
        self.check_name_free(name)?;
        let generated = self.backend.generate(spec.algorithm, name)?;
        let (pk, fp) = match (&generated.public_key, spec.algorithm.class()) {
            (Some(pk), KeyClass::Asymmetric) => {
                (Some(pk.spki_der().to_vec()), Some(pk.fingerprint()))
            }
            (None, KeyClass::Symmetric) => (None, None),
            _ => {
                self.discard(&generated.handle);
                return Err(Error::backend_msg(
                    self.backend.name(),
                    "backend returned a public key that does not match the algorithm",
                ));
            }
        };
        let new = NewVersion {
            origin: Origin::Generated,
            handle: &generated.handle,
            public_key: pk.as_deref(),
            fingerprint: fp.as_deref(),
        };
        self.commit_new_key(name, spec, &new)?;
        self.info(name)
    }

    /// Imports a 32-byte secret for a symmetric key (AES-256-GCM, HMAC-SHA256),
    /// recorded with origin `imported`. Private keys cannot be imported: they
    /// are generated inside the backend ([`Error::Policy`]).
    pub fn import(&self, name: &str, spec: KeySpec, secret: &SecretBytes) -> Result<KeyInfo> {
        check_name(name)?;
        check_usages(spec)?;
        let Some(len) = spec.algorithm.secret_len() else {
            return Err(Error::Policy(format!(
                "{} keys cannot be imported; generate them inside the backend",
                spec.algorithm
            )));
        };
        if secret.len() != len {
            return Err(Error::InvalidInput(format!(
                "{} needs a {len}-byte secret, got {} bytes",
                spec.algorithm,
                secret.len()
            )));
        }
        self.check_name_free(name)?;
        let handle = self.backend.import(spec.algorithm, secret, name)?;
        let new = NewVersion {
            origin: Origin::Imported,
            handle: &handle,
            public_key: None,
            fingerprint: None,
        };
        self.commit_new_key(name, spec, &new)?;
        self.info(name)
    }

    fn check_name_free(&self, name: &str) -> Result<()> {
        match self.md().key(name)? {
            None => Ok(()),
            Some(k) if k.destroyed_at.is_some() => Err(Error::AlreadyExists(format!(
                "key '{name}' was destroyed and its tombstone keeps the name; choose another name"
            ))),
            Some(_) => Err(Error::AlreadyExists(format!("key '{name}' already exists"))),
        }
    }

    /// Commits a new key's metadata; on failure destroys the backend object so
    /// nothing is orphaned.
    fn commit_new_key(&self, name: &str, spec: KeySpec, new: &NewVersion<'_>) -> Result<()> {
        let now = self.now();
        let res = self
            .md()
            .insert_key(name, spec.algorithm, spec.usages, new, &now);
        if res.is_err() {
            self.discard(new.handle);
        }
        res
    }

    /// Best-effort removal of a backend object that metadata will not reference.
    fn discard(&self, handle: &KeyHandle) {
        // The caller reports the original error; a failure here leaves an
        // orphan that reconciliation at open removes.
        let _ = self.backend.destroy(handle);
    }

    /// Public facts about `name`.
    pub fn info(&self, name: &str) -> Result<KeyInfo> {
        check_name(name)?;
        let md = self.md();
        let key = live_key(&md, name)?;
        let versions = md.versions(key.id)?;
        drop(md);
        to_info(key, versions)
    }

    /// The backend handle of `version` of `name` (not secret: a record id,
    /// `CKA_ID` or TPM blob), for operators and backend-level checks.
    pub fn backend_handle(&self, name: &str, version: u32) -> Result<KeyHandle> {
        check_name(name)?;
        let md = self.md();
        let key = live_key(&md, name)?;
        md.versions(key.id)?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| Error::NotFound(format!("key '{name}' has no version {version}")))?
            .handle
            .ok_or_else(|| {
                Error::KeyState(format!("key '{name}' version {version} has no material"))
            })
    }

    /// Every live (not destroyed) key, by name.
    pub fn list(&self) -> Result<Vec<KeyInfo>> {
        let md = self.md();
        let mut out = Vec::new();
        for key in md.keys()? {
            if key.destroyed_at.is_some() {
                continue;
            }
            let versions = md.versions(key.id)?;
            out.push(to_info(key, versions)?);
        }
        Ok(out)
    }

    /// The public key of the active version of `name`.
    pub fn public_key(&self, name: &str) -> Result<PublicKey> {
        let r = self.resolve_active(name, None)?;
        public_of(&r.key, r.public_key.as_deref())
    }

    fn resolve_active(&self, name: &str, usage: Option<(Usages, &str)>) -> Result<Resolved> {
        check_name(name)?;
        let md = self.md();
        let key = live_key(&md, name)?;
        if let Some((usage, what)) = usage {
            check_usage(&key, usage, what)?;
        }
        let v = md
            .active_version(key.id)?
            .ok_or_else(|| Error::KeyState(format!("key '{name}' has no active version")))?;
        resolved(key, v)
    }

    /// Signs `message` with the active version of `name`.
    pub fn sign(&self, name: &str, message: &[u8], format: SignatureFormat) -> Result<Signature> {
        check_len("message", message, limits::MAX_DATA_LEN)?;
        let r = self.resolve_active(name, Some((Usages::SIGN, "sign")))?;
        let raw = self.backend.sign(&r.handle, r.key.algorithm, message)?;
        let bytes = signature::encode(r.key.algorithm, raw, format)?;
        Ok(Signature {
            version: r.version,
            format,
            bytes,
        })
    }

    /// Verifies `signature` over `message` on the host with the public key of
    /// `version`, or of every version allowed to verify when `version` is
    /// `None`. Returns the version that verified; a signature that verifies
    /// under none is [`Error::Integrity`].
    pub fn verify(
        &self,
        name: &str,
        message: &[u8],
        signature: &[u8],
        version: Option<u32>,
    ) -> Result<u32> {
        check_len("message", message, limits::MAX_DATA_LEN)?;
        if signature.is_empty() || signature.len() > 1024 {
            return Err(Error::InvalidInput(format!(
                "a signature is 1 to 1024 bytes, got {}",
                signature.len()
            )));
        }
        let candidates = self.verifying_versions(name, version)?;
        for (key, v) in &candidates {
            let pk = public_of(key, v.public_key.as_deref())?;
            if pk.verify(message, signature).is_ok() {
                return Ok(v.version);
            }
        }
        Err(Error::Integrity(format!(
            "signature does not verify under key '{name}'"
        )))
    }

    fn verifying_versions(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Vec<(KeyRow, VersionRow)>> {
        check_name(name)?;
        let md = self.md();
        let key = live_key(&md, name)?;
        check_usage(&key, Usages::VERIFY, "verify")?;
        let versions = md.versions(key.id)?;
        drop(md);
        match version {
            Some(n) => {
                let v = versions
                    .into_iter()
                    .find(|v| v.version == n)
                    .ok_or_else(|| Error::NotFound(format!("key '{name}' has no version {n}")))?;
                if !may_verify_or_decrypt(v.state) {
                    return Err(Error::KeyState(format!(
                        "key '{name}' version {n} is {}",
                        v.state
                    )));
                }
                Ok(vec![(key, v)])
            }
            None => {
                let vs: Vec<_> = versions
                    .into_iter()
                    .filter(|v| may_verify_or_decrypt(v.state))
                    .map(|v| (key.clone(), v))
                    .collect();
                if vs.is_empty() {
                    return Err(Error::KeyState(format!(
                        "key '{name}' has no version allowed to verify"
                    )));
                }
                Ok(vs)
            }
        }
    }

    /// Encrypts `plaintext` with the active version of `name` (AES-256-GCM,
    /// random nonce) and returns a versioned envelope (see [`crate::envelope`]).
    /// The envelope header is authenticated together with `aad`.
    pub fn encrypt(&self, name: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        check_len("plaintext", plaintext, limits::MAX_DATA_LEN)?;
        check_len("aad", aad, limits::MAX_AAD_LEN)?;
        let r = self.resolve_active(name, Some((Usages::ENCRYPT, "encrypt")))?;
        let header = envelope::header(r.key.algorithm, r.version);
        let sealed =
            self.backend
                .encrypt(&r.handle, &envelope::bound_aad(&header, aad), plaintext)?;
        Ok(envelope::seal(&header, &sealed.nonce, &sealed.ciphertext))
    }

    /// Decrypts an envelope made by [`Keystore::encrypt`] with the key version
    /// its header names. Any modification of envelope or `aad` is
    /// [`Error::Integrity`] and releases no plaintext.
    pub fn decrypt(&self, name: &str, envelope: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        check_len(
            "ciphertext",
            envelope,
            limits::MAX_DATA_LEN + envelope::MIN_LEN,
        )?;
        check_len("aad", aad, limits::MAX_AAD_LEN)?;
        check_name(name)?;
        let (key, versions) = {
            let md = self.md();
            let key = live_key(&md, name)?;
            let versions = md.versions(key.id)?;
            (key, versions)
        };
        check_usage(&key, Usages::DECRYPT, "decrypt")?;
        let parsed = envelope::open(envelope)?;
        if parsed.algorithm != key.algorithm.code() {
            return Err(Error::Integrity(format!(
                "ciphertext envelope is not an envelope of {} key '{name}' (corrupted?)",
                key.algorithm
            )));
        }
        let v = versions
            .into_iter()
            .find(|v| v.version == parsed.version)
            .ok_or_else(|| {
                Error::Integrity(format!(
                    "ciphertext names version {} which key '{name}' does not have (corrupted?)",
                    parsed.version
                ))
            })?;
        if !may_verify_or_decrypt(v.state) {
            return Err(Error::KeyState(format!(
                "key '{name}' version {} is {}",
                v.version, v.state
            )));
        }
        let r = resolved(key, v)?;
        self.backend.decrypt(
            &r.handle,
            &envelope::bound_aad(&parsed.header, aad),
            &parsed.nonce,
            parsed.ciphertext,
        )
    }

    /// HMAC-SHA256 of `data` with the active version of `name`.
    pub fn mac(&self, name: &str, data: &[u8]) -> Result<[u8; 32]> {
        check_len("data", data, limits::MAX_DATA_LEN)?;
        let r = self.resolve_active(name, Some((Usages::MAC, "mac")))?;
        let tag = self.backend.hmac_sha256(&r.handle, data)?;
        Ok(*tag)
    }

    /// Checks an HMAC-SHA256 tag in constant time; a mismatch is
    /// [`Error::Integrity`].
    pub fn verify_mac(&self, name: &str, data: &[u8], tag: &[u8]) -> Result<()> {
        use subtle_eq::ct_eq;
        let expected = self.mac(name, data)?;
        if ct_eq(&expected, tag) {
            Ok(())
        } else {
            Err(Error::Integrity(format!(
                "MAC does not verify under key '{name}'"
            )))
        }
    }

    /// `HKDF-SHA256(salt = K, IKM = salt, info, len)` (RFC 5869) where K is the
    /// HMAC key `name`. The extract step runs inside the backend; the expand
    /// step runs here in zeroizing memory. `len` must be 1..=8160.
    pub fn derive_hkdf_sha256(
        &self,
        name: &str,
        salt: &[u8],
        info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        if len == 0 || len > limits::MAX_DERIVE_LEN {
            return Err(Error::InvalidInput(format!(
                "HKDF-SHA256 output length must be 1..={}, got {len}",
                limits::MAX_DERIVE_LEN
            )));
        }
        check_len("salt", salt, limits::MAX_AAD_LEN)?;
        check_len("info", info, limits::MAX_AAD_LEN)?;
        let r = self.resolve_active(name, Some((Usages::DERIVE, "derive")))?;
        let prk = self.backend.hmac_sha256(&r.handle, salt)?;
        hkdf_expand(&prk, info, len)
    }

    /// Destroys every version of `name`: material first in the backend, then
    /// the metadata becomes a tombstone (public data kept, name reserved).
    /// Afterwards every use of `name` is [`Error::NotFound`].
    pub fn destroy(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let (key, versions) = {
            let md = self.md();
            let key = live_key(&md, name)?;
            let versions = md.versions(key.id)?;
            (key, versions)
        };
        for v in &versions {
            if let Some(h) = &v.handle {
                match self.backend.destroy(h) {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let now = self.now();
        self.md().mark_destroyed(key.id, &now)
    }
}

/// HKDF-Expand(PRK, info, len) into zeroizing memory.
fn hkdf_expand(prk: &[u8; 32], info: &[u8], len: usize) -> Result<SecretBytes> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::from_prk(prk)
        .map_err(|_| Error::backend_msg("keystore", "HKDF rejected a 32-byte PRK"))?;
    let mut out = SecretBytes::zeroed(len);
    hk.expand(info, out.expose_mut())
        .map_err(|_| Error::InvalidInput(format!("HKDF-SHA256 cannot produce {len} bytes")))?;
    Ok(out)
}

mod subtle_eq {
    /// Constant-time equality for equal-length inputs; unequal lengths return
    /// false at once (lengths are not secret).
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut diff = 0u8;
        for (x, y) in a.iter().zip(b) {
            diff |= x ^ y;
        }
        std::hint::black_box(diff) == 0
    }
}

/// Active versions and deactivated versions in their grace period verify and
/// decrypt; no other state does.
fn may_verify_or_decrypt(state: KeyState) -> bool {
    matches!(state, KeyState::Active | KeyState::Deactivated)
}

fn resolved(key: KeyRow, v: VersionRow) -> Result<Resolved> {
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

fn live_key(md: &Metadata, name: &str) -> Result<KeyRow> {
    match md.key(name)? {
        Some(k) if k.destroyed_at.is_none() => Ok(k),
        Some(_) => Err(Error::NotFound(format!("key '{name}' was destroyed"))),
        None => Err(Error::NotFound(format!("no key named '{name}'"))),
    }
}

fn public_of(key: &KeyRow, spki: Option<&[u8]>) -> Result<PublicKey> {
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

fn to_info(key: KeyRow, versions: Vec<VersionRow>) -> Result<KeyInfo> {
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
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(KeyInfo {
        name: key.name,
        algorithm: key.algorithm,
        usages: key.usages,
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

fn check_usages(spec: KeySpec) -> Result<()> {
    let permitted = spec.algorithm.permitted_usages();
    if spec.usages.is_empty() || !permitted.contains(spec.usages) {
        return Err(Error::Policy(format!(
            "{} keys permit usages {{{permitted}}}; requested {{{}}}",
            spec.algorithm, spec.usages
        )));
    }
    Ok(())
}

fn check_usage(key: &KeyRow, usage: Usages, what: &str) -> Result<()> {
    if key.usages.contains(usage) {
        Ok(())
    } else {
        Err(Error::Policy(format!(
            "key '{}' ({}, usages {{{}}}) may not {what}",
            key.name, key.algorithm, key.usages
        )))
    }
}

fn check_len(what: &str, data: &[u8], max: usize) -> Result<()> {
    if data.len() > max {
        return Err(Error::InvalidInput(format!(
            "{what} is {} bytes; the limit is {max}",
            data.len()
        )));
    }
    Ok(())
}
