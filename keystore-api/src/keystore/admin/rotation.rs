//! Rotation: rotating a key, cryptoperiods, and scheduled rotation of the
//! keys that are due.

use crate::audit::AuditEvent;
use crate::backend::{Backend, GeneratedKey};
use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::keystore::encryption_limit::{limit_of, past_share};
use crate::keystore::{check_name, live_key, EncryptionUsage, KeyInfo, Keystore, Subject};
use crate::lifecycle::check_transition;
use crate::metadata::{self as md, KeyState, NewVersion, Origin, StateChange};
use crate::roles::{Actor, Duty};
use crate::NewKey;
use time::{Duration, OffsetDateTime};

/// A key whose active version is due for rotation, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationDue {
    /// The key.
    pub name: String,
    /// Its active version.
    pub version: u32,
    /// Since when (RFC 3339 UTC): the end of the cryptoperiod; for
    /// [`DueReason::Usage`], the time the store was asked about.
    pub due_at: String,
    /// Why it is due.
    pub reason: DueReason,
}

/// Why a key is due for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueReason {
    /// Its active version is at least one cryptoperiod old.
    Cryptoperiod,
    /// Its active AES-GCM version has reserved more than the configured share
    /// ([`OpenOptions::usage_due_share`](crate::OpenOptions::usage_due_share)) of its
    /// encryption limit, or all of it.
    Usage(EncryptionUsage),
}

impl<B: Backend> Keystore<B> {
    /// Rotates `name`: a new version is generated and becomes active; the
    /// previous active (or suspended) version becomes deactivated until
    /// `now + grace` (verify and decrypt only), after which [`Keystore::sweep`]
    /// destroys it. Needs the security-officer role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name or a negative grace;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when a version cannot be deactivated, a version is in
    /// pre-activation (activate or discard it first), or after decommission;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit key reference is missing from a live store;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails (the new backend
    /// object is then removed, now or at the next open).
    pub fn rotate(&self, actor: &Actor, name: &str, grace: Duration) -> Result<KeyInfo> {
        let _w = self.writing("rotate")?;
        check_name(name)?;
        if grace < Duration::ZERO {
            return Err(Error::invalid_input("a grace period cannot be negative"));
        }
        self.require(actor, Duty::Administer, "rotate", Some(name))?;
        let (key, versions) = {
            let md = self.md();
            let key = live_key(md.conn(), name)?;
            let versions = md::versions(md.conn(), key.id)?;
            (key, versions)
        };
        super::staged::already_staged(name, &versions)?;
        let next = versions.last().map(|v| v.version + 1).unwrap_or(1);
        let previous: Vec<_> = versions
            .iter()
            .filter(|v| matches!(v.state, KeyState::Active | KeyState::Suspended))
            .collect();
        let now = self.now();
        let grace_end = rfc3339(self.now_time() + grace);
        self.create_in_backend(
            name,
            Some(crate::keystore::FaultPoint::AfterBackendRotate),
            || {
                let g = self.backend.generate(&NewKey::new(key.algorithm, name))?;
                Ok((g.clone(), vec![g.handle]))
            },
            |tx, generated| {
                for v in &previous {
                    check_transition(v.state, KeyState::Deactivated)?;
                    md::set_state(
                        tx,
                        key.id,
                        v.version,
                        &StateChange {
                            grace_end: Some(&grace_end),
                            ..StateChange::to(KeyState::Deactivated, &now)
                        },
                    )?;
                    self.audit(
                        tx,
                        Some(actor),
                        AuditEvent::StateChange,
                        Subject::version(name, v.version, v.fingerprint.as_deref()),
                        format!("{} -> deactivated until {grace_end}", v.state),
                    )?;
                }
                let fp =
                    insert_generated_version(tx, key.id, next, KeyState::Active, generated, &now)?;
                self.audit(
                    tx,
                    Some(actor),
                    AuditEvent::Rotate,
                    Subject::version(name, next, fp.as_deref()),
                    format!("version {next} active; grace {} s", grace.whole_seconds()),
                )?;
                Ok(())
            },
        )?;
        self.info(name)
    }

