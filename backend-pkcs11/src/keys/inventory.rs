//! Destroying, listing, wiping and scanning the token's keys.

use super::{destroy_object, vanished_as_none};
use crate::error::COMPONENT;
use crate::handle::KeyId;
use crate::objects;
use crate::retry;
use crate::Pkcs11Backend;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keystore_backend::{Error, KeyHandle, Result};
use std::cell::Cell;
use std::collections::BTreeSet;

impl Pkcs11Backend {
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
            Err(Error::not_found(format!(
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
