//! Staged rotation (NIST SP 800-57's pre-activation state): the next version
//! of a key is generated but not used, signs only a proof of possession (a
//! certificate request), and becomes active only when [`Keystore::activate`]
//! is called, typically once the certificate that names it is in hand. Until
//! then the active version, and the certificate that names it, stay in use,
//! so a failed renewal never leaves an uncertified active key.
//!
//! At most one version of a key is in pre-activation, and it is the newest:
//! [`Keystore::rotate`] and [`Keystore::rotate_staged`] refuse while one
//! exists ([`ErrorKind::KeyState`](crate::ErrorKind::KeyState)); activate or
//! discard it first.

use crate::algorithm::Usages;
use crate::audit::AuditEvent;
use crate::backend::Backend;
use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::keystore::{
    check_len, check_name, check_usage, limits, live_key, resolved, FaultPoint, KeyInfo, Keystore,
    Subject,
};
use crate::lifecycle::check_transition;
use crate::metadata::{self as md, Intent, KeyState, StateChange, VersionRow};
use crate::roles::{Actor, Duty};
use crate::signature::{self, Signature, SignatureFormat};
use crate::NewKey;
use sha2::Digest;
use time::Duration;

/// The version of a pre-activation key, or the error for one that is not.
fn pre_active_version<'v>(
    name: &str,
    versions: &'v [VersionRow],
    n: u32,
) -> Result<&'v VersionRow> {
    let v = versions.iter().find(|v| v.version == n).ok_or_else(|| {
        Error::not_found(format!("key '{name}' has no version {n}"))
            .with_key(name)
            .with_version(n)
    })?;
    if v.state != KeyState::PreActivation {
        return Err(Error::key_state(format!(
            "key '{name}' version {n} is {}, not pre-activation (staged by rotate_staged)",
            v.state
        ))
        .with_key(name)
        .with_version(n));
    }
    Ok(v)
}

/// The refusal for a second staged version.
pub(crate) fn already_staged(name: &str, versions: &[VersionRow]) -> Result<()> {
    match versions.iter().find(|v| v.state == KeyState::PreActivation) {
        None => Ok(()),
        Some(v) => Err(Error::key_state(format!(
            "key '{name}' already has version {} in pre-activation; activate or discard it first",
            v.version
        ))
        .with_key(name)
        .with_version(v.version)),
    }
}

impl<B: Backend> Keystore<B> {
    /// Stages a rotation of `name`: a new version is generated inside the
    /// backend in the pre-activation state. Nothing else changes: the active
    /// version stays active, and the new one signs only proofs of possession
    /// ([`Keystore::sign_pre_active`]) until [`Keystore::activate`]. Its
    /// public key is in the returned [`KeyInfo`] ([`KeyInfo::pre_active`]).
    /// Audited as `stage`. Needs the security-officer role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when a version is already in pre-activation, or after decommission;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit key reference is missing from a live store;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails (the new backend
    /// object is then removed, now or at the next open).
    pub fn rotate_staged(&self, actor: &Actor, name: &str) -> Result<KeyInfo> {
        let _w = self.writing("stage a rotation")?;
        check_name(name)?;
        self.require(actor, Duty::Administer, "stage a rotation", Some(name))?;
        let (key, versions) = {
            let md = self.md();
            let key = live_key(md.conn(), name)?;
            let versions = md::versions(md.conn(), key.id)?;
            (key, versions)
        };
        already_staged(name, &versions)?;
        let next = versions.last().map(|v| v.version + 1).unwrap_or(1);
        let now = self.now();
        self.create_in_backend(
            name,
            Some(FaultPoint::AfterBackendRotate),
            || {
                let g = self.backend.generate(&NewKey::new(key.algorithm, name))?;
                Ok((g.clone(), vec![g.handle]))
            },
            |tx, generated| {
                let fp = super::rotation::insert_generated_version(
                    tx,
                    key.id,
                    next,
                    KeyState::PreActivation,
                    generated,
                    &now,
                )?;
                self.audit(
                    tx,
                    Some(actor),
                    AuditEvent::Stage,
                    Subject::version(name, next, fp.as_deref()),
                    format!("version {next} generated in pre-activation"),
                )
            },
        )?;
        self.info(name)
    }

    /// Activates pre-activation version `version` of `name`: it becomes the
    /// active version, and the previous active (or suspended) version becomes
    /// deactivated until `now + grace` (verify and decrypt only), as
    /// [`Keystore::rotate`] does, in one transaction. Audited as `rotate`
    /// (and `state` for the old version). Needs the security-officer role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name or a negative grace;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key, or a version it does not have;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when the version is not in pre-activation, or after decommission;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit key reference is missing from a live store;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails (nothing is changed).
    pub fn activate(
        &self,
        actor: &Actor,
        name: &str,
        version: u32,
        grace: Duration,
    ) -> Result<KeyInfo> {
        let _w = self.writing("activate")?;
        check_name(name)?;
        if grace < Duration::ZERO {
            return Err(Error::invalid_input("a grace period cannot be negative"));
        }
        self.require(actor, Duty::Administer, "activate", Some(name))?;
        let now = self.now();
        let grace_end = rfc3339(self.now_time() + grace);
        {
            let mut md = self.md();
            let key = live_key(md.conn(), name)?;
            let versions = md::versions(md.conn(), key.id)?;
            let staged = pre_active_version(name, &versions, version)?;
            check_transition(staged.state, KeyState::Active)?;
            let tx = md.tx()?;
            self.deactivate_previous(&tx, actor, (key.id, name), &versions, &grace_end, &now)?;
            md::set_state(
                &tx,
                key.id,
                version,
                &StateChange::to(KeyState::Active, &now),
            )?;
            self.audit(
                &tx,
                Some(actor),
                AuditEvent::Rotate,
                Subject::version(name, version, staged.fingerprint.as_deref()),
                format!(
                    "version {version} active (was pre-activation); grace {} s",
                    grace.whole_seconds()
                ),
            )?;
            tx.commit()?;
        }
        self.info(name)
    }

