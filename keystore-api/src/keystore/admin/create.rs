//! Creating and importing keys, and recording a new key's metadata.

use crate::algorithm::KeyClass;
use crate::audit::AuditEvent;
use crate::backend::{Backend, KeyHandle};
use crate::error::{Component, Error, Result};
use crate::keystore::encryption_limit::check_limit;
use crate::keystore::{check_name, KeyInfo, KeySpec, Keystore, Subject};
use crate::metadata::{self as md, KeyState, NewKey, NewVersion, Origin};
use crate::roles::{Actor, Duty};
use crate::secret::SecretBytes;
use time::Duration;

impl<B: Backend> Keystore<B> {
    fn check_spec(spec: KeySpec) -> Result<()> {
        let permitted = spec.algorithm.permitted_usages();
        if spec.usages.is_empty() || !permitted.contains(spec.usages) {
            return Err(Error::policy(format!(
                "{} keys permit usages {{{permitted}}}; requested {{{}}}",
                spec.algorithm, spec.usages
            )));
        }
        spec.usages.check_combination()?;
        if spec.backup_eligible && spec.algorithm.class() != KeyClass::Symmetric {
            return Err(Error::policy(format!(
                "{} keys sign and are never backed up (REQ-KEY-BAK-01); only symmetric keys may be backup-eligible",
                spec.algorithm
            )));
        }
        if let Some(p) = spec.cryptoperiod {
            if p <= Duration::ZERO {
                return Err(Error::invalid_input("a cryptoperiod must be positive"));
            }
        }
        check_limit(spec.algorithm, spec.encryption_limit)?;
        Ok(())
    }

    fn check_name_free(&self, name: &str) -> Result<()> {
        let md = self.md();
        if md::decommissioned_at(md.conn())?.is_some() {
            return Err(Error::key_state(
                "this store was decommissioned; no key can be created",
            ));
        }
        match md::key(md.conn(), name)? {
            None => Ok(()),
            Some(k) if k.destroyed_at.is_some() => Err(Error::already_exists(format!(
                "key '{name}' was destroyed and its tombstone keeps the name; choose another name"
            ))),
            Some(_) => Err(Error::already_exists(format!(
                "key '{name}' already exists"
            ))),
        }
    }

