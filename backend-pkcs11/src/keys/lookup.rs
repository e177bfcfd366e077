//! Finding a key's objects: the primary object for an operation, its
//! cache, retries after token failures, and host-side verifiers.

use super::{damaged, read_public, Hints, Primary};
use crate::error::rv_of;
use crate::handle::KeyId;
use crate::objects::{self, Kind};
use crate::pubkey::Verifier;
use crate::retry::{self, Backoff};
use crate::{Cached, Pkcs11Backend};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use keystore_backend::{Algorithm, Error, Result};
use std::sync::Arc;
use std::time::Instant;

impl Pkcs11Backend {
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
        let kind = Kind::of(alg)?;
        let mechanism = objects::allowed_mechanism(alg)?;
        let cached = self.handles().get(id).copied();
        if let Some(c) = cached {
            if c.alg == alg && c.checked_at.elapsed() < self.recheck_interval {
                return Ok(Primary {
                    handle: c.handle,
                    checked_now: false,
                    unverified: c.unverified,
                });
            }
            match objects::check_protection(s, c.handle, id, &[mechanism]) {
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
            match objects::check_protection(s, h, id, &[mechanism])? {
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
    pub(super) fn remember(&self, id: &KeyId, handle: ObjectHandle, alg: Algorithm) {
        let entry = Cached {
            handle,
            alg,
            checked_at: Instant::now(),
            unverified: true,
        };
        self.handles().insert(*id, entry);
    }

    /// Notes that a signature made with `handle` verified.
    pub(super) fn mark_verified(&self, id: &KeyId, handle: ObjectHandle) {
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
    pub(super) fn with_key<T>(
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
        // Both known: `primary` found the object for `alg`.
        let (Ok(kind), Ok(mechanism)) = (Kind::of(alg), objects::allowed_mechanism(alg)) else {
            return fail(e);
        };
        match objects::check_protection(s, p.handle, id, &[mechanism]) {
            Ok(objects::Check::Intact) => {
                self.remember(id, p.handle, alg);
                fail(e)
            }
            Ok(objects::Check::Damaged(why)) => {
                self.forget(id);
                damaged(id, kind, &why)
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
            Error::not_found(format!("key {} does not exist on the token", id.short()))
        } else {
            hints.settling.set(true);
            Error::integrity(format!(
                "key {}: its {} object is missing, damaged, of another type or lacks its \
                 protection attributes, while {left} other object(s) of the key remain on the token",
                id.short(),
                kind.name()
            ))
        })
    }

    /// The public key of an asymmetric key, parsed for verification, from
    /// the cache or else the token's public key object.
    pub(super) fn verifier(&self, id: &KeyId, alg: Algorithm) -> Result<Arc<Verifier>> {
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
        let kind = Kind::of(alg)?;
        let Some(obj) = objects::find(s, &objects::public_query(kind, id))?
            .first()
            .copied()
        else {
            let private = objects::find(s, &objects::id_query(id))?;
            return Err(if private.is_empty() {
                Error::not_found(format!("key {} does not exist on the token", id.short()))
            } else {
                hints.settling.set(true);
                Error::integrity(format!(
                    "key {}: its public key object is missing or of another type",
                    id.short()
                ))
            });
        };
        let v = Arc::new(Verifier::new(read_public(s, obj, alg)?)?);
        self.public_keys().insert(*id, Arc::clone(&v));
        Ok(v)
    }
}
