//! Reconciliation of the token's objects with the keystore's metadata.
//!
//! The keystore creates the token object first and commits metadata after,
//! and destroys token objects before it marks metadata destroyed. A crash in
//! between leaves:
//! - an **orphan**: this store's key on the token that no metadata
//!   references (crash after create, before the commit);
//! - a **missing** key: metadata references a handle with nothing left on
//!   the token (crash after destroy, before the commit; or someone deleted
//!   the objects by hand);
//! - a **damaged** key: some but not all of its objects remain (its key
//!   object vanished, or a destroy stopped half-way).
//!
//! The keystore reconciles at open through [`KeyManagement::list`](keystore_backend::KeyManagement::list)
//! and `destroy`: this backend lists every key with any object left, so an
//! orphan is listed (and destroyed there), a missing key is not (and is
//! marked there), and a damaged key is listed (using it is `Integrity`).
//!
//! [`Pkcs11Backend::reconcile`] gives the per-handle view for operators and
//! tools: it reports all three and, when asked, destroys orphans. Pass the
//! handles of every version that still has material; remove orphans only
//! while owning the namespace exclusively (a key another process has just
//! generated but not yet committed looks like an orphan). Handles that are
//! not this store's (another backend, another namespace) are reported as
//! foreign.

use crate::handle::KeyId;
use crate::objects::{self, Kind};
use crate::Pkcs11Backend;
use cryptoki::object::{ObjectClass, ObjectHandle};
use keystore_backend::{KeyHandle, Result};
use std::collections::BTreeSet;

/// What [`Pkcs11Backend::reconcile`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Known handles with no object left on the token.
    pub missing: Vec<KeyHandle>,
    /// Known handles whose key object is gone or damaged while other objects
    /// of the key remain (using them is `Integrity`).
    pub damaged: Vec<KeyHandle>,
    /// This store's keys on the token that no known handle references.
    pub orphans: Vec<KeyHandle>,
    /// Orphans destroyed (when removal was asked for).
    pub removed: Vec<KeyHandle>,
    /// Known handles that are not handles of this store.
    pub foreign: Vec<KeyHandle>,
}

impl ReconcileReport {
    /// True if the token and the known handles agree.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.damaged.is_empty()
            && self.orphans.is_empty()
            && self.foreign.is_empty()
    }
}

impl Pkcs11Backend {
    /// Compares this store's objects on the token with `known` (the handles
    /// the metadata references) and, if `remove_orphans`, destroys every key
    /// of this namespace that `known` does not reference. Only call with
    /// removal while no other keystore uses this namespace: a key another
    /// process has just generated but not yet committed looks like an
    /// orphan.
    pub fn reconcile(&self, known: &[KeyHandle], remove_orphans: bool) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let mut known_ids = BTreeSet::new();
        for h in known {
            match self.prefix.parse(h.as_bytes()) {
                Some(id) => {
                    known_ids.insert(id);
                }
                None => report.foreign.push(h.clone()),
            }
        }
        // One consistent pass: a transient error anywhere (another process
        // writing the token) starts the scan and the checks again.
        let (scan, damaged) = crate::retry::retrying(|| {
            let scan = self.pool.run(|s| self.scan(s))?;
            let mut damaged = BTreeSet::new();
            for id in &known_ids {
                if let Some(objs) = scan.get(id) {
                    if !self.intact(id, objs)? {
                        damaged.insert(*id);
                    }
                }
            }
            Ok((scan, damaged))
        })?;
        for id in &known_ids {
            if !scan.contains_key(id) {
                report.missing.push(id.handle());
            } else if damaged.contains(id) {
                report.damaged.push(id.handle());
            }
        }
        let orphans: Vec<KeyId> = scan
            .keys()
            .filter(|id| !known_ids.contains(*id))
            .copied()
            .collect();
        report.orphans = orphans.iter().map(KeyId::handle).collect();
        if remove_orphans {
            for id in orphans {
                match self.destroy_key(&id.handle()) {
                    Ok(()) => report.removed.push(id.handle()),
                    Err(e) if e.is(keystore_backend::ErrorKind::NotFound) => {
                        report.removed.push(id.handle())
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(report)
    }
}

impl Pkcs11Backend {
    /// True if `objs` form a whole key (a private key with its public key, or
    /// a secret key with its marker) whose key object carries its protection
    /// attributes. (A damaged key value itself shows only on use.)
    fn intact(&self, id: &KeyId, objs: &[(ObjectClass, ObjectHandle)]) -> Result<bool> {
        let has = |k| objs.iter().any(|(c, _)| *c == k);
        let whole = (has(ObjectClass::PRIVATE_KEY) && has(ObjectClass::PUBLIC_KEY))
            || (has(ObjectClass::SECRET_KEY) && has(ObjectClass::DATA));
        if !whole {
            return Ok(false);
        }
        self.pool.run(|s| {
            for (class, obj) in objs {
                if *class != ObjectClass::PRIVATE_KEY && *class != ObjectClass::SECRET_KEY {
                    continue;
                }
                let Some(kind) = objects::key_type_of(s, *obj)?.and_then(Kind::of_key_type) else {
                    return Ok(false);
                };
                match objects::check_protection(s, *obj, id, kind.mechanisms())? {
                    objects::Check::Intact => {}
                    _ => return Ok(false),
                }
            }
            Ok(true)
        })
    }
}
