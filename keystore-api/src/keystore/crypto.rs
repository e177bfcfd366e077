//! Cryptographic use: sign, verify, AEAD, MAC, derive. Governed by usage
//! policy and lifecycle state; none of these take an actor or touch the audit
//! trail (they are the hot path).

use super::{
    check_len, check_name, limits, live_key, may_verify_or_decrypt, public_of, resolved, Keystore,
};
use crate::algorithm::Usages;
use crate::backend::Backend;
use crate::envelope;
use crate::error::{Component, Error, Result};
use crate::metadata::{self as md, KeyRow, VersionRow};
use crate::secret::{ct_eq, SecretBytes};
use crate::signature::{self, Signature, SignatureFormat};
use crate::Algorithm;
use crate::BackendKey;

impl<B: Backend> Keystore<B> {
    /// Signs `message` with the active version of `name`; the signature
    /// carries the version that made it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name or a message over [`limits::MAX_DATA_LEN`];
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when it has no active version (suspended, revoked, rotated away);
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when the key may not sign;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the backend's key object is damaged or its signature fails a
    /// host-side check;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the backend or the database fails, or the backend returns a
    /// malformed signature.
    pub fn sign(&self, name: &str, message: &[u8], format: SignatureFormat) -> Result<Signature> {
        check_len("message", message, limits::MAX_DATA_LEN)?;
        let r = self.resolve_active(name, Some((Usages::SIGN, "sign")))?;
        let raw = self
            .backend
            .sign(&r.backend_key, message)
            .map_err(|e| e.with_key(name).with_version(r.version))?;
        let bytes = signature::encode(r.key.algorithm, raw, format)?;
        Ok(Signature {
            version: r.version,
            format,
            bytes,
        })
    }

