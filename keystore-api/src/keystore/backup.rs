//! Wrapped backup and restore of operational keys (REQ-KEY-BAK-01).
//!
//! Only keys created backup-eligible (symmetric by construction) can be
//! backed up; signing keys are never exported in any form, whatever the
//! caller's role. A backup holds every live version's material wrapped by the
//! backend under a backup KEK, an AES-256-GCM key with the `wrap` usage that
//! is itself non-extractable. Each wrap binds the key's original name,
//! version and algorithm, so a backup cannot be relabelled.

use super::{check_name, live_key, Keystore, Subject};
use crate::algorithm::{Algorithm, KeyClass, Usages};
use crate::backend::{Backend, KeyHandle};
use crate::error::{Component, Error, Result};
use crate::lifecycle::has_material;
use crate::metadata::{self as md, KeyState, NewKey, NewVersion, Origin, StateChange};
use crate::roles::{Actor, Duty};
use crate::AuditEvent;
use crate::BackendKey;
use base64::Engine;
use serde::{Deserialize, Serialize};

const FORMAT: &str = "keystore-backup-v1";

#[derive(Serialize, Deserialize)]
struct BackupDoc {
    format: String,
    name: String,
    algorithm: String,
    usages: String,
    cryptoperiod_secs: Option<i64>,
    /// AES-GCM keys: the limit of each version (absent in older backups:
    /// the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encryption_limit: Option<u64>,
    kek: String,
    versions: Vec<BackupVersion>,
}

#[derive(Serialize, Deserialize)]
struct BackupVersion {
    version: u32,
    state: String,
    created_at: String,
    grace_end: Option<String>,
    /// Encryptions reserved when the backup was taken: a restored version
    /// starts from them, never from 0.
    #[serde(default)]
    encryptions_reserved: u64,
    wrapped: String,
}

/// A restored version: number, state, creation time, grace end, new handle,
/// encryptions reserved.
type Restored = (u32, KeyState, String, Option<String>, KeyHandle, u64);

fn context(name: &str, version: u32, alg: Algorithm) -> Vec<u8> {
    format!("{FORMAT}\0{name}\0{version}\0{}", alg.id()).into_bytes()
}

impl<B: Backend> Keystore<B> {
    fn backup_kek(&self, kek_name: &str) -> Result<BackendKey> {
        let r = self.resolve_active(kek_name, Some((Usages::WRAP, "wrap keys for backup")))?;
        if r.key.algorithm != Algorithm::Aes256Gcm {
            return Err(Error::policy(format!(
                "backup KEK '{kek_name}' must be an aes-256-gcm key with the wrap usage"
            )));
        }
        Ok(r.backend_key.clone())
    }

