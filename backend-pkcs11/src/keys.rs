//! The key operations behind [`crate::Pkcs11Backend`]'s `Backend` methods.

use crate::error::{ck, map, rv_of, COMPONENT};
use crate::handle::KeyId;
use crate::objects::{self, Kind};
use crate::pubkey::{self, Verifier};
use crate::retry::{self, Backoff};
use crate::{Cached, Pkcs11Backend, SignatureCheck};
use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use keystore_api::{
    AeadSealed, Algorithm, Error, GeneratedKey, KeyClass, KeyHandle, PublicKey, Result, SecretBytes,
};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use zeroize::{Zeroize, Zeroizing};

/// GCM tag length in bytes.
const TAG_LEN: usize = 16;

impl Pkcs11Backend {
    // ----- lookups -------------------------------------------------------

    /// The key's primary object for one operation with `alg`.
    ///
    /// An object is used only while its `CKA_ID` is the key's (object
    /// handles can be reused) and its protection attributes are as this
    /// crate set them ([`objects::check_protection`], one
    /// `C_GetAttributeValue`). That check is not repeated before every use:
    /// a cached handle that passed it is trusted for
    /// [`crate::PROTECTION_RECHECK_INTERVAL`] (the same key with another
    /// algorithm is checked at once), and [`Self::with_key`] checks it again,
    /// or forgets it, right after any failed operation. Why a bounded trust
    /// is enough: on a conforming token `CKA_SENSITIVE` can only be set and
    /// `CKA_EXTRACTABLE` only cleared, and our objects are
    /// `CKA_MODIFIABLE=false` and `CKA_COPYABLE=false`, so nobody holding
    /// the PIN can weaken a key object through the API; what the check
    /// still catches is a token store damaged or edited behind the token's
    /// back, and that is now noticed within the interval (or at the next
    /// open) instead of on the very next use. An object destroyed meanwhile
    /// (by another process) makes the operation fail with
    /// `CKR_OBJECT_HANDLE_INVALID`/`CKR_KEY_HANDLE_INVALID`, after which the
    /// key is looked up afresh. The remaining exposure is a token that hands
    /// a destroyed object's handle to another object within the interval
    /// (SoftHSM2 never reuses handles), which the re-check then notices.
    ///
    /// From the cache when possible, else by search. Absent is `NotFound`
    /// when nothing of the key is left and `Integrity` when its companion
    /// still is; present but with damaged protection is `Integrity`.
    fn primary(&self, s: &Session, id: &KeyId, alg: Algorithm, hints: &Hints) -> Result<Primary> {
        let kind = Kind::of(alg);
        let cached = self.handles().get(id).copied();
        if let Some(c) = cached {
            if c.alg == alg && c.checked_at.elapsed() < self.recheck_interval {
                return Ok(Primary {
                    handle: c.handle,
                    checked_now: false,
                    unverified: c.unverified,
                });
            }
            match objects::check_protection(s, c.handle, id, &[objects::allowed_mechanism(alg)]) {
                Ok(objects::Check::Intact) => return Ok(self.checked(id, c.handle, alg)),
                Ok(objects::Check::Damaged(why)) => {
                    self.forget(id);
                    return Err(damaged(id, kind, &why));
                }
                // Destroyed, replaced or reused: search again.
                Ok(objects::Check::NotThisKey) | Err(_) => self.forget(id),
            }
        }
        // Several matches are copies of the same key (only a holder of the
        // token's user PIN can create private objects, and only this crate
        // creates ids with this prefix); any intact one is the key.
        let mut damage = None;
        for h in objects::find(s, &objects::primary_query(kind, id))? {
            match objects::check_protection(s, h, id, &[objects::allowed_mechanism(alg)])? {
                objects::Check::Intact => return Ok(self.checked(id, h, alg)),
                objects::Check::Damaged(why) => damage = Some(why),
                objects::Check::NotThisKey => {}
            }
        }
        Err(match damage {
            Some(why) => damaged(id, kind, &why),
            None => self.absent(s, id, kind, hints)?,
        })
    }

