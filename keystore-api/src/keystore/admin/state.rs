//! State changes: suspend, resume, revoke, destroy, sweep and decommission.

use crate::audit::AuditEvent;
use crate::backend::{Backend, KeyHandle};
use crate::error::{Error, ErrorKind, Result};
use crate::keystore::{check_name, live_key, Keystore, Subject};
use crate::lifecycle::{check_transition, has_material};
use crate::metadata::{self as md, Intent, KeyState, StateChange};
use crate::roles::{Actor, Duty};

impl<B: Backend> Keystore<B> {
    /// Suspends version `version` of `name`: no use until resumed. Needs the
    /// security-officer or operator role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`] when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::Policy`] when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::InvalidInput`] for a malformed name;
    /// [`ErrorKind::NotFound`] for an unknown or destroyed key, or a version it does not have;
    /// [`ErrorKind::KeyState`] when the version's state cannot become suspended, or after
    /// decommission;
    /// [`ErrorKind::Integrity`] when the audit key reference is missing from a live store;
    /// [`ErrorKind::Backend`] when the metadata database or the backend fails.
    pub fn suspend(&self, actor: &Actor, name: &str, version: u32) -> Result<()> {
        let _w = self.writing("suspend")?;
        self.require(actor, Duty::Maintain, "suspend", Some(name))?;
        self.change_state(actor, name, version, KeyState::Suspended, None)
    }

    /// Resumes a suspended version: it becomes active again, provided no
    /// other version is active. Needs the security-officer or operator role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`] when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::Policy`] when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::InvalidInput`] for a malformed name;
    /// [`ErrorKind::NotFound`] for an unknown or destroyed key, or a version it does not have;
    /// [`ErrorKind::KeyState`] when the version is not suspended, another version is active, or
    /// after decommission;
    /// [`ErrorKind::Integrity`] when the audit key reference is missing from a live store;
    /// [`ErrorKind::Backend`] when the metadata database or the backend fails.
    pub fn resume(&self, actor: &Actor, name: &str, version: u32) -> Result<()> {
        let _w = self.writing("resume")?;
        self.require(actor, Duty::Maintain, "resume", Some(name))?;
        self.change_state(actor, name, version, KeyState::Active, None)
    }