    /// Exports `name` (every version with material) wrapped under the backup
    /// KEK `kek_name`. Signing keys and keys not created backup-eligible are
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy), whatever the role. Needs the security-officer role;
    /// audited.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name;
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key or KEK;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) for a signing key or one not created backup-eligible (whatever the
    /// role), a KEK that is not an aes-256-gcm key with `wrap`, and when `actor`'s role lacks
    /// the duty (the refusal is audited);
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when the KEK has no active version, or after decommission;
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) when the backend cannot export wrapped keys (PKCS#11, TPM);
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit key reference is missing from a live store;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn backup(&self, actor: &Actor, name: &str, kek_name: &str) -> Result<Vec<u8>> {
        let _w = self.writing("backup")?;
        check_name(name)?;
        let (key, versions) = {
            let md = self.md();
            let key = live_key(md.conn(), name)?;
            let versions = md::versions(md.conn(), key.id)?;
            (key, versions)
        };
        if key.algorithm.class() == KeyClass::Asymmetric {
            return Err(Error::policy(format!(
                "'{name}' is a signing key; signing keys are never exported in any form (REQ-KEY-BAK-01)"
            )));
        }
        self.require(actor, Duty::Administer, "backup", Some(name))?;
        if !key.backup_eligible {
            return Err(Error::policy(format!(
                "'{name}' was not created backup-eligible; eligibility is fixed at creation"
            )));
        }
        let kek = self.backup_kek(kek_name)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = Vec::new();
        for v in versions.iter().filter(|v| has_material(v.state)) {
            let Some(h) = &v.handle else { continue };
            let wrapped = self.backend.wrap(
                &kek,
                &BackendKey::new(h.clone(), key.algorithm),
                &context(name, v.version, key.algorithm),
            )?;
            out.push(BackupVersion {
                version: v.version,
                state: v.state.to_string(),
                created_at: v.created_at.clone(),
                grace_end: v.grace_end.clone(),
                encryptions_reserved: v.encryptions_reserved,
                wrapped: b64.encode(wrapped),
            });
        }
        let doc = BackupDoc {
            format: FORMAT.into(),
            name: name.into(),
            algorithm: key.algorithm.id().into(),
            usages: key.usages.to_string(),
            cryptoperiod_secs: key.cryptoperiod_secs,
            encryption_limit: super::encryption_limit::limit_of(&key),
            kek: kek_name.into(),
            versions: out,
        };
        let mut md = self.md();
        let tx = md.tx()?;
        self.audit(
            &tx,
            Some(actor),
            AuditEvent::Backup,
            Subject {
                name: Some(name),
                ..Subject::default()
            },
            format!(
                "{} version(s) wrapped under '{kek_name}'",
                doc.versions.len()
            ),
        )?;
        tx.commit()?;
        serde_json::to_vec_pretty(&doc)
            .map_err(|e| Error::backend(Component::Keystore, "cannot encode the backup", e))
    }

    /// Restores a backup made by [`Keystore::backup`] as `as_name` (default:
    /// the original name), unwrapping each version under `kek_name` (which
    /// must hold the same KEK). Versions keep their numbers and states, with
    /// origin `restored`; AES-GCM versions keep their encryption limit and the count
    /// reserved when the backup was taken. Needs the security-officer role; audited.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for bytes that are not a backup document, or one holding a
    /// malformed name, algorithm or usage, an encryption limit out of range, a version without
    /// material, or malformed wrapped material;
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) for another backup format, or a backend that cannot import
    /// wrapped keys;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) for a backup of anything but symmetric keys, a KEK that is not an
    /// aes-256-gcm key with `wrap`, and when `actor`'s role lacks the duty (the refusal is
    /// audited);
    /// [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists) when the target name is taken;
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown KEK;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when the KEK has no active version, or after decommission;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when a version does not unwrap under the KEK with the name, version
    /// and algorithm it was made for, names an unknown state, or the backup claims more than
    /// one active version, or when the audit key reference is missing;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn restore(
        &self,
        actor: &Actor,
        backup: &[u8],
        kek_name: &str,
        as_name: Option<&str>,
    ) -> Result<crate::KeyInfo> {
        let _w = self.writing("restore")?;
        let doc: BackupDoc = serde_json::from_slice(backup)
            .map_err(|_| Error::invalid_input("not a keystore backup document"))?;
        if doc.format != FORMAT {
            return Err(Error::unsupported(format!(
                "backup format '{}' is not supported",
                doc.format
            )));
        }
        let name = as_name.unwrap_or(&doc.name);
        check_name(name)?;
        check_name(&doc.name)?;
        let algorithm: Algorithm = doc.algorithm.parse()?;
        let usages: Usages = doc.usages.parse()?;
        if algorithm.class() != KeyClass::Symmetric
            || !algorithm.permitted_usages().contains(usages)
        {
            return Err(Error::policy("a backup can only hold symmetric keys"));
        }
        let encryption_limit =
            super::encryption_limit::check_limit(algorithm, doc.encryption_limit)?;
        self.require(actor, Duty::Administer, "restore", Some(name))?;
        if md::key(self.md().conn(), name)?.is_some() {
            return Err(Error::already_exists(format!(
                "key '{name}' already exists"
            )));
        }
        let kek = self.backup_kek(kek_name)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let discard_all = |r: &[Restored]| {
            for (.., h, _) in r {
                self.discard(h);
            }
        };
        let unwrap_all = || -> Result<(Vec<Restored>, Vec<KeyHandle>)> {
            let mut restored: Vec<Restored> = Vec::new();
            for v in &doc.versions {
                let parsed = (|| -> Result<Restored> {
                    let state: KeyState = v.state.parse()?;
                    if !has_material(state) {
                        return Err(Error::invalid_input("a backup version without material"));
                    }
                    let wrapped = b64.decode(&v.wrapped).map_err(|_| {
                        Error::invalid_input("backup holds malformed wrapped material")
                    })?;
                    let h = self.backend.unwrap(
                        &kek,
                        &crate::backend::NewKey::new(algorithm, name),
                        &wrapped,
                        &context(&doc.name, v.version, algorithm),
                    )?;
                    Ok((
                        v.version,
                        state,
                        v.created_at.clone(),
                        v.grace_end.clone(),
                        h,
                        // Never more than the limit, whatever the document says.
                        encryption_limit.map_or(0, |l| v.encryptions_reserved.min(l)),
                    ))
                })();
                match parsed {
                    Ok(r) => restored.push(r),
                    Err(e) => {
                        discard_all(&restored);
                        return Err(e);
                    }
                }
            }
            let count = |state| restored.iter().filter(|r| r.1 == state).count();
            if count(KeyState::Active) > 1 || count(KeyState::PreActivation) > 1 {
                discard_all(&restored);
                return Err(Error::integrity(
                    "backup claims more than one active (or pre-activation) version",
                ));
            }
            let handles = restored.iter().map(|r| r.4.clone()).collect();
            Ok((restored, handles))
        };
        let now = self.now();
        self.create_in_backend(name, None, unwrap_all, |tx, restored| {
            let key_id = md::insert_key(
                tx,
                &NewKey {
                    name,
                    algorithm,
                    usages,
                    backup_eligible: true,
                    cryptoperiod_secs: doc.cryptoperiod_secs,
                    created_at: &now,
                    encryption_limit,
                },
            )?;
            for (version, state, created_at, grace_end, h, reserved) in restored {
                md::insert_version(
                    tx,
                    key_id,
                    &NewVersion {
                        version: *version,
                        state: *state,
                        origin: Origin::Restored,
                        handle: h,
                        public_key: None,
                        fingerprint: None,
                        created_at,
                    },
                )?;
                if *reserved > 0 {
                    md::encryptions::set_reserved(tx, key_id, *version, *reserved)?;
                }
                if grace_end.is_some() {
                    md::set_state(
                        tx,
                        key_id,
                        *version,
                        &StateChange {
                            grace_end: grace_end.as_deref(),
                            ..StateChange::to(*state, &now)
                        },
                    )?;
                }
            }
            self.audit(
                tx,
                Some(actor),
                AuditEvent::Restore,
                Subject {
                    name: Some(name),
                    ..Subject::default()
                },
                format!(
                    "{} version(s) of '{}' restored with '{kek_name}'",
                    restored.len(),
                    doc.name
                ),
            )
        })?;
        self.info(name)
    }
}