    /// Caches `handle` as the key's primary object, found intact for `alg`
    /// just now; the next signature made with it is to be verified.
    fn checked(&self, id: &KeyId, handle: ObjectHandle, alg: Algorithm) -> Primary {
        self.remember(id, handle, alg);
        Primary {
            handle,
            checked_now: true,
            unverified: true,
        }
    }

    /// Caches `handle` as the key's primary object for `alg`, checked now.
    fn remember(&self, id: &KeyId, handle: ObjectHandle, alg: Algorithm) {
        let entry = Cached {
            handle,
            alg,
            checked_at: Instant::now(),
            unverified: true,
        };
        self.handles().insert(*id, entry);
    }

    /// Notes that a signature made with `handle` verified.
    fn mark_verified(&self, id: &KeyId, handle: ObjectHandle) {
        if let Some(c) = self.handles().get_mut(id) {
            if c.handle == handle {
                c.unverified = false;
            }
        }
    }

    /// Runs one token operation (`op`, whose PKCS#11 errors `fail` maps)
    /// with the key's primary object on a pooled session.
    ///
    /// When it fails, the handle is not trusted further: an invalid handle
    /// (the object was destroyed, e.g. by another process, or SoftHSM was
    /// rereading it) is forgotten and the whole operation runs again with a
    /// fresh lookup; a cached handle that was not checked during this call
    /// is checked now (damaged: `Integrity`; not the key's any more:
    /// forgotten, and the operation retried). Transient errors are retried
    /// for up to [`retry::OPERATION_WAIT`] (see [`Self::retried`]), so the
    /// caller sees the operation's result, the honest
    /// `NotFound`/`Integrity`, or a `Backend` error that lasted.
    fn with_key<T>(
        &self,
        id: &KeyId,
        alg: Algorithm,
        op: impl Fn(&Session, ObjectHandle) -> cryptoki::error::Result<T>,
        fail: impl Fn(CkError) -> Error,
    ) -> Result<(T, Primary)> {
        self.retried(|hints| {
            // A failed session is closed by the pool; a retry takes another.
            self.pool.run(|s| {
                let p = self.primary(s, id, alg, hints)?;
                match op(s, p.handle) {
                    Ok(v) => Ok((v, p)),
                    Err(e) => Err(self.after_failure(s, id, alg, p, e, &fail, hints)),
                }
            })
        })
    }

    /// Runs `f` until it succeeds or fails for good: a transient error
    /// ([`retry::is_transient`]) is retried for up to
    /// [`retry::OPERATION_WAIT`]; a state `f` flags as settling (a key
    /// object missing while the rest of the key remains, as during another
    /// process's destroy) for up to [`retry::SETTLE_WAIT`]; a stale cached
    /// handle once.
    pub(crate) fn retried<T>(&self, mut f: impl FnMut(&Hints) -> Result<T>) -> Result<T> {
        let mut backoff = Backoff::new(retry::OPERATION_WAIT);
        let mut stale_retried = false;
        loop {
            let hints = Hints::default();
            let e = match f(&hints) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let again = if hints.stale.get() && !stale_retried {
                stale_retried = true;
                true
            } else {
                retry::is_transient(&e)
                    || (hints.settling.get() && backoff.within(retry::SETTLE_WAIT))
            };
            if !again {
                return Err(e);
            }
            if !backoff.wait() {
                return Err(backoff.annotate(e));
            }
        }
    }