    /// Verifies `signature` over `message` on the host with the public key of
    /// `version`, or of every version allowed to verify when `version` is
    /// `None` (the active one, and deactivated ones within their grace
    /// period). Returns the version that verified; a signature that verifies
    /// under none is [`ErrorKind::Integrity`](crate::ErrorKind::Integrity).
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the signature verifies under no candidate version, or the
    /// metadata holds a malformed public key;
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name, a message over [`limits::MAX_DATA_LEN`] or
    /// a signature not 1 to [`limits::MAX_SIGNATURE_LEN`] bytes long;
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key, or a `version` it does not have;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when the key may not verify;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when `version` (or, with `None`, every version) is in a state that
    /// may not verify or past its grace end;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn verify(
        &self,
        name: &str,
        message: &[u8],
        signature: &[u8],
        version: Option<u32>,
    ) -> Result<u32> {
        check_len("message", message, limits::MAX_DATA_LEN)?;
        if signature.is_empty() || signature.len() > limits::MAX_SIGNATURE_LEN {
            return Err(Error::invalid_input(format!(
                "a signature is 1 to {} bytes, got {}",
                limits::MAX_SIGNATURE_LEN,
                signature.len()
            )));
        }
        let (key, candidates) = self.verifying_versions(name, version)?;
        for v in &candidates {
            let pk = public_of(&key, v.public_key.as_deref())?;
            if pk.verify(message, signature).is_ok() {
                return Ok(v.version);
            }
        }
        Err(Error::integrity(format!(
            "signature does not verify under key '{name}'"
        )))
    }

    fn verifying_versions(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(KeyRow, Vec<VersionRow>)> {
        check_name(name)?;
        let md = self.md();
        let key = live_key(md.conn(), name)?;
        super::check_usage(&key, Usages::VERIFY, "verify")?;
        let versions = md::versions(md.conn(), key.id)?;
        drop(md);
        let now = self.now_time();
        match version {
            Some(n) => {
                let v = versions
                    .into_iter()
                    .find(|v| v.version == n)
                    .ok_or_else(|| Error::not_found(format!("key '{name}' has no version {n}")))?;
                if !may_verify_or_decrypt(&v, now) {
                    return Err(version_state_error(name, &v));
                }
                Ok((key, vec![v]))
            }
            None => {
                let vs: Vec<_> = versions
                    .into_iter()
                    .filter(|v| may_verify_or_decrypt(v, now))
                    .collect();
                if vs.is_empty() {
                    return Err(Error::key_state(format!(
                        "key '{name}' has no version allowed to verify"
                    )));
                }
                Ok((key, vs))
            }
        }
    }

    /// Encrypts `plaintext` with the active version of `name` (AES-256-GCM,
    /// random nonce) and returns a versioned envelope (see [`crate::envelope`]).
    /// The envelope header is authenticated together with `aad`.
    ///
    /// Each version makes at most its key's encryption limit
    /// ([`KeySpec::with_encryption_limit`](crate::KeySpec::with_encryption_limit), 2^32 by default:
    /// SP 800-38D with random nonces), counted across every process on the store; an
    /// encryption is counted before the backend is called, whether or not the call succeeds.
    /// Decryption is never limited.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name, a plaintext over [`limits::MAX_DATA_LEN`]
    /// or an `aad` over [`limits::MAX_AAD_LEN`];
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when it has no active version (suspended, revoked, rotated away),
    /// or its active version has used its encryption limit (the error names key and version: rotate);
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when the key may not encrypt;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn encrypt(&self, name: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        check_len("plaintext", plaintext, limits::MAX_DATA_LEN)?;
        check_len("aad", aad, limits::MAX_AAD_LEN)?;
        let r = self.resolve_active(name, Some((Usages::ENCRYPT, "encrypt")))?;
        self.count_encryption(name, &r)?;
        let header = envelope::header(r.key.algorithm, r.version);
        let sealed = self
            .backend
            .encrypt(
                &r.backend_key,
                &envelope::bound_aad(&header, aad),
                plaintext,
            )
            .map_err(|e| e.with_key(name).with_version(r.version))?;
        Ok(envelope::seal(&header, &sealed.nonce, &sealed.ciphertext))
    }

    /// Decrypts an envelope made by [`Keystore::encrypt`] with the key version
    /// its header names (active, or deactivated within its grace period). Any
    /// modification of envelope or `aad` is [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) and releases
    /// no plaintext.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) for a modified envelope or `aad`, an envelope of another algorithm,
    /// or one naming a version the key does not have (no plaintext is released);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name, an oversized envelope or `aad`, or an
    /// envelope too short to be one;
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when the key may not decrypt;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when the envelope's version is in a state that may not decrypt, past
    /// its grace end or without material;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
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
            let key = live_key(md.conn(), name)?;
            let versions = md::versions(md.conn(), key.id)?;
            (key, versions)
        };
        super::check_usage(&key, Usages::DECRYPT, "decrypt")?;
        let parsed = envelope::open(envelope)?;
        if parsed.algorithm != key.algorithm.code() {
            return Err(Error::integrity(format!(
                "ciphertext envelope is not an envelope of {} key '{name}' (corrupted?)",
                key.algorithm
            )));
        }
        let v = versions
            .into_iter()
            .find(|v| v.version == parsed.version)
            .ok_or_else(|| {
                Error::integrity(format!(
                    "ciphertext names version {} which key '{name}' does not have (corrupted?)",
                    parsed.version
                ))
            })?;
        if !may_verify_or_decrypt(&v, self.now_time()) {
            return Err(version_state_error(name, &v));
        }
        let r = resolved(key, v)?;
        self.backend
            .decrypt(
                &r.backend_key,
                &envelope::bound_aad(&parsed.header, aad),
                &parsed.nonce,
                parsed.ciphertext,
            )
            .map_err(|e| e.with_key(name).with_version(r.version))
    }

    /// HMAC-SHA256 of `data` with the active version of `name`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name or data over [`limits::MAX_DATA_LEN`];
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when it has no active version (suspended, revoked, rotated away);
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when the key may not MAC (a `derive` key);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn mac(&self, name: &str, data: &[u8]) -> Result<[u8; 32]> {
        check_len("data", data, limits::MAX_DATA_LEN)?;
        let r = self.resolve_active(name, Some((Usages::MAC, "mac")))?;
        let tag = self
            .backend
            .hmac_sha256(&r.backend_key, data)
            .map_err(|e| e.with_key(name).with_version(r.version))?;
        Ok(*tag)
    }

    /// Checks an HMAC-SHA256 tag in constant time against the active version
    /// and the deactivated versions still within their grace period (a tag
    /// made just before a rotation still verifies, as a signature does); a
    /// tag that matches none is [`ErrorKind::Integrity`](crate::ErrorKind::Integrity).
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the tag matches no version;
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name or data over [`limits::MAX_DATA_LEN`];
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when it has no active version (suspended, revoked, rotated away) (a
    /// tag is checked only while the key has an active version);
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when the key may not MAC;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn verify_mac(&self, name: &str, data: &[u8], tag: &[u8]) -> Result<()> {
        check_len("data", data, limits::MAX_DATA_LEN)?;
        let active = self.resolve_active(name, Some((Usages::MAC, "verify a MAC")))?;
        let expected = self
            .backend
            .hmac_sha256(&active.backend_key, data)
            .map_err(|e| e.with_key(name).with_version(active.version))?;
        if ct_eq(&*expected, tag) {
            return Ok(());
        }
        let (_, versions) = self.mac_versions(name)?;
        for v in versions {
            if v.version == active.version {
                continue;
            }
            let Some(handle) = v.handle.clone() else {
                continue;
            };
            let expected = self
                .backend
                .hmac_sha256(&BackendKey::new(handle, Algorithm::HmacSha256), data)
                .map_err(|e| e.with_key(name).with_version(v.version))?;
            if ct_eq(&*expected, tag) {
                return Ok(());
            }
        }
        Err(Error::integrity(format!(
            "MAC does not verify under key '{name}'"
        )))
    }

    /// The versions of MAC key `name` allowed to verify now.
    fn mac_versions(&self, name: &str) -> Result<(KeyRow, Vec<VersionRow>)> {
        let md = self.md();
        let key = live_key(md.conn(), name)?;
        super::check_usage(&key, Usages::MAC, "verify a MAC")?;
        let versions = md::versions(md.conn(), key.id)?;
        drop(md);
        let now = self.now_time();
        let vs = versions
            .into_iter()
            .filter(|v| may_verify_or_decrypt(v, now))
            .collect();
        Ok((key, vs))
    }

    /// `HKDF-SHA256(salt = K, IKM = salt, info, len)` (RFC 5869) where K is the
    /// HMAC key `name`. The extract step runs inside the backend; the expand
    /// step runs here in zeroizing memory. `len` must be 1..=8160.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name, `len` outside
    /// 1..=[`limits::MAX_DERIVE_LEN`], or a `salt` or `info` over [`limits::MAX_AAD_LEN`];
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when it has no active version (suspended, revoked, rotated away);
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when the key may not derive (a `mac` key);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn derive_hkdf_sha256(
        &self,
        name: &str,
        salt: &[u8],
        info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        if len == 0 || len > limits::MAX_DERIVE_LEN {
            return Err(Error::invalid_input(format!(
                "HKDF-SHA256 output length must be 1..={}, got {len}",
                limits::MAX_DERIVE_LEN
            )));
        }
        check_len("salt", salt, limits::MAX_AAD_LEN)?;
        check_len("info", info, limits::MAX_AAD_LEN)?;
        let r = self.resolve_active(name, Some((Usages::DERIVE, "derive")))?;
        let prk = self
            .backend
            .hkdf_extract(&r.backend_key, salt)
            .map_err(|e| e.with_key(name).with_version(r.version))?;
        hkdf_expand(&prk, info, len)
    }
}

fn version_state_error(name: &str, v: &VersionRow) -> Error {
    let e = match v.grace_end.as_deref() {
        Some(end) if v.state == crate::metadata::KeyState::Deactivated => {
            Error::key_state(format!(
                "key '{name}' version {} was deactivated and its grace period ended at {end}",
                v.version
            ))
        }
        _ => Error::key_state(format!("key '{name}' version {} is {}", v.version, v.state)),
    };
    e.with_key(name).with_version(v.version)
}

/// HKDF-Expand(PRK, info, len) into zeroizing memory.
fn hkdf_expand(prk: &[u8; 32], info: &[u8], len: usize) -> Result<SecretBytes> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::from_prk(prk)
        .map_err(|_| Error::backend_msg(Component::Keystore, "HKDF rejected a 32-byte PRK"))?;
    let mut out = SecretBytes::zeroed(len);
    hk.expand(info, out.expose_mut())
        .map_err(|_| Error::invalid_input(format!("HKDF-SHA256 cannot produce {len} bytes")))?;
    Ok(out)
}
