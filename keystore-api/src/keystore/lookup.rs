//! Looking keys up: public facts, backend handles, public keys, and the
//! active version (cached) a use resolves to.

use super::{
    check_name, check_usage, KeyInfo, Keystore, Resolved, VersionInfo, ACTIVE_CACHE_CAPACITY,
};
use crate::algorithm::{KeyClass, Usages};
use crate::backend::{Backend, KeyHandle};
use crate::error::{Error, Result};
use crate::metadata::{self as md, KeyRow, KeyState, VersionRow};
use crate::public_key::PublicKey;
use crate::BackendKey;
use rusqlite::Connection;
use std::sync::Arc;
use time::OffsetDateTime;

impl<B: Backend> Keystore<B> {
    /// Public facts about `name`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name;
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when no key has this name or it was destroyed;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the metadata holds a malformed public key;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn info(&self, name: &str) -> Result<KeyInfo> {
        check_name(name)?;
        let md = self.md();
        let key = live_key(md.conn(), name)?;
        let mut versions = md::versions(md.conn(), key.id)?;
        self.encryptions.discount_unused(key.id, &mut versions);
        drop(md);
        to_info(key, versions)
    }

    /// Every live (not destroyed) key, by name.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the metadata holds a malformed public key;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn list(&self) -> Result<Vec<KeyInfo>> {
        let md = self.md();
        let mut out = Vec::new();
        for key in md::keys(md.conn())? {
            if key.destroyed_at.is_some() {
                continue;
            }
            let mut versions = md::versions(md.conn(), key.id)?;
            self.encryptions.discount_unused(key.id, &mut versions);
            out.push(to_info(key, versions)?);
        }
        Ok(out)
    }

    /// The backend handle of `version` of `name` (not secret: a record id,
    /// `CKA_ID` or TPM blob), for operators and backend-level checks.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name;
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key, or a version it does not have;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when the version's material was destroyed;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn backend_handle(&self, name: &str, version: u32) -> Result<KeyHandle> {
        check_name(name)?;
        let md = self.md();
        let key = live_key(md.conn(), name)?;
        md::versions(md.conn(), key.id)?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| {
                Error::not_found(format!("key '{name}' has no version {version}"))
                    .with_key(name)
                    .with_version(version)
            })?
            .handle
            .ok_or_else(|| {
                Error::key_state(format!("key '{name}' version {version} has no material"))
                    .with_key(name)
                    .with_version(version)
            })
    }

    /// The public key of the active version of `name`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name;
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when the key has no active version;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) for a symmetric key (no public key);
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the metadata holds no or a malformed public key;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn public_key(&self, name: &str) -> Result<PublicKey> {
        let r = self.resolve_active(name, None)?;
        public_of(&r.key, r.public_key.as_deref())
    }

    /// The active version of `name`, checking `usage` if given.
    pub(crate) fn resolve_active(
        &self,
        name: &str,
        usage: Option<(Usages, &str)>,
    ) -> Result<Arc<Resolved>> {
        check_name(name)?;
        // Read before any data: what is cached under it is at least as new.
        let generation = self.generation.stable();
        if generation.is_some() {
            let cache = self.active.read().unwrap_or_else(|p| p.into_inner());
            if cache.generation == generation {
                if let Some(r) = cache.by_name.get(name).cloned() {
                    drop(cache);
                    if let Some((usage, what)) = usage {
                        check_usage(&r.key, usage, what)?;
                    }
                    return Ok(r);
                }
            }
        }
        let md = self.md();
        let stamp = md.change_stamp()?;
        let r = {
            let mut cache = self.active.write().unwrap_or_else(|p| p.into_inner());
            if cache.stamp != stamp || cache.generation != generation {
                cache.by_name.clear();
                cache.stamp = stamp;
                cache.generation = generation;
            }
            cache.by_name.get(name).cloned()
        };
        let r = match r {
            Some(r) => r,
            None => {
                let key = live_key(md.conn(), name)?;
                let versions = md::versions(md.conn(), key.id)?;
                let Some(v) = versions.into_iter().find(|v| v.state == KeyState::Active) else {
                    if let Some((usage, what)) = usage {
                        check_usage(&key, usage, what)?;
                    }
                    return Err(Error::key_state(format!(
                        "key '{name}' has no active version (suspended, revoked or rotated away); rotate or resume it"
                    ))
                    .with_key(name));
                };
                let r = Arc::new(resolved(key, v)?);
                let mut cache = self.active.write().unwrap_or_else(|p| p.into_inner());
                if cache.by_name.len() >= ACTIVE_CACHE_CAPACITY {
                    cache.by_name.clear();
                }
                cache.by_name.insert(name.to_string(), Arc::clone(&r));
                r
            }
        };
        drop(md);
        if let Some((usage, what)) = usage {
            check_usage(&r.key, usage, what)?;
        }
        Ok(r)
    }
}