    /// What to make of a failed operation with `p` (see [`Self::with_key`]).
    #[allow(clippy::too_many_arguments)]
    fn after_failure(
        &self,
        s: &Session,
        id: &KeyId,
        alg: Algorithm,
        p: Primary,
        e: CkError,
        fail: &dyn Fn(CkError) -> Error,
        hints: &Hints,
    ) -> Error {
        if matches!(
            rv_of(&e),
            Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
        ) {
            // Transient (see `retry::transient_rv`): looked up afresh.
            self.forget(id);
            return fail(e);
        }
        if p.checked_now {
            return fail(e);
        }
        match objects::check_protection(s, p.handle, id, &[objects::allowed_mechanism(alg)]) {
            Ok(objects::Check::Intact) => {
                self.remember(id, p.handle, alg);
                fail(e)
            }
            Ok(objects::Check::Damaged(why)) => {
                self.forget(id);
                damaged(id, Kind::of(alg), &why)
            }
            Ok(objects::Check::NotThisKey) | Err(_) => {
                self.forget(id);
                hints.stale.set(true);
                fail(e)
            }
        }
    }

    /// Why the key's primary object was not found, from searches that
    /// succeeded (a failed search is returned as it is, never taken for
    /// "nothing left"): nothing of the key left is `NotFound`; other objects
    /// of the key left is `Integrity`, flagged as settling (another
    /// process's destroy removes the key object first).
    fn absent(&self, s: &Session, id: &KeyId, kind: Kind, hints: &Hints) -> Result<Error> {
        let left = objects::find(s, &objects::id_query(id))?.len()
            + objects::find(s, &objects::marker_query(id))?.len();
        Ok(if left == 0 {
            Error::NotFound(format!("key {} does not exist on the token", id.short()))
        } else {
            hints.settling.set(true);
            Error::Integrity(format!(
                "key {}: its {} object is missing, damaged, of another type or lacks its \
                 protection attributes, while {left} other object(s) of the key remain on the token",
                id.short(),
                kind.name()
            ))
        })
    }

    /// The public key of an asymmetric key, parsed for verification, from
    /// the cache or else the token's public key object.
    fn verifier(&self, id: &KeyId, alg: Algorithm) -> Result<Arc<Verifier>> {
        if let Some(v) = self.public_keys().get(id) {
            if v.public().algorithm() == alg {
                return Ok(Arc::clone(v));
            }
        }
        self.retried(|hints| {
            self.pool
                .run(|s| self.verifier_from_token(s, id, alg, hints))
        })
    }

    /// [`Self::verifier`] read from the token's public key object.
    fn verifier_from_token(
        &self,
        s: &Session,
        id: &KeyId,
        alg: Algorithm,
        hints: &Hints,
    ) -> Result<Arc<Verifier>> {
        let kind = Kind::of(alg);
        let Some(obj) = objects::find(s, &objects::public_query(kind, id))?
            .first()
            .copied()
        else {
            let private = objects::find(s, &objects::id_query(id))?;
            return Err(if private.is_empty() {
                Error::NotFound(format!("key {} does not exist on the token", id.short()))
            } else {
                hints.settling.set(true);
                Error::Integrity(format!(
                    "key {}: its public key object is missing or of another type",
                    id.short()
                ))
            });
        };
        let v = Arc::new(Verifier::new(read_public(s, obj, alg)?)?);
        self.public_keys().insert(*id, Arc::clone(&v));
        Ok(v)
    }

    // ----- generate and import ------------------------------------------

    /// Generates a key under a fresh id. An attempt that fails transiently
    /// is retried (for up to [`retry::OPERATION_WAIT`]) under a new id, and
    /// only once a fresh search confirms that nothing of the failed attempt
    /// is left on the token ([`Self::purge`]): a retry never leaves a second
    /// key behind, and two objects never share an id. A failure that is not
    /// transient, or whose leftovers cannot be confirmed gone, is returned.
    pub(crate) fn generate_key(&self, alg: Algorithm, label: &str) -> Result<GeneratedKey> {
        self.creating(|s, id| self.generate_once(s, id, alg, label))
    }

