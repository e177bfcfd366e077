//! The audit key, audit events, and the duty check every operation makes
//! (public as [`Keystore::authorize`], for applications that enforce the
//! same roles over their own operations).

use super::{Keystore, Subject, SYSTEM};
use crate::algorithm::Algorithm;
use crate::audit::{self, AuditEvent, Event};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::metadata as md;
use crate::roles::{Actor, Duty};
use crate::NewKey;
use rusqlite::Connection;

impl<B: Backend> Keystore<B> {
    /// Creates the audit key (an HMAC key in the backend) and the audit
    /// signing key on first open.
    pub(super) fn ensure_audit_key(&self) -> Result<()> {
        let has_audit_key = || -> Result<bool> {
            let md = self.md();
            // A trail that has begun had a key: if its reference is gone on a
            // live store, a new key would hide that (verification reports it).
            Ok(md::decommissioned_at(md.conn())?.is_some()
                || md::audit_key(md.conn())?.is_some()
                || audit::trail_started(md.conn())?)
        };
        if has_audit_key()? {
            return Ok(());
        }
        let _w = self.writing("create the audit key")?;
        // Another process may have made it while this one waited.
        if has_audit_key()? {
            return Ok(());
        }
        // A new store gets its signing key (and monotonic counter, where
        // the backend has one) with its MAC key, in the same first entry.
        let counter = self.create_counter()?;
        let made = self.create_in_backend(
            "keystore-audit",
            None,
            || {
                let g = self
                    .backend
                    .generate(&NewKey::new(Algorithm::HmacSha256, "keystore-audit"))?;
                let signer = match self.generate_signer() {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = self.backend.destroy(&g.handle);
                        return Err(e);
                    }
                };
                let handles = vec![g.handle.clone(), signer.handle.clone()];
                Ok(((g.handle, signer), handles))
            },
            |tx, (handle, signer)| {
                md::set_audit_key(tx, Some(handle))?;
                let ev = Event {
                    actor: SYSTEM.0.into(),
                    role: SYSTEM.1.into(),
                    event: AuditEvent::AuditInit,
                    key_name: None,
                    key_version: None,
                    fingerprint: None,
                    detail: format!(
                        "audit key created in the {} backend; {}",
                        self.backend.name(),
                        self.signer_detail(signer, counter.as_ref())
                    ),
                };
                audit::append(tx, &self.backend, handle, &self.now(), &ev)?;
                self.bind_signer(tx, signer, counter.as_ref())
            },
        );
        if made.is_err() {
            if let Some((c, _)) = &counter {
                let _ = self.backend.counter_destroy(c.reference());
            }
        }
        made?;
        Ok(())
    }

    /// Appends an event about `subject` inside `conn`'s transaction.
    pub(crate) fn audit(
        &self,
        conn: &Connection,
        actor: Option<&Actor>,
        event: AuditEvent,
        subject: Subject<'_>,
        detail: String,
    ) -> Result<()> {
        let Some(audit_key) = md::audit_key(conn)? else {
            if md::decommissioned_at(conn)?.is_some() {
                return Err(Error::key_state(
                    "the store is decommissioned; its audit key was destroyed",
                ));
            }
            return Err(Error::integrity(
                "the audit key reference is missing from a live store (it is not decommissioned); \
                 nothing is changed until the metadata database is restored from a trusted copy",
            ));
        };
        let (actor_id, role) = match actor {
            Some(a) => (a.id().to_string(), a.role().id().to_string()),
            None => (SYSTEM.0.to_string(), SYSTEM.1.to_string()),
        };
        let ev = Event {
            actor: actor_id,
            role,
            event,
            key_name: subject.name.map(str::to_string),
            key_version: subject.version,
            fingerprint: subject.fingerprint.map(str::to_string),
            detail,
        };
        audit::append(conn, &self.backend, &audit_key, &self.now(), &ev)
    }

    /// Checks that `actor`'s role holds `duty` for the operation `what`, as
    /// every lifecycle operation of the keystore does. A refusal is audited
    /// as an ordinary [`AuditEvent::Refused`] entry (actor, role and
    /// `"<what> refused: needs <roles>"`) and is
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) with the message
    /// `"<what> needs <roles>; '<actor>' acts as <role>"`. For applications
    /// that enforce the keystore's roles over their own operations (the
    /// device PKI checks its CA duties here); allowed checks are not audited.
    ///
    /// # Errors
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role
    /// lacks `duty` (the refusal is audited);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when
    /// `what` is empty or not one line of at most
    /// [`limits::MAX_REASON_LEN`](crate::limits::MAX_REASON_LEN) bytes;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit
    /// key reference is missing from a live store, and
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) after
    /// decommission (a refusal cannot be audited then);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata
    /// database or the backend fails.
    pub fn authorize(&self, actor: &Actor, duty: Duty, what: &str) -> Result<()> {
        if what.is_empty()
            || what.len() > crate::keystore::limits::MAX_REASON_LEN
            || what.contains(['\n', '\r'])
        {
            return Err(Error::invalid_input(format!(
                "an operation's name is one line of 1 to {} bytes",
                crate::keystore::limits::MAX_REASON_LEN
            )));
        }
        self.require(actor, duty, what, None)
    }

    /// Records a refusal that a layer above the keystore decided (a service's
    /// policy refusing a caller), as an ordinary [`AuditEvent::Refused`]
    /// entry: `who` (1 to 64 printable ASCII characters, e.g. an OS identity)
    /// acting as `role` (`None`: the caller holds no role), `what` was
    /// refused, and about which key if any. Nothing else changes.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when `who`
    /// is not 1 to 64 printable ASCII characters, or `what` is not one line of
    /// at most [`limits::MAX_REASON_LEN`](crate::limits::MAX_REASON_LEN)
    /// bytes; otherwise as [`Keystore::authorize`].
    pub fn record_refusal(
        &self,
        who: &str,
        role: Option<crate::Role>,
        what: &str,
        key: Option<&str>,
    ) -> Result<()> {
        if what.is_empty()
            || what.len() > crate::keystore::limits::MAX_REASON_LEN
            || what.contains(['\n', '\r'])
        {
            return Err(Error::invalid_input(format!(
                "a refusal is one line of 1 to {} bytes",
                crate::keystore::limits::MAX_REASON_LEN
            )));
        }
        // Validates `who` with the actor rules; the role column says "none"
        // for a caller without a role.
        let actor = Actor::new(who, role.unwrap_or(crate::Role::Application))?;
        let role = role.map_or("none", |r| r.id());
        let mut md = self.md();
        let tx = md.tx()?;
        let Some(audit_key) = md::audit_key(&tx)? else {
            return self.audit(
                &tx,
                Some(&actor),
                AuditEvent::Refused,
                Subject::default(),
                String::new(),
            );
        };
        let ev = Event {
            actor: actor.id().to_string(),
            role: role.to_string(),
            event: AuditEvent::Refused,
            // A name that is not a valid key name is not recorded as one.
            key_name: key
                .filter(|k| crate::check_name(k).is_ok())
                .map(str::to_string),
            key_version: None,
            fingerprint: None,
            detail: format!("{what} refused"),
        };
        audit::append(&tx, &self.backend, &audit_key, &self.now(), &ev)?;
        tx.commit()?;
        Ok(())
    }

    /// Checks that `actor` may perform `what`; a refusal is audited and is
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy).
    pub(crate) fn require(
        &self,
        actor: &Actor,
        duty: Duty,
        what: &str,
        key: Option<&str>,
    ) -> Result<()> {
        if duty.allows(actor.role()) {
            return Ok(());
        }
        let mut md = self.md();
        let tx = md.tx()?;
        self.audit(
            &tx,
            Some(actor),
            AuditEvent::Refused,
            Subject {
                name: key,
                ..Subject::default()
            },
            format!("{what} refused: needs {}", duty.describe()),
        )?;
        tx.commit()?;
        Err(Error::policy(format!(
            "{what} needs {}; '{}' acts as {}",
            duty.describe(),
            actor.id(),
            actor.role()
        )))
    }
}