/// Active versions, and deactivated versions before their grace end, verify
/// and decrypt; no other state does.
pub(crate) fn may_verify_or_decrypt(v: &VersionRow, now: OffsetDateTime) -> bool {
    match v.state {
        KeyState::Active => true,
        KeyState::Deactivated => v.grace_end_time().is_some_and(|end| now < end),
        _ => false,
    }
}

pub(crate) fn resolved(key: KeyRow, v: VersionRow) -> Result<Resolved> {
    let handle = v.handle.ok_or_else(|| {
        Error::key_state(format!(
            "key '{}' version {} has no material ({})",
            key.name, v.version, v.state
        ))
        .with_key(&key.name)
        .with_version(v.version)
    })?;
    Ok(Resolved {
        backend_key: BackendKey::new(handle, key.algorithm),
        key,
        version: v.version,
        public_key: v.public_key,
        encryptions: std::sync::OnceLock::new(),
    })
}

pub(crate) fn live_key(conn: &Connection, name: &str) -> Result<KeyRow> {
    match md::key(conn, name)? {
        Some(k) if k.destroyed_at.is_none() => Ok(k),
        Some(_) => Err(Error::not_found(format!("key '{name}' was destroyed")).with_key(name)),
        None => Err(Error::not_found(format!("no key named '{name}'")).with_key(name)),
    }
}

pub(crate) fn public_of(key: &KeyRow, spki: Option<&[u8]>) -> Result<PublicKey> {
    match (key.algorithm.class(), spki) {
        (KeyClass::Symmetric, _) => Err(Error::policy(format!(
            "key '{}' is a {} secret key and has no public key",
            key.name, key.algorithm
        ))),
        (KeyClass::Asymmetric, Some(der)) => PublicKey::from_spki_der(key.algorithm, der.to_vec())
            .map_err(|_| {
                Error::integrity(format!(
                    "metadata holds a malformed public key for '{}'",
                    key.name
                ))
            }),
        (KeyClass::Asymmetric, None) => Err(Error::integrity(format!(
            "metadata holds no public key for '{}'",
            key.name
        ))),
    }
}

pub(crate) fn to_info(key: KeyRow, versions: Vec<VersionRow>) -> Result<KeyInfo> {
    let encryption_limit = super::encryption_limit::limit_of(&key);
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
                created_at: stored_time(&key.name, &v.created_at)?,
                state_changed_at: stored_time(&key.name, &v.state_changed_at)?,
                grace_end: v
                    .grace_end
                    .as_deref()
                    .map(|t| stored_time(&key.name, t))
                    .transpose()?,
                reason: v.reason,
                encryptions: encryption_limit.map(|limit| super::EncryptionUsage {
                    reserved: v.encryptions_reserved,
                    limit,
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(KeyInfo {
        algorithm: key.algorithm,
        usages: key.usages,
        backup_eligible: key.backup_eligible,
        cryptoperiod: key.cryptoperiod_secs.map(time::Duration::seconds),
        encryption_limit,
        created_at: stored_time(&key.name, &key.created_at)?,
        name: key.name,
        versions,
    })
}

/// A time as the metadata stores it (RFC 3339); anything else is damage.
fn stored_time(key: &str, s: &str) -> Result<OffsetDateTime> {
    crate::clock::parse_rfc3339(s)
        .ok_or_else(|| Error::integrity(format!("metadata holds a malformed time for key '{key}'")))
}