    /// [`Self::generate_key`]'s attempt with `id`.
    fn generate_once(
        &self,
        s: &Session,
        id: &KeyId,
        alg: Algorithm,
        label: &str,
    ) -> Result<GeneratedKey> {
        let kind = Kind::of(alg);
        if kind.asymmetric() {
            let (pub_t, priv_t) = objects::keypair_templates(alg, id, label);
            let mech = match kind {
                Kind::Ec => Mechanism::EccKeyPairGen,
                _ => Mechanism::RsaPkcsKeyPairGen,
            };
            let (pub_h, priv_h) = s
                .generate_key_pair(&mech, &pub_t, &priv_t)
                .map_err(ck(format!("generate a {alg} key pair")))?;
            let pk = read_public(s, pub_h, alg)?;
            self.remember(id, priv_h, alg);
            // Parsed lazily instead if aws-lc-rs rejects it: signing
            // then reports the public key object as damaged.
            if let Ok(v) = Verifier::new(pk.clone()) {
                self.public_keys().insert(*id, Arc::new(v));
            }
            Ok(GeneratedKey {
                handle: id.handle(),
                public_key: Some(pk),
            })
        } else {
            let mech = match kind {
                Kind::Aes => Mechanism::AesKeyGen,
                _ => Mechanism::GenericSecretKeyGen,
            };
            let key = s
                .generate_key(&mech, &objects::secret_template(alg, id, label))
                .map_err(ck(format!("generate a {alg} key")))?;
            self.add_marker(s, id, key, alg, label)?;
            Ok(GeneratedKey {
                handle: id.handle(),
                public_key: None,
            })
        }
    }

    /// Imports a secret key; retried like [`Self::generate_key`].
    pub(crate) fn import_key(
        &self,
        alg: Algorithm,
        secret: &SecretBytes,
        label: &str,
    ) -> Result<KeyHandle> {
        self.creating(|s, id| {
            let mut template = objects::import_template(alg, id, label, secret.expose());
            let created = s.create_object(&template);
            objects::zeroize_values(&mut template);
            let key = created.map_err(ck(format!("import a {alg} key")))?;
            self.add_marker(s, id, key, alg, label)?;
            Ok(id.handle())
        })
    }

    /// Runs `attempt` with a fresh id until it succeeds. After a failure,
    /// whatever it created is destroyed and confirmed gone; only then, and
    /// only if the failure was transient, is another id tried.
    fn creating<T>(&self, attempt: impl Fn(&Session, &KeyId) -> Result<T>) -> Result<T> {
        let mut backoff = Backoff::new(retry::OPERATION_WAIT);
        loop {
            let id = self.prefix.new_id()?;
            let e = match self.pool.run(|s| attempt(s, &id)) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            self.forget(&id);
            let cleaned = self.purge(&id);
            self.forget(&id);
            if !retry::is_transient(&e) {
                return Err(e);
            }
            if let Err(why) = cleaned {
                return Err(Error::backend_msg(
                    COMPONENT,
                    format!(
                        "{e}; what that attempt may have left under key id {} could not be \
                         confirmed removed ({why}), so it was not retried",
                        id.short()
                    ),
                ));
            }
            if !backoff.wait() {
                return Err(backoff.annotate(e));
            }
        }
    }

    /// Creates the marker of a new secret key (the caller removes the key
    /// if this fails: see [`Self::creating`]).
    fn add_marker(
        &self,
        s: &Session,
        id: &KeyId,
        key: ObjectHandle,
        alg: Algorithm,
        label: &str,
    ) -> Result<()> {
        s.create_object(&objects::marker_template(id, label))
            .map_err(ck("create the key's marker object"))?;
        self.remember(id, key, alg);
        Ok(())
    }

    // ----- use -----------------------------------------------------------

    pub(crate) fn public_key_of(&self, handle: &KeyHandle, alg: Algorithm) -> Result<PublicKey> {
        if alg.class() != KeyClass::Asymmetric {
            return Err(Error::Policy(format!("{alg} keys have no public key")));
        }
        let id = self.prefix.id_of(handle)?;
        Ok(self.verifier(&id, alg)?.public().clone())
    }