    /// Generates a key named `name` inside the backend (version 1, active).
    /// Needs the security-officer or operator role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name, a non-positive cryptoperiod, or
    /// an encryption limit of 0, above [`MAX_ENCRYPTION_LIMIT`](crate::MAX_ENCRYPTION_LIMIT) or on a key that is not
    /// aes-256-gcm;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) for usages the algorithm does not permit, `mac` with `derive`, or a
    /// backup-eligible asymmetric key, and when `actor`'s role lacks the duty (the refusal is
    /// audited);
    /// [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists) when the name is taken, by a live key or a tombstone;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) after decommission;
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) when the backend cannot generate the algorithm;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit key reference is missing from a live store (nothing
    /// is changed);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails (the backend object
    /// is then removed, now or at the next open).
    pub fn create(&self, actor: &Actor, name: &str, spec: KeySpec) -> Result<KeyInfo> {
        let _w = self.writing("create")?;
        check_name(name)?;
        Self::check_spec(spec)?;
        self.require(actor, Duty::Provision, "create", Some(name))?;
        self.check_name_free(name)?;
        self.create_in_backend(
            name,
            Some(crate::keystore::FaultPoint::AfterBackendCreate),
            || {
                let g = self
                    .backend
                    .generate(&crate::backend::NewKey::new(spec.algorithm, name))?;
                let public = match (&g.public_key, spec.algorithm.class()) {
                    (Some(pk), KeyClass::Asymmetric) => {
                        Some((pk.spki_der().to_vec(), pk.fingerprint()))
                    }
                    (None, KeyClass::Symmetric) => None,
                    _ => {
                        self.discard(&g.handle);
                        return Err(Error::backend_msg(
                            Component::Keystore,
                            format!(
                                "the {} backend returned a public key that does not match the \
                                 algorithm",
                                self.backend.name()
                            ),
                        ));
                    }
                };
                Ok(((g.handle.clone(), public), vec![g.handle]))
            },
            |tx, (handle, public)| {
                self.record_new_key(
                    tx,
                    actor,
                    name,
                    spec,
                    Origin::Generated,
                    handle,
                    public.clone(),
                )
            },
        )?;
        self.info(name)
    }

    /// Imports a 32-byte secret for a symmetric key (AES-256-GCM, HMAC-SHA256),
    /// recorded with origin `imported`. Private keys cannot be imported: they
    /// are generated inside the backend ([`ErrorKind::Policy`](crate::ErrorKind::Policy)).
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name, a non-positive cryptoperiod, an
    /// encryption limit refused as by [`Keystore::create`], or a secret of
    /// the wrong length;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) for an asymmetric algorithm, usages the algorithm does not permit, or
    /// `mac` with `derive`, and when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists) when the name is taken;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) after decommission;
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) when the backend cannot hold the key;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit key reference is missing from a live store (nothing
    /// is changed);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn import(
        &self,
        actor: &Actor,
        name: &str,
        spec: KeySpec,
        secret: &SecretBytes,
    ) -> Result<KeyInfo> {
        let _w = self.writing("import")?;
        check_name(name)?;
        Self::check_spec(spec)?;
        let Some(len) = spec.algorithm.secret_len() else {
            return Err(Error::policy(format!(
                "{} keys cannot be imported; generate them inside the backend",
                spec.algorithm
            )));
        };
        if secret.len() != len {
            return Err(Error::invalid_input(format!(
                "{} needs a {len}-byte secret, got {} bytes",
                spec.algorithm,
                secret.len()
            )));
        }
        self.require(actor, Duty::Provision, "import", Some(name))?;
        self.check_name_free(name)?;
        self.create_in_backend(
            name,
            None,
            || {
                let h = self
                    .backend
                    .import(&crate::backend::NewKey::new(spec.algorithm, name), secret)?;
                Ok((h.clone(), vec![h]))
            },
            |tx, handle| self.record_new_key(tx, actor, name, spec, Origin::Imported, handle, None),
        )?;
        self.info(name)
    }

    /// Records a new key (version 1, active) and its audit entry inside `tx`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_new_key(
        &self,
        tx: &rusqlite::Connection,
        actor: &Actor,
        name: &str,
        spec: KeySpec,
        origin: Origin,
        handle: &KeyHandle,
        public: Option<(Vec<u8>, String)>,
    ) -> Result<()> {
        let now = self.now();
        {
            let key_id = md::insert_key(
                tx,
                &NewKey {
                    name,
                    algorithm: spec.algorithm,
                    usages: spec.usages,
                    backup_eligible: spec.backup_eligible,
                    cryptoperiod_secs: spec.cryptoperiod.map(|d| d.whole_seconds()),
                    created_at: &now,
                    encryption_limit: check_limit(spec.algorithm, spec.encryption_limit)?,
                },
            )?;
            let fp = public.as_ref().map(|p| p.1.as_str());
            md::insert_version(
                tx,
                key_id,
                &NewVersion {
                    version: 1,
                    state: KeyState::Active,
                    origin,
                    handle,
                    public_key: public.as_ref().map(|p| p.0.as_slice()),
                    fingerprint: fp,
                    created_at: &now,
                },
            )?;
            let event = match origin {
                Origin::Imported => AuditEvent::Import,
                _ => AuditEvent::Generate,
            };
            self.audit(
                tx,
                Some(actor),
                event,
                Subject::version(name, 1, fp),
                format!(
                    "{} {{{}}}{}{}",
                    spec.algorithm,
                    spec.usages,
                    if spec.backup_eligible {
                        " backup-eligible"
                    } else {
                        ""
                    },
                    spec.encryption_limit
                        .map(|l| format!(" encryption-limit {l}"))
                        .unwrap_or_default()
                ),
            )?;
        }
        Ok(())
    }

    /// Best-effort removal of a backend object that metadata will not reference.
    pub(crate) fn discard(&self, handle: &KeyHandle) {
        // The caller reports the original error; a failure here leaves an
        // orphan that reconciliation at the next open removes.
        let _ = self.backend.destroy(handle);
    }
}