    /// Deactivates the active (or suspended) versions of key `id` until
    /// `grace_end`, inside `tx`, auditing each.
    fn deactivate_previous(
        &self,
        tx: &rusqlite::Connection,
        actor: &Actor,
        (id, name): (i64, &str),
        versions: &[VersionRow],
        grace_end: &str,
        now: &str,
    ) -> Result<()> {
        for old in versions
            .iter()
            .filter(|v| matches!(v.state, KeyState::Active | KeyState::Suspended))
        {
            check_transition(old.state, KeyState::Deactivated)?;
            md::set_state(
                tx,
                id,
                old.version,
                &StateChange {
                    grace_end: Some(grace_end),
                    ..StateChange::to(KeyState::Deactivated, now)
                },
            )?;
            self.audit(
                tx,
                Some(actor),
                AuditEvent::StateChange,
                Subject::version(name, old.version, old.fingerprint.as_deref()),
                format!("{} -> deactivated until {grace_end}", old.state),
            )?;
        }
        Ok(())
    }

    /// Discards pre-activation version `version` of `name` (a staged
    /// rotation abandoned): it becomes destroyed at once and its material is
    /// destroyed in the backend. The active version is untouched. Audited as
    /// `state`. Needs the security-officer role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key, or a version it does not have;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when the version is not in pre-activation, or after decommission;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit key reference is missing from a live store;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails; once the
    /// discard is committed, a failure to destroy the material is completed at the next open.
    pub fn discard_pre_active(&self, actor: &Actor, name: &str, version: u32) -> Result<()> {
        let _w = self.writing("discard")?;
        check_name(name)?;
        self.require(
            actor,
            Duty::Administer,
            "discard a staged version",
            Some(name),
        )?;
        let now = self.now();
        let (key_id, handle, intent) = {
            let mut md = self.md();
            let key = live_key(md.conn(), name)?;
            let versions = md::versions(md.conn(), key.id)?;
            let v = pre_active_version(name, &versions, version)?;
            check_transition(v.state, KeyState::Destroyed)?;
            let tx = md.tx()?;
            md::set_state(
                &tx,
                key.id,
                version,
                &StateChange::to(KeyState::Destroyed, &now),
            )?;
            let intent = md::add_intent(&tx, Intent::Destroy, key.id, version, &now)?;
            self.audit(
                &tx,
                Some(actor),
                AuditEvent::StateChange,
                Subject::version(name, version, v.fingerprint.as_deref()),
                "pre-activation -> destroyed (staged version discarded)".into(),
            )?;
            tx.commit()?;
            (key.id, v.handle.clone(), intent)
        };
        self.finish_material_removal(
            key_id,
            version,
            handle.as_ref(),
            intent,
            KeyState::Destroyed,
        )
    }

    /// Signs `message` with pre-activation version `version` of `name`: the
    /// proof of possession of a certificate request for the staged key (the
    /// one use a pre-activation key has). Every such signature is audited
    /// (`proof-of-possession`, with the SHA-256 of the message); a signature
    /// whose audit fails is discarded. Needs the security-officer role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout;
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name or a message over [`limits::MAX_DATA_LEN`];
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (the refusal is audited), or the
    /// key may not sign;
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key, or a version it does not have;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when the version is not in pre-activation, or after decommission;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the backend's key object is damaged or its signature fails
    /// a host-side check, or the audit key reference is missing;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the backend or the database fails.
    pub fn sign_pre_active(
        &self,
        actor: &Actor,
        name: &str,
        version: u32,
        message: &[u8],
        format: SignatureFormat,
    ) -> Result<Signature> {
        check_len("message", message, limits::MAX_DATA_LEN)?;
        let _w = self.writing("sign a proof of possession")?;
        check_name(name)?;
        self.require(
            actor,
            Duty::Administer,
            "sign a proof of possession",
            Some(name),
        )?;
        let (r, fingerprint) = {
            let md = self.md();
            let key = live_key(md.conn(), name)?;
            check_usage(&key, Usages::SIGN, "sign")?;
            let versions = md::versions(md.conn(), key.id)?;
            let v = pre_active_version(name, &versions, version)?.clone();
            let fingerprint = v.fingerprint.clone();
            (resolved(key, v)?, fingerprint)
        };
        let raw = self
            .backend
            .sign(&r.backend_key, message)
            .map_err(|e| e.with_key(name).with_version(version))?;
        let bytes = signature::encode(r.key.algorithm, raw, format)?;
        let mut md = self.md();
        let tx = md.tx()?;
        self.audit(
            &tx,
            Some(actor),
            AuditEvent::ProofOfPossession,
            Subject::version(name, version, fingerprint.as_deref()),
            format!(
                "version {version} (pre-activation) signed a proof of possession over {} bytes, sha256:{}",
                message.len(),
                hex::encode(sha2::Sha256::digest(message))
            ),
        )?;
        tx.commit()?;
        Ok(Signature {
            version,
            format,
            bytes,
        })
    }
}