    /// Signs on the token; verifies the signature on the host against the
    /// key's public key object as [`SignatureCheck`] says before returning
    /// it (a signature that does not verify is `Integrity`, and the key's
    /// cached handle is forgotten).
    pub(crate) fn sign_message(
        &self,
        handle: &KeyHandle,
        alg: Algorithm,
        message: &[u8],
    ) -> Result<Vec<u8>> {
        if alg.class() != KeyClass::Asymmetric {
            return Err(Error::Policy(format!(
                "sign is not an operation of {alg} keys"
            )));
        }
        let id = self.prefix.id_of(handle)?;
        let kind = Kind::of(alg);
        let digest = (kind == Kind::Ec).then(|| Sha256::digest(message));
        let pss = PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: Ulong::from(32u64),
        };
        let (sig, used) = self.with_key(
            &id,
            alg,
            |s, key| match &digest {
                Some(digest) => s.sign(&Mechanism::Ecdsa, key, digest),
                None if alg.is_rsa_pss() => s.sign(&Mechanism::Sha256RsaPkcsPss(pss), key, message),
                None => s.sign(&Mechanism::Sha256RsaPkcs, key, message),
            },
            |e| map(&format!("sign with {alg} key {}", id.short()), e),
        )?;
        if kind == Kind::Ec && sig.len() != 64 {
            self.forget(&id);
            return Err(Error::backend_msg(
                COMPONENT,
                format!(
                    "the token returned a {}-byte ECDSA P-256 signature",
                    sig.len()
                ),
            ));
        }
        let verify = match self.signature_check {
            SignatureCheck::Always => true,
            SignatureCheck::FirstUse => used.unverified,
        };
        if verify {
            let verifier = self.verifier(&id, alg)?;
            self.verified.fetch_add(1, Ordering::Relaxed);
            if !verifier.verifies(message, &sig) {
                self.forget(&id);
                return Err(Error::Integrity(format!(
                    "the signature the token made with key {} does not verify under the key's \
                     public key object: the key pair on the token is damaged or mismatched",
                    id.short()
                )));
            }
            self.mark_verified(&id, used.handle);
        }
        Ok(sig)
    }

    pub(crate) fn hmac(&self, handle: &KeyHandle, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let id = self.prefix.id_of(handle)?;
        let (mut tag, _) = self.with_key(
            &id,
            Algorithm::HmacSha256,
            |s, key| s.sign(&Mechanism::Sha256Hmac, key, data),
            |e| map(&format!("HMAC-SHA256 with key {}", id.short()), e),
        )?;
        let mut out = Zeroizing::new([0u8; 32]);
        let ok = tag.len() == 32;
        if ok {
            out.copy_from_slice(&tag);
        }
        tag.zeroize();
        if !ok {
            return Err(Error::backend_msg(
                COMPONENT,
                "the token returned an HMAC-SHA256 tag of the wrong length",
            ));
        }
        Ok(out)
    }

    pub(crate) fn aead_encrypt(
        &self,
        handle: &KeyHandle,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<AeadSealed> {
        if aad.is_empty() {
            // SoftHSM 2.6.1 crashes on AES-GCM with empty AAD.
            return Err(Error::InvalidInput(
                "the PKCS#11 backend needs a non-empty AAD for AES-GCM \
                 (the keystore's AAD always starts with the envelope header)"
                    .into(),
            ));
        }
        let id = self.prefix.id_of(handle)?;
        let mut nonce = [0u8; 12];
        crate::random(&mut nonce)?;
        let (ciphertext, _) = self.with_key(
            &id,
            Algorithm::Aes256Gcm,
            |s, key| {
                let mut iv = nonce;
                let params = gcm_params(&mut iv, aad)?;
                s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
            },
            |e| map(&format!("AES-GCM encrypt with key {}", id.short()), e),
        )?;
        if ciphertext.len() != plaintext.len() + TAG_LEN {
            return Err(Error::backend_msg(
                COMPONENT,
                "the token returned an AES-GCM ciphertext of the wrong length",
            ));
        }
        Ok(AeadSealed { nonce, ciphertext })
    }

    pub(crate) fn aead_decrypt(
        &self,
        handle: &KeyHandle,
        aad: &[u8],
        nonce: &[u8; 12],
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        if aad.is_empty() {
            return Err(Error::InvalidInput(
                "the PKCS#11 backend needs a non-empty AAD for AES-GCM".into(),
            ));
        }
        let id = self.prefix.id_of(handle)?;
        if ciphertext.len() < TAG_LEN {
            return Err(Error::Integrity(
                "ciphertext is shorter than its tag".into(),
            ));
        }
        let (plaintext, _) = self.with_key(
            &id,
            Algorithm::Aes256Gcm,
            |s, key| {
                let mut iv = *nonce;
                let params = gcm_params(&mut iv, aad)?;
                s.decrypt(&Mechanism::AesGcm(params), key, ciphertext)
            },
            |e| match &e {
                // A wrong tag, nonce, AAD or ciphertext. SoftHSM reports a
                // wrong tag as CKR_GENERAL_ERROR from C_Decrypt itself (after
                // C_DecryptInit read the key): not transient there.
                CkError::Pkcs11(
                    rv @ (RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange),
                    _,
                )
                | CkError::Pkcs11(
                    rv @ (RvError::FunctionFailed | RvError::GeneralError),
                    Function::Decrypt | Function::DecryptUpdate | Function::DecryptFinal,
                ) => Error::Integrity(format!(
                    "AES-GCM authentication failed with key {} ({})",
                    id.short(),
                    crate::error::ckr_name(*rv)
                )),
                _ => map(&format!("AES-GCM decrypt with key {}", id.short()), e),
            },
        )?;
        Ok(SecretBytes::new(plaintext))
    }

    // ----- destroy, list, wipe -------------------------------------------

    /// Destroys every object of the key, the primary first. `NotFound` only
    /// if searches that succeeded found nothing of it at all.
    pub(crate) fn destroy_key(&self, handle: &KeyHandle) -> Result<()> {
        let id = self.prefix.id_of(handle)?;
        self.forget(&id);
        let destroyed = self.purge(&id);
        self.forget(&id);
        if destroyed? {
            Ok(())
        } else {
            Err(Error::NotFound(format!(
                "key {} does not exist on the token",
                id.short()
            )))
        }
    }

    /// Destroys every object carrying `id` (primaries first), searching
    /// again after each round until a search that succeeds finds none; a
    /// destroy answered with an invalid handle counts only once that search
    /// confirms it. True if anything was destroyed; false if two searches,
    /// a moment apart, found nothing. Transient errors are retried.
    pub(crate) fn purge(&self, id: &KeyId) -> Result<bool> {
        let destroyed = Cell::new(false);
        retry::retrying(|| {
            self.pool.run(|s| {
                for round in 0..4 {
                    let objs = self.objects_of(s, id)?;
                    if objs.is_empty() {
                        if round == 0 && !destroyed.get() {
                            // Nothing at all: ask once more before saying so.
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            if !self.objects_of(s, id)?.is_empty() {
                                continue;
                            }
                        }
                        return Ok(destroyed.get());
                    }
                    for obj in objs {
                        destroy_object(s, obj)?;
                        destroyed.set(true);
                    }
                }
                Err(Error::backend_msg(
                    COMPONENT,
                    format!(
                        "objects of key {} were still found after four rounds of destroying them",
                        id.short()
                    ),
                ))
            })
        })
    }

    /// Every object of the key (marker included), key objects first.
    fn objects_of(&self, s: &Session, id: &KeyId) -> Result<Vec<ObjectHandle>> {
        let mut primaries = Vec::new();
        let mut others = objects::find(s, &objects::marker_query(id))?;
        for obj in objects::find(s, &objects::id_query(id))? {
            match vanished_as_none(objects::class_of(s, obj))? {
                Some(Some(c)) if c == ObjectClass::PRIVATE_KEY || c == ObjectClass::SECRET_KEY => {
                    primaries.push(obj)
                }
                _ => others.push(obj),
            }
        }
        primaries.extend(others);
        Ok(primaries)
    }

    /// True if any object of the key (key object, public key or marker) is
    /// on the token; false only when two searches that succeeded, a moment
    /// apart, find none. Transient errors are retried for up to
    /// [`retry::OPERATION_WAIT`], then returned.
    pub(crate) fn contains_key(&self, handle: &KeyHandle) -> Result<bool> {
        let Some(id) = self.prefix.parse(handle.as_bytes()) else {
            return Ok(false);
        };
        let any = |s: &Session| -> Result<bool> {
            Ok(!objects::find(s, &objects::id_query(&id))?.is_empty()
                || !objects::find(s, &objects::marker_query(&id))?.is_empty())
        };
        retry::retrying(|| {
            self.pool.run(|s| {
                if any(s)? {
                    return Ok(true);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
                any(s)
            })
        })
    }

    /// Every key of this namespace that has any object left on the token
    /// (a key whose primary object is damaged is listed: it is still held,
    /// and using it reports `Integrity`). An object that vanishes between
    /// the search and the reading of its id is being destroyed and is left
    /// out; any other error makes the whole listing start again (for up to
    /// [`retry::OPERATION_WAIT`]) and is returned if it lasts, never a
    /// shorter list.
    pub(crate) fn list_keys(&self) -> Result<Vec<KeyHandle>> {
        let ids = retry::retrying(|| {
            self.pool
                .run(|s| Ok(self.scan(s)?.into_keys().collect::<BTreeSet<_>>()))
        })?;
        Ok(ids.into_iter().map(|id| id.handle()).collect())
    }

    /// Destroys every object of this namespace, primaries first, until a
    /// scan that succeeds finds none.
    pub(crate) fn wipe_namespace(&self) -> Result<()> {
        self.handles().clear();
        self.public_keys().clear();
        retry::retrying(|| {
            self.pool.run(|s| {
                for _ in 0..4 {
                    let scan = self.scan(s)?;
                    if scan.is_empty() {
                        return Ok(());
                    }
                    let (mut primaries, mut others) = (Vec::new(), Vec::new());
                    for objs in scan.into_values() {
                        for (class, obj) in objs {
                            if class == ObjectClass::PRIVATE_KEY || class == ObjectClass::SECRET_KEY
                            {
                                primaries.push(obj);
                            } else {
                                others.push(obj);
                            }
                        }
                    }
                    for obj in primaries.into_iter().chain(others) {
                        destroy_object(s, obj)?;
                    }
                }
                Err(Error::backend_msg(
                    COMPONENT,
                    "objects of this namespace were still found after four rounds of wiping",
                ))
            })
        })
    }

    /// Every object of this namespace, by key id, with its class. An object
    /// whose handle turns invalid between the search and the reading of its
    /// id has been destroyed meanwhile (SoftHSM answers so only for an
    /// object whose file is gone) and is left out; every other error is
    /// returned.
    pub(crate) fn scan(
        &self,
        s: &Session,
    ) -> Result<std::collections::BTreeMap<KeyId, Vec<(ObjectClass, ObjectHandle)>>> {
        let mut out: std::collections::BTreeMap<KeyId, Vec<(ObjectClass, ObjectHandle)>> =
            Default::default();
        for class in [
            ObjectClass::PRIVATE_KEY,
            ObjectClass::SECRET_KEY,
            ObjectClass::PUBLIC_KEY,
        ] {
            let template = [Attribute::Class(class), Attribute::Token(true)];
            for obj in objects::find(s, &template)? {
                if let Some(id) = vanished_as_none(objects::bytes_attr(s, obj, AttributeType::Id))?
                    .flatten()
                    .and_then(|v| self.prefix.parse(&v))
                {
                    out.entry(id).or_default().push((class, obj));
                }
            }
        }
        let markers = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(objects::APPLICATION.to_vec()),
        ];
        for obj in objects::find(s, &markers)? {
            if let Some(id) = vanished_as_none(objects::bytes_attr(s, obj, AttributeType::Value))?
                .flatten()
                .and_then(|v| self.prefix.parse(&v))
            {
                out.entry(id).or_default().push((ObjectClass::DATA, obj));
            }
        }
        Ok(out)
    }
}

