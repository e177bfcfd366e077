//! The audit trail: application events, verification and export.

use crate::audit::{self, AuditEntry, AuditEvent, AuditReport};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::keystore::{check_name, live_key, Keystore, Subject};
use crate::metadata as md;
use crate::roles::{Actor, Duty};

impl<B: Backend> Keystore<B> {
    /// Appends an application event (e.g. `provision`, `renew`) to the audit
    /// trail, about `key` (name and version) if given. Event names are
    /// lower-case words with dashes ([`ApplicationEvent`](crate::ApplicationEvent));
    /// the keystore's own ([`AuditEvent::KEYSTORE`]) cannot be forged this
    /// way. It is exported as [`AuditEvent::Application`]. Needs the
    /// security-officer or operator role ([`Duty::Provision`]).
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for an event name that is malformed or one of the keystore's
    /// own, a detail that is not one line of at most
    /// [`limits::MAX_REASON_LEN`](crate::limits::MAX_REASON_LEN) bytes, or a malformed key
    /// name;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `key` names an unknown or destroyed key or a version it does
    /// not have;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit key reference is missing from a live store, and
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) after decommission (nothing is changed);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn record_event(
        &self,
        actor: &Actor,
        event: &str,
        key: Option<(&str, u32)>,
        detail: &str,
    ) -> Result<()> {
        let _w = self.writing("record event")?;
        let event = AuditEvent::application(event)?;
        if detail.len() > crate::keystore::limits::MAX_REASON_LEN || detail.contains(['\n', '\r']) {
            return Err(Error::invalid_input(format!(
                "event detail is one line of at most {} bytes",
                crate::keystore::limits::MAX_REASON_LEN
            )));
        }
        self.require(actor, Duty::Provision, event.as_str(), key.map(|k| k.0))?;
        let subject_fp = match key {
            Some((name, version)) => {
                check_name(name)?;
                let md = self.md();
                let k = live_key(md.conn(), name)?;
                let v = md::versions(md.conn(), k.id)?
                    .into_iter()
                    .find(|v| v.version == version)
                    .ok_or_else(|| {
                        Error::not_found(format!("key '{name}' has no version {version}"))
                    })?;
                v.fingerprint
            }
            None => None,
        };
        let mut md = self.md();
        let tx = md.tx()?;
        let subject = match key {
            Some((name, version)) => Subject::version(name, version, subject_fp.as_deref()),
            None => Subject::default(),
        };
        self.audit(&tx, Some(actor), event, subject, detail.to_string())?;
        tx.commit()?;
        Ok(())
    }

    /// Verifies the audit trail (chain, MACs, head). Needs the security-officer
    /// or auditor role. The report names the first bad entry, if any, says
    /// what was checked ([`AuditReport::checked`]: after decommission the
    /// chain only, no MAC) and lists keys holding both `mac` and `derive`. A
    /// live store whose audit key reference is missing or replaced is
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity).
    ///
    /// # Errors
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit key reference is missing, points at one of the
    /// store's keys or at an object the backend does not hold, or a store marked decommissioned
    /// still holds keys or backend objects;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails. A damaged entry is
    /// not an error: the report names it.
    pub fn verify_audit(&self, actor: &Actor) -> Result<AuditReport> {
        self.require(actor, Duty::Audit, "audit verification", None)?;
        let md = self.md();
        audit::verify_store(md.conn(), &self.backend)
    }

    /// Every audit entry, in order. Needs the security-officer or auditor role.
    ///
    /// # Errors
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn export_audit(&self, actor: &Actor) -> Result<Vec<AuditEntry>> {
        self.require(actor, Duty::Audit, "audit export", None)?;
        audit::entries(self.md().conn())
    }
}