    /// A state change that keeps the material (suspend, resume).
    fn change_state(
        &self,
        actor: &Actor,
        name: &str,
        version: u32,
        to: KeyState,
        reason: Option<&str>,
    ) -> Result<()> {
        check_name(name)?;
        let now = self.now();
        let mut md = self.md();
        let key = live_key(md.conn(), name)?;
        let versions = md::versions(md.conn(), key.id)?;
        let v = versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| Error::not_found(format!("key '{name}' has no version {version}")))?;
        if v.state == KeyState::PreActivation {
            return Err(Error::key_state(format!(
                "key '{name}' version {version} is pre-activation: it becomes active through \
                 activate, and is never suspended or resumed"
            )));
        }
        check_transition(v.state, to)?;
        if to == KeyState::Active && versions.iter().any(|o| o.state == KeyState::Active) {
            return Err(Error::key_state(format!(
                "key '{name}' already has an active version; only one version is active at a time"
            )));
        }
        let tx = md.tx()?;
        md::set_state(
            &tx,
            key.id,
            version,
            &StateChange {
                reason,
                ..StateChange::to(to, &now)
            },
        )?;
        self.audit(
            &tx,
            Some(actor),
            AuditEvent::StateChange,
            Subject::version(name, version, v.fingerprint.as_deref()),
            format!("{} -> {to}", v.state),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Revokes version `version` of `name` as compromised, at once: every
    /// later use is [`ErrorKind::KeyState`], and the material is destroyed.
    /// Needs the security-officer role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`] when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`] for a malformed name or a reason that is not one line of 1 to
    /// [`limits::MAX_REASON_LEN`](crate::limits::MAX_REASON_LEN) bytes;
    /// [`ErrorKind::Policy`] when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::NotFound`] for an unknown or destroyed key, or a version it does not have;
    /// [`ErrorKind::KeyState`] when the version cannot become compromised (already compromised or
    /// destroyed), or after decommission;
    /// [`ErrorKind::Integrity`] when the audit key reference is missing from a live store;
    /// [`ErrorKind::Backend`] when the metadata database or the backend fails; once the revocation
    /// is committed, a failure to destroy the material is completed at the next open.
    pub fn revoke(&self, actor: &Actor, name: &str, version: u32, reason: &str) -> Result<()> {
        let _w = self.writing("revoke")?;
        check_name(name)?;
        if reason.is_empty()
            || reason.len() > crate::keystore::limits::MAX_REASON_LEN
            || reason.contains(['\n', '\r'])
        {
            return Err(Error::invalid_input(format!(
                "a revocation reason is one line of 1 to {} bytes",
                crate::keystore::limits::MAX_REASON_LEN
            )));
        }
        self.require(actor, Duty::Administer, "revoke", Some(name))?;
        let now = self.now();
        // 1. Refuse use at once and record the intent to destroy the material.
        let (key_id, handle, intent) = {
            let mut md = self.md();
            let key = live_key(md.conn(), name)?;
            let v = md::versions(md.conn(), key.id)?
                .into_iter()
                .find(|v| v.version == version)
                .ok_or_else(|| {
                    Error::not_found(format!("key '{name}' has no version {version}"))
                })?;
            check_transition(v.state, KeyState::Compromised)?;
            let tx = md.tx()?;
            md::set_state(
                &tx,
                key.id,
                version,
                &StateChange {
                    reason: Some(reason),
                    ..StateChange::to(KeyState::Compromised, &now)
                },
            )?;
            let intent = md::add_intent(&tx, Intent::Revoke, key.id, version, &now)?;
            self.audit(
                &tx,
                Some(actor),
                AuditEvent::StateChange,
                Subject::version(name, version, v.fingerprint.as_deref()),
                format!("{} -> compromised: {reason}", v.state),
            )?;
            tx.commit()?;
            (key.id, v.handle, intent)
        };
        // 2. Destroy the material, then forget the handle.
        self.finish_material_removal(
            key_id,
            version,
            handle.as_ref(),
            intent,
            KeyState::Compromised,
        )
    }

    /// Destroys material for an intent, then completes its metadata. A crash
    /// in between is completed by reconciliation at the next open.
    pub(crate) fn finish_material_removal(
        &self,
        key_id: i64,
        version: u32,
        handle: Option<&KeyHandle>,
        intent: i64,
        final_state: KeyState,
    ) -> Result<()> {
        if let Some(h) = handle {
            match self.backend.destroy(h) {
                Ok(()) => {}
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let fault = match final_state {
            KeyState::Destroyed => crate::keystore::FaultPoint::AfterBackendDestroy,
            _ => crate::keystore::FaultPoint::AfterBackendRevoke,
        };
        self.fault_at(fault)?;
        let now = self.now();
        let mut md = self.md();
        let tx = md.tx()?;
        md::set_state(
            &tx,
            key_id,
            version,
            &StateChange::material_gone(final_state, &now),
        )?;
        md::remove_intent(&tx, intent)?;
        tx.commit()?;
        Ok(())
    }

    /// Destroys every version of `name`: material first in the backend, then
    /// the metadata becomes a tombstone (public data kept, name reserved).
    /// Afterwards every use of `name` is [`ErrorKind::NotFound`]. Needs the
    /// security-officer role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`] when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`] for a malformed name;
    /// [`ErrorKind::Policy`] when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::NotFound`] for an unknown or already destroyed key;
    /// [`ErrorKind::Integrity`] when the audit key reference is missing from a live store, and
    /// [`ErrorKind::KeyState`] after decommission (nothing is changed);
    /// [`ErrorKind::Backend`] when the metadata database or the backend fails; once the tombstone
    /// is committed, material left behind by a failure is destroyed at the next open.
    pub fn destroy(&self, actor: &Actor, name: &str) -> Result<()> {
        let _w = self.writing("destroy")?;
        check_name(name)?;
        self.require(actor, Duty::Administer, "destroy", Some(name))?;
        let now = self.now();
        let (key_id, pending) = {
            let mut md = self.md();
            let key = live_key(md.conn(), name)?;
            let versions = md::versions(md.conn(), key.id)?;
            let tx = md.tx()?;
            let mut pending = Vec::new();
            for v in &versions {
                if v.handle.is_some() || has_material(v.state) {
                    let intent = md::add_intent(&tx, Intent::Destroy, key.id, v.version, &now)?;
                    pending.push((v.version, v.handle.clone(), intent));
                }
            }
            md::mark_key_destroyed(&tx, key.id, &now)?;
            self.audit(
                &tx,
                Some(actor),
                AuditEvent::Destroy,
                Subject {
                    name: Some(name),
                    ..Subject::default()
                },
                format!("{} version(s) destroyed", versions.len()),
            )?;
            tx.commit()?;
            (key.id, pending)
        };
        for (version, handle, intent) in pending {
            self.finish_material_removal(
                key_id,
                version,
                handle.as_ref(),
                intent,
                KeyState::Destroyed,
            )?;
        }
        Ok(())
    }

    /// Destroys the material of every deactivated version whose grace period
    /// has ended, leaving tombstones. Returns the (name, version) pairs swept.
    /// Needs the security-officer or operator role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`] when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::Policy`] when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::Integrity`] when the audit key reference is missing from a live store, and
    /// [`ErrorKind::KeyState`] after decommission (nothing is changed);
    /// [`ErrorKind::Backend`] when the metadata database or the backend fails; versions already
    /// marked are completed at the next open.
    pub fn sweep(&self, actor: &Actor) -> Result<Vec<(String, u32)>> {
        let _w = self.writing("sweep")?;
        self.require(actor, Duty::Maintain, "sweep", None)?;
        let now_t = self.now_time();
        let now = self.now();
        let mut todo = Vec::new();
        {
            let mut md = self.md();
            let mut expired = Vec::new();
            for key in md::keys(md.conn())? {
                for v in md::versions(md.conn(), key.id)? {
                    if v.state == KeyState::Deactivated
                        && v.grace_end_time().is_none_or(|end| end <= now_t)
                    {
                        expired.push((key.id, key.name.clone(), v));
                    }
                }
            }
            if expired.is_empty() {
                return Ok(Vec::new());
            }
            let tx = md.tx()?;
            for (key_id, name, v) in &expired {
                let intent = md::add_intent(&tx, Intent::Destroy, *key_id, v.version, &now)?;
                self.audit(
                    &tx,
                    Some(actor),
                    AuditEvent::Sweep,
                    Subject::version(name, v.version, v.fingerprint.as_deref()),
                    format!(
                        "grace ended {}; material destroyed",
                        v.grace_end.as_deref().unwrap_or("-")
                    ),
                )?;
                todo.push((*key_id, name.clone(), v.version, v.handle.clone(), intent));
            }
            tx.commit()?;
        }
        let mut swept = Vec::new();
        for (key_id, name, version, handle, intent) in todo {
            if let Some(h) = &handle {
                match self.backend.destroy(h) {
                    Ok(()) => {}
                    Err(e) if e.is(ErrorKind::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            self.fault_at(crate::keystore::FaultPoint::AfterBackendSweep)?;
            let mut md = self.md();
            let tx = md.tx()?;
            md::set_state(
                &tx,
                key_id,
                version,
                &StateChange::material_gone(KeyState::Destroyed, &now),
            )?;
            md::remove_intent(&tx, intent)?;
            tx.commit()?;
            swept.push((name, version));
        }
        Ok(swept)
    }
}