fn damaged(id: &KeyId, kind: Kind, why: &str) -> Error {
    Error::Integrity(format!(
        "key {}: its {} object is damaged or was altered ({why}); not using it",
        id.short(),
        kind.name()
    ))
}

/// GCM parameters: the 12-byte IV, the AAD and a 128-bit tag.
fn gcm_params<'a>(
    iv: &'a mut [u8; 12],
    aad: &'a [u8],
) -> cryptoki::error::Result<cryptoki::mechanism::aead::GcmParams<'a>> {
    cryptoki::mechanism::aead::GcmParams::new(iv, aad, Ulong::from(128u64))
}

/// The key object an operation used, and how it was obtained.
#[derive(Debug, Clone, Copy)]
struct Primary {
    handle: ObjectHandle,
    /// Looked up or re-checked during this call (not trusted from the cache).
    checked_now: bool,
    /// No signature made with it has been verified since it was last
    /// checked ([`SignatureCheck::FirstUse`] verifies this one).
    unverified: bool,
}

/// What one attempt of an operation learnt about retrying it (see
/// [`Pkcs11Backend::retried`]).
#[derive(Debug, Default)]
pub(crate) struct Hints {
    /// The key's state may be passing (a key object missing while the rest
    /// of the key remains).
    settling: Cell<bool>,
    /// A cached handle turned out not to be the key's.
    stale: Cell<bool>,
}