    /// Sets or clears the cryptoperiod of `name`. Needs the security-officer role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name or a non-positive period;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit key reference is missing from a live store, and
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) after decommission (nothing is changed);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn set_cryptoperiod(
        &self,
        actor: &Actor,
        name: &str,
        period: Option<Duration>,
    ) -> Result<()> {
        let _w = self.writing("set cryptoperiod")?;
        check_name(name)?;
        if period.is_some_and(|p| p <= Duration::ZERO) {
            return Err(Error::invalid_input("a cryptoperiod must be positive"));
        }
        self.require(actor, Duty::Administer, "set a cryptoperiod", Some(name))?;
        let mut md = self.md();
        let key = live_key(md.conn(), name)?;
        let tx = md.tx()?;
        md::set_cryptoperiod(&tx, key.id, period.map(|p| p.whole_seconds()))?;
        self.audit(
            &tx,
            Some(actor),
            AuditEvent::Policy,
            Subject {
                name: Some(name),
                ..Subject::default()
            },
            match period {
                Some(p) => format!("cryptoperiod {} s", p.whole_seconds()),
                None => "cryptoperiod cleared".into(),
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Keys due for rotation at `now`: those whose active version is at least
    /// one cryptoperiod old ([`DueReason::Cryptoperiod`]), and AES-GCM keys whose active
    /// version has reserved more than the configured share of its encryption limit
    /// ([`DueReason::Usage`]). A key due for both reasons is listed once for each.
    ///
    /// # Errors
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn due(&self, now: OffsetDateTime) -> Result<Vec<RotationDue>> {
        let share = self.encryptions.due_share();
        let md = self.md();
        let mut out = Vec::new();
        for key in md::keys(md.conn())? {
            let limit = limit_of(&key);
            if key.destroyed_at.is_some() || (key.cryptoperiod_secs.is_none() && limit.is_none()) {
                continue;
            }
            let mut versions = md::versions(md.conn(), key.id)?;
            self.encryptions.discount_unused(key.id, &mut versions);
            let Some(active) = versions.into_iter().find(|v| v.state == KeyState::Active) else {
                continue;
            };
            let period_end = key.cryptoperiod_secs.and_then(|secs| {
                crate::clock::parse_rfc3339(&active.created_at)
                    .map(|created| created + Duration::seconds(secs))
            });
            if let Some(due_at) = period_end.filter(|end| *end <= now) {
                out.push(RotationDue {
                    name: key.name.clone(),
                    version: active.version,
                    due_at: rfc3339(due_at),
                    reason: DueReason::Cryptoperiod,
                });
            }
            let usage = limit.map(|limit| EncryptionUsage {
                reserved: active.encryptions_reserved,
                limit,
            });
            if let Some(usage) = usage.filter(|u| past_share(*u, share)) {
                out.push(RotationDue {
                    name: key.name,
                    version: active.version,
                    due_at: rfc3339(now),
                    reason: DueReason::Usage(usage),
                });
            }
        }
        Ok(out)
    }

    /// Rotates every key [`Keystore::due`] at `now` (for either reason, once
    /// each), with `grace` for the old versions. Returns the rotated names. Needs
    /// the security-officer role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (the refusal is audited); any error
    /// of [`Keystore::rotate`], which stops the run: keys rotated before it stay rotated.
    pub fn rotate_due(
        &self,
        actor: &Actor,
        now: OffsetDateTime,
        grace: Duration,
    ) -> Result<Vec<String>> {
        let _w = self.writing("rotate due")?;
        self.require(actor, Duty::Administer, "scheduled rotation", None)?;
        let mut rotated = Vec::new();
        for due in self.due(now)? {
            if rotated.contains(&due.name) {
                continue;
            }
            self.rotate(actor, &due.name, grace)?;
            rotated.push(due.name);
        }
        Ok(rotated)
    }
}

/// Records `generated` as version `next` of key `key_id`, in `state`, inside
/// `tx` (rotation and staged rotation); returns its public-key fingerprint.
pub(super) fn insert_generated_version(
    tx: &rusqlite::Connection,
    key_id: i64,
    next: u32,
    state: KeyState,
    generated: &GeneratedKey,
    now: &str,
) -> Result<Option<String>> {
    let public = generated
        .public_key
        .as_ref()
        .map(|pk| (pk.spki_der().to_vec(), pk.fingerprint()));
    md::insert_version(
        tx,
        key_id,
        &NewVersion {
            version: next,
            state,
            origin: Origin::Generated,
            handle: &generated.handle,
            public_key: public.as_ref().map(|p| p.0.as_slice()),
            fingerprint: public.as_ref().map(|p| p.1.as_str()),
            created_at: now,
        },
    )?;
    Ok(public.map(|p| p.1))
}