/// `Ok(None)` for an error saying the object's handle is invalid (the
/// object vanished since it was found), else `r` as `Ok(Some(..))`/`Err`.
fn vanished_as_none<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if retry::is_handle_invalid(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `C_DestroyObject`; an object already gone is fine.
fn destroy_object(s: &Session, obj: ObjectHandle) -> Result<()> {
    match s.destroy_object(obj) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                rv_of(&e),
                Some(RvError::ObjectHandleInvalid) | Some(RvError::KeyHandleInvalid)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(ck("C_DestroyObject")(e)),
    }
}

/// Reads the public key of a public key object.
fn read_public(s: &Session, obj: ObjectHandle, alg: Algorithm) -> Result<PublicKey> {
    let missing =
        |what: &str| Error::Integrity(format!("the token's public key object has no {what}"));
    match Kind::of(alg) {
        Kind::Ec => {
            let params = objects::bytes_attr(s, obj, AttributeType::EcParams)?
                .ok_or_else(|| missing("CKA_EC_PARAMS"))?;
            let point = objects::bytes_attr(s, obj, AttributeType::EcPoint)?
                .ok_or_else(|| missing("CKA_EC_POINT"))?;
            pubkey::ec_spki(&params, &point)
        }
        _ => {
            let n = objects::bytes_attr(s, obj, AttributeType::Modulus)?
                .ok_or_else(|| missing("CKA_MODULUS"))?;
            let e = objects::bytes_attr(s, obj, AttributeType::PublicExponent)?
                .ok_or_else(|| missing("CKA_PUBLIC_EXPONENT"))?;
            pubkey::rsa_spki(alg, &n, &e)
        }
    }
}
